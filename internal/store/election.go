package store

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Election elects one controller leader among candidates, with etcd's concurrency.Election under the
// cluster's leader/ prefix: each candidate writes a key under its session's lease and the one with the
// oldest key leads. A leader stays leader until it resigns or its session's lease is gone.
type Election struct {
	s    *Store
	sess *Session
	cs   *concurrency.Session
	el   *concurrency.Election
}

// Leadership is the proof of being leader: the leader key and its create revision. Pass it to
// [Store.PutTopology]: the write then commits only if that very key still exists, in the same
// transaction, so a deposed leader (whose lease expired, or who resigned) can never write.
type Leadership struct {
	Name string // the candidate's name
	Key  string // the leader key, <prefix>leader/<lease id>
	Rev  int64  // the key's create revision
	sess *Session
}

// cmp is the transaction condition "this leadership still holds".
func (l *Leadership) cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.Key), "=", l.Rev)
}

// Lost is closed when the leader's session is lost or closed: the leader must stop acting. Guarded
// writes fail with ErrNotLeader once the lease is gone even if the caller has not looked yet.
func (l *Leadership) Lost() <-chan struct{} { return l.sess.Lost() }

// NewElection prepares a candidacy that uses sess's lease: when the session is lost, the candidacy or
// leadership goes with it.
func (s *Store) NewElection(sess *Session) (*Election, error) {
	if err := sess.Err(); err != nil {
		return nil, fmt.Errorf("new election: %w", err)
	}
	// concurrency.NewSession also keeps the lease alive with the client's KeepAlive; that only ever
	// extends the lease, so Session's own deadline stays on the safe side. It stops when sess ends.
	cs, err := concurrency.NewSession(s.cli, concurrency.WithLease(sess.ID()), concurrency.WithContext(sess.Context()))
	if err != nil {
		return nil, s.wrap("new election", err)
	}
	return &Election{s: s, sess: sess, cs: cs, el: concurrency.NewElection(cs, s.key(prefixLeader))}, nil
}

// Campaign blocks until this candidate is leader, ctx ends or the session is lost. name is what
// [Election.Leader] reports (the controller's name and address, say).
func (e *Election) Campaign(ctx context.Context, name string) (*Leadership, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(e.sess.Context(), cancel)
	defer stop()
	if err := e.el.Campaign(ctx, name); err != nil {
		if serr := e.sess.Err(); serr != nil {
			return nil, fmt.Errorf("campaign: %w", serr)
		}
		return nil, e.s.wrap("campaign", err)
	}
	return &Leadership{Name: name, Key: e.el.Key(), Rev: e.el.Rev(), sess: e.sess}, nil
}

// Resign gives up leadership (the next candidate takes over at once) without ending the session.
func (e *Election) Resign(ctx context.Context) error {
	ctx, cancel := e.s.reqCtx(ctx)
	defer cancel()
	return e.s.wrap("resign", e.el.Resign(ctx))
}

// Leader returns the current leader's name and leader key create revision, or ErrNotFound when there
// is no leader.
func (e *Election) Leader(ctx context.Context) (string, int64, error) {
	ctx, cancel := e.s.reqCtx(ctx)
	defer cancel()
	resp, err := e.el.Leader(ctx)
	if errors.Is(err, concurrency.ErrElectionNoLeader) {
		return "", 0, fmt.Errorf("leader: %w", ErrNotFound)
	}
	if err != nil {
		return "", 0, e.s.wrap("leader", err)
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision, nil
}

// Observe delivers the name of each new leader (the current one first, once there is one) until ctx
// ends; then it closes the channel. For followers and status pages: acting needs a [Leadership].
func (e *Election) Observe(ctx context.Context) <-chan string {
	ch := make(chan string)
	go func() {
		defer close(ch)
		for resp := range e.el.Observe(ctx) {
			if len(resp.Kvs) == 0 {
				continue
			}
			select {
			case ch <- string(resp.Kvs[0].Value):
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// Close stops the election's keep-alive of the lease (the Session keeps renewing it until it is
// closed itself). It does not resign: call Resign first for a quick hand-over.
func (e *Election) Close() { e.cs.Orphan() }
