package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridiandb/meridian/internal/classify"
	"github.com/meridiandb/meridian/internal/scram"
	"github.com/meridiandb/meridian/internal/topology"
)

// client is one client connection and its session state. Its fields are owned by the client's
// goroutine except where noted.
type client struct {
	p    *Proxy
	conn net.Conn
	rd   *msgReader
	wr   *bufio.Writer
	log  *slog.Logger
	out  []byte // scratch for messages the proxy composes

	user, database string
	keys           *scram.Keys // SCRAM keys this client proved at login: its own server logins may use them
	pid            uint32
	secret         []byte

	startup  []kv             // startup parameters replayed on every server connection
	sets     []trackedSet     // session SETs, replayed on every server connection
	pending  []classify.SetOp // SETs inside the current transaction (applied at COMMIT)
	stateKey uint64           // hash of startup+sets; equal keys mean equal session state
	spKey    string           // the session's search_path as set (SET or startup), "" for the server's default

	routeMode       string          // meridian.route: auto, primary or replica
	defaults        SessionDefaults // consistency settings before SET (config, by user and database)
	consistency     string          // meridian.consistency: eventual, bounded, session or global
	commitLSN       topology.LSN    // meridian.commit_lsn: where the session's last write commit ended
	minLSN          topology.LSN    // meridian.min_lsn: reads wait for replicas to replay this far
	maxStaleness    time.Duration   // meridian.max_staleness, for bounded reads
	maxWait         time.Duration   // meridian.max_wait: how long a read may wait for a replica to catch up
	defaultReadOnly bool            // default_transaction_read_only for the session
	// defaultSerializable: default_transaction_isolation is serializable, which a hot standby
	// refuses ("cannot use serializable mode in a hot standby"): the session's transactions run
	// on the primary unless they state another isolation level.
	defaultSerializable bool
	copyFloor           bool             // a COPY FROM STDIN committed: the next read waits for the primary's position (session mode)
	catalogChanged      bool             // DDL changed functions or views: re-read volatility once out of the transaction
	deferModes          classify.TxnMode // the modes of the deferred BEGIN and the SET TRANSACTIONs after it
	vol                 *dbFunctions     // the database's volatile functions (p.vol), looked up once
	memo, memoGlobal    classify.Memo    // the last classification with vol's functions, and with the global ones
	stmts               map[string]*prepStmt
	unnamed             *prepStmt
	auto                autoRun // the simple query being run as a prepared statement (auto_prepare)
	ap                  autoSession
	retryBatch          bool // a stale auto-prepared statement reruns the extended batch, not c.auto

	mu  sync.Mutex  // guards cur, which cancel requests read
	cur *serverConn // the server connection in use, if any

	// Set once at the start, read by the admin console.
	ctx         context.Context // ends when the session ends or is terminated
	cancel      context.CancelFunc
	connectedAt time.Time
	tls         bool
	// Updated by the session, read by the admin console.
	waiting     atomic.Pointer[pool]    // the pool the client waits for a connection from
	waitSince   atomic.Int64            // since when (UnixNano)
	lastRequest atomic.Int64            // start of the last transaction (UnixNano)
	pinnedShown atomic.Value            // string: the node the client is pinned to
	killed      atomic.Pointer[pgError] // terminate: the FATAL error the session ends with
	// canceled takes a CancelRequest that came while the session held no server connection: a
	// statement waiting in the proxy (for a replica to catch up, a pool connection, RESUME) ends
	// with 57014 as it would on the server. Emptied when the next statement starts (a cancel of an
	// idle session does nothing, as PostgreSQL ignores it).
	canceled chan struct{}

	pools      map[string]*pool       // node → this client's (user, database) pool there, cached
	held       map[string]*serverConn // session mode and pins: node → connection kept for the session
	pinnedNode string                 // non-empty when pinned: every statement goes to held[pinnedNode]
	ownNode    string                 // session mode: the node of the connection given at login (its backend's PID is the client's)
	busyWatch  *idleWatch             // watching the session's own connection while a statement runs on another
	fatalSent  bool                   // a server's FATAL error went to the client as it was: the session ends
	txStatus   byte                   // as last reported to the client: 'I', 'T' or 'E'
	deferBegin string                 // a BEGIN answered locally, to be sent with the next statement
	deadTxn    bool                   // the transaction's server died: only ROLLBACK/COMMIT end it
	needSync   bool                   // an extended COPY FROM STDIN swallowed the batch's Sync
	skipping   bool                   // the proxy answered an extended-protocol error itself: messages up to Sync are dropped
	timedRead  bool                   // the statement being executed is a read (for the latency histogram)

	arena []byte // client messages of the current extended batch
	items []item
	steps []step
}

// trackedSet is one session-level SET, kept as its statement text for replay.
type trackedSet struct {
	name string
	stmt string
}

// prepStmt is a client's prepared statement.
type prepStmt struct {
	sql        string
	paramTypes []byte // Parse's parameter-type section, verbatim
	internal   string // its name on server connections
	res        classify.Result
	local      bool       // SET/SHOW meridian.*: answered by the proxy, never prepared on a server
	auto       bool       // the unnamed statement, run under internal on the server (auto_prepare)
	entry      *autoEntry // with auto: its auto_prepare entry
	// Transaction mode (see checkShapes): the result shape when the client prepared it, and whether
	// PostgreSQL would refuse it now ("cached plan must not change result type") until it is
	// prepared again.
	shape   string
	refused bool
}

func newClient(p *Proxy, conn net.Conn) *client {
	rawConn := counted(clientIO(conn, p.limits.Load().clientWrite), &p.bytes.clientIn, &p.bytes.clientOut)
	_, isTLS := conn.(*tls.Conn)
	ctx, cancel := context.WithCancel(p.ctx)
	return &client{ctx: ctx, cancel: cancel, connectedAt: time.Now(), tls: isTLS,
		p: p, conn: conn, rd: newMsgReader(rawConn, 16<<10, p.cfg.MaxMessageSize), wr: bufio.NewWriterSize(rawConn, 16<<10),
		log: p.log, routeMode: "auto", stmts: map[string]*prepStmt{}, held: map[string]*serverConn{},
		pools: map[string]*pool{}, txStatus: 'I', canceled: make(chan struct{}, 1),
	}
}

// errCanceled is PostgreSQL's answer to a canceled statement.
func errCanceled() *pgError {
	return newError(codeQueryCanceled, "canceling statement due to user request")
}

// forgetCancel drops a cancel request that came while the session was idle.
func (c *client) forgetCancel() {
	select {
	case <-c.canceled:
	default:
	}
}

// cancelable returns a context that ends with ctx or when the client cancels its statement, and
// reports which through its cause (errCanceled). For the waits that take a context; stop releases it.
func (c *client) cancelable(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		select {
		case <-c.canceled:
			cancel(errCanceled())
		case <-done:
		case <-ctx.Done():
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// canceledBy returns the client's cancel when it ended ctx, else err.
func canceledBy(ctx context.Context, err error) error {
	var pe *pgError
	if errors.As(context.Cause(ctx), &pe) && pe.Code == codeQueryCanceled {
		return pe
	}
	return err
}

// setDefaults applies the consistency defaults of the session's user and database.
func (c *client) setDefaults(d SessionDefaults) {
	c.defaults = d
	c.consistency, c.maxStaleness, c.maxWait = d.Consistency, d.MaxStaleness, d.MaxWait
}

// serveClient serves one accepted connection (counted in nclients by the accept loop).
func (p *Proxy) serveClient(raw net.Conn) {
	loginDeadline := time.Now().Add(p.cfg.ClientLoginTimeout)
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	p.cfg.TCPKeepalive.apply(raw)
	st, conn, err := p.readStartup(raw, loginDeadline)
	defer conn.Close() // the TLS layer, when there is one, closes the socket under it
	if err != nil || st == nil {
		if err != nil && !errors.Is(err, io.EOF) {
			p.log.Info("startup failed", "remote", raw.RemoteAddr().String(), "err", err)
			p.metrics.errors.WithLabelValues(sqlstateClass(toPgError(err).Code)).Inc()
			writeFatal(conn, err)
		}
		return
	}
	c := newClient(p, conn)
	defer c.cancel()
	c.log = p.log.With("remote", conn.RemoteAddr().String())
	c.user, c.database = st.user, st.database
	c.setDefaults(p.cfg.SessionDefaults(st.user, st.database))
	c.log = c.log.With("user", st.user, "database", st.database)
	p.metrics.clientsTotal.Inc()
	p.metrics.clientsActive.Inc()
	defer p.metrics.clientsActive.Dec()
	for _, o := range st.params {
		if strings.HasPrefix(o.key, "meridian.") {
			if err := c.setLocal(o.key, o.value); err != nil {
				c.fatal(err)
				return
			}
			continue
		}
		c.startup = append(c.startup, o)
		c.noteTxnDefault(o.key, o.value)
	}
	// As in PostgreSQL, RESET returns to the values the session started with, options included.
	c.defaults = SessionDefaults{Consistency: c.consistency, MaxStaleness: c.maxStaleness, MaxWait: c.maxWait}
	c.recomputeKey()
	p.register(c)
	defer p.unregister(c)
	ctx, cancel := context.WithTimeout(p.ctx, p.limits.Load().queryWait+p.cfg.ServerConnectTimeout)
	c.keys, err = c.authenticate(ctx, st, loginDeadline)
	if err == nil && st.database == AdminDatabase {
		cancel()
		if err := c.serveAdmin(st); err != nil && !errors.Is(err, errClientGone) && !errors.Is(err, io.EOF) {
			c.log.Debug("admin session ended", "err", err)
		}
		return
	}
	if err == nil {
		err = c.login(withServerKeys(ctx, c.keys), st)
	}
	cancel()
	if err != nil {
		c.fatal(err)
		return
	}
	c.vol = p.vol.entry(c.database)
	p.vol.prefetch(c.ctx, &p.wg, c.vol, p.primaryAddress()) // while the client finishes its startup
	defer c.releaseAll()
	if err := c.loop(); err != nil && !errors.Is(err, errClientGone) && !errors.Is(err, net.ErrClosed) {
		c.log.Info("client session ended", "err", err)
		if tc, ok := raw.(*net.TCPConn); ok && errors.Is(err, os.ErrDeadlineExceeded) {
			// The client stopped reading (client_write_timeout): reset the connection rather than
			// leave megabytes queued for a peer that does not read.
			_ = tc.SetLinger(0)
		}
	}
}

// fatal sends a FATAL error (when the connection still allows it) before the connection closes.
func (c *client) fatal(err error) {
	c.p.metrics.errors.WithLabelValues(sqlstateClass(toPgError(err).Code)).Inc()
	writeFatal(c.conn, err)
}

// writeFatal writes err as a FATAL ErrorResponse, giving up after a second.
func writeFatal(conn net.Conn, err error) {
	pe := toPgError(err)
	pe.Severity = "FATAL"
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = conn.Write(appendError(nil, pe))
}

func sqlstateClass(code string) string {
	if len(code) < 2 {
		return "??"
	}
	return code[:2]
}

// loop reads and serves client messages until the client leaves.
func (c *client) loop() error {
	for {
		if err := c.shouldEnd(); err != nil {
			return err
		}
		c.memo.ForgetLong()
		c.memoGlobal.ForgetLong()
		idleLimit := c.idleLimit()
		typ, msg, err := c.nextMessage(idleLimit)
		if err == nil && c.killed.Load() != nil {
			return c.shouldEnd() // e.g. its own backend was terminated just as the message came
		}
		if idleLimit > 0 {
			_ = c.conn.SetReadDeadline(time.Time{})
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && (c.p.draining.Load() || c.killed.Load() != nil) {
				if err := c.shouldEnd(); err != nil {
					return err
				}
				_ = c.conn.SetReadDeadline(time.Time{}) // in a transaction: it may finish
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && idleLimit > 0 {
				c.log.Info("client idle for too long: disconnected", "in_transaction", c.txStatus != 'I', "limit", idleLimit)
				if c.txStatus != 'I' {
					c.fatal(&pgError{Code: "25P03", Message: fmt.Sprintf("terminating connection due to idle-in-transaction timeout (idle_transaction_timeout %v in the proxy)", idleLimit)})
				} else {
					c.fatal(&pgError{Code: "57P05", Message: fmt.Sprintf("terminating connection due to idle-session timeout (client_idle_timeout %v in the proxy)", idleLimit)})
				}
				return errClientGone
			}
			if errors.Is(err, io.EOF) {
				return errClientGone
			}
			if errors.Is(err, ErrMessageTooLarge) || errors.Is(err, errMalformed) {
				c.fatal(newError(codeProtocolViolation, "%v", err))
			}
			return err
		}
		if (typ == msgQuery || typ == msgFuncCall) && len(c.items) > 0 {
			// Extended-protocol messages not yet followed by Sync or Flush go to the server first,
			// as they would directly (the server runs messages in order).
			msg = append([]byte(nil), msg...) // the batch may read from the client (COPY)
			if err = c.addItem(msgFlush, rawFlush); err == nil {
				err = c.runBatch()
			}
			if err != nil {
				return err
			}
		}
		c.forgetCancel()
		switch typ {
		case msgQuery:
			err = c.simpleQuery(msg)
		case msgParse, msgBind, msgDescribe, msgExecute, msgClose:
			err = c.addItem(typ, msg)
		case msgSync, msgFlush:
			if err = c.addItem(typ, msg); err == nil {
				err = c.runBatch()
			}
		case msgFuncCall:
			err = c.functionCall(msg)
		case msgTerminate:
			return errClientGone
		case msgCopyData, msgCopyDone, msgCopyFail:
			// Outside COPY these are ignored, as PostgreSQL does after a failed COPY.
		default:
			c.fatal(newError(codeProtocolViolation, "invalid frontend message type %q", typ))
			return fmt.Errorf("invalid message type %q", typ)
		}
		if err != nil {
			return err
		}
	}
}

// watchDelay is how long a client is quiet before the session starts watching its own server
// connection (see idleWatch): a client that sends its next statement sooner, as a busy one does,
// costs no watch at all.
const watchDelay = 2 * time.Millisecond

// nextMessage reads the client's next message. A session with a server connection of its own to
// watch (pinned, or session mode) watches it while the client is quiet, from watchDelay on.
func (c *client) nextMessage(idleLimit time.Duration) (byte, []byte, error) {
	if c.cur != nil || c.rd.buffered() > 0 || c.watched() == nil {
		return c.rd.next()
	}
	start := time.Now()
	_ = c.conn.SetReadDeadline(start.Add(watchDelay))
	typ, msg, err := c.rd.next()
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || c.p.draining.Load() || c.killed.Load() != nil ||
		(idleLimit > 0 && idleLimit <= watchDelay) {
		if err == nil && idleLimit == 0 {
			_ = c.conn.SetReadDeadline(time.Time{})
		}
		return typ, msg, err // the loop looks at the deadline as it would have
	}
	// Quiet: watch, and read on (the message reader resumes a message cut by the deadline).
	if idleLimit > 0 {
		_ = c.conn.SetReadDeadline(start.Add(idleLimit))
	} else {
		_ = c.conn.SetReadDeadline(time.Time{})
	}
	if c.p.draining.Load() || c.killed.Load() != nil {
		c.wake() // a shutdown or kill that woke the session just before the deadline was moved
	}
	watch := c.watchIdle()
	typ, msg, err = c.rd.next()
	watch.halt()
	return typ, msg, err
}

// idleLimit arms the read deadline for the wait for the client's next message when
// client_idle_timeout or idle_transaction_timeout applies, and returns it (0: none).
func (c *client) idleLimit() time.Duration {
	l := c.p.limits.Load()
	limit := l.clientIdle
	if c.txStatus != 'I' || c.cur != nil {
		limit = l.idleTx
	}
	if limit <= 0 || c.rd.buffered() > 0 {
		return 0
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(limit))
	if c.p.draining.Load() || c.killed.Load() != nil {
		c.wake() // a shutdown or kill that woke the session just before the deadline was armed
	}
	return limit
}

// shouldEnd ends the session when it was terminated, or when the proxy is shutting down and the
// session is not in a transaction: it sends the FATAL error and returns errClientGone.
func (c *client) shouldEnd() error {
	pe := c.killed.Load()
	if pe == nil && c.p.draining.Load() && c.txStatus == 'I' && c.cur == nil {
		pe = &pgError{Code: codeAdminShutdown, Message: "terminating connection because the proxy is shutting down"}
	}
	if pe == nil {
		return nil
	}
	_ = c.wr.Flush()
	c.fatal(pe)
	return errClientGone
}

// wake interrupts the session's wait for its client's next message, so that it looks at the
// shutdown and kill flags.
func (c *client) wake() { _ = c.conn.SetReadDeadline(time.Now()) }

// terminate ends the session from another goroutine (KILL, shutdown timeout): the session sends pe
// and closes; a statement running on a server is abandoned (its connection closed, so the server
// rolls it back).
func (c *client) terminate(pe *pgError) {
	c.killed.Store(pe)
	c.cancel()
	c.wake()
	c.mu.Lock()
	if c.cur != nil {
		_ = c.cur.conn.SetDeadline(time.Now()) // the session sees its statement fail and drops the connection
	}
	c.mu.Unlock()
}

// ---- session state ----

func isOn(v string) bool {
	switch strings.ToLower(strings.Trim(v, `'" `)) {
	case "on", "true", "1", "yes", "t", "y":
		return true
	}
	return false
}

func (c *client) recomputeKey() {
	c.spKey = ""
	for _, o := range c.startup {
		if o.key == "search_path" {
			c.spKey = o.value
		}
	}
	for _, s := range c.sets {
		if s.name == "search_path" {
			c.spKey = s.stmt
		}
	}
	if len(c.startup) == 0 && len(c.sets) == 0 {
		c.stateKey = 0
		return
	}
	h := fnv.New64a()
	c.hashState(h)
	c.stateKey = h.Sum64() | 1 // never 0, which means "server defaults"
}

// hashState writes the session state that a server connection must carry — startup parameters,
// then tracked SETs — to h.
func (c *client) hashState(h hash.Hash) {
	for _, o := range c.startup {
		h.Write([]byte(o.key))
		h.Write([]byte{0})
		h.Write([]byte(o.value))
		h.Write([]byte{0})
	}
	h.Write([]byte{1})
	for _, s := range c.sets {
		h.Write([]byte(s.stmt))
		h.Write([]byte{0})
	}
}

// applySets records SETs that took effect for the session.
func (c *client) applySets(ops []classify.SetOp) {
	for _, op := range ops {
		switch op.Kind {
		case classify.SetLocal:
			continue
		case classify.SetResetAll:
			c.sets = c.sets[:0]
			c.noteTxnDefault("default_transaction_read_only", c.startupValue("default_transaction_read_only"))
			c.noteTxnDefault("default_transaction_isolation", c.startupValue("default_transaction_isolation"))
			continue
		}
		for i := range c.sets {
			if c.sets[i].name == op.Name {
				c.sets = append(c.sets[:i], c.sets[i+1:]...)
				break
			}
		}
		if op.Kind == classify.SetSession {
			c.noteTxnDefault(op.Name, op.Value)
		} else {
			c.noteTxnDefault(op.Name, c.startupValue(op.Name)) // RESET returns to the startup value
		}
		if op.Kind == classify.SetSession {
			c.sets = append(c.sets, trackedSet{name: op.Name, stmt: op.Stmt})
		}
	}
	c.recomputeKey()
}

// noteTxnDefault follows the session defaults that decide whether its transactions may run on a
// replica: default_transaction_read_only and default_transaction_isolation ("" is the server default).
func (c *client) noteTxnDefault(name, value string) {
	switch strings.ToLower(name) {
	case "default_transaction_read_only":
		c.defaultReadOnly = isOn(value)
	case "default_transaction_isolation":
		c.defaultSerializable = strings.EqualFold(strings.Trim(value, `'" `), "serializable")
	}
}

// startupValue is the value the client connected with for a parameter ("" when none).
func (c *client) startupValue(name string) string {
	v := ""
	for _, o := range c.startup {
		if strings.EqualFold(o.key, name) {
			v = o.value
		}
	}
	return v
}

// replicaTxn reports whether a transaction begun with the stated modes may run on a replica: it is
// read only (stated, or by default_transaction_read_only) and not serializable (stated, or by
// default_transaction_isolation), which a hot standby refuses.
func (c *client) replicaTxn(m classify.TxnMode) bool {
	ro := m&classify.ModeReadOnly != 0 || (c.defaultReadOnly && m&classify.ModeReadWrite == 0)
	serializable := m&classify.ModeSerializable != 0 || (c.defaultSerializable && m&classify.ModeIsolation == 0)
	return ro && !serializable
}

// mergeModes applies SET TRANSACTION modes over earlier ones: the last access mode and the last
// isolation level stated win.
func mergeModes(old, m classify.TxnMode) classify.TxnMode {
	if m&(classify.ModeReadOnly|classify.ModeReadWrite) != 0 {
		old &^= classify.ModeReadOnly | classify.ModeReadWrite
	}
	if m&(classify.ModeSerializable|classify.ModeIsolation) != 0 {
		old &^= classify.ModeSerializable | classify.ModeIsolation
	}
	return old | m
}

// classify classifies a statement text with the volatile functions of the client's database,
// reading them first when DDL changed them (see volatility).
func (c *client) classify(sql string) classify.Result {
	if c.vol == nil {
		c.vol = c.p.vol.entry(c.database)
	}
	primary := ""
	if !c.vol.current() {
		primary = c.p.primaryAddress()
	}
	return c.p.classifier.ClassifyMemo(&c.memo, c.p.vol.functions(c.ctx, c.vol, primary), sql)
}

// stateSQL is the statement that brings a server connection to the client's session state.
func (c *client) stateSQL(fromDefaults bool) string {
	var b strings.Builder
	if !fromDefaults {
		// As DISCARD ALL does: RESET ALL alone keeps the role and session authorization of the
		// session that used the connection before.
		b.WriteString("SET SESSION AUTHORIZATION DEFAULT;RESET ALL;")
	}
	for _, o := range c.startup {
		// set_config parses the value like the startup packet does (lists such as search_path).
		fmt.Fprintf(&b, "SELECT pg_catalog.set_config(%s, %s, false);", quoteLiteral(o.key), quoteLiteral(o.value))
	}
	for _, s := range c.sets {
		b.WriteString(strings.TrimRight(strings.TrimSpace(s.stmt), ";"))
		b.WriteString(";")
	}
	return b.String()
}

// restoreStartup pipelines, behind statements that RESET parameters the client set in its startup
// packet (RESET name, SET name TO DEFAULT, RESET ALL, DISCARD ALL), a query that sets them back to
// the startup values: on a direct connection RESET returns to what the session started with, while
// the proxy's server connection started with the server's defaults.
func (c *client) restoreStartup(sc *serverConn, res classify.Result) {
	if len(c.startup) == 0 || len(res.Sets) == 0 {
		return
	}
	reset := map[string]bool{}
	for _, op := range res.Sets {
		switch op.Kind {
		case classify.SetResetAll:
			for _, o := range c.startup {
				reset[strings.ToLower(o.key)] = true
			}
		case classify.SetReset:
			reset[op.Name] = true
		default:
			delete(reset, op.Name)
		}
	}
	var b strings.Builder
	for _, o := range c.startup {
		if reset[strings.ToLower(o.key)] {
			fmt.Fprintf(&b, "SELECT pg_catalog.set_config(%s, %s, false);", quoteLiteral(o.key), quoteLiteral(o.value))
		}
	}
	if b.Len() == 0 {
		return
	}
	_ = sc.send(encodeQuery(c.out[:0], b.String()))
	c.steps = append(c.steps, step{kind: stepRestore})
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// syncState replays the client's session state on sc if sc carries another client's.
func (c *client) syncState(sc *serverConn) error {
	if sc.stateKey == c.stateKey {
		return nil
	}
	sql := c.stateSQL(sc.stateKey == 0)
	if sql == "" {
		sc.stateKey = c.stateKey
		return nil
	}
	if err := sc.send(encodeQuery(c.out[:0], sql)); err != nil {
		return c.serverLost(sc, err)
	}
	if err := sc.wr.Flush(); err != nil {
		return c.serverLost(sc, err)
	}
	var firstErr *pgError
	for !sc.settled() {
		typ, msg, err := sc.next()
		if err != nil {
			return c.serverLost(sc, err)
		}
		if typ == msgErrorResponse && firstErr == nil {
			firstErr = newError(errorCode(msg), "could not restore session settings on node %s", sc.pool.key.node)
		}
	}
	if firstErr != nil {
		sc.stateKey = ^uint64(0) // unknown: replay from scratch next time
		return firstErr
	}
	sc.stateKey = c.stateKey
	return nil
}

// ---- server connections ----

// checkout returns the connection to run on for target t: the held one (transaction in progress,
// pin, session mode) or one from the pool, with the session state applied.
func (c *client) checkout(t target) (*serverConn, error) { return c.checkoutWait(t, true) }

// checkoutWait is checkout; without wait it returns errPoolBusy rather than wait for a connection.
func (c *client) checkoutWait(t target, wait bool) (*serverConn, error) {
	if c.cur != nil {
		return c.cur, nil
	}
	if sc := c.held[t.node.Name]; sc != nil {
		// Session mode keeps a connection per node: the session's SETs, made on one, are replayed
		// on the other before it is used.
		c.setCur(sc)
		c.watchBusy()
		if err := c.syncState(sc); err != nil {
			c.releaseCur()
			return nil, err
		}
		if err := c.prepareAhead(sc); err != nil {
			c.releaseCur()
			return nil, err
		}
		return sc, nil
	}
	pl := c.pools[t.node.Name]
	if pl == nil || pl.address != t.node.Address || pl.dropped.Load() {
		pl = c.p.pool(t.node, c.user, c.database)
		c.pools[t.node.Name] = pl
	}
	if held, _ := c.p.pauses.holds(c.database); held {
		// PAUSE: new transactions wait, holding no server connection, until RESUME.
		c.waiting.Store(pl)
		c.waitSince.Store(time.Now().UnixNano())
		ctx, stop := c.cancelable(c.ctx)
		err := c.p.pauses.wait(ctx, c.database)
		stop()
		c.waiting.Store(nil)
		if err != nil {
			return nil, c.ended(canceledBy(ctx, err))
		}
	}
	c.lastRequest.Store(time.Now().UnixNano())
	sc := pl.tryIdle() // the common case, without a timer
	if sc == nil {
		c.waiting.Store(pl)
		c.waitSince.Store(time.Now().UnixNano())
		ctx, cancel := context.WithTimeout(withServerKeys(c.ctx, c.keys), c.p.limits.Load().queryWait+c.p.cfg.ServerConnectTimeout)
		ctx, stop := c.cancelable(ctx)
		var err error
		if wait {
			sc, err = pl.acquire(ctx)
		} else {
			sc, err = pl.acquireNow(ctx)
		}
		stop()
		cancel()
		c.waiting.Store(nil)
		if err != nil {
			return nil, c.ended(canceledBy(ctx, err))
		}
	}
	pl.active.Inc()
	pl.counters(t.route).transactions.Inc()
	c.setCur(sc)
	c.watchBusy()
	if err := c.syncState(sc); err != nil {
		c.releaseCur()
		return nil, err
	}
	if err := c.prepareJoined(sc); err != nil {
		c.releaseCur()
		return nil, err
	}
	return sc, nil
}

// checkoutRead checks out a connection for t; when t is a read on a replica that cannot be reached
// (nothing of the client's was sent yet) the read runs on the primary instead, and discovery is told.
func (c *client) checkoutRead(t target) (*serverConn, target, error) {
	sc, err := c.checkout(t)
	if err == nil || !t.read || c.cur != nil || !isConnectionFailure(err) {
		return sc, t, err
	}
	c.p.disc.Refresh()
	pt, perr := c.p.primaryTarget(c.p.disc.Current())
	if perr != nil || pt.node.Name == t.node.Name {
		return nil, t, err
	}
	c.log.Info("replica unreachable: read sent to the primary", "node", t.node.Name, "err", err)
	pt.read = true
	sc, err = c.checkout(pt)
	return sc, pt, err
}

// ended turns a wait cut short by terminate into the session's error.
func (c *client) ended(err error) error {
	if pe := c.killed.Load(); pe != nil {
		return pe
	}
	return err
}

func (c *client) setCur(sc *serverConn) {
	c.mu.Lock()
	c.cur = sc
	c.mu.Unlock()
}

// ownsBackends reports whether the session's server connections are its own for the session (session
// mode, or pinned): losing one loses session state, and ends the session as it would end a direct
// connection.
func (c *client) ownsBackends() bool {
	return c.pinnedNode != "" || c.p.cfg.PoolMode == PoolSession
}

// releaseCur gives the current connection back (or keeps it, when pinned or in session mode).
func (c *client) releaseCur() {
	sc := c.cur
	if sc == nil {
		return
	}
	c.haltBusy()
	c.setCur(nil)
	if !sc.broken && !sc.settled() {
		// Never reached on a correct relay (settle runs at a ReadyForQuery that answers everything
		// sent); a connection in doubt is closed, never lent to another client.
		c.log.Error("server connection not settled at release: closed", "node", sc.pool.key.node, "state", sc.stateName())
		sc.broken = true
	}
	if sc.broken {
		delete(c.held, sc.pool.key.node)
		if c.pinnedNode == sc.pool.key.node {
			c.pinnedNode = ""
			c.pinnedShown.Store("")
		}
		sc.pool.active.Dec()
		sc.pool.release(sc)
		return
	}
	if c.pinnedNode != "" || c.p.cfg.PoolMode == PoolSession {
		c.held[sc.pool.key.node] = sc
		return
	}
	sc.pool.active.Dec()
	if !sc.clean() {
		if sc.st.authChanged && sc.settled() && sc.st.txn == 'I' {
			// SET SESSION AUTHORIZATION (tracked and replayed for its own session): the
			// connection runs as another identity and is not lent to anyone else.
			c.log.Debug("server connection of another identity closed at release", "node", sc.pool.key.node)
		} else {
			c.log.Error("server connection not clean at release: closed", "node", sc.pool.key.node, "state", sc.stateName())
		}
		sc.broken = true
		sc.pool.release(sc)
		return
	}
	if len(sc.prepared) > maxPreparedPerServer {
		// Statements accumulate per server connection (every client's distinct texts); bound the
		// server's memory by starting over now and then.
		if err := c.resetServer(sc, "DEALLOCATE ALL"); err != nil {
			sc.broken = true
		}
		clear(sc.prepared)
	}
	sc.pool.release(sc)
}

// maxPreparedPerServer bounds the statements the proxy keeps prepared on one server connection.
const maxPreparedPerServer = 2000

// releaseAll returns every connection when the client leaves. A connection goes back to the pool only
// when it is provably clean (see protoState): one in a transaction block whose every answer was read
// is rolled back and checked; one that carried session-only state (pinned, session mode) is reset
// with DISCARD ALL; any other — the client left mid-pipeline, mid-COPY, after a Flush without Sync,
// with answers still owed — is closed, and the server rolls back whatever it had started.
func (c *client) releaseAll() {
	c.haltBusy()
	if c.cur != nil {
		c.held[c.cur.pool.key.node] = c.cur
		c.setCur(nil)
	}
	sessionState := c.pinnedNode != "" || c.p.cfg.PoolMode == PoolSession
	for node, sc := range c.held {
		delete(c.held, node)
		if !sc.broken && !sc.settled() {
			sc.broken = true
		}
		if node == c.ownNode {
			// The backend whose PID the client saw ends with the session, as a direct one does:
			// lent to the next client, the PID would name that client's backend (an admin's
			// pg_terminate_backend of a recorded PID would end the wrong session).
			sc.broken = true
		}
		if !sc.broken {
			var reset []string
			if sc.st.txn != 'I' {
				reset = append(reset, "ROLLBACK")
			}
			if sessionState || sc.st.authChanged {
				reset = append(reset, "DISCARD ALL")
			}
			if len(reset) > 0 {
				if err := c.resetServer(sc, reset...); err != nil {
					sc.broken = true
				}
			}
			if !sc.clean() {
				sc.broken = true
			}
		}
		sc.pool.active.Dec()
		sc.pool.release(sc)
	}
}

// resetServer runs each statement as its own simple query and checks that the connection ends idle
// and outside a transaction.
func (c *client) resetServer(sc *serverConn, stmts ...string) error {
	_ = sc.conn.SetDeadline(time.Now().Add(c.p.cfg.ServerConnectTimeout))
	defer sc.conn.SetDeadline(time.Time{})
	for _, stmt := range stmts {
		if err := sc.send(encodeQuery(nil, stmt)); err != nil {
			return err
		}
		if err := sc.wr.Flush(); err != nil {
			return err
		}
		for !sc.settled() {
			typ, msg, err := sc.next()
			if err != nil {
				return err
			}
			if typ == msgErrorResponse {
				return fmt.Errorf("%s on node %s: %s", stmt, sc.pool.key.node, errorCode(msg))
			}
		}
		if sc.st.txn != 'I' {
			return fmt.Errorf("server still in a transaction after %s", stmt)
		}
		if stmt == "DISCARD ALL" || stmt == "DEALLOCATE ALL" {
			clear(sc.prepared)
			clear(sc.late)
			sc.stale = sc.stale[:0]
			sc.stateKey = 0
		}
	}
	return nil
}

// serverLost marks sc broken and turns a transport error into the client-facing error.
func (c *client) serverLost(sc *serverConn, err error) error {
	sc.broken = true
	c.p.disc.Refresh()
	node := sc.pool.key.node
	c.log.Warn("server connection lost", "node", node, "err", err)
	if why := sc.aborted.Load(); why != nil {
		return &pgError{Severity: "ERROR", Code: codeConnectionFailure,
			Message: fmt.Sprintf("connection to node %s was closed by the proxy: %s", node, *why),
			Detail:  "the statement or transaction in progress did not complete; it may or may not have been committed if it was a COMMIT"}
	}
	return &pgError{Severity: "ERROR", Code: codeConnectionFailure,
		Message: fmt.Sprintf("connection to node %s was lost: %v", node, err),
		Detail:  "the statement or transaction in progress did not complete; it may or may not have been committed if it was a COMMIT"}
}

// ---- routing ----

// routeFor decides where a statement with classification res goes when no connection is held.
func (c *client) routeFor(res classify.Result) (target, error) {
	snap := c.p.disc.Current()
	if c.pinnedNode != "" {
		if n, ok := snap.Node(c.pinnedNode); ok {
			return target{node: n, route: routePrimary}, nil
		}
	}
	write := res.Route == classify.RoutePrimary
	switch {
	case res.Hint == classify.RoutePrimary, c.routeMode == "primary":
		write = true
	case c.deferBegin != "" && c.cur == nil:
		// The first statement of a deferred BEGIN: a replica only when both the transaction and the
		// statement may run there.
		write = write || !c.replicaTxn(c.deferModes)
	case res.Txn == classify.TxnBegin || res.Txn == classify.TxnBeginReadOnly:
		// The transaction's modes decide, with the session's defaults (BEGIN alone, under
		// default_transaction_read_only, is a read-only transaction).
		write = res.Statements > 1 && write || !c.replicaTxn(res.Modes)
	case c.defaultSerializable:
		// A statement's own transaction is serializable too: a hot standby refuses it.
		write = true
	}
	if write {
		return c.p.primaryTarget(snap)
	}
	t, err := c.readTarget(snap)
	t.read = true
	return t, err
}

// heldOnReplica refuses, inside a transaction running on a replica, a statement that would succeed
// there but mean nothing: an advisory lock taken on a standby excludes no one on the primary. (Other
// statements that need the primary fail on the replica by themselves.) The transaction went to the
// replica because it was READ ONLY and its first statement a read; the hint on BEGIN avoids that.
func (c *client) heldOnReplica(res classify.Result) *pgError {
	if res.Route != classify.RoutePrimary || res.Reason != "advisory lock" || c.cur.pool.key.node == c.p.disc.Current().Primary {
		return nil
	}
	return &pgError{Severity: "ERROR", Code: "25006",
		Message: "cannot take an advisory lock in a read-only transaction that the proxy runs on a replica",
		Detail:  "An advisory lock taken on a standby does not exclude sessions on the primary.",
		Hint:    "Take the lock in the transaction's first statement, or begin it with BEGIN READ ONLY /* meridian:primary */."}
}

// failHeld fails the server's transaction on the held connection, as the statement the proxy refused
// (see heldOnReplica) would have failed it directly: what the client sends next in the transaction is
// refused by the server (25P02) and its COMMIT answers ROLLBACK. A Describe of a portal that does not
// exist, named after the reason (the server's log shows it), fails it without running anything; its
// answer is swallowed.
func (c *client) failHeld(why string) error {
	sc := c.cur
	_ = sc.send(encodeNamed(c.out[:0], msgDescribe, 'P', "meridian: "+why))
	_ = sc.send(rawSync)
	if err := sc.wr.Flush(); err != nil {
		return c.serverLost(sc, err)
	}
	for !sc.settled() {
		if _, _, err := sc.next(); err != nil {
			return c.serverLost(sc, err)
		}
	}
	return nil
}

// ---- simple query protocol ----

func (c *client) simpleQuery(msg []byte) error {
	sql, _, err := cstring(msg[5:])
	if err != nil {
		c.fatal(newError(codeProtocolViolation, "malformed Query message"))
		return err
	}
	res, auto := c.classifySimple(sql)
	if handled, err := c.localQuery(sql, res); handled {
		return err
	}
	if c.deadTxn {
		return c.deadTxnQuery(res)
	}
	if res.Pin != classify.PinNone && c.pinnedNode == "" {
		// Pinning keeps this connection: the statement must run on the primary, where it will stay.
		res.Route = classify.RoutePrimary
	}
	// BEGIN is answered at once and sent with the next statement, which decides with the
	// transaction's modes (and SET TRANSACTION) whether the transaction may run on a replica: a
	// statement that needs the primary takes the whole transaction there. It also saves a round trip.
	if c.cur == nil && c.deferBegin == "" && res.Statements == 1 && (res.Txn == classify.TxnBegin || res.Txn == classify.TxnBeginReadOnly) &&
		c.p.cfg.PoolMode == PoolTransaction && c.pinnedNode == "" && res.Hint == 0 {
		c.deferBegin, c.deferModes = sql, res.Modes
		c.txStatus = 'T'
		return c.reply(appendReadyForQuery(appendCommandComplete(c.out[:0], "BEGIN"), 'T'))
	}
	if c.deferBegin != "" && c.cur == nil {
		switch {
		case res.Txn == classify.TxnCommit, res.Txn == classify.TxnRollback:
			tag := "COMMIT"
			if res.Txn == classify.TxnRollback {
				tag = "ROLLBACK"
			}
			c.deferBegin, c.txStatus = "", 'I'
			return c.reply(appendReadyForQuery(appendCommandComplete(c.out[:0], tag), 'I'))
		case (res.Txn == classify.TxnSetReadOnly || res.Txn == classify.TxnSetTransaction) && res.Modes != 0 &&
			res.Statements == 1 && res.Hint == 0:
			// SET TRANSACTION modes (not SNAPSHOT) right after BEGIN: deferred with it, so that the
			// modes as a whole decide (BEGIN; SET TRANSACTION READ ONLY; SET TRANSACTION ISOLATION
			// LEVEL SERIALIZABLE is the primary's). Nothing ran yet, so PostgreSQL accepts them all.
			c.deferBegin += ";" + sql
			c.deferModes = mergeModes(c.deferModes, res.Modes)
			return c.reply(appendReadyForQuery(appendCommandComplete(c.out[:0], "SET"), 'T'))
		}
	}
	t, err := c.routeFor(res)
	if err == nil {
		if c.cur != nil {
			t = target{node: nodeOf(c), route: "held"}
			if pe := c.heldOnReplica(res); pe != nil {
				if err := c.failHeld(pe.Message); err != nil {
					return c.afterServerError(err)
				}
				return c.replyError(pe)
			}
		}
		var sc *serverConn
		if sc, t, err = c.checkoutRead(t); err == nil {
			c.steps = c.steps[:0]
			// Statements the client closed (see forgetStmt) are closed first.
			c.closeStale(sc)
			retry := c.txStatus == 'I' && c.deferBegin == "" // outside a transaction a stale plan can be retried
			if c.deferBegin != "" {
				if err := sc.send(encodeQuery(c.out[:0], c.deferBegin)); err != nil {
					return c.afterServerError(c.serverLost(sc, err))
				}
				c.steps = append(c.steps, step{kind: stepSwallowQuery})
				c.deferBegin = ""
			}
			c.countQuery(t)
			c.retryBatch = false
			if auto {
				c.writeAuto(sc, retry)
			} else {
				c.steps = append(c.steps, step{kind: stepQuery})
				if err := sc.send(msg); err != nil {
					return c.afterServerError(c.serverLost(sc, err))
				}
			}
			c.restoreStartup(sc, res)
			if c.tracksCommit(sc, res) {
				c.askCommitLSN(sc)
			}
			return c.execute(sc, res)
		}
	}
	return c.replyError(err)
}

func nodeOf(c *client) NodeState {
	n, _ := c.p.disc.Current().Node(c.cur.pool.key.node)
	if n.Name == "" {
		n.Name = c.cur.pool.key.node
	}
	return n
}

func (c *client) countQuery(t target) {
	if t.route == "held" {
		return
	}
	c.timedRead = t.read
	if pl := c.pools[t.node.Name]; pl != nil {
		rc := pl.counters(t.route)
		rc.queries.Inc()
		if t.read {
			rc.reads.Inc()
		}
		return
	}
	c.p.metrics.queries.WithLabelValues(t.route, t.node.Name).Inc()
	if t.read {
		c.p.metrics.reads.WithLabelValues(t.route, t.node.Name).Inc()
	}
}

// execute flushes what was written to sc, relays the answers per c.steps, then updates the
// session: transaction status, SET tracking, pins, and releases the connection when idle.
func (c *client) execute(sc *serverConn, res classify.Result) error {
	start := time.Now()
	if err := sc.wr.Flush(); err != nil {
		return c.afterServerError(c.serverLost(sc, err))
	}
	out, err := c.relay(sc)
	if err == nil && out.retry {
		// A stale auto-prepared statement (see writeAuto): prepare it again and run it once more.
		c.steps = c.steps[:0]
		if c.retryBatch {
			c.writeItems(sc, false, true)
		} else {
			c.writeAuto(sc, false)
		}
		if c.tracksCommit(sc, res) {
			c.askCommitLSN(sc)
		}
		if err := sc.wr.Flush(); err != nil {
			return c.afterServerError(c.serverLost(sc, err))
		}
		out, err = c.relay(sc)
	}
	c.p.metrics.observeQuery(c.timedRead, time.Since(start))
	if err == nil {
		c.afterAuto(out, time.Since(start))
	}
	if errors.Is(err, errServerFatal) {
		return c.endAfterLostServer(nil)
	}
	if err != nil {
		var pe *pgError
		if errors.As(err, &pe) && sc.broken {
			return c.afterServerError(err)
		}
		return err
	}
	if out.rfq && !sc.settled() {
		// The relay ended at a ReadyForQuery while the server still owes answers: the proxy lost
		// track of the conversation. The answers sent so far were right; the connection is not
		// used again.
		c.log.Error("server connection out of step after a relay: closed", "node", sc.pool.key.node, "state", sc.stateName())
		sc.broken = true
		if c.pinnedNode != "" || c.p.cfg.PoolMode == PoolSession {
			_ = c.wr.Flush()
			return c.endAfterLostServer(nil)
		}
	}
	if out.rfq {
		c.settle(sc, res, out)
	}
	return c.wr.Flush()
}

// settle updates session state after a ReadyForQuery.
func (c *client) settle(sc *serverConn, res classify.Result, out relayResult) {
	wasIn := c.txStatus != 'I'
	c.txStatus = out.status
	if len(res.Sets) > 0 || res.Discard {
		switch {
		case out.failed:
			if out.status == 'I' && res.Statements > 1 {
				sc.stateKey = ^uint64(0) // some statements may have run: state unknown
			}
		case out.status == 'I' && !wasIn:
			c.applySets(res.Sets)
			sc.stateKey = c.stateKey
		default:
			c.pending = append(c.pending, res.Sets...)
		}
	}
	if wasIn && out.status == 'I' {
		if out.committed && len(c.pending) > 0 {
			c.applySets(c.pending)
			sc.stateKey = c.stateKey
		}
		c.pending = c.pending[:0]
	}
	if res.Discard && !out.failed {
		// DISCARD ALL or DEALLOCATE ALL: the server's statements are gone, and so are the client's.
		clear(sc.prepared)
		clear(sc.late)
		sc.stale = sc.stale[:0]
		c.forgetAllStmts() // in session mode also on the other connections
	}
	if res.CopyIn && !out.failed && out.status == 'I' && c.consistency == consistencySession {
		// Nothing was pipelined behind the COPY (the server would take it for copy data): the next
		// read asks the primary where it is (see readTarget).
		c.copyFloor = true
	}
	if res.Catalog {
		c.catalogChanged = true
	}
	if c.catalogChanged && out.status == 'I' {
		c.catalogChanged = false
		c.p.vol.invalidate(c.database) // before this client's next statement is routed
	}
	if res.Pin != classify.PinNone && !out.failed && c.pinnedNode == "" {
		c.pinnedNode = sc.pool.key.node
		c.pinnedShown.Store(c.pinnedNode)
		c.p.metrics.pins.WithLabelValues(res.Pin.String()).Inc()
		c.log.Debug("client pinned to a server connection", "node", c.pinnedNode, "reason", res.Pin.String())
	}
	if out.status == 'I' {
		c.releaseCur()
	}
}

// afterServerError reports a lost server to the client. Inside a transaction the client's
// transaction is now failed: only ROLLBACK (or COMMIT, which rolls back) ends it. With session state
// that cannot be rebuilt (pinned, session mode) the client connection is closed.
func (c *client) afterServerError(err error) error {
	return c.endAfterLostServer(toPgError(err))
}

// endAfterLostServer ends the current request after its server connection was lost; pe is the error
// to send (nil when the server's own error was already relayed).
func (c *client) endAfterLostServer(pe *pgError) error {
	c.releaseCur()
	c.deferBegin = ""
	if c.ownsBackends() {
		_ = c.wr.Flush()
		if c.fatalSent {
			return errClientGone // the server's own FATAL error said it
		}
		if killed := c.killed.Load(); killed != nil {
			c.fatal(killed) // e.g. its own backend was terminated while it ran a statement elsewhere
			return errClientGone
		}
		msg := "the server connection was lost"
		if pe != nil {
			msg = pe.Message
		}
		c.fatal(&pgError{Code: codeConnectionFailure, Message: msg + "; the session's server-side state is lost, reconnect"})
		return errClientGone
	}
	status := byte('I')
	if c.txStatus != 'I' {
		status = 'E'
		c.deadTxn = true
	}
	c.txStatus = status
	out := c.out[:0]
	if pe != nil {
		c.p.metrics.errors.WithLabelValues(sqlstateClass(pe.Code)).Inc()
		out = appendError(out, pe)
	}
	return c.reply(appendReadyForQuery(out, status))
}

// deadTxnQuery answers statements in a transaction whose server died.
func (c *client) deadTxnQuery(res classify.Result) error {
	if res.Txn == classify.TxnCommit || res.Txn == classify.TxnRollback {
		c.deadTxn, c.txStatus = false, 'I'
		c.pending = c.pending[:0]
		return c.reply(appendReadyForQuery(appendCommandComplete(c.out[:0], "ROLLBACK"), 'I'))
	}
	return c.reply(appendReadyForQuery(appendError(c.out[:0], errDeadTxn()), 'E'))
}

func errDeadTxn() *pgError {
	return &pgError{Severity: "ERROR", Code: codeInFailedTransaction,
		Message: "current transaction is aborted because its server connection was lost, commands ignored until end of transaction block"}
}

// replyError sends an error and ReadyForQuery for a simple query that could not be run.
func (c *client) replyError(err error) error {
	pe := toPgError(err)
	c.p.metrics.errors.WithLabelValues(sqlstateClass(pe.Code)).Inc()
	status := c.txStatus
	if status == 'T' {
		status = 'E'
		if c.cur == nil {
			c.deadTxn = c.deferBegin == "" // a held-but-unsent BEGIN just fails with the statement
			c.deferBegin = ""
			if !c.deadTxn {
				status = 'I'
			}
		}
	}
	c.txStatus = status
	return c.reply(appendReadyForQuery(appendError(c.out[:0], pe), status))
}

func (c *client) reply(b []byte) error {
	c.out = b[:0]
	if _, err := c.wr.Write(b); err != nil {
		return err
	}
	return c.wr.Flush()
}

// ---- meridian.* settings handled by the proxy ----

// localQuery handles statements the proxy answers itself: SET/SHOW/RESET of meridian.* settings and
// DEALLOCATE of protocol-level prepared statements.
func (c *client) localQuery(sql string, res classify.Result) (bool, error) {
	if res.Statements != 1 {
		return false, nil
	}
	if len(res.Sets) == 1 && strings.HasPrefix(res.Sets[0].Name, "meridian.") {
		op := res.Sets[0]
		var err error
		switch op.Kind {
		case classify.SetSession, classify.SetLocal:
			err = c.setLocal(op.Name, op.Value)
		default:
			err = c.setLocal(op.Name, "")
		}
		if err != nil {
			return true, c.replyError(err)
		}
		tag := "SET"
		if op.Kind == classify.SetReset || op.Kind == classify.SetResetAll {
			tag = "RESET"
		}
		return true, c.reply(appendReadyForQuery(appendCommandComplete(c.out[:0], tag), c.txStatus))
	}
	if !mayBeLocal(sql) {
		return false, nil
	}
	if name, ok := showMeridian(sql); ok {
		v, err := c.showLocal(name)
		if err != nil {
			return true, c.replyError(err)
		}
		return true, c.reply(appendReadyForQuery(appendShowResult(c.out[:0], name, v), c.txStatus))
	}
	if name, ok := deallocateName(sql); ok && c.pinnedNode == "" {
		if name == "" {
			c.forgetAllStmts()
			return true, c.reply(appendReadyForQuery(appendCommandComplete(c.out[:0], "DEALLOCATE ALL"), c.txStatus))
		}
		if _, ok := c.stmts[name]; ok {
			c.forgetStmt(name)
			return true, c.reply(appendReadyForQuery(appendCommandComplete(c.out[:0], "DEALLOCATE"), c.txStatus))
		}
	}
	return false, nil
}

// mayBeLocal is a cheap pre-check for SHOW meridian.* and DEALLOCATE, which are rare.
func mayBeLocal(sql string) bool {
	sql = strings.TrimLeft(sql, " \t\r\n")
	return hasPrefixFold(sql, "show") || hasPrefixFold(sql, "deallocate")
}

// hasPrefixFold is strings.HasPrefix ignoring ASCII case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// setLocal applies SET meridian.name = value ("" resets).
func (c *client) setLocal(name, value string) error {
	value = strings.ToLower(strings.Trim(value, `'" `))
	switch name {
	case "meridian.route":
		switch value {
		case "", "auto", "default":
			c.routeMode = "auto"
		case "primary", "replica":
			c.routeMode = value
		default:
			return &pgError{Severity: "ERROR", Code: codeInvalidParameter,
				Message: fmt.Sprintf("invalid value for parameter \"meridian.route\": %q", value),
				Hint:    "Available values: auto, primary, replica."}
		}
		return nil
	}
	if err := c.setConsistency(name, value); err != errUnknownSetting {
		return err
	}
	return &pgError{Severity: "ERROR", Code: "42704", Message: fmt.Sprintf("unrecognized configuration parameter %q", name),
		Hint: "The proxy knows meridian.route, meridian.consistency, meridian.max_staleness, meridian.max_wait, meridian.min_lsn and meridian.commit_lsn (read only)."}
}

// errUnknownSetting says a meridian.* name is not one the proxy knows.
var errUnknownSetting = errors.New("unknown setting")

func (c *client) showLocal(name string) (string, error) {
	switch name {
	case "meridian.route":
		return c.routeMode, nil
	case "meridian.consistency":
		return c.consistency, nil
	case "meridian.max_staleness":
		return c.maxStaleness.String(), nil
	case "meridian.max_wait":
		return c.maxWait.String(), nil
	case "meridian.commit_lsn":
		return c.commitLSN.String(), nil
	case "meridian.min_lsn":
		return c.minLSN.String(), nil
	}
	return "", &pgError{Severity: "ERROR", Code: "42704", Message: fmt.Sprintf("unrecognized configuration parameter %q", name)}
}

// showMeridian recognises SHOW meridian.name.
func showMeridian(sql string) (string, bool) {
	f := strings.Fields(strings.TrimRight(strings.TrimSpace(sql), ";"))
	if len(f) == 2 && strings.EqualFold(f[0], "show") && strings.HasPrefix(strings.ToLower(f[1]), "meridian.") {
		return strings.ToLower(f[1]), true
	}
	return "", false
}

// deallocateName recognises DEALLOCATE [PREPARE] name|ALL; "" means ALL.
func deallocateName(sql string) (string, bool) {
	f := strings.Fields(strings.TrimRight(strings.TrimSpace(sql), ";"))
	if len(f) < 2 || !strings.EqualFold(f[0], "deallocate") {
		return "", false
	}
	if strings.EqualFold(f[1], "prepare") {
		f = f[1:]
	}
	if len(f) != 2 {
		return "", false
	}
	if strings.EqualFold(f[1], "all") {
		return "", true
	}
	return strings.Trim(f[1], `"`), true
}

// appendShowResult encodes a one-column, one-row result as SHOW returns it.
func appendShowResult(dst []byte, name, value string) []byte {
	dst = appendShowRowDescription(dst, name)
	dst = appendShowDataRow(dst, value)
	return appendCommandComplete(dst, "SHOW")
}

// appendShowRowDescription describes SHOW's one text column.
func appendShowRowDescription(dst []byte, name string) []byte {
	dst, start := appendMsgHeader(dst, msgRowDescription)
	dst = binary.BigEndian.AppendUint16(dst, 1)
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, 0)  // table OID
	dst = binary.BigEndian.AppendUint16(dst, 0)  // column
	dst = binary.BigEndian.AppendUint32(dst, 25) // text
	dst = binary.BigEndian.AppendUint16(dst, 0xffff)
	dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)
	dst = binary.BigEndian.AppendUint16(dst, 0)
	return finishMsg(dst, start)
}

// appendShowDataRow is SHOW's one row.
func appendShowDataRow(dst []byte, value string) []byte {
	dst, start := appendMsgHeader(dst, msgDataRow)
	dst = binary.BigEndian.AppendUint16(dst, 1)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(value)))
	dst = append(dst, value...)
	return finishMsg(dst, start)
}

// functionCall forwards a FunctionCall message to the primary.
func (c *client) functionCall(msg []byte) error {
	t, err := c.routeFor(classify.Result{Route: classify.RoutePrimary})
	if err != nil {
		return c.replyError(err)
	}
	sc, err := c.checkout(t)
	if err != nil {
		return c.replyError(err)
	}
	c.steps = append(c.steps[:0], step{kind: stepQuery})
	if err := sc.send(msg); err != nil {
		return c.afterServerError(c.serverLost(sc, err))
	}
	return c.execute(sc, classify.Result{Route: classify.RoutePrimary})
}
