package wan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// errReset is the cause recorded for connections closed by Link.Reset.
	errReset = errors.New("connection reset by wan link")
	// errLinkClosed is the cause recorded for connections closed by Link.Close.
	errLinkClosed = errors.New("wan link closed")
)

// Link is a running emulated WAN link. Its methods are safe for concurrent
// use.
type Link struct {
	name        string
	target      string
	dialTimeout time.Duration
	log         *slog.Logger
	ln          net.Listener

	delay atomic.Pointer[delay] // never nil

	// blackhole is non-nil while the link is partitioned; Heal closes its
	// channel. Writers and pending dials read it without locking; Partition
	// and Heal change it under mu.
	blackhole atomic.Pointer[chan struct{}]

	bufs sync.Pool // *[]byte of chunkSize

	accepted      atomic.Int64
	active        atomic.Int64
	dialFailures  atomic.Int64
	bytesToTarget atomic.Int64
	bytesToClient atomic.Int64

	stop      chan struct{} // closed by Close; ends the accept loop's back-off
	closeOnce sync.Once
	closeErr  error

	wg sync.WaitGroup // the accept loop and one per connection

	mu     sync.Mutex // guards the fields below and changes to blackhole
	closed bool
	pipes  map[*pipe]struct{}
}

// Stats are counters of a link since New. Bytes count what was delivered
// (written to the far side), not what is still queued.
type Stats struct {
	Accepted      int64 // connections accepted
	Active        int64 // connections open now, including ones held by a partition
	DialFailures  int64 // accepted connections closed because Target could not be dialed
	BytesToTarget int64 // bytes delivered from clients to the target
	BytesToClient int64 // bytes delivered from the target to clients
}

// New validates cfg, listens on cfg.Listen at once (so Addr is known, even
// for a kernel-assigned port) and starts accepting in a goroutine owned by
// the Link. Call Close to stop it.
func New(cfg Config) (*Link, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("wan link %q: listen %s: %w", cfg.Name, cfg.Listen, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Link{
		name:        cfg.Name,
		target:      cfg.Target,
		dialTimeout: cfg.DialTimeout,
		log:         log.With("link", cfg.Name),
		ln:          ln,
		stop:        make(chan struct{}),
		pipes:       make(map[*pipe]struct{}),
	}
	if l.dialTimeout == 0 {
		l.dialTimeout = DefaultDialTimeout
	}
	l.delay.Store(&delay{latency: cfg.Latency, jitter: cfg.Jitter})
	l.bufs.New = func() any {
		b := make([]byte, chunkSize)
		return &b
	}
	l.log.Debug("wan link listening", "addr", l.Addr(), "target", cfg.Target,
		"latency", cfg.Latency, "jitter", cfg.Jitter)
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Addr returns the address the link listens on, with the kernel-assigned
// port if Config.Listen asked for port 0.
func (l *Link) Addr() string {
	return l.ln.Addr().String()
}

// Close shuts the link down, in this order: it stops accepting (closes the
// listener), closes every forwarded connection on both sides (queued bytes
// are discarded), and waits for every goroutine the link started. It returns
// the listener's close error, if any. Close is idempotent: later calls wait
// for the first to finish and return its result.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		if err := l.ln.Close(); err != nil {
			l.closeErr = fmt.Errorf("wan link %q: close listener: %w", l.name, err)
		}
		close(l.stop)
		l.mu.Lock()
		l.closed = true
		pipes := l.snapshotLocked()
		l.mu.Unlock()
		for _, p := range pipes {
			p.abort(errLinkClosed)
		}
		l.wg.Wait()
		l.log.Debug("wan link closed")
	})
	return l.closeErr
}

// SetLatency changes the one-way latency and jitter for chunks that arrive
// from now on, in both directions; chunks already queued keep the delivery
// time they were given. Negative values are treated as zero. A chunk is
// still never delivered before the one ahead of it, so lowering the latency
// takes effect once the slower chunks already in flight have been delivered.
func (l *Link) SetLatency(latency, jitter time.Duration) {
	d := &delay{latency: max(latency, 0), jitter: max(jitter, 0)}
	l.delay.Store(d)
	l.log.Info("wan link latency changed", "latency", d.latency, "jitter", d.jitter)
}

// Latency returns the current one-way latency and jitter.
func (l *Link) Latency() (latency, jitter time.Duration) {
	d := l.delay.Load()
	return d.latency, d.jitter
}

// Partition blackholes the link until Heal: nothing is delivered on
// existing connections, in either direction, and new connections are
// accepted but not forwarded. Nothing is dropped or closed; see the package
// documentation. Partitioning a partitioned link does nothing.
func (l *Link) Partition() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blackhole.Load() != nil {
		return
	}
	healed := make(chan struct{})
	l.blackhole.Store(&healed)
	l.log.Info("wan link partitioned")
}

// Heal ends a partition: delivery resumes at once for chunks whose delivery
// time has passed, held connections are forwarded. Healing a link that is
// not partitioned does nothing.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	healed := l.blackhole.Load()
	if healed == nil {
		return
	}
	l.blackhole.Store(nil)
	close(*healed)
	l.log.Info("wan link healed")
}

// Partitioned reports whether the link is partitioned.
func (l *Link) Partitioned() bool {
	return l.blackhole.Load() != nil
}

// Reset closes every current connection on both sides, as a TCP reset
// would, without stopping the listener: new connections are accepted and
// forwarded as usual (or held, if the link is partitioned).
func (l *Link) Reset() {
	l.mu.Lock()
	pipes := l.snapshotLocked()
	l.mu.Unlock()
	for _, p := range pipes {
		p.abort(errReset)
	}
	l.log.Info("wan link reset", "connections", len(pipes))
}

// Stats returns the link's counters. Each counter is read atomically, but
// not all at the same instant.
func (l *Link) Stats() Stats {
	return Stats{
		Accepted:      l.accepted.Load(),
		Active:        l.active.Load(),
		DialFailures:  l.dialFailures.Load(),
		BytesToTarget: l.bytesToTarget.Load(),
		BytesToClient: l.bytesToClient.Load(),
	}
}

// waitHealed returns nil at once if the link is not partitioned, otherwise
// when it is healed, or ctx's error if ctx ends first.
func (l *Link) waitHealed(ctx context.Context) error {
	for {
		healed := l.blackhole.Load()
		if healed == nil {
			return nil
		}
		select {
		case <-*healed:
			// Loop: the link may have been partitioned again already.
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitDeliver waits until at has passed and the link is not partitioned.
// timer is the caller's own, stopped, timer; it is left stopped or expired.
func (l *Link) waitDeliver(ctx context.Context, timer *time.Timer, at time.Time) error {
	for {
		if err := l.waitHealed(ctx); err != nil {
			return err
		}
		wait := time.Until(at)
		if wait <= 0 {
			return nil
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
			// Loop: a partition may have begun while waiting.
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
	}
}

// stamp returns the delivery time of a chunk that arrived now, after one
// delivered at prev.
func (l *Link) stamp(now, prev time.Time) time.Time {
	d := l.delay.Load()
	return deliveryTime(now, prev, d.latency, d.offset())
}

func (l *Link) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off and retry, as
			// net/http does, logging once per run of failures.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
				l.log.Error("wan link accept failed; retrying", "err", err)
			} else {
				backoff = min(2*backoff, time.Second)
			}
			select {
			case <-time.After(backoff):
				continue
			case <-l.stop:
				return
			}
		}
		backoff = 0
		l.accepted.Add(1)
		p := newPipe(l, conn)
		if !l.register(p) {
			conn.Close()
			return
		}
		go p.run()
	}
}

// register adds p to the live connections and to the wait group, unless the
// link is closing.
func (l *Link) register(p *pipe) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.pipes[p] = struct{}{}
	l.active.Add(1)
	l.wg.Add(1) // safe: the accept loop's own count keeps wg above zero
	return true
}

func (l *Link) unregister(p *pipe) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pipes, p)
	l.active.Add(-1)
}

func (l *Link) snapshotLocked() []*pipe {
	pipes := make([]*pipe, 0, len(l.pipes))
	for p := range l.pipes {
		pipes = append(pipes, p)
	}
	return pipes
}

func (l *Link) getBuf() *[]byte {
	return l.bufs.Get().(*[]byte)
}

func (l *Link) release(c chunk) {
	if c.buf != nil {
		l.bufs.Put(c.buf)
	}
}
