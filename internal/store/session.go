package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// SessionConfig sets a session's lease timing.
type SessionConfig struct {
	// TTL is the lease's time to live: the store deletes everything written under the lease this long
	// after the last renewal it processed. etcd counts whole seconds (it rounds up) and may grant more
	// than asked (its minimum is 1.5 election timeouts); the session uses what was granted.
	TTL time.Duration `yaml:"ttl"`
	// SafetyMargin is how long before the lease can expire the session declares itself lost: the time
	// the caller needs to fence (stop PostgreSQL taking writes) while the lease surely still holds.
	// Default TTL/3.
	SafetyMargin time.Duration `yaml:"safety_margin"`
	// RenewInterval is how often the lease is renewed. Default (TTL-SafetyMargin)/3; at most
	// (TTL-SafetyMargin)/2, so that a failed renewal is retried at least once before the deadline.
	RenewInterval time.Duration `yaml:"renew_interval"`
}

// ErrSessionConfig is wrapped by SessionConfig.Validate errors.
var ErrSessionConfig = errors.New("invalid session timing")

// Validate fills in defaults and checks the rule between the timers:
// 2*renew_interval <= ttl - safety_margin.
func (c *SessionConfig) Validate() error {
	if c.TTL < time.Second {
		return fmt.Errorf("%w: ttl must be at least 1s (etcd leases count seconds), got %s", ErrSessionConfig, c.TTL)
	}
	if c.SafetyMargin == 0 {
		c.SafetyMargin = c.TTL / 3
	}
	if c.SafetyMargin < 0 || c.SafetyMargin >= c.TTL {
		return fmt.Errorf("%w: safety_margin %s must be positive and below ttl %s", ErrSessionConfig, c.SafetyMargin, c.TTL)
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = (c.TTL - c.SafetyMargin) / 3
	}
	if c.RenewInterval <= 0 || 2*c.RenewInterval > c.TTL-c.SafetyMargin {
		return fmt.Errorf("%w: renew_interval %s must be positive and at most (ttl %s - safety_margin %s) / 2, so a failed renewal is retried before the deadline",
			ErrSessionConfig, c.RenewInterval, c.TTL, c.SafetyMargin)
	}
	return nil
}

// ErrSessionClosed is a closed session's Err.
var ErrSessionClosed = errors.New("etcd session closed")

// Session is an etcd lease that this process keeps alive: node and proxy statuses and the election
// key are written under it, so they vanish from the store when the process stops renewing it.
//
// # Knowing you are still within your lease
//
// The session renews the lease itself (it does not trust etcd's keep-alive goroutine, whose failures are
// silent) with one KeepAliveOnce request every RenewInterval. A renewal sent at time T and answered
// with TTL n guarantees the lease lives until at least T+n on etcd, because etcd's leader restarts the
// countdown when it processes the request, which is after T. So:
//
//   - [Session.LastRenewal] is T of the last answered renewal (monotonic clock);
//   - [Session.ValidUntil] is T+n: before it, the lease surely exists and no other node can have been
//     promoted in this node's place;
//   - [Session.Deadline] is ValidUntil - SafetyMargin: the time by which the caller must have fenced.
//
// A caller that acts only while time.Now() is before Deadline(), and fences when [Session.Lost] is
// closed (which happens at Deadline at the latest, and at once when etcd says the lease is gone), never
// acts outside its lease. A renewal still in flight does not count until it is answered. The
// guarantee relies on clocks running at about the same rate on every machine, not on synchronised
// clocks.
//
// A lost session is not recovered: make a new one (a new lease), as the old keys may be gone already.
type Session struct {
	s             *Store
	id            clientv3.LeaseID
	ttl           time.Duration // granted
	margin, renew time.Duration

	ctx    context.Context // cancelled when lost or closed; ends the renew loop and the election's keep-alive
	cancel context.CancelFunc
	lost   chan struct{} // closed with ctx
	done   chan struct{} // closed when the renew loop has returned

	mu          sync.Mutex // guards the fields below
	lastRenewal time.Time
	validUntil  time.Time
	err         error

	closeOnce sync.Once
	closeErr  error
}

// NewSession grants a lease and starts renewing it.
func (s *Store) NewSession(ctx context.Context, cfg SessionConfig) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	secs := int64((cfg.TTL + time.Second - 1) / time.Second)
	gctx, cancel := s.reqCtx(ctx)
	defer cancel()
	sent := time.Now()
	resp, err := s.cli.Grant(gctx, secs)
	if err != nil {
		return nil, s.wrap("grant lease", err)
	}
	ttl := time.Duration(resp.TTL) * time.Second
	sess := &Session{
		s:           s,
		id:          resp.ID,
		ttl:         ttl,
		margin:      cfg.SafetyMargin,
		renew:       cfg.RenewInterval,
		lost:        make(chan struct{}),
		done:        make(chan struct{}),
		lastRenewal: sent,
		validUntil:  sent.Add(ttl),
	}
	sess.ctx, sess.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go sess.run()
	return sess, nil
}

// ID returns the lease.
func (ss *Session) ID() clientv3.LeaseID { return ss.id }

// TTL returns the lease's time to live as etcd granted it.
func (ss *Session) TTL() time.Duration { return ss.ttl }

// LastRenewal returns when the last renewal etcd answered was sent (or the grant).
func (ss *Session) LastRenewal() time.Time {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.lastRenewal
}

// ValidUntil returns the time until which the lease surely exists (see the type's documentation).
func (ss *Session) ValidUntil() time.Time {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.validUntil
}

// Deadline returns ValidUntil - SafetyMargin: the caller must have fenced by then unless a renewal
// moves it.
func (ss *Session) Deadline() time.Time { return ss.ValidUntil().Add(-ss.margin) }

// Lost is closed when the session ends: its lease could not be renewed before Deadline, etcd reported
// it gone (expired or revoked), or the session was closed. Err says which.
func (ss *Session) Lost() <-chan struct{} { return ss.lost }

// Context is cancelled when Lost is closed.
func (ss *Session) Context() context.Context { return ss.ctx }

// Err returns nil while the session holds, else ErrSessionLost (wrapped, with the reason) or
// ErrSessionClosed.
func (ss *Session) Err() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.err
}

// Valid reports whether the session holds and now is before its Deadline.
func (ss *Session) Valid() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.err == nil && time.Now().Before(ss.validUntil.Add(-ss.margin))
}

// end records why the session ended and closes Lost; only the first call counts.
func (ss *Session) end(err error) {
	ss.mu.Lock()
	first := ss.err == nil
	if first {
		ss.err = err
	}
	ss.mu.Unlock()
	if first {
		ss.cancel()
		close(ss.lost)
	}
}

// run renews the lease until the session ends.
func (ss *Session) run() {
	defer close(ss.done)
	log := ss.s.log.With("lease", fmt.Sprintf("%x", int64(ss.id)))
	next := time.NewTimer(ss.renew)
	defer next.Stop()
	for {
		select {
		case <-ss.ctx.Done():
			return
		case <-next.C:
		}
		for {
			deadline := ss.Deadline()
			if !time.Now().Before(deadline) {
				err := fmt.Errorf("%w: lease %x not renewed since %s (ttl %s, safety margin %s)",
					ErrSessionLost, int64(ss.id), ss.LastRenewal().Format(time.RFC3339Nano), ss.ttl, ss.margin)
				log.Warn("session lost", "err", err)
				ss.end(err)
				return
			}
			actx, cancel := context.WithDeadline(clientv3.WithRequireLeader(ss.ctx), deadline)
			sent := time.Now()
			resp, err := ss.s.cli.KeepAliveOnce(actx, ss.id)
			cancel()
			if err == nil {
				ss.mu.Lock()
				ss.lastRenewal = sent
				ss.validUntil = sent.Add(time.Duration(resp.TTL) * time.Second)
				ss.mu.Unlock()
				break
			}
			if ss.ctx.Err() != nil {
				return
			}
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				err = fmt.Errorf("%w: lease %x expired or was revoked", ErrSessionLost, int64(ss.id))
				log.Warn("session lost", "err", err)
				ss.end(err)
				return
			}
			log.Warn("renewing lease", "err", err)
			pause := time.NewTimer(min(100*time.Millisecond, time.Until(deadline)))
			select {
			case <-ss.ctx.Done():
				pause.Stop()
				return
			case <-pause.C:
			}
		}
		next.Reset(ss.renew)
	}
}

// Close stops renewing and revokes the lease, so the keys written under it disappear at once. It is
// idempotent; Lost is closed afterwards (with ErrSessionClosed unless the session was lost before).
// Shutdown order: the renew loop stops first, then the lease is revoked (bounded by ctx and the
// store's request timeout; if that fails the lease still expires after its TTL).
func (ss *Session) Close(ctx context.Context) error {
	ss.closeOnce.Do(func() {
		ss.end(ErrSessionClosed)
		<-ss.done
		if ss.s.cli.Ctx().Err() != nil {
			return // the store is closed: the lease expires after its TTL
		}
		// If revoking takes longer than the TTL, the lease has expired anyway.
		rctx, cancel := ss.s.reqCtx(ctx)
		defer cancel()
		rctx, cancel2 := context.WithTimeout(rctx, ss.ttl)
		defer cancel2()
		if _, err := ss.s.cli.Revoke(rctx, ss.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			ss.closeErr = ss.s.wrap("revoke lease", err)
		}
	})
	return ss.closeErr
}
