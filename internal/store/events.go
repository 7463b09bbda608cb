package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meridiandb/meridian/internal/topology"
)

// eventKey returns the key of event seq: zero-padded so that key order is seq order.
func (s *Store) eventKey(seq uint64) string {
	return s.key(prefixEvents + fmt.Sprintf("%020d", seq))
}

// AppendEvent appends ev to the event log and returns it with its Seq (and At, when it was zero) set.
// Seq is assigned by the store: one more than the last appended event's, in one transaction with the
// write (a compare-and-swap on the event-seq counter key, retried when concurrent appends race), so
// sequence numbers are unique, gap-free and in commit order. The same transaction deletes the events
// older than the retention (the newest EventRetention are kept).
func (s *Store) AppendEvent(ctx context.Context, ev topology.Event) (topology.Event, error) {
	if ev.At.IsZero() {
		ev.At = time.Now().UTC()
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	ckey := s.key(keyEventSeq)
	resp, err := s.cli.Get(ctx, ckey)
	if err != nil {
		return ev, s.wrap("append event", err)
	}
	for {
		var last uint64
		var rev int64 // mod revision of the counter; 0 when absent
		if len(resp.Kvs) > 0 {
			if last, err = strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64); err != nil {
				return ev, fmt.Errorf("append event: counter %s holds %q: %w", ckey, resp.Kvs[0].Value, err)
			}
			rev = resp.Kvs[0].ModRevision
		}
		ev.Seq = last + 1
		val, err := json.Marshal(ev)
		if err != nil {
			return ev, fmt.Errorf("append event: %w", err)
		}
		ops := []clientv3.Op{
			clientv3.OpPut(ckey, strconv.FormatUint(ev.Seq, 10)),
			clientv3.OpPut(s.eventKey(ev.Seq), string(val)),
		}
		if keep := uint64(s.retention); ev.Seq > keep {
			ops = append(ops, clientv3.OpDelete(s.eventKey(0), clientv3.WithRange(s.eventKey(ev.Seq-keep+1))))
		}
		tresp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(ckey), "=", rev)).
			Then(ops...).
			Else(clientv3.OpGet(ckey)).
			Commit()
		if err != nil {
			return ev, s.wrap("append event", err)
		}
		if tresp.Succeeded {
			return ev, nil
		}
		// Another append won the race: retry with the counter it left.
		resp = (*clientv3.GetResponse)(tresp.Responses[0].GetResponseRange())
	}
}

// ListEvents returns up to limit events (all when limit <= 0) with Seq >= from, oldest first.
func (s *Store) ListEvents(ctx context.Context, from uint64, limit int) ([]topology.Event, error) {
	evs, _, err := s.listEvents(ctx, from, limit)
	return evs, err
}

func (s *Store) listEvents(ctx context.Context, from uint64, limit int) ([]topology.Event, int64, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.key(prefixEvents)))}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := s.cli.Get(ctx, s.eventKey(from), opts...)
	if err != nil {
		return nil, 0, s.wrap("list events", err)
	}
	evs := make([]topology.Event, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var ev topology.Event
		if err := json.Unmarshal(kv.Value, &ev); err != nil {
			s.log.Warn("skipping undecodable event", "key", string(kv.Key), "err", err)
			continue
		}
		evs = append(evs, ev)
	}
	return evs, resp.Header.Revision, nil
}

// WatchEvents delivers the events with Seq >= from, oldest first, then follows new ones until ctx ends;
// then it closes the channel. Seq increases strictly along the channel. Events deleted by retention
// before the watcher read them are skipped (a follower slower than EventRetention events loses some).
func (s *Store) WatchEvents(ctx context.Context, from uint64) <-chan topology.Event {
	ch := make(chan topology.Event)
	go func() {
		defer close(ch)
		next := max(from, 1)
		send := func(ev topology.Event) bool {
			if ev.Seq < next {
				return true
			}
			select {
			case ch <- ev:
				next = ev.Seq + 1
				return true
			case <-ctx.Done():
				return false
			}
		}
		b := newBackoff()
		for ctx.Err() == nil && s.cli.Ctx().Err() == nil {
			// Catch up in pages, then watch from the revision of the last page.
			var rev int64
			caughtUp := true
			for {
				evs, r, err := s.listEvents(ctx, next, 500)
				if err != nil {
					s.log.Warn("listing events", "err", err)
					caughtUp = false
					break
				}
				for _, ev := range evs {
					if !send(ev) {
						return
					}
				}
				rev = r
				if len(evs) < 500 {
					break
				}
			}
			if !caughtUp {
				if !b.wait(ctx) {
					return
				}
				continue
			}
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			for wr := range s.cli.Watch(wctx, s.key(prefixEvents), clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterDelete()) {
				if err := wr.Err(); err != nil {
					s.log.Warn("event watch", "err", err)
					break
				}
				b.reset()
				for _, e := range wr.Events {
					var ev topology.Event
					if err := json.Unmarshal(e.Kv.Value, &ev); err != nil {
						s.log.Warn("skipping undecodable event", "key", string(e.Kv.Key), "err", err)
						continue
					}
					if !send(ev) {
						cancel()
						return
					}
				}
			}
			cancel()
			if !b.wait(ctx) {
				return
			}
		}
	}()
	return ch
}
