package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meridiandb/meridian/internal/topology"
)

// PutNodeStatus writes a node's status under the session's lease (key nodes/<name>): it disappears
// when the session's lease expires or is revoked. It refuses to write once the session is lost.
func (s *Store) PutNodeStatus(ctx context.Context, sess *Session, st topology.NodeStatus) error {
	return s.putLeased(ctx, sess, prefixNodes, st.Name, st)
}

// PutProxyStatus writes a proxy's status under the session's lease (key proxies/<name>).
func (s *Store) PutProxyStatus(ctx context.Context, sess *Session, st topology.ProxyStatus) error {
	return s.putLeased(ctx, sess, prefixProxies, st.Name, st)
}

func (s *Store) putLeased(ctx context.Context, sess *Session, prefix, name string, v any) error {
	op := fmt.Sprintf("put %s%s", prefix, name)
	if name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("%s: the name must be non-empty and contain no '/'", op)
	}
	if err := sess.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	val, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	if _, err := s.cli.Put(ctx, s.key(prefix+name), string(val), clientv3.WithLease(sess.ID())); err != nil {
		return s.wrap(op, err)
	}
	return nil
}

// Statuses is the set of statuses present at a revision, by name. A watch delivers a fresh map each
// time; the receiver owns it.
type Statuses[T any] struct {
	Revision int64
	Items    map[string]T
}

// NodeStatuses are the statuses of the nodes whose agents hold their leases.
type NodeStatuses = Statuses[topology.NodeStatus]

// ProxyStatuses are the statuses of the proxies that hold their leases.
type ProxyStatuses = Statuses[topology.ProxyStatus]

// NodeStatuses returns every node status present now.
func (s *Store) NodeStatuses(ctx context.Context) (NodeStatuses, error) {
	return listStatuses[topology.NodeStatus](ctx, s, prefixNodes)
}

// ProxyStatuses returns every proxy status present now.
func (s *Store) ProxyStatuses(ctx context.Context) (ProxyStatuses, error) {
	return listStatuses[topology.ProxyStatus](ctx, s, prefixProxies)
}

// WatchNodeStatuses delivers the whole set of node statuses at once, then again after every change
// (a status written, or gone with its lease), until ctx ends; then it closes the channel. After a
// compaction or a lost connection it re-reads the set, so the last set delivered is always the current
// one once the watch has caught up.
func (s *Store) WatchNodeStatuses(ctx context.Context) <-chan NodeStatuses {
	return watchStatuses[topology.NodeStatus](ctx, s, prefixNodes)
}

// WatchProxyStatuses is WatchNodeStatuses for proxies.
func (s *Store) WatchProxyStatuses(ctx context.Context) <-chan ProxyStatuses {
	return watchStatuses[topology.ProxyStatus](ctx, s, prefixProxies)
}

func listStatuses[T any](ctx context.Context, s *Store, prefix string) (Statuses[T], error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.key(prefix), clientv3.WithPrefix())
	if err != nil {
		return Statuses[T]{}, s.wrap("list "+prefix, err)
	}
	out := Statuses[T]{Revision: resp.Header.Revision, Items: make(map[string]T, len(resp.Kvs))}
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), s.key(prefix))
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			s.log.Warn("skipping undecodable status", "key", string(kv.Key), "err", err)
			continue
		}
		out.Items[name] = v
	}
	return out, nil
}

func watchStatuses[T any](ctx context.Context, s *Store, prefix string) <-chan Statuses[T] {
	ch := make(chan Statuses[T])
	go func() {
		defer close(ch)
		send := func(st Statuses[T]) bool {
			select {
			case ch <- Statuses[T]{Revision: st.Revision, Items: maps.Clone(st.Items)}:
				return true
			case <-ctx.Done():
				return false
			}
		}
		b := newBackoff()
		for ctx.Err() == nil && s.cli.Ctx().Err() == nil {
			cur, err := listStatuses[T](ctx, s, prefix)
			if err != nil {
				s.log.Warn("listing statuses", "prefix", prefix, "err", err)
				if !b.wait(ctx) {
					return
				}
				continue
			}
			if !send(cur) {
				return
			}
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			for wr := range s.cli.Watch(wctx, s.key(prefix), clientv3.WithPrefix(), clientv3.WithRev(cur.Revision+1)) {
				if err := wr.Err(); err != nil {
					s.log.Warn("status watch", "prefix", prefix, "err", err)
					break
				}
				if len(wr.Events) == 0 {
					continue
				}
				b.reset()
				for _, ev := range wr.Events {
					name := strings.TrimPrefix(string(ev.Kv.Key), s.key(prefix))
					if ev.Type == clientv3.EventTypeDelete {
						delete(cur.Items, name)
					} else {
						var v T
						if err := json.Unmarshal(ev.Kv.Value, &v); err != nil {
							s.log.Warn("skipping undecodable status", "key", string(ev.Kv.Key), "err", err)
							continue
						}
						cur.Items[name] = v
					}
					cur.Revision = ev.Kv.ModRevision
				}
				if !send(cur) {
					cancel()
					return
				}
			}
			cancel()
			// The watch ended (compaction, no leader, connection lost): re-read the whole set.
			if !b.wait(ctx) {
				return
			}
		}
	}()
	return ch
}
