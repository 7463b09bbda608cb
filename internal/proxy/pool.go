package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridiandb/meridian/internal/scram"
)

// serverConn is one authenticated connection to a PostgreSQL server, taken over from pgconn after
// login so the proxy can relay raw protocol bytes.
type serverConn struct {
	pool   *pool
	conn   net.Conn
	rd     *msgReader
	wr     *bufio.Writer
	pid    uint32
	secret []byte
	params map[string]string // ParameterStatus values reported at login

	// Owned by whoever holds the connection (a client, or the pool while idle).
	prepared map[string]bool   // internal statement names prepared on this connection
	stale    []string          // statements to close before the next use (see markStale)
	ahead    map[string]bool   // session mode: statements to prepare before the next use (see prepareAhead)
	late     map[string]bool   // session mode: statements prepared when the connection joined the session (see prepareJoined)
	shapes   map[string]string // transaction mode: the result shape of prepared statements, when known (see checkShapes)
	gen      uint64            // the pool's generation when it was dialed (RECONNECT bumps it)
	stateKey uint64            // the client session state (SETs) currently applied; 0 = server defaults
	broken   bool              // unusable: close instead of returning to the pool
	st       protoState        // protocol state: see serverstate.go
	reported map[string]string // identity parameters as last reported, once one changed (noteParameter)
	created  time.Time
	lastUsed time.Time  // when it was last released to the pool (or dialed)
	probe    *idleProbe // looks at the idle socket (alive)

	aborted atomic.Pointer[string] // why the proxy closed it under its user (the node went down)
}

func splitAddr(addr string) (host, port string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, "5432"
	}
	return host, port
}

// dialServer connects and logs in as user: with the SCRAM keys the proxy learnt from that user's own
// login when it has them (passthrough: no password anywhere), else with pgconn and the configured
// server password (pgconn handles every authentication method and TLS). Then it takes the socket over.
func dialServer(ctx context.Context, cfg *Config, address, user, database string, keys *scram.Keys, inBytes, outBytes *atomic.Uint64) (*serverConn, error) {
	password, maxMsg := cfg.ServerPassword, cfg.MaxMessageSize
	var h *pgconn.HijackedConn
	if keys != nil {
		var err error
		h, err = loginWithKeys(ctx, cfg, address, user, database, *keys)
		if err != nil && (password == "" || !errors.Is(err, errKeysUnusable)) {
			return nil, err
		}
	}
	if h == nil {
		pcfg, err := pgconn.ParseConfig(cfg.serverConnString(address, user, database, password))
		if err != nil {
			return nil, err
		}
		pc, err := pgconn.ConnectConfig(ctx, pcfg)
		if err != nil {
			return nil, err
		}
		if err := pc.SyncConn(ctx); err != nil {
			pc.Close(ctx)
			return nil, err
		}
		if h, err = pc.Hijack(); err != nil {
			pc.Close(ctx)
			return nil, err
		}
	}
	if tc, ok := h.Conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	cfg.TCPKeepalive.apply(h.Conn)
	now := time.Now()
	rw := counted(newRawIO(h.Conn), inBytes, outBytes)
	return &serverConn{
		conn: h.Conn, rd: newMsgReader(rw, 32<<10, maxMsg), wr: bufio.NewWriterSize(rw, 16<<10),
		pid: h.PID, secret: h.SecretKey, params: h.ParameterStatuses,
		prepared: map[string]bool{}, created: now, lastUsed: now, st: protoState{txn: 'I'}, probe: newIdleProbe(h.Conn),
	}, nil
}

// errKeysUnusable means the server wants something the keys cannot give (another method, or another
// verifier): a configured server password may still work.
var errKeysUnusable = errors.New("the user's SCRAM keys cannot log in to this server")

// loginWithKeys logs in with SCRAM-SHA-256 proving the client key learnt from the user's own login.
func loginWithKeys(ctx context.Context, cfg *Config, address, user, database string, keys scram.Keys) (*pgconn.HijackedConn, error) {
	tlsConf, err := cfg.serverTLSConfig(address)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		_ = conn.SetDeadline(dl)
	}
	if tlsConf != nil {
		if conn, err = startServerTLS(ctx, conn, tlsConf); err != nil {
			return nil, err
		}
	}
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": user, "database": database}})
	if err := fe.Flush(); err != nil {
		return nil, err
	}
	h := &pgconn.HijackedConn{Conn: conn, Frontend: fe, ParameterStatuses: map[string]string{}, TxStatus: 'I'}
	var sc *scram.Client
	for {
		msg, err := fe.Receive()
		if err != nil {
			return nil, err
		}
		switch m := msg.(type) {
		case *pgproto3.AuthenticationOk:
		case *pgproto3.AuthenticationSASL:
			if !slices.Contains(m.AuthMechanisms, scram.Mechanism) {
				return nil, fmt.Errorf("%w: the server offers %v", errKeysUnusable, m.AuthMechanisms)
			}
			sc = scram.NewClient(keys)
			first, err := sc.First()
			if err != nil {
				return nil, err
			}
			fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: scram.Mechanism, Data: first})
			if err := fe.Flush(); err != nil {
				return nil, err
			}
		case *pgproto3.AuthenticationSASLContinue:
			if sc == nil {
				return nil, errors.New("server sent SASLContinue out of order")
			}
			final, err := sc.Final(m.Data)
			if errors.Is(err, scram.ErrOtherVerifier) {
				return nil, fmt.Errorf("%w: %v", errKeysUnusable, err)
			}
			if err != nil {
				return nil, err
			}
			fe.Send(&pgproto3.SASLResponse{Data: final})
			if err := fe.Flush(); err != nil {
				return nil, err
			}
		case *pgproto3.AuthenticationSASLFinal:
			if sc == nil {
				return nil, errors.New("server sent SASLFinal out of order")
			}
			if err := sc.Verify(m.Data); err != nil {
				return nil, err
			}
		case *pgproto3.AuthenticationMD5Password, *pgproto3.AuthenticationCleartextPassword:
			return nil, fmt.Errorf("%w: the server asks for a password (md5 or cleartext), not SCRAM", errKeysUnusable)
		case *pgproto3.ParameterStatus:
			h.ParameterStatuses[m.Name] = m.Value
		case *pgproto3.BackendKeyData:
			h.PID, h.SecretKey = m.ProcessID, m.SecretKey
		case *pgproto3.ErrorResponse:
			return nil, pgconn.ErrorResponseToPgError(m)
		case *pgproto3.NoticeResponse:
		case *pgproto3.ReadyForQuery:
			_ = conn.SetDeadline(time.Time{})
			ok = true
			return h, nil
		default:
			return nil, fmt.Errorf("unexpected message %T during login", msg)
		}
	}
}

func (s *serverConn) close() { _ = s.conn.Close() }

// alive checks without blocking that the server has not spoken since the connection went idle: an
// idle connection has nothing to say unless something happened to it (a restarted or crashed server
// leaves an EOF behind, a terminated backend a FATAL ErrorResponse, then an EOF). It peeks at the
// socket with MSG_PEEK|MSG_DONTWAIT, which neither waits nor consumes anything (see idleProbe).
func (s *serverConn) alive() bool {
	if s.rd.buffered() > 0 {
		return false
	}
	if s.probe == nil {
		s.probe = newIdleProbe(s.conn)
	}
	return s.probe.quietNow()
}

// poolKey names a pool: server connections are shared only between clients of the same user and
// database on the same node.
type poolKey struct{ node, user, database string }

// pool bounds and reuses the server connections of one poolKey.
type pool struct {
	key     poolKey
	address string
	p       *Proxy

	dropped atomic.Bool      // removed from the proxy's pool map (dropIdlePools): clients get a new pool
	active  prometheus.Gauge // server connections lent to clients
	byRoute [3]routeCounters // indexed by routeIndex
	mu      sync.Mutex       // guards the fields below
	idle    []*serverConn
	open    int                      // connections open or being dialed
	waiters []chan *serverConn       // FIFO of clients waiting for a connection; nil handed = "dial one"
	conns   map[*serverConn]struct{} // every open connection, idle or lent
	gen     uint64                   // RECONNECT: connections of older generations are closed when returned
	retired bool                     // its node left the configuration, or it was dropped: connections are closed when returned
	params  map[string]string        // ParameterStatus of the first connection, for client logins
}

// routeCounters are a pool's per-route counters, resolved once instead of per query.
type routeCounters struct{ queries, reads, transactions prometheus.Counter }

var routeLabels = [3]string{routeLocal, routeRemote, routePrimary}

func newPool(k poolKey, address string, p *Proxy) *pool {
	pl := &pool{key: k, address: address, p: p, active: p.metrics.serversActive.WithLabelValues(k.node)}
	for i, r := range routeLabels {
		pl.byRoute[i] = routeCounters{
			queries:      p.metrics.queries.WithLabelValues(r, k.node),
			reads:        p.metrics.reads.WithLabelValues(r, k.node),
			transactions: p.metrics.transactions.WithLabelValues(r, k.node),
		}
	}
	return pl
}

func (pl *pool) counters(route string) routeCounters {
	switch route {
	case routeLocal:
		return pl.byRoute[0]
	case routeRemote:
		return pl.byRoute[1]
	}
	return pl.byRoute[2]
}

// tryIdle lends an idle connection if one is usable, without waiting.
func (pl *pool) tryIdle() *serverConn {
	for {
		pl.mu.Lock()
		if len(pl.idle) == 0 {
			pl.mu.Unlock()
			return nil
		}
		sc := pl.idle[len(pl.idle)-1]
		pl.idle = pl.idle[:len(pl.idle)-1]
		pl.mu.Unlock()
		if pl.usable(sc) {
			return sc
		}
		pl.discard(sc)
	}
}

// errPoolBusy: acquireNow found no idle connection and the pool full.
var errPoolBusy = errors.New("every server connection of the pool is in use")

// acquire lends a server connection, dialing one if the pool is not full, else waiting up to
// query_wait_timeout.
func (pl *pool) acquire(ctx context.Context) (*serverConn, error) { return pl.lend(ctx, true) }

// acquireNow is acquire without the wait: errPoolBusy when it would wait.
func (pl *pool) acquireNow(ctx context.Context) (*serverConn, error) { return pl.lend(ctx, false) }

func (pl *pool) lend(ctx context.Context, wait bool) (*serverConn, error) {
	start := time.Now()
	var deadline *time.Timer // started on the first wait: most checkouts find an idle connection
	defer func() {
		if deadline != nil {
			deadline.Stop()
		}
	}()
	for {
		pl.mu.Lock()
		for len(pl.idle) > 0 {
			sc := pl.idle[len(pl.idle)-1]
			pl.idle = pl.idle[:len(pl.idle)-1]
			pl.mu.Unlock()
			if pl.usable(sc) {
				pl.p.metrics.poolWait.Observe(time.Since(start).Seconds())
				return sc, nil
			}
			pl.discard(sc)
			pl.mu.Lock()
		}
		if pl.open < int(pl.p.poolSize.Load()) {
			pl.open++
			pl.mu.Unlock()
			sc, err := pl.dial(ctx)
			if err != nil {
				pl.slotFreed()
				return nil, err
			}
			pl.p.metrics.poolWait.Observe(time.Since(start).Seconds())
			return sc, nil
		}
		if !wait {
			pl.mu.Unlock()
			return nil, errPoolBusy
		}
		ch := make(chan *serverConn, 1)
		pl.waiters = append(pl.waiters, ch)
		pl.mu.Unlock()
		pl.p.metrics.clientsWaiting.Inc()
		if deadline == nil {
			deadline = time.NewTimer(pl.p.limits.Load().queryWait - time.Since(start))
		}
		select {
		case sc := <-ch:
			pl.p.metrics.clientsWaiting.Dec()
			if sc != nil {
				if pl.usable(sc) {
					pl.p.metrics.poolWait.Observe(time.Since(start).Seconds())
					return sc, nil
				}
				pl.discard(sc)
			}
			// A slot was freed (or the handed connection was dead): loop and dial.
		case <-deadline.C:
			pl.p.metrics.clientsWaiting.Dec()
			if sc := pl.cancelWait(ch); sc != nil {
				return sc, nil
			}
			return nil, &pgError{Severity: "ERROR", Code: codeTooManyConnections,
				Message: fmt.Sprintf("no server connection to node %s for user %q database %q became free within %v",
					pl.key.node, pl.key.user, pl.key.database, pl.p.limits.Load().queryWait),
				Hint: "all pool_size connections are busy; raise pool_size or query_wait_timeout, or shorten transactions"}
		case <-ctx.Done():
			pl.p.metrics.clientsWaiting.Dec()
			if sc := pl.cancelWait(ch); sc != nil {
				pl.release(sc)
			}
			return nil, ctx.Err()
		}
	}
}

// cancelWait removes a waiter; if a connection was handed to it meanwhile, it is returned.
func (pl *pool) cancelWait(ch chan *serverConn) *serverConn {
	pl.mu.Lock()
	for i, w := range pl.waiters {
		if w == ch {
			pl.waiters = append(pl.waiters[:i], pl.waiters[i+1:]...)
			pl.mu.Unlock()
			return nil
		}
	}
	pl.mu.Unlock()
	sc := <-ch // it was handed something meanwhile
	if sc == nil {
		pl.wakeOne() // pass the free slot on
	}
	return sc
}

// recentlyReleased is how long after its release a connection is lent again without looking at its
// socket (alive). Under load most connections come back within it (the idle list is a stack: with
// pgbench -S at 16 clients, about 80 % of checkouts), and the look is a system call, a few per cent
// of the proxy's time per statement on a virtual machine. What alive finds — a terminated backend's
// FATAL, a crashed server's EOF — is still found whenever it arrived more than this before the
// checkout; one that arrived within it surfaces as it would a moment after the look, as a lost
// connection. (The build before issue 13 looked only after a second idle; PgBouncer skips its check
// for 30 s after a use, server_check_delay.)
const recentlyReleased = time.Millisecond

func (pl *pool) usable(sc *serverConn) bool {
	cfg := pl.p.cfg
	now := time.Now()
	if cfg.ServerLifetime > 0 && now.Sub(sc.created) > cfg.ServerLifetime {
		return false
	}
	if now.Sub(sc.lastUsed) < recentlyReleased && sc.aborted.Load() == nil && sc.rd.buffered() == 0 {
		return true // released clean a moment ago (release lends only clean connections)
	}
	if !sc.alive() {
		return false // one system call that does not wait: cheaper than a client's query failing
	}
	return true
}

func (pl *pool) dial(ctx context.Context) (*serverConn, error) {
	ctx, cancel := context.WithTimeout(ctx, pl.p.cfg.ServerConnectTimeout)
	defer cancel()
	keys := serverKeysFrom(ctx) // only the keys of the client this dial is for
	sc, err := dialServer(ctx, &pl.p.cfg, pl.address, pl.key.user, pl.key.database, keys, &pl.p.bytes.serverIn, &pl.p.bytes.serverOut)
	if err != nil {
		pl.p.metrics.serverConnectErrors.WithLabelValues(pl.key.node).Inc()
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return nil, toPgError(pe)
		}
		return nil, newError(codeConnectionFailure, "cannot connect to node %s at %s: %v", pl.key.node, pl.address, err)
	}
	sc.pool = pl
	pl.mu.Lock()
	if pl.params == nil {
		pl.params = sc.params
	}
	if pl.conns == nil {
		pl.conns = map[*serverConn]struct{}{}
	}
	pl.conns[sc] = struct{}{}
	sc.gen = pl.gen
	pl.mu.Unlock()
	pl.p.metrics.serversOpen.WithLabelValues(pl.key.node).Inc()
	return sc, nil
}

// release returns a connection: to a waiting client first, else to the idle list. Broken
// connections are closed and their slot given to a waiter.
func (pl *pool) release(sc *serverConn) {
	pl.mu.Lock()
	if sc.broken || sc.gen != pl.gen || pl.retired || pl.open > int(pl.p.poolSize.Load()) {
		// Broken, from before a RECONNECT, its node left the configuration, or pool_size shrank.
		pl.mu.Unlock()
		pl.discard(sc)
		return
	}
	sc.lastUsed = time.Now()
	if len(pl.waiters) > 0 {
		ch := pl.waiters[0]
		pl.waiters = pl.waiters[1:]
		pl.mu.Unlock()
		ch <- sc
		return
	}
	pl.idle = append(pl.idle, sc)
	pl.mu.Unlock()
}

// discard closes a connection and frees its slot.
func (pl *pool) discard(sc *serverConn) {
	sc.close()
	pl.mu.Lock()
	delete(pl.conns, sc)
	pl.mu.Unlock()
	pl.p.metrics.serversOpen.WithLabelValues(pl.key.node).Dec()
	pl.slotFreed()
}

// abortAll closes every connection of the pool, idle or lent: the node stopped answering, and a
// statement waiting on a server that cannot be reached (a network partition delivers nothing and
// resets nothing) would otherwise hang until TCP gives up, many minutes later. Clients in the middle
// of a statement get an error that says why; idle connections are found closed and replaced.
func (pl *pool) abortAll(reason string) int {
	pl.mu.Lock()
	all := make([]*serverConn, 0, len(pl.conns))
	for sc := range pl.conns {
		all = append(all, sc)
	}
	pl.mu.Unlock()
	for _, sc := range all {
		sc.aborted.Store(&reason)
		sc.close()
	}
	return len(all)
}

// slotFreed frees a slot and lets the first waiter dial into it.
func (pl *pool) slotFreed() {
	pl.mu.Lock()
	pl.open--
	pl.mu.Unlock()
	pl.wakeOne()
}

// wakeAll tells every waiter to try again (pool_size grew).
func (pl *pool) wakeAll() {
	pl.mu.Lock()
	waiters := pl.waiters
	pl.waiters = nil
	pl.mu.Unlock()
	for _, ch := range waiters {
		ch <- nil
	}
}

// wakeOne tells the first waiter, if any, to try again (nil means "a slot is free").
func (pl *pool) wakeOne() {
	pl.mu.Lock()
	var ch chan *serverConn
	if len(pl.waiters) > 0 {
		ch = pl.waiters[0]
		pl.waiters = pl.waiters[1:]
	}
	pl.mu.Unlock()
	if ch != nil {
		ch <- nil
	}
}

// welcome returns the ParameterStatus values to greet a client with, connecting once if needed (which
// also proves the user and database exist).
func (pl *pool) welcome(ctx context.Context) (map[string]string, error) {
	pl.mu.Lock()
	params := pl.params
	pl.mu.Unlock()
	if params != nil {
		return params, nil
	}
	sc, err := pl.acquire(ctx)
	if err != nil {
		return nil, err
	}
	pl.release(sc)
	return sc.params, nil
}

// reap closes idle connections past server_idle_timeout or server_lifetime.
func (pl *pool) reap(now time.Time) {
	cfg := pl.p.cfg
	pl.mu.Lock()
	var old []*serverConn
	keep := pl.idle[:0]
	for _, sc := range pl.idle {
		if (cfg.ServerIdleTimeout > 0 && now.Sub(sc.lastUsed) > cfg.ServerIdleTimeout) ||
			(cfg.ServerLifetime > 0 && now.Sub(sc.created) > cfg.ServerLifetime) {
			old = append(old, sc)
		} else {
			keep = append(keep, sc)
		}
	}
	pl.idle = keep
	pl.mu.Unlock()
	for _, sc := range old {
		pl.discard(sc)
	}
}

// closeIdle closes every idle connection (shutdown, or the node went away).
func (pl *pool) closeIdle() {
	pl.mu.Lock()
	idle := pl.idle
	pl.idle = nil
	pl.mu.Unlock()
	for _, sc := range idle {
		pl.discard(sc)
	}
}
