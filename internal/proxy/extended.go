package proxy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/meridiandb/meridian/internal/classify"
)

// item is one buffered extended-protocol message of the current batch.
type item struct {
	typ  byte
	off  int // the raw message is c.arena[off:end]
	end  int
	kind byte   // Describe/Close: 'S' or 'P'
	name string // Parse/Describe/Close: statement or portal name; Bind: statement name; Execute: portal
	// Parse only
	sql        string
	paramTypes []byte
	// Bind only: offset in the raw message where the statement name ends (rest is copied verbatim)
	portal  string
	restOff int
}

// maxBatchBytes bounds how much of an unsynchronised pipeline the proxy buffers for one client.
const maxBatchBytes = 64 << 20

// maxIdleArena is the most batch buffer a client keeps between batches.
const maxIdleArena = 1 << 20

// addItem buffers one extended-protocol message until the batch's Sync or Flush.
func (c *client) addItem(typ byte, msg []byte) error {
	if len(c.arena)+len(msg) > maxBatchBytes {
		c.fatal(newError(codeProtocolViolation, "extended-protocol pipeline of more than %d bytes without Sync", maxBatchBytes))
		return fmt.Errorf("pipeline too large")
	}
	off := len(c.arena)
	c.arena = append(c.arena, msg...)
	it := item{typ: typ, off: off, end: len(c.arena)}
	body := c.arena[off+5:]
	var err error
	switch typ {
	case msgParse:
		var rest []byte
		if it.name, rest, err = cstring(body); err == nil {
			if it.sql, rest, err = cstring(rest); err == nil {
				it.paramTypes = rest
				if len(rest) < 2 || len(rest) != 2+4*int(binary.BigEndian.Uint16(rest)) {
					err = errMalformed
				}
			}
		}
	case msgBind:
		var rest []byte
		if it.portal, rest, err = cstring(body); err == nil {
			if it.name, rest, err = cstring(rest); err == nil {
				it.restOff = len(msg) - len(rest)
			}
		}
	case msgDescribe, msgClose:
		if len(body) < 2 || (body[0] != 'S' && body[0] != 'P') {
			err = errMalformed
		} else {
			it.kind = body[0]
			it.name, _, err = cstring(body[1:])
		}
	case msgExecute:
		if it.name, _, err = cstring(body); err == nil && len(body) < 5 {
			err = errMalformed
		}
	}
	if err != nil {
		c.fatal(newError(codeProtocolViolation, "malformed %q message", typ))
		return fmt.Errorf("malformed %q message: %w", typ, err)
	}
	c.items = append(c.items, it)
	return nil
}

// internalName is the server-side name of a statement: the same text and parameter types get the
// same name on every server connection, so one preparation serves every client.
func internalName(sql string, paramTypes []byte) string {
	// A cryptographic hash (truncated to 128 bits to fit NAMEDATALEN): a client must not be able to
	// craft a text that collides with another client's statement and run under its name.
	// Built on the stack (a driver's unnamed statement is named at every Parse): one allocation.
	var buf [512]byte
	sum := sha256.Sum256(append(append(append(buf[:0], sql...), 0), paramTypes...))
	var name [4 + 32]byte
	copy(name[:], "mdn_")
	hex.Encode(name[4:], sum[:16])
	return string(name[:])
}

// batchResult classifies the statements a batch parses or binds.
func (c *client) batchResult() (classify.Result, bool) {
	var res classify.Result
	routable := false
	merge := func(r classify.Result) {
		routable = true
		if r.Route == classify.RoutePrimary {
			if res.Route != classify.RoutePrimary {
				res.Reason = r.Reason
			}
			res.Route = classify.RoutePrimary
		}
		res.CopyIn = res.CopyIn || r.CopyIn
		res.Catalog = res.Catalog || r.Catalog
		if r.Hint == classify.RoutePrimary {
			res.Hint = classify.RoutePrimary
		}
		if r.Txn != classify.TxnNone && res.Txn == classify.TxnNone {
			res.Txn = r.Txn
		}
		if r.Pin != classify.PinNone {
			res.Pin = r.Pin
		}
		res.Sets = append(res.Sets, r.Sets...)
		res.Discard = res.Discard || r.Discard
		res.Statements += max(1, r.Statements)
	}
	parsedUnnamed := false // a Bind of "" refers to this batch's unnamed Parse, if any, not an older one
	for i := range c.items {
		it := &c.items[i]
		switch it.typ {
		case msgParse:
			merge(c.classify(it.sql))
			parsedUnnamed = parsedUnnamed || it.name == ""
		case msgBind:
			if it.name == "" && parsedUnnamed {
				continue
			}
			if ps := c.lookupStmt(it.name); ps != nil {
				merge(ps.res)
			}
		case msgDescribe:
			if it.kind == 'S' {
				if ps := c.lookupStmt(it.name); ps != nil {
					routable = true // describing needs a server, any will do
				}
			}
		}
	}
	return res, routable
}

// forgetStmt drops a client's prepared statement ("" is the unnamed one).
func (c *client) forgetStmt(name string) {
	if name == "" {
		c.unnamed = nil
	} else {
		delete(c.stmts, name)
	}
}

func (c *client) lookupStmt(name string) *prepStmt {
	if name == "" {
		return c.unnamed
	}
	return c.stmts[name]
}

// runBatch routes and runs the buffered extended-protocol batch (ended by Sync or Flush).
func (c *client) runBatch() error {
	defer func() {
		c.arena = c.arena[:0]
		c.items = c.items[:0]
		if cap(c.arena) > maxIdleArena {
			c.arena = nil // a large batch must not pin its buffer for the rest of the session
		}
	}()
	if c.deadTxn {
		return c.deadTxnBatch()
	}
	if c.localOnlyBatch() {
		return c.answerLocalBatch()
	}
	res, routable := c.batchResult()
	if res.Pin != classify.PinNone && c.pinnedNode == "" {
		res.Route = classify.RoutePrimary
	}
	var sc *serverConn
	var t target
	if c.cur != nil || routable {
		var err error
		if c.cur != nil {
			t = target{node: nodeOf(c), route: "held"}
			if pe := c.heldOnReplica(res); pe != nil {
				// Refused without the server, whose transaction stays open for the client's ROLLBACK.
				c.p.metrics.errors.WithLabelValues(sqlstateClass(pe.Code)).Inc()
				out := appendError(c.out[:0], pe)
				if c.items[len(c.items)-1].typ == msgSync {
					c.txStatus = 'E'
					out = appendReadyForQuery(out, 'E')
				}
				return c.reply(out)
			}
		} else if t, err = c.routeFor(res); err == nil {
			_, t, err = c.checkoutRead(t)
		}
		if err != nil {
			return c.batchError(err)
		}
		sc = c.cur
	}
	c.steps = c.steps[:0]
	// A canonical one-statement batch outside a transaction can run again when an auto-prepared
	// statement turns out stale (see writeAuto).
	retryable := c.txStatus == 'I' && c.deferBegin == "" && c.canonicalBatch()
	if sc != nil && c.deferBegin != "" {
		_ = sc.send(encodeQuery(c.out[:0], c.deferBegin))
		c.steps = append(c.steps, step{kind: stepSwallowQuery})
		c.deferBegin = ""
	}
	c.retryBatch = retryable && sc != nil
	c.writeItems(sc, retryable, false)
	if sc == nil {
		return c.localBatch()
	}
	if t.route != "" {
		c.countQuery(t)
	}
	if c.items[len(c.items)-1].typ == msgSync {
		c.restoreStartup(sc, res)
		if c.tracksCommit(sc, res) {
			c.askCommitLSN(sc)
		}
	}
	return c.execute(sc, res)
}

// writeItems writes the batch's messages to sc (nil: no server needed), noting in c.steps what
// answers each. With retryable, a stale auto-prepared statement's Bind error is held back for a
// second run; again is that second run (the unnamed Parse was answered already).
func (c *client) writeItems(sc *serverConn, retryable, again bool) {
	// After an error the proxy answered itself, messages up to Sync are not sent (as the server would
	// skip them), also those of the next batches when this one ends without Sync.
	skipping := c.skipping
	defer func() { c.skipping = skipping }()
	parsedUnnamed := false
	if !again {
		c.ap.timed, c.ap.binds = nil, 0
	}
	for i := range c.items {
		it := &c.items[i]
		raw := c.arena[it.off:it.end]
		if skipping && it.typ != msgSync {
			continue
		}
		switch it.typ {
		case msgParse:
			if again && it.name == "" {
				// Run again after a stale plan: the client has its ParseComplete.
				parsedUnnamed = true
				c.prepareOn(sc, c.unnamed.internal, c.unnamed.sql, c.unnamed.paramTypes, stepSwallowParse)
				continue
			}
			ps := &prepStmt{sql: it.sql, res: c.classify(it.sql)}
			ps.paramTypes = append([]byte(nil), it.paramTypes...)
			if it.name == "" {
				// The unnamed statement runs on the server as sent, or under its auto_prepare
				// entry's name: it has no internal name of its own to compute at every Parse "".
				ps.auto = c.autoPrepareUnnamed(ps)
				c.unnamed = ps
				parsedUnnamed = true
				switch {
				case sc == nil, ps.auto && sc.prepared[ps.internal]:
					c.steps = append(c.steps, step{kind: stepSynthParse})
				case ps.auto:
					c.p.metrics.autoPrepared.Inc()
					c.prepareOn(sc, ps.internal, ps.sql, ps.paramTypes, stepParse)
				default:
					c.write(sc, raw)
					c.steps = append(c.steps, step{kind: stepParse})
				}
				continue
			}
			ps.internal = internalName(ps.sql, ps.paramTypes)
			if c.p.cfg.AutoPrepare {
				c.noteCatalog(it.sql)
			}
			if _, dup := c.stmts[it.name]; dup {
				c.steps = append(c.steps, step{kind: stepSynthError, err: newError(codeDuplicatePrepared,
					"prepared statement \"%s\" already exists", it.name)})
				skipping = true
				continue
			}
			c.stmts[it.name] = ps
			if sc == nil {
				c.steps = append(c.steps, step{kind: stepSynthParse})
				continue
			}
			if sc.prepared[ps.internal] {
				// The client's Parse is a real one, as on a direct connection: a copy prepared
				// earlier (by this client or another) may be stale, and the client's new statement
				// must see the tables as they are now.
				delete(sc.prepared, ps.internal)
				sc.stale = append(sc.stale, ps.internal)
			}
			c.prepareOn(sc, ps.internal, ps.sql, ps.paramTypes, stepParse)
		case msgBind:
			ps := c.lookupStmt(it.name)
			if ps == nil || sc == nil {
				skipping = c.undefinedStatement(it.name)
				continue
			}
			named := it.name != "" || ps.auto // runs under ps.internal on the server
			if ps.auto && it.name == "" {
				c.p.metrics.autoExecuted.Inc()
				c.ap.timed = ps.entry
				c.ap.binds++
			}
			c.ensurePrepared(sc, ps, !named, &parsedUnnamed)
			if !named {
				c.write(sc, raw)
			} else {
				out, start := appendMsgHeader(c.out[:0], msgBind)
				out = append(out, it.portal...)
				out = append(out, 0)
				out = append(out, ps.internal...)
				out = append(out, 0)
				out = append(out, raw[it.restOff:]...)
				c.write(sc, finishMsg(out, start))
			}
			st := step{kind: stepBind}
			if named && (ps.auto || c.sharesStatements()) {
				// A stale plan is closed and prepared again (see markStale): always for the proxy's
				// own statements, and for shared ones. A statement of the client's own on a
				// connection of its own keeps failing, as it would directly, until the client
				// prepares it again.
				st.name = ps.internal
				st.retry = retryable && ps.auto
			}
			c.steps = append(c.steps, st)
		case msgDescribe:
			if it.kind == 'S' {
				ps := c.lookupStmt(it.name)
				if ps == nil || sc == nil {
					skipping = c.undefinedStatement(it.name)
					continue
				}
				c.ensurePrepared(sc, ps, it.name == "" && !ps.auto, &parsedUnnamed)
				if it.name != "" || ps.auto {
					raw = encodeNamed(c.out[:0], msgDescribe, 'S', ps.internal)
				}
			} else if sc == nil {
				c.steps = append(c.steps, step{kind: stepSynthError, err: newError("34000", "portal \"%s\" does not exist", it.name)})
				skipping = true
				continue
			}
			c.write(sc, raw)
			c.steps = append(c.steps, step{kind: stepDescribe})
		case msgExecute:
			if sc == nil {
				c.steps = append(c.steps, step{kind: stepSynthError, err: newError("34000", "portal does not exist")})
				skipping = true
				continue
			}
			c.write(sc, raw)
			c.steps = append(c.steps, step{kind: stepExecute})
		case msgClose:
			if it.kind == 'S' {
				// The server keeps its copy for other clients; the client's name is forgotten.
				c.forgetStmt(it.name)
				c.steps = append(c.steps, step{kind: stepSynthClose})
				continue
			}
			if sc == nil {
				c.steps = append(c.steps, step{kind: stepSynthClose})
				continue
			}
			c.write(sc, raw)
			c.steps = append(c.steps, step{kind: stepClose})
		case msgSync:
			skipping = false
			if sc == nil {
				continue // answered below
			}
			c.write(sc, raw)
			c.steps = append(c.steps, step{kind: stepSync})
		case msgFlush:
			if sc != nil {
				c.write(sc, raw)
			}
		}
	}
	if skipping && sc != nil && c.items[len(c.items)-1].typ == msgFlush {
		// The batch's Flush was dropped with the messages after an error the proxy answered
		// itself; the server must still send what it owes for the messages before it.
		c.write(sc, rawFlush)
	}
}

// sharesStatements reports whether the server connections the client uses carry other clients'
// prepared statements (transaction pooling, not pinned): a statement is prepared once per server
// connection under a name derived from its text.
func (c *client) sharesStatements() bool {
	return c.p.cfg.PoolMode == PoolTransaction && c.pinnedNode == ""
}

// write appends a message for the server; errors surface at the flush.
func (c *client) write(sc *serverConn, b []byte) {
	_ = sc.send(b)
}

// ensurePrepared injects a Parse when the statement a Bind or Describe names is not yet prepared on
// this server connection (the client prepared it on another one, or another node).
func (c *client) ensurePrepared(sc *serverConn, ps *prepStmt, unnamed bool, parsedUnnamed *bool) {
	if unnamed {
		if !*parsedUnnamed {
			c.write(sc, encodeParse(c.out[:0], "", ps.sql, ps.paramTypes))
			c.steps = append(c.steps, step{kind: stepSwallowParse})
			*parsedUnnamed = true
		}
		return
	}
	if sc.prepared[ps.internal] {
		return
	}
	c.prepareOn(sc, ps.internal, ps.sql, ps.paramTypes, stepSwallowParse)
}

// prepareOn writes a Parse of a statement under its server-side name to sc (closing the statements
// found stale there first) and notes the answer: stepParse relays the ParseComplete, stepSwallowParse
// swallows it.
func (c *client) prepareOn(sc *serverConn, name, sql string, paramTypes []byte, kind stepKind) {
	c.closeStale(sc)
	sc.prepared[name] = true
	c.write(sc, encodeParse(c.out[:0], name, sql, paramTypes))
	c.steps = append(c.steps, step{kind: kind, name: name})
}

// undefinedStatement answers a reference to an unknown prepared statement with PostgreSQL's error;
// the rest of the batch up to Sync is then skipped (it returns true for the caller's skip flag).
func (c *client) undefinedStatement(name string) bool {
	c.steps = append(c.steps, step{kind: stepSynthError, err: newError(codeUndefinedPrepared,
		"prepared statement \"%s\" does not exist", name)})
	return true
}

// localBatch answers a batch that needed no server (only Close/Sync, or statements refused).
func (c *client) localBatch() error {
	failed := false
	for _, st := range c.steps {
		if !failed {
			failed = c.writeSynth(st)
		}
	}
	if c.items[len(c.items)-1].typ == msgSync {
		_, _ = c.wr.Write(appendReadyForQuery(c.out[:0], c.txStatus))
	}
	return c.wr.Flush()
}

// batchError answers a batch that could not be routed: one error, then ReadyForQuery at the Sync.
func (c *client) batchError(err error) error {
	pe := toPgError(err)
	c.p.metrics.errors.WithLabelValues(sqlstateClass(pe.Code)).Inc()
	out := appendError(c.out[:0], pe)
	if c.items[len(c.items)-1].typ == msgSync {
		status := c.txStatus
		if status == 'T' {
			status = 'E'
			c.deadTxn = c.deferBegin == ""
			if !c.deadTxn {
				status = 'I'
			}
			c.deferBegin = ""
		}
		c.txStatus = status
		out = appendReadyForQuery(out, status)
	}
	return c.reply(out)
}

// deadTxnBatch answers an extended batch inside a transaction whose server died: a ROLLBACK or
// COMMIT ends it (answered as ROLLBACK), anything else fails with 25P02.
func (c *client) deadTxnBatch() error {
	res, _ := c.batchResult()
	if res.Txn != classify.TxnCommit && res.Txn != classify.TxnRollback {
		return c.batchError(errDeadTxn())
	}
	out := c.out[:0]
	for _, it := range c.items {
		switch it.typ {
		case msgParse:
			out = append(out, rawParseComplete...)
		case msgBind:
			out = append(out, rawBindComplete...)
		case msgDescribe:
			out = append(out, msgNoData, 0, 0, 0, 4)
		case msgExecute:
			out = appendCommandComplete(out, "ROLLBACK")
		case msgClose:
			out = append(out, rawCloseComplete...)
		case msgSync:
			c.deadTxn, c.txStatus = false, 'I'
			out = appendReadyForQuery(out, 'I')
		}
	}
	return c.reply(out)
}
