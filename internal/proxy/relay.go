package proxy

import (
	"encoding/binary"
	"errors"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/meridiandb/meridian/internal/classify"
	"github.com/meridiandb/meridian/internal/topology"
)

// stepKind says what the proxy expects back from the server for one message it sent (or what it
// must answer itself for a message it did not send), in order. Relaying walks the steps.
type stepKind uint8

const (
	stepQuery        stepKind = iota // simple Query or FunctionCall: everything up to ReadyForQuery
	stepSwallowQuery                 // a Query the proxy injected (deferred BEGIN): swallow up to ReadyForQuery
	stepParse                        // ParseComplete
	stepSwallowParse                 // an injected Parse: swallow its ParseComplete
	stepBind                         // BindComplete
	stepDescribe                     // [ParameterDescription] RowDescription | NoData
	stepExecute                      // rows, then CommandComplete | EmptyQueryResponse | PortalSuspended
	stepClose                        // CloseComplete
	stepSync                         // ReadyForQuery
	stepSynthParse                   // answer ParseComplete without the server
	stepSynthClose                   // answer CloseComplete without the server
	stepSynthError                   // answer an error without the server (the server is skipped to Sync too)
	stepCommitLSN                    // the commit position query pipelined behind a write: read it, swallow the rest
	stepSwallowBind                  // a Bind the proxy wrote for a simple query (auto_prepare): swallow BindComplete
	stepRowDesc                      // its Describe: relay RowDescription, swallow NoData (a simple Query sends none)
	stepSwallowClose                 // a Close of a stale statement the proxy injected: swallow CloseComplete
	stepRestore                      // a Query restoring startup values after RESET (see restoreStartup): relay ParameterStatus, swallow the rest
	stepShape                        // a Describe the proxy wrote after a client's Parse: swallow it, noting the statement's result shape (see checkShapes)
)

type step struct {
	kind  stepKind
	name  string    // stepParse/stepSwallowParse: internal statement name being prepared; Bind, Close: its statement
	err   *pgError  // stepSynthError
	retry bool      // stepSwallowBind: a stale plan is prepared again and the query run again (see writeAuto)
	fail  bool      // stepSynthError: the server was made to fail at this point too (see refuse)
	ps    *prepStmt // stepShape: the client's statement; stepBind: the client's statement in transaction mode
}

// relayResult summarises a relay.
type relayResult struct {
	rfq       bool // a ReadyForQuery was relayed
	status    byte // its transaction status
	failed    bool // an ErrorResponse was seen
	committed bool // a CommandComplete "COMMIT" was seen
	code      string
	retry     bool // the auto-prepared statement was stale: nothing was relayed, run it again (see writeAuto)
	rowDesc   bool // a RowDescription was relayed (see autoSession.watch)
}

// relay forwards the server's answers to the client following c.steps. It returns a *pgError with
// sc.broken set when the server connection failed.
func (c *client) relay(sc *serverConn) (relayResult, error) {
	var res relayResult
	steps := c.steps
	// srvSkip: the server discards every message up to the next Sync (after an error in an
	// extended-protocol message, also one of an earlier batch that ended without Sync).
	// skipToSync: the steps up to the next Sync get no answer: the server discards them, or the
	// proxy answered an error itself (and did not send them).
	srvSkip := sc.st.skipping
	skipToSync := srvSkip
	defer func() { sc.st.skipping = srvSkip }()
	var commitLSN topology.LSN // the answer of a stepCommitLSN
	for i := 0; i < len(steps); {
		st := steps[i]
		if st.kind == stepCommitLSN {
			// The client's ReadyForQuery is held until the position is in, so that the client
			// has the new meridian.commit_lsn when its statement returns.
			typ, msg, err := sc.next()
			if err != nil {
				sc.broken = true // the statement itself is done: the client is told nothing went wrong
				if !res.retry {
					c.finishCommit(res.status, 0)
				}
				return res, nil
			}
			if res.retry && typ != msgReadyForQuery {
				continue // the statement runs again, and asks again
			}
			switch typ {
			case msgDataRow:
				commitLSN = parseLSNRow(msg)
			case msgErrorResponse:
				// Inside a failed transaction block there is nothing to learn.
			case msgParamStatus:
				_, _ = c.wr.Write(msg)
			case msgReadyForQuery:
				if !res.retry {
					c.finishCommit(res.status, commitLSN)
				}
				skipToSync, srvSkip = false, false
				i++
			}
			continue
		}
		queryLike := st.kind == stepQuery || st.kind == stepSwallowQuery || st.kind == stepRestore
		if queryLike && srvSkip {
			// A Query (or FunctionCall) that reaches a server discarding messages until Sync is
			// discarded too, without any answer, as on a direct connection.
			sc.st.owed--
			i++
			continue
		}
		if skipToSync && st.kind != stepSync && !queryLike {
			switch st.kind {
			case stepParse, stepSwallowParse:
				delete(sc.prepared, st.name) // the server skipped it: not prepared after all
			case stepSwallowClose:
				sc.stale = append(sc.stale, st.name) // the server skipped it: still to be closed
			}
			i++
			continue
		}
		switch st.kind {
		case stepSynthParse, stepSynthClose, stepSynthError:
			if c.writeSynth(st) {
				res.failed = true
				skipToSync = true
			}
			if st.fail {
				failed, err := c.swallowFailure(sc)
				if err != nil {
					return res, err
				}
				srvSkip = failed
			}
			i++
			continue
		case stepSync:
			if c.needSync {
				if err := c.forwardUntilSync(sc); err != nil {
					return res, err
				}
			}
		}
		typ, msg, err := sc.next()
		if err != nil {
			return res, c.serverLost(sc, err)
		}
		swallow := st.kind == stepSwallowQuery || st.kind == stepSwallowParse || st.kind == stepSwallowBind ||
			st.kind == stepSwallowClose || st.kind == stepRestore || st.kind == stepShape
		if st.kind == stepShape && (typ == msgRowDescription || typ == msgNoData) {
			shape := shapeOf(msg)
			if st.ps.shape == "" {
				st.ps.shape = shape
			}
			noteShape(sc, st.name, shape)
			i++
			continue
		}
		switch typ {
		case msgNotice, msgNotification, msgParamStatus:
			if !swallow || typ != msgParamStatus || st.kind == stepRestore {
				_, _ = c.wr.Write(msg)
			}
			continue
		case msgErrorResponse:
			if fatal, rewritten := downgradeFatal(msg, c.out[:0]); fatal {
				// The server is about to close this connection (terminated backend, shutdown,
				// crash). A session whose connections are its own ends with it, hearing the FATAL
				// error as a direct client would. Otherwise the client's connection to the proxy
				// survives: tell it as an ERROR, then end the request as for a lost server.
				c.p.metrics.errors.WithLabelValues(sqlstateClass(errorCode(msg))).Inc()
				if c.ownsBackends() {
					_, _ = c.wr.Write(msg)
					c.fatalSent = true
				} else {
					_, _ = c.wr.Write(rewritten)
				}
				sc.broken = true
				c.p.disc.Refresh()
				return res, errServerFatal
			}
			code := errorCode(msg)
			if (st.kind == stepBind || st.kind == stepSwallowBind) && st.name != "" && isStalePlan(code, msg) {
				markStale(sc, st.name)
				if st.ps != nil {
					st.ps.refused = true // the client's own statement, as PostgreSQL keeps refusing it
				}
				c.p.metrics.autoReplanned.Inc()
				if st.retry {
					res.retry, skipToSync = true, true
					i++
					continue
				}
			}
			if st.kind == stepRestore {
				// Only in a failed transaction block (which rolls the client's RESET back too):
				// the connection's settings are no longer known for sure.
				sc.stateKey = ^uint64(0)
				continue
			}
			if code == "25006" {
				c.p.disc.Refresh() // a server that refuses writes: the topology moved
			}
			c.p.metrics.errors.WithLabelValues(sqlstateClass(code)).Inc()
			res.failed, res.code = true, code
			_, _ = c.wr.Write(msg)
			switch st.kind {
			case stepQuery, stepSwallowQuery, stepSync:
				// ReadyForQuery follows (at a Sync: an error of the implicit commit, such as a
				// deferred constraint).
			default:
				if st.kind == stepParse || st.kind == stepSwallowParse {
					delete(sc.prepared, st.name)
				}
				skipToSync, srvSkip = true, true // the server discards messages until Sync
				i++
			}
			continue
		case msgReadyForQuery:
			if st.kind == stepSwallowQuery {
				i++
				continue
			}
			if st.kind == stepRestore {
				// The client's ReadyForQuery, held until now, goes out (or with the commit position).
				i++
				if i == len(steps) || steps[i].kind != stepCommitLSN {
					_, _ = c.wr.Write(appendReadyForQuery(c.out[:0], res.status))
				}
				continue
			}
			if res.retry {
				res.status, skipToSync, srvSkip = msg[5], false, false
				i++
				continue
			}
			res.rfq, res.status = true, msg[5]
			skipToSync, srvSkip = false, false
			i++
			if i < len(steps) && (steps[i].kind == stepCommitLSN || steps[i].kind == stepRestore) {
				continue // written after those (by finishCommit, or above)
			}
			_, _ = c.wr.Write(msg)
			continue
		case msgCopyIn:
			_, _ = c.wr.Write(msg)
			if st.kind == stepExecute {
				// The server ignores the Syncs that reach it during COPY FROM STDIN: the batch's
				// own, already written, is not answered (copyIn forwards the client's next one).
				// More than one (a pipeline behind the COPY) cannot be accounted for: the
				// connection is not reused.
				syncs := 0
				for _, later := range steps[i+1:] {
					if later.kind == stepSync || later.kind == stepCommitLSN {
						syncs++
					}
				}
				if syncs > 0 {
					sc.st.owed--
				}
				if syncs > 1 {
					sc.broken = true
				}
			}
			if err := c.copyIn(sc, st.kind == stepExecute); err != nil {
				return res, err
			}
			continue
		case msgCopyBoth:
			sc.broken = true
			return res, newError(codeFeatureNotSupported, "COPY BOTH (replication) is not supported through the proxy")
		case msgCommandComplete:
			if string(msg[5:len(msg)-1]) == "COMMIT" {
				res.committed = true
			}
		case msgRowDescription:
			res.rowDesc = true
		}
		if !swallow && !(st.kind == stepRowDesc && typ == msgNoData) {
			_, _ = c.wr.Write(msg)
		}
		if completes(st.kind, typ) {
			i++
		}
	}
	return res, nil
}

// tracksCommit reports whether the statements about to be sent to sc may commit a write whose WAL
// position the session needs (session consistency): then the position query is pipelined behind them.
func (c *client) tracksCommit(sc *serverConn, res classify.Result) bool {
	if c.consistency != consistencySession || res.CopyIn || res.Route != classify.RoutePrimary ||
		c.p.disc.Current().Primary != sc.pool.key.node {
		return false
	}
	switch {
	case res.Txn == classify.TxnCommit, res.Statements > 1:
		return true
	case c.txStatus != 'I':
		return false // inside a transaction: its COMMIT will tell
	}
	return res.Txn != classify.TxnBegin
}

// askCommitLSN pipelines the position query behind what was written to sc. It is parsed as the
// unnamed statement (so that no statement of the proxy's shows in the client's
// pg_prepared_statements; the proxy never relies on the server keeping a client's unnamed statement
// from one batch to the next, see ensurePrepared) and run in a portal of its own, closed before its
// Sync: the client's unnamed portal, which may live on inside a transaction, is left alone (a simple
// Query would destroy it).
func (c *client) askCommitLSN(sc *serverConn) {
	c.write(sc, commitLSNExec)
	c.steps = append(c.steps, step{kind: stepCommitLSN})
}

// commitLSNPortal is the server-side name of the position query's portal.
const commitLSNPortal = "mdn_commit_lsn"

// commitLSNExec is Parse (unnamed), Bind, Execute, Close (portal) and Sync of the position query.
var commitLSNExec = func() []byte {
	b := encodeParse(nil, "", commitLSNQuery, []byte{0, 0})
	b, start := appendMsgHeader(b, msgBind)
	b = append(b, commitLSNPortal...)
	b = append(b, 0, 0)             // the unnamed statement
	b = append(b, 0, 0, 0, 0, 0, 0) // no parameter formats, no parameters, no result formats
	b = finishMsg(b, start)
	b, start = appendMsgHeader(b, msgExecute)
	b = append(b, commitLSNPortal...)
	b = append(b, 0, 0, 0, 0, 0) // all rows
	b = finishMsg(b, start)
	b = append(b, encodeNamed(nil, msgClose, 'P', commitLSNPortal)...)
	return append(b, msgSync, 0, 0, 0, 4)
}()

// finishCommit ends a statement whose commit position was asked for: when the session is out of a
// transaction the position is its new read floor, reported as ParameterStatus meridian.commit_lsn,
// then the held ReadyForQuery goes out.
func (c *client) finishCommit(status byte, insert topology.LSN) {
	if status == 'I' && insert.Valid() {
		if lsn := floorOf(insert); lsn > c.commitLSN {
			c.commitLSN = lsn
			_, _ = c.wr.Write(appendParameterStatus(c.out[:0], "meridian.commit_lsn", lsn.String()))
		}
	}
	_, _ = c.wr.Write(appendReadyForQuery(c.out[:0], status))
}

// parseLSNRow reads a one-column DataRow holding a pg_lsn as text; 0 if it does not.
func parseLSNRow(msg []byte) topology.LSN {
	if len(msg) < 11 || binary.BigEndian.Uint16(msg[5:]) != 1 {
		return 0
	}
	n := int32(binary.BigEndian.Uint32(msg[7:]))
	if n < 0 || int(n) != len(msg)-11 {
		return 0
	}
	lsn, err := topology.ParseLSN(string(msg[11:]))
	if err != nil {
		return 0
	}
	return lsn
}

// swallowFailure reads the server's answer to the Describe that refuse wrote: the ErrorResponse after
// which the server skips to Sync (it reports true), or — should a client have opened a portal of that
// name — its description. Asynchronous messages are relayed.
func (c *client) swallowFailure(sc *serverConn) (bool, error) {
	for {
		typ, msg, err := sc.next()
		if err != nil {
			return false, c.serverLost(sc, err)
		}
		switch typ {
		case msgNotice, msgNotification, msgParamStatus:
			_, _ = c.wr.Write(msg)
		case msgErrorResponse:
			return true, nil
		case msgRowDescription, msgNoData:
			return false, nil
		}
	}
}

// writeSynth answers a step the proxy handles without the server; it reports whether that answer was
// an error (after which PostgreSQL skips to the next Sync).
func (c *client) writeSynth(st step) bool {
	switch st.kind {
	case stepSynthParse:
		_, _ = c.wr.Write(rawParseComplete)
	case stepSynthClose:
		_, _ = c.wr.Write(rawCloseComplete)
	case stepSynthError:
		c.p.metrics.errors.WithLabelValues(sqlstateClass(st.err.Code)).Inc()
		_, _ = c.wr.Write(appendError(c.out[:0], st.err))
		return true
	}
	return false
}

// errServerFatal means the server sent a FATAL error (already relayed, as ERROR) and is closing.
var errServerFatal = errors.New("server sent a FATAL error")

// downgradeFatal rewrites a FATAL or PANIC ErrorResponse as an ERROR with the same fields.
func downgradeFatal(msg []byte, dst []byte) (bool, []byte) {
	var e pgproto3.ErrorResponse
	if err := e.Decode(msg[5:]); err != nil {
		return false, nil
	}
	if e.Severity != "FATAL" && e.Severity != "PANIC" {
		return false, nil
	}
	e.Severity, e.SeverityUnlocalized = "ERROR", "ERROR"
	out, err := e.Encode(dst)
	if err != nil {
		return false, nil
	}
	return true, out
}

// completes reports whether a server message of type typ is the last one answering a step.
func completes(k stepKind, typ byte) bool {
	switch k {
	case stepParse, stepSwallowParse:
		return typ == msgParseComplete
	case stepBind, stepSwallowBind:
		return typ == msgBindComplete
	case stepSwallowClose:
		return typ == msgCloseComplete
	case stepDescribe, stepRowDesc, stepShape:
		return typ == msgRowDescription || typ == msgNoData
	case stepExecute:
		return typ == msgCommandComplete || typ == msgEmptyQuery || typ == msgPortalSuspended
	case stepClose:
		return typ == msgCloseComplete
	}
	return false
}

// copyIn relays a COPY FROM STDIN: client CopyData to the server until CopyDone or CopyFail. The
// server is watched meanwhile, as a direct client would hear it: its notices go to the client at once,
// and an error (a bad row, a constraint, the backend terminated) ends the COPY at once — the relay
// answers the client with it while the client may still be sending data, which the proxy then drops
// as PostgreSQL does (in the extended protocol, up to the client's Sync, forwarded for its answer).
func (c *client) copyIn(sc *serverConn, extended bool) error {
	if err := c.wr.Flush(); err != nil {
		return err
	}
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }() // a wake by the watch below
	watch := c.watchServer(sc)
	defer func() { watch.stop() }()
	for {
		if c.rd.buffered() == 0 && sc.wr.Buffered() > 0 {
			// Nothing more from the client for now: what it sent goes to the server, which
			// answers for it (a trigger's notice, an error) while the client still sends.
			if err := sc.wr.Flush(); err != nil {
				return c.serverLost(sc, err)
			}
		}
		typ, msg, err := c.rd.next()
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && c.killed.Load() == nil {
			if !watch.stop() {
				// Woken for a shutdown: a COPY in progress may finish.
				_ = c.conn.SetReadDeadline(time.Time{})
				watch = c.watchServer(sc)
				continue
			}
			ended, err := c.serverSpokeDuringCopy(sc)
			if err != nil {
				return err
			}
			if ended {
				c.needSync = extended
				return nil
			}
			_ = c.conn.SetReadDeadline(time.Time{})
			watch = c.watchServer(sc)
			continue
		}
		if err != nil {
			// The client vanished mid-COPY (or the session was terminated): abort it on the
			// server; the connection is not reused.
			watch.stop()
			_ = sc.send(appendCopyFail(c.out[:0], "client connection lost during COPY"))
			_ = sc.wr.Flush()
			sc.broken = true
			return err
		}
		switch typ {
		case msgCopyData:
			if err := sc.send(msg); err != nil {
				return c.serverLost(sc, err)
			}
		case msgCopyDone, msgCopyFail:
			if err := sc.send(msg); err != nil {
				return c.serverLost(sc, err)
			}
			if err := sc.wr.Flush(); err != nil {
				return c.serverLost(sc, err)
			}
			// In the extended protocol the server ignored the batch's Sync during COPY; the client
			// sends another one after CopyDone (libpq does), which must reach the server.
			c.needSync = extended
			return nil
		case msgFlush, msgSync:
			// Ignored during COPY FROM STDIN, as PostgreSQL does.
		case msgTerminate:
			// The client leaves mid-COPY: abort it; the connection is closed, not reused.
			watch.stop()
			_ = sc.send(appendCopyFail(c.out[:0], "client connection closed during COPY"))
			_ = sc.wr.Flush()
			sc.broken = true
			return errClientGone
		default:
			// Any other message ends the COPY with PostgreSQL's own error ("unexpected message
			// type 0x51 during COPY from stdin"), the message itself being consumed, exactly as on
			// a direct connection: forward it and relay the server's answer.
			if err := sc.send(msg); err != nil {
				return c.serverLost(sc, err)
			}
			if err := sc.wr.Flush(); err != nil {
				return c.serverLost(sc, err)
			}
			c.needSync = extended
			return nil
		}
	}
}

// serverSpokeDuringCopy handles what the server sent while the client was still sending COPY data:
// notices and other asynchronous messages go to the client now (ended false: the COPY goes on);
// anything else (an ErrorResponse, the connection closing) ends the COPY, for the relay to answer.
func (c *client) serverSpokeDuringCopy(sc *serverConn) (ended bool, err error) {
	for {
		hdr, perr := sc.rd.r.Peek(5)
		if perr != nil || (hdr[0] != msgNotice && hdr[0] != msgParamStatus && hdr[0] != msgNotification) {
			return true, nil
		}
		_, msg, nerr := sc.next()
		if nerr != nil {
			return true, nil
		}
		if _, err := c.wr.Write(msg); err != nil {
			return false, err
		}
		if sc.rd.buffered() < 5 {
			return false, c.wr.Flush()
		}
	}
}

// serverWatch waits in its own goroutine for a server connection to send something, and then wakes
// the session's wait for its client (c.wake).
type serverWatch struct {
	sc      *serverConn
	done    chan struct{}
	spoke   atomic.Bool
	stopped bool
}

func (c *client) watchServer(sc *serverConn) *serverWatch {
	w := &serverWatch{sc: sc, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		// Peek consumes nothing; stop interrupts it with a read deadline.
		if _, err := sc.rd.r.Peek(5); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			w.spoke.Store(true)
			c.wake()
		}
	}()
	return w
}

// stop ends the watch (once) and reports whether the server spoke. The connection is again the
// session's alone when it returns.
func (w *serverWatch) stop() bool {
	if !w.stopped {
		w.stopped = true
		_ = w.sc.conn.SetReadDeadline(time.Now())
		<-w.done
		_ = w.sc.conn.SetReadDeadline(time.Time{})
	}
	return w.spoke.Load()
}

// forwardUntilSync forwards client messages to the server up to and including a Sync.
func (c *client) forwardUntilSync(sc *serverConn) error {
	c.needSync = false
	if err := c.wr.Flush(); err != nil { // what the server said so far (its answer to CopyDone, an error)
		return err
	}
	for {
		typ, msg, err := c.rd.next()
		if err != nil {
			sc.broken = true
			return err
		}
		if err := sc.send(msg); err != nil {
			return c.serverLost(sc, err)
		}
		if typ == msgSync {
			if err := sc.wr.Flush(); err != nil {
				return c.serverLost(sc, err)
			}
			return nil
		}
	}
}

func appendCopyFail(dst []byte, reason string) []byte {
	dst, start := appendMsgHeader(dst, msgCopyFail)
	dst = append(dst, reason...)
	dst = append(dst, 0)
	return finishMsg(dst, start)
}
