package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridiandb/meridian/internal/auth"
	"github.com/meridiandb/meridian/internal/classify"
)

// Proxy is one running proxy. Create it with New, start it with Start (or Run), stop it with Close.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	disc   *poller
	lag    *lagMonitor
	global *globalPosition // the primary's WAL position for reads in global mode
	auth   *auth.Store
	tls    *tlsServer
	pauses *pauses

	reloadSource atomic.Pointer[func() (Config, error)] // SetReloadSource
	applied      atomic.Pointer[Config]                 // the configuration last applied (cfg, then reloads)

	bytes        byteCounters
	poolSize     atomic.Int64           // pool_size, which a reload may change
	limits       atomic.Pointer[limits] // the client limits, which a reload may change
	draining     atomic.Bool            // Shutdown began: sessions end once out of a transaction
	shutdownOnce sync.Once
	classifier   *classify.Classifier
	vol          *volatility // per database: the functions and views whose use needs the primary
	auto         autoStats   // parameterized texts seen (auto_prepare)
	metrics      *metrics

	ln      net.Listener
	httpLn  net.Listener
	httpSrv *http.Server

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the proxy started
	closed sync.Once

	nclients  atomic.Int64  // accepted client connections, counted from the accept (max_client_conn)
	rejecting atomic.Int64  // connections being turned away (reject)
	rr        atomic.Uint64 // round-robin counter over equally good replicas

	mu      sync.Mutex // guards pools and clients
	pools   map[poolKey]*pool
	clients map[uint32]*client // by the BackendKeyData process ID the proxy handed out
}

// New prepares a proxy; it opens nothing.
func New(cfg Config, log *slog.Logger) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		cfg: cfg, log: log, ctx: ctx, cancel: cancel,
		classifier: classify.New(classify.Config{WriteFunctions: cfg.WriteFunctions}),
		pools:      map[poolKey]*pool{}, clients: map[uint32]*client{},
	}
	p.metrics = newMetrics(p)
	p.disc = newPoller(cfg, log.With("component", "discovery"))
	p.vol = newVolatility(cfg, log.With("component", "volatility"), p.classifier)
	p.disc.onRefreshFunctions = p.vol.refreshAll
	p.disc.onNodeDown = p.abortNode
	p.lag = newLagMonitor(cfg, log.With("component", "lag"), p.metrics)
	p.global = &globalPosition{p: p}
	auth, err := newAuthStore(&p.cfg, func() (string, error) {
		t, err := p.primaryTarget(p.disc.Current())
		return t.node.Address, err
	})
	if err != nil {
		return nil, err
	}
	p.auth = auth
	p.pauses = newPauses()
	p.poolSize.Store(int64(cfg.PoolSize))
	p.limits.Store(limitsOf(&cfg))
	p.applied.Store(&cfg)
	if p.tls, err = newTLSServer(cfg.ClientTLS); err != nil {
		return nil, err
	}
	return p, nil
}

// Start listens on the client and HTTP addresses and starts serving; it returns once both listen.
func (p *Proxy) Start() error {
	ln, err := net.Listen("tcp", p.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (config key listen): %w", p.cfg.Listen, err)
	}
	p.ln = ln
	if p.cfg.HTTPListen != "" {
		hl, err := net.Listen("tcp", p.cfg.HTTPListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (config key http_listen): %w", p.cfg.HTTPListen, err)
		}
		p.httpLn = hl
		p.httpSrv = &http.Server{Handler: p.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
		p.wg.Go(func() { _ = p.httpSrv.Serve(hl) })
	}
	p.wg.Go(func() { p.disc.run(p.ctx) })
	p.wg.Go(func() { p.lag.run(p.ctx) })
	p.wg.Go(p.maintain)
	p.wg.Go(p.acceptLoop)
	p.log.Info("proxy listening", "listen", ln.Addr().String(), "region", p.cfg.Region, "pool_mode", string(p.cfg.PoolMode))
	return nil
}

// Run starts the proxy and serves until ctx ends, then shuts down gracefully (shutdown_timeout).
func (p *Proxy) Run(ctx context.Context) error {
	return p.RunUntil(ctx, func() time.Duration { return p.cfg.ShutdownTimeout })
}

// RunUntil is Run with the shutdown's grace period decided when ctx ends (SIGTERM and SIGINT differ).
func (p *Proxy) RunUntil(ctx context.Context, grace func() time.Duration) error {
	if err := p.Start(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		p.Shutdown(grace())
	case <-p.ctx.Done(): // SHUTDOWN from the admin console
	}
	return p.Close()
}

// Shutdown stops accepting clients, lets running transactions finish for up to timeout (sessions end
// with SQLSTATE 57P01 as soon as they are out of a transaction), then ends the remaining sessions with
// 57P01 and closes everything.
func (p *Proxy) Shutdown(timeout time.Duration) {
	p.shutdownOnce.Do(func() {
		p.log.Info("shutting down: no new clients, waiting for running transactions", "timeout", timeout)
		if p.ln != nil {
			p.ln.Close()
		}
		p.draining.Store(true)
		for _, c := range p.clientList() {
			c.wake()
		}
		deadline := time.Now().Add(timeout)
		for len(p.clientList()) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if left := p.clientList(); len(left) > 0 {
			p.log.Warn("shutdown timeout: terminating the sessions still in a transaction", "clients", len(left))
			for _, c := range left {
				c.terminate(&pgError{Code: codeAdminShutdown, Message: "terminating connection because the proxy is shutting down",
					Detail: "the transaction in progress was rolled back"})
			}
			for end := time.Now().Add(time.Second); len(p.clientList()) > 0 && time.Now().Before(end); {
				time.Sleep(10 * time.Millisecond)
			}
		}
		p.Close()
	})
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// HTTPAddr is the address of /metrics, /healthz and /readyz ("" when disabled).
func (p *Proxy) HTTPAddr() string {
	if p.httpLn == nil {
		return ""
	}
	return p.httpLn.Addr().String()
}

// SyncDiscovery polls every node now and returns after a complete poll (tests and admin commands).
func (p *Proxy) SyncDiscovery(ctx context.Context) error {
	start := p.disc.Current().Seq
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for p.disc.Current().Seq < start+2 { // +2: a poll already running when asked may predate the change
		p.disc.Refresh()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Discovery exposes the current view of the cluster.
func (p *Proxy) Discovery() Discovery { return p.disc }

// WaitReady blocks until discovery has found a primary, or ctx ends.
func (p *Proxy) WaitReady(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for p.disc.Current().Primary == "" {
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxy found no primary: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Close shuts the proxy down. Order: stop accepting clients and HTTP → close client connections
// (their goroutines return server connections) → stop discovery and maintenance → close every pool's
// idle server connections. It is idempotent.
func (p *Proxy) Close() error {
	p.closed.Do(func() {
		if p.ln != nil {
			p.ln.Close()
		}
		if p.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = p.httpSrv.Shutdown(ctx)
			cancel()
		}
		p.mu.Lock()
		for _, c := range p.clients {
			c.conn.Close()
			c.mu.Lock()
			if c.cur != nil {
				c.cur.conn.Close() // a client waiting on a long query must not hold up shutdown
			}
			c.mu.Unlock()
		}
		p.mu.Unlock()
		p.cancel()
		p.wg.Wait()
		p.vol.close()
		p.global.close()
		p.auth.Close()
		p.mu.Lock()
		pools := p.pools
		p.mu.Unlock()
		for _, pl := range pools {
			pl.closeIdle()
		}
	})
	return nil
}

func (p *Proxy) acceptLoop() {
	var backoff time.Duration
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Error("accept failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		// max_client_conn counts sockets from the accept on, before their startup packet or TLS
		// handshake: silent or slow connections take places, and each is bounded by
		// client_login_timeout, so they cannot pile up beyond the limit.
		if max := p.limits.Load().maxClientConn; p.nclients.Add(1) > int64(max) {
			p.nclients.Add(-1)
			p.metrics.clientsRejected.Inc()
			p.reject(conn, newError(codeTooManyConnections, "too many client connections: max_client_conn is %d", max))
			continue
		}
		p.wg.Go(func() {
			defer p.nclients.Add(-1)
			p.serveClient(conn)
		})
	}
}

// maxRejecting bounds the connections being turned away at once; beyond it they are closed without
// a message.
const maxRejecting = 64

// reject turns a connection away at once with a FATAL error (not waiting for its startup packet, as
// PgBouncer does), then drains what the client already sent for up to a second so that closing does
// not reset the connection before the client reads the error.
func (p *Proxy) reject(conn net.Conn, err error) {
	if p.rejecting.Add(1) > maxRejecting {
		p.rejecting.Add(-1)
		conn.Close()
		return
	}
	p.wg.Go(func() {
		defer p.rejecting.Add(-1)
		defer conn.Close()
		if p.cancelWhenFull(conn) {
			return
		}
		p.metrics.errors.WithLabelValues(sqlstateClass(toPgError(err).Code)).Inc()
		writeFatal(conn, err)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(conn, 64<<10))
	})
}

// cancelWhenFull serves a CancelRequest that arrives while max_client_conn turns connections away:
// cancelling a running query is what a client may need most when the proxy is full, and a cancel
// connection lives only for the request. It reads the connection's first 16 bytes for a moment (a
// cancel is sent at once after connecting) and reports whether they were a CancelRequest.
func (p *Proxy) cancelWhenFull(conn net.Conn) bool {
	_ = conn.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
	var b [16]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil ||
		binary.BigEndian.Uint32(b[0:]) != 16 || binary.BigEndian.Uint32(b[4:]) != cancelRequestCode {
		return false
	}
	p.cancelRequest(binary.BigEndian.Uint32(b[8:]), b[12:16])
	return true
}

// maintain reaps idle server connections and exports node states.
func (p *Proxy) maintain() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case now := <-t.C:
			p.mu.Lock()
			pools := make([]*pool, 0, len(p.pools))
			for _, pl := range p.pools {
				pools = append(pools, pl)
			}
			p.mu.Unlock()
			snap := p.disc.Current()
			for _, pl := range pools {
				pl.reap(now)
				if n, ok := snap.Node(pl.key.node); ok && !n.Up {
					pl.closeIdle() // the node is down: its idle connections are dead
				}
			}
			p.dropIdlePools()
		}
	}
}

// pool returns the pool for (node, user, database), creating it.
func (p *Proxy) pool(node NodeState, user, database string) *pool {
	k := poolKey{node: node.Name, user: user, database: database}
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.pools[k]
	if pl == nil {
		pl = newPool(k, node.Address, p)
		p.pools[k] = pl
	}
	return pl
}

// loginPool returns the greeting parameters of (node, user, database) for a client logging in. A pool
// that does not exist yet is registered only once a server login as that user to that database has
// succeeded: failed logins with made-up names leave nothing behind.
func (p *Proxy) loginPool(ctx context.Context, node NodeState, user, database string) (map[string]string, error) {
	k := poolKey{node: node.Name, user: user, database: database}
	p.mu.Lock()
	pl := p.pools[k]
	p.mu.Unlock()
	if pl != nil {
		return pl.welcome(ctx)
	}
	pl = newPool(k, node.Address, p)
	params, err := pl.welcome(ctx)
	if err != nil {
		pl.closeIdle()
		return nil, err
	}
	p.mu.Lock()
	if existing := p.pools[k]; existing != nil {
		pl.mu.Lock()
		pl.retired = true // another login registered one meanwhile: ours closes its connection
		pl.mu.Unlock()
		p.mu.Unlock()
		pl.closeIdle()
		return params, nil
	}
	p.pools[k] = pl
	p.mu.Unlock()
	return params, nil
}

// dropIdlePools forgets pools with no server connection and no waiting client (their connections
// were reaped after server_idle_timeout, or never opened), so that pools — and their metric series,
// which are collected from the pool map — do not accumulate for every (user, database) ever seen.
// A client that cached a dropped pool sees it dropped at its next checkout and gets a new one.
func (p *Proxy) dropIdlePools() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, pl := range p.pools {
		pl.mu.Lock()
		empty := pl.open == 0 && len(pl.waiters) == 0 && len(pl.conns) == 0
		if empty {
			pl.retired = true
		}
		pl.mu.Unlock()
		if empty {
			pl.dropped.Store(true)
			delete(p.pools, k)
		}
	}
}

// abortNode closes every server connection to a node that stopped answering the health checks.
func (p *Proxy) abortNode(node, reason string) {
	p.mu.Lock()
	var pools []*pool
	for k, pl := range p.pools {
		if k.node == node {
			pools = append(pools, pl)
		}
	}
	p.mu.Unlock()
	n := 0
	for _, pl := range pools {
		n += pl.abortAll("the node stopped answering health checks (" + reason + ")")
	}
	if n > 0 {
		p.log.Warn("closed the server connections to a node that stopped answering", "node", node, "connections", n)
	}
}

// target is where a statement goes.
type target struct {
	node  NodeState
	route string // routeLocal, routeRemote or routePrimary
	read  bool   // the statement is read-only (a replica may run it), wherever it ends up
}

// primaryTarget returns the current primary or an error that says why there is none.
func (p *Proxy) primaryTarget(snap *Snapshot) (target, error) {
	if snap.Primary == "" {
		for _, n := range snap.Nodes {
			if n.LastSeenPrimary && !n.Up {
				return target{}, &pgError{Severity: "ERROR", Code: codeCannotConnectNow,
					Message: fmt.Sprintf("the primary %s (region %s) does not answer this proxy (region %s): writes cannot be served",
						n.Name, n.Region, p.cfg.Region),
					Detail: "last error: " + n.Err,
					Hint:   "reads still work from replicas (possibly stale); writes resume when the primary is reachable again or another node is promoted"}
			}
		}
		for _, n := range snap.Nodes {
			if n.Up {
				return target{}, &pgError{Severity: "ERROR", Code: codeCannotConnectNow,
					Message: "no primary is available to take writes: the cluster is between primaries or the primary is down",
					Detail:  p.nodeReport(snap),
					Hint:    "reads still work; retry the write in a few seconds"}
			}
		}
		e := p.noServerError(snap) // no node answers at all: say which and why
		e.Message = "no primary is available to take writes: " + strings.TrimPrefix(e.Message, "no server is available: ")
		return target{}, e
	}
	n, _ := snap.Node(snap.Primary)
	return target{node: n, route: routePrimary}, nil
}

// replicaTarget picks a healthy replica in the proxy's region (round robin), else the primary if it is
// in the proxy's region, else the nearest replica elsewhere by measured round-trip time, else the
// primary.
func (p *Proxy) replicaTarget(snap *Snapshot) (target, error) {
	eligible := func(n *NodeState) bool {
		return n.Up && !n.Primary && n.Name != snap.Primary && !p.lag.tooFarBehind(n.Name)
	}
	locals := 0
	var nearest *NodeState
	for i := range snap.Nodes {
		n := &snap.Nodes[i]
		if !eligible(n) {
			continue
		}
		if n.Region == p.cfg.Region {
			locals++
		} else if nearest == nil || n.RTT < nearest.RTT {
			nearest = n
		}
	}
	if locals > 0 {
		k := 0
		if locals > 1 { // round robin; one local replica (the common case) needs no shared counter
			k = int(p.rr.Add(1) % uint64(locals))
		}
		for i := range snap.Nodes {
			n := &snap.Nodes[i]
			if eligible(n) && n.Region == p.cfg.Region {
				if k == 0 {
					return target{node: *n, route: routeLocal}, nil
				}
				k--
			}
		}
	}
	// No replica here: a primary in this region is nearer than any other region's replica.
	if pn, ok := snap.Node(snap.Primary); ok && pn.Region == p.cfg.Region {
		return target{node: pn, route: routePrimary}, nil
	}
	if nearest != nil {
		return target{node: *nearest, route: routeRemote}, nil
	}
	t, err := p.primaryTarget(snap)
	if err != nil {
		return target{}, p.noServerError(snap)
	}
	return t, nil
}

// httpHandler serves /metrics, /healthz and /readyz.
func (p *Proxy) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(p.metrics.reg, promhttp.HandlerOpts{}))
	if p.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		snap := p.disc.Current()
		reads := false
		for _, n := range snap.Nodes {
			reads = reads || n.Up
		}
		// The first line is the verdict; one line per node follows (its role, or why it is down).
		if p.draining.Load() || (p.cfg.Readyz.Primary && snap.Primary == "") || (p.cfg.Readyz.Reads && !reads) {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: primary=%q, a node for reads=%v, shutting down=%v\n%s\n", snap.Primary, reads, p.draining.Load(), p.nodeReport(snap))
			return
		}
		fmt.Fprintf(w, "ready: primary %q, a node for reads=%v\n%s\n", snap.Primary, reads, p.nodeReport(snap))
	})
	return mux
}

// register gives a new client a unique BackendKeyData.
func (p *Proxy) register(c *client) {
	secret := make([]byte, 4)
	_, _ = rand.Read(secret)
	c.secret = secret
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		pid := binary.BigEndian.Uint32(b[:]) & 0x7fffffff
		if _, taken := p.clients[pid]; !taken && pid != 0 {
			c.pid = pid
			p.clients[pid] = c
			return
		}
	}
}

// rekey gives c the process ID pid instead of its random one, unless another client has it.
func (p *Proxy) rekey(c *client, pid uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, taken := p.clients[pid]; taken || pid == 0 {
		return false
	}
	if p.clients[c.pid] == c {
		delete(p.clients, c.pid)
	}
	c.pid = pid
	p.clients[pid] = c
	return true
}

func (p *Proxy) unregister(c *client) {
	p.mu.Lock()
	if p.clients[c.pid] == c {
		delete(p.clients, c.pid)
	}
	p.mu.Unlock()
}

// cancel forwards a client's CancelRequest to the server running its query, if any. Per protocol the
// requester learns nothing about the outcome.
func (p *Proxy) cancelRequest(pid uint32, secret []byte) {
	p.mu.Lock()
	c := p.clients[pid]
	p.mu.Unlock()
	if c == nil || !constantTimeEqual(c.secret, secret) {
		p.log.Debug("cancel request for an unknown client ignored", "pid", pid)
		return
	}
	// c.mu is held until the server has taken the cancel: the session cannot give its connection
	// back to the pool meanwhile, so the cancel reaches only the statement of the client that asked
	// (a backend that has gone idle by then ignores it, as PostgreSQL does while reading a command).
	c.mu.Lock()
	defer c.mu.Unlock()
	sc := c.cur
	if sc == nil {
		// Nothing of the client's on a server: a statement waiting in the proxy ends (see
		// client.canceled); an idle session's cancel is dropped at its next statement.
		select {
		case c.canceled <- struct{}{}:
		default:
		}
		return
	}
	if err := p.sendCancel(sc); err != nil {
		p.log.Warn("cannot forward cancel request", "node", sc.pool.key.node, "err", err)
	}
}

// sendCancel delivers a CancelRequest for sc's backend to its server (over TLS when server_tls asks
// for it) and waits until the server has processed it (it closes the connection).
func (p *Proxy) sendCancel(sc *serverConn) error {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ServerConnectTimeout)
	defer cancel()
	tlsConf, err := p.cfg.serverTLSConfig(sc.pool.address)
	if err != nil {
		return err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", sc.pool.address)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(p.cfg.ServerConnectTimeout))
	if tlsConf != nil {
		if conn, err = startServerTLS(ctx, conn, tlsConf); err != nil {
			return err
		}
	}
	msg := make([]byte, 16, 12+len(sc.secret))
	binary.BigEndian.PutUint32(msg[0:], uint32(12+len(sc.secret)))
	binary.BigEndian.PutUint32(msg[4:], cancelRequestCode)
	binary.BigEndian.PutUint32(msg[8:], sc.pid)
	msg = append(msg[:12], sc.secret...)
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	_, _ = bufio.NewReader(conn).ReadByte() // EOF once the postmaster has signalled the backend
	return nil
}

func constantTimeEqual(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := range a {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// SetReloadSource gives the admin console's RELOAD the configuration to apply (typically: read the
// configuration file again).
func (p *Proxy) SetReloadSource(f func() (Config, error)) { p.reloadSource.Store(&f) }

// Reload applies a new configuration without dropping connections: the client TLS certificate, key
// and CA files (read again even when their names did not change), the auth rules and the auth file.
// Other changed keys need a restart; they are returned (and logged) so the operator knows. On error
// nothing is applied.
func (p *Proxy) Reload(cfg Config) (needRestart []string, err error) {
	defer func() {
		result := "ok"
		if err != nil {
			result = "error"
		}
		p.metrics.reloads.WithLabelValues(result).Inc()
	}()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ClientTLS.Mode != p.tls.mode {
		needRestart = append(needRestart, "client_tls.mode")
	} else if err := p.tls.reload(cfg.ClientTLS); err != nil {
		return nil, fmt.Errorf("client_tls: %w", err)
	}
	if err := p.auth.Reload(cfg.Auth); err != nil {
		return nil, err
	}
	old := *p.applied.Load()
	if cfg.PoolSize != old.PoolSize {
		p.poolSize.Store(int64(cfg.PoolSize))
		for _, pl := range p.poolList() {
			pl.wakeAll() // a larger pool lets waiting clients dial now
		}
	}
	if !slices.Equal(old.Nodes, cfg.Nodes) {
		p.setNodes(cfg.Nodes)
	}
	p.limits.Store(limitsOf(&cfg))
	p.applied.Store(&cfg)
	for _, e := range p.cfg.entries(cfg, DefaultConfig()) {
		if e.pending != "" {
			needRestart = append(needRestart, e.key)
		}
	}
	slices.Sort(needRestart)
	p.log.Info("configuration reloaded", "applied", "client_tls files, auth, pool_size, nodes", "need_restart", needRestart)
	for _, k := range needRestart {
		p.log.Warn("changed setting needs a restart to apply", "key", k)
	}
	return needRestart, nil
}

// setNodes applies a new node list: discovery and lag sampling follow it at once; pools of nodes
// that left close their connections as they come back (transactions in progress finish).
func (p *Proxy) setNodes(nodes []NodeConfig) {
	p.disc.setNodes(nodes)
	p.lag.setNodes(nodes)
	keep := map[string]string{}
	for _, n := range nodes {
		keep[n.Name] = n.Address
	}
	for _, pl := range p.poolList() {
		if addr, ok := keep[pl.key.node]; !ok || addr != pl.address {
			pl.mu.Lock()
			pl.retired = true
			pl.mu.Unlock()
			pl.closeIdle()
		}
	}
	p.mu.Lock()
	for k, pl := range p.pools {
		if pl.retired {
			delete(p.pools, k) // clients that cached it see the new address and get a new pool
		}
	}
	p.mu.Unlock()
	p.disc.Refresh()
}

// limits are the client limits a reload may change; sessions read them when they need them.
type limits struct {
	maxClientConn                              int
	queryWait, clientIdle, idleTx, clientWrite time.Duration
}

func limitsOf(c *Config) *limits {
	return &limits{maxClientConn: c.MaxClientConn, queryWait: c.QueryWaitTimeout, clientIdle: c.ClientIdleTimeout,
		idleTx: c.IdleTransactionTimeout, clientWrite: c.ClientWriteTimeout}
}
