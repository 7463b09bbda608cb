package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meridiandb/meridian/internal/topology"
)

// GetTopology returns the cluster's topology and its revision (the etcd mod revision of the key), the
// value to pass to [Store.PutTopology] for the compare-and-swap. It returns ErrNotFound before
// bootstrap. The read is linearizable: it reflects every write acknowledged before it started.
func (s *Store) GetTopology(ctx context.Context) (*topology.Topology, int64, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.key(keyTopology))
	if err != nil {
		return nil, 0, s.wrap("get topology", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("get topology: %w", ErrNotFound)
	}
	t, err := decodeTopology(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	return t, resp.Kvs[0].ModRevision, nil
}

// PutTopology writes t if, and only if, the topology's revision is still rev (the one GetTopology or a
// watch returned; 0 means "create it: there is none yet", the bootstrap) and, when lead is not nil, lead
// is still the current leadership. It returns the new revision.
//
// The two conditions are checked in the same etcd transaction as the write, so a controller that lost
// the election, or that decided on a stale topology, can never overwrite a newer one: it gets
// ErrNotLeader or ErrConflict and must re-read. t must pass [topology.Topology.Validate]; it is not
// changed.
func (s *Store) PutTopology(ctx context.Context, t *topology.Topology, rev int64, lead *Leadership) (int64, error) {
	if err := t.Validate(); err != nil {
		return 0, fmt.Errorf("put topology epoch %d: %w", t.Epoch, err)
	}
	if lead != nil {
		// The transaction below is what makes two writers impossible; this only stops a leader that
		// already knows it lost its lease from trying.
		if err := lead.sess.Err(); err != nil {
			return 0, fmt.Errorf("put topology epoch %d: %w: %w", t.Epoch, ErrNotLeader, err)
		}
	}
	val, err := json.Marshal(t)
	if err != nil {
		return 0, fmt.Errorf("put topology: %w", err)
	}
	key := s.key(keyTopology)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", rev)}
	if rev == 0 {
		cmps = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	}
	elseOps := []clientv3.Op{clientv3.OpGet(key, clientv3.WithKeysOnly())}
	if lead != nil {
		cmps = append(cmps, lead.cmp())
		elseOps = append(elseOps, clientv3.OpGet(lead.Key, clientv3.WithKeysOnly()))
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(key, string(val))).Else(elseOps...).Commit()
	if err != nil {
		return 0, s.wrap(fmt.Sprintf("put topology epoch %d", t.Epoch), err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	if lead != nil {
		kvs := resp.Responses[1].GetResponseRange().Kvs
		if len(kvs) == 0 || kvs[0].CreateRevision != lead.Rev {
			return 0, fmt.Errorf("put topology epoch %d: %w (leader key %s revision %d is gone)", t.Epoch, ErrNotLeader, lead.Key, lead.Rev)
		}
	}
	cur := int64(0)
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		cur = kvs[0].ModRevision
	}
	return 0, fmt.Errorf("put topology epoch %d: %w (read at revision %d, now %d)", t.Epoch, ErrConflict, rev, cur)
}

// TopologyUpdate is one topology a watch delivers, with its revision.
type TopologyUpdate struct {
	// Topology is nil when the key was deleted (only an operator repairing the store does that).
	Topology *topology.Topology
	Revision int64
}

// WatchTopology follows the topology until ctx ends, then closes the channel.
//
// With after = 0 it first delivers the current topology (if there is one), then every later change, in
// order. With after > 0 (the revision of the last topology the caller handled, e.g. before a restart) it
// delivers every change made after that revision, in order. When etcd has compacted the history the
// watch needs, or the connection was lost long enough, it re-reads and delivers the latest topology
// (if newer than the last delivered), so a watcher may skip intermediate versions then but never
// misses the latest state. Updates are never delivered twice or out of revision order.
//
// The watch requires an etcd leader: on a member cut off from the majority it ends with an error and
// is retried, rather than silently delivering nothing.
func (s *Store) WatchTopology(ctx context.Context, after int64) <-chan TopologyUpdate {
	ch := make(chan TopologyUpdate)
	go func() {
		defer close(ch)
		s.watchTopology(ctx, after, ch)
	}()
	return ch
}

func (s *Store) watchTopology(ctx context.Context, after int64, ch chan<- TopologyUpdate) {
	key := s.key(keyTopology)
	last := after // revision of the last delivered update
	send := func(u TopologyUpdate) bool {
		if u.Revision <= last {
			return true
		}
		select {
		case ch <- u:
			last = u.Revision
			return true
		case <-ctx.Done():
			return false
		}
	}
	// resync reads the current topology, delivers it if newer, and returns where to watch from.
	resync := func() (int64, bool) {
		for b := newBackoff(); ; {
			rctx, cancel := s.reqCtx(ctx)
			resp, err := s.cli.Get(rctx, key)
			cancel()
			if err == nil {
				if len(resp.Kvs) > 0 {
					t, err := decodeTopology(resp.Kvs[0].Value)
					if err != nil {
						s.log.Warn("skipping undecodable topology", "revision", resp.Kvs[0].ModRevision, "err", err)
					} else if !send(TopologyUpdate{Topology: t, Revision: resp.Kvs[0].ModRevision}) {
						return 0, false
					}
				}
				return resp.Header.Revision + 1, true
			}
			s.log.Warn("reading topology", "err", err)
			if !b.wait(ctx) || s.cli.Ctx().Err() != nil {
				return 0, false
			}
		}
	}
	next := after + 1
	if after == 0 {
		var ok bool
		if next, ok = resync(); !ok {
			return
		}
	}
	b := newBackoff()
	for ctx.Err() == nil && s.cli.Ctx().Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, key, clientv3.WithRev(next))
		compacted := false
		for wr := range wch {
			if wr.CompactRevision != 0 {
				compacted = true
				break
			}
			if err := wr.Err(); err != nil {
				s.log.Warn("topology watch", "err", err)
				break
			}
			b.reset()
			for _, ev := range wr.Events {
				u := TopologyUpdate{Revision: ev.Kv.ModRevision}
				if ev.Type == clientv3.EventTypePut {
					t, err := decodeTopology(ev.Kv.Value)
					if err != nil {
						s.log.Warn("skipping undecodable topology", "revision", ev.Kv.ModRevision, "err", err)
						next = ev.Kv.ModRevision + 1
						continue
					}
					u.Topology = t
				}
				if !send(u) {
					cancel()
					return
				}
				next = ev.Kv.ModRevision + 1
			}
		}
		cancel()
		if compacted {
			var ok bool
			if next, ok = resync(); !ok {
				return
			}
			continue
		}
		if !b.wait(ctx) {
			return
		}
	}
}

func decodeTopology(b []byte) (*topology.Topology, error) {
	var t topology.Topology
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("decode topology: %w", err)
	}
	return &t, nil
}

// backoff paces retries after errors: 50ms doubling to 1s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 50 * time.Millisecond} }

func (b *backoff) reset() { b.d = 50 * time.Millisecond }

// wait sleeps for the current delay; it reports false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(2*b.d, time.Second)
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
