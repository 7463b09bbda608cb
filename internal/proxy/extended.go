package proxy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

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

// forgetStmt drops a client's prepared statement ("" is the unnamed one). In session mode, where the
// statement is prepared under the client's own name on the session's own connections, it is closed
// there too, before the next use of each (so pg_prepared_statements no longer shows it).
func (c *client) forgetStmt(name string) {
	if name == "" {
		c.unnamed = nil
		return
	}
	ps := c.stmts[name]
	delete(c.stmts, name)
	if ps == nil || !c.ownNames() {
		return
	}
	for _, sc := range c.held {
		if sc.prepared[ps.internal] {
			markStale(sc, ps.internal)
		}
		delete(sc.ahead, ps.internal)
	}
}

// forgetAllStmts drops every statement of the client (DEALLOCATE ALL, DISCARD ALL); in session mode
// they are closed on the session's connections before their next use.
func (c *client) forgetAllStmts() {
	for name := range c.stmts {
		c.forgetStmt(name)
	}
}

// ownNames reports whether the client's named statements run under the client's own names on the
// server (session mode: the connections are the session's alone, as a direct connection is, and
// pg_prepared_statements shows the names the client gave).
func (c *client) ownNames() bool { return c.p.cfg.PoolMode == PoolSession }

// stmtName is the name a client's statement gets on server connections. (A client name in the
// proxy's own namespace, mdn_, is not used as is: auto_prepare names statements there.)
func (c *client) stmtName(name, sql string, paramTypes []byte) string {
	if name != "" && c.ownNames() && !strings.HasPrefix(name, "mdn_") {
		return name
	}
	return internalName(sql, paramTypes)
}

// stmtHome keeps a session-mode read that runs a statement of the client's with its statement: when
// the replica's connection t would have to prepare it now (the connection was opened after the
// client prepared the statement), and the session's primary connection has it from then, the read
// runs on the primary. Prepared now, after a schema change such as the session's own ALTER TABLE, the
// statement would answer with the new columns where the client's own statement, on a direct
// connection, keeps failing with 0A000 (and a driver that cached its description reads the new rows
// with the old one).
func (c *client) stmtHome(t target) target {
	if !c.ownNames() || !t.read || c.ownNode == "" || t.node.Name == c.ownNode {
		return t
	}
	own := c.held[c.ownNode]
	if own == nil || own.broken {
		return t
	}
	here := c.held[t.node.Name]
	home := false
	c.referenced(true, func(name string, ps *prepStmt) bool {
		if ps.internal == name && (here == nil || !here.prepared[ps.internal] || here.late[ps.internal]) &&
			(own.prepared[ps.internal] || own.ahead[ps.internal]) {
			home = true
		}
		return !home
	})
	if home {
		snap := c.p.disc.Current()
		if n, ok := snap.Node(c.ownNode); ok && n.Up && snap.Primary == n.Name {
			return target{node: n, route: routePrimary, read: true}
		}
	}
	return t
}

// referenced calls f with each of the client's named statements (name, statement) that a Bind of the batch (and, with
// describes, a Describe of a statement) refers to without the batch preparing it first; f returns
// false to stop.
func (c *client) referenced(describes bool, f func(name string, ps *prepStmt) bool) {
	for i := range c.items {
		it := &c.items[i]
		if it.name == "" || !(it.typ == msgBind || describes && it.typ == msgDescribe && it.kind == 'S') || c.parsedBefore(i, it.name) {
			continue
		}
		if ps := c.stmts[it.name]; ps != nil && !f(it.name, ps) {
			return
		}
	}
}

// parsedBefore reports whether the batch parses statement name before its item i.
func (c *client) parsedBefore(i int, name string) bool {
	for _, it := range c.items[:i] {
		if it.typ == msgParse && it.name == name {
			return true
		}
	}
	return false
}

// prepareAhead prepares, on a session connection about to be used, the statements the client
// prepared meanwhile on its other connections (session mode). A direct connection has one backend:
// a statement prepared before an ALTER TABLE keeps its result columns there (PostgreSQL refuses it
// afterwards with 0A000). Preparing it late, after the session's own ALTER ran on this connection,
// would answer with the new columns instead. It runs before anything else of the client reaches the
// connection; one PostgreSQL refuses here is prepared again at use.
func (c *client) prepareAhead(sc *serverConn) error {
	if len(sc.ahead) == 0 {
		return nil
	}
	var todo []*prepStmt
	for name := range sc.ahead {
		if ps := c.stmts[name]; ps != nil && ps.internal == name && !sc.prepared[name] {
			todo = append(todo, ps)
		}
	}
	clear(sc.ahead)
	if len(todo) == 0 {
		return nil
	}
	return c.prepareNow(sc, todo, false)
}

// prepareJoined prepares, on a connection that joins a session-mode session (its first use of that
// node), the statements the client prepared before: a direct connection lists them all in
// pg_prepared_statements, whichever node a query of the session runs on. Prepared now, they may see
// tables the client's statement never saw (after the session's own ALTER TABLE), so they are marked
// late and a read that runs one is kept on the connection that has it from the client's Parse (see
// stmtHome).
func (c *client) prepareJoined(sc *serverConn) error {
	if !c.ownNames() || len(c.stmts) == 0 {
		return nil
	}
	var todo []*prepStmt
	for name, ps := range c.stmts {
		if ps.internal == name && !ps.local && !sc.prepared[name] {
			todo = append(todo, ps)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	if err := c.prepareNow(sc, todo, false); err != nil {
		return err
	}
	if sc.late == nil {
		sc.late = map[string]bool{}
	}
	for _, ps := range todo {
		if sc.prepared[ps.internal] {
			sc.late[ps.internal] = true
		}
	}
	return nil
}

// checkShapes, in transaction mode, gives a client's named statement PostgreSQL's answer when the
// tables under it changed: a statement keeps the result shape it had when the client prepared it,
// and once the shape would differ PostgreSQL refuses it ("cached plan must not change result type",
// 0A000) until the client prepares it again. Server connections are shared, so the copy a Bind finds
// may have been prepared at another time (by another client, or again after a change): before a Bind
// runs on a connection whose copy's shape is not known to be the client's, the statement is prepared
// (again) there and described, and the Bind is refused (see refusedNow) when the shape now differs.
// It runs only on an idle connection (outside a transaction block); inside one the copy found runs.
func (c *client) checkShapes(sc *serverConn) error {
	if !c.sharesStatements() || sc.st.txn != 'I' || !sc.settled() {
		return nil
	}
	var todo []*prepStmt
	c.referenced(false, func(_ string, ps *prepStmt) bool {
		if ps.auto || ps.shape == "" || ps.refused || slices.Contains(todo, ps) {
			return true
		}
		if known, ok := sc.shapes[ps.internal]; sc.prepared[ps.internal] && ok && known == ps.shape {
			return true
		}
		if sc.prepared[ps.internal] {
			markStale(sc, ps.internal) // closed and prepared again, now
		}
		todo = append(todo, ps)
		return true
	})
	if len(todo) == 0 {
		return nil
	}
	return c.prepareNow(sc, todo, true)
}

// refusedNow reports whether PostgreSQL would refuse the client's statement ps now (see checkShapes).
func (c *client) refusedNow(sc *serverConn, ps *prepStmt) bool {
	if !ps.refused && ps.shape != "" && sc.prepared[ps.internal] {
		if known, ok := sc.shapes[ps.internal]; ok && known != ps.shape {
			ps.refused = true
		}
	}
	return ps.refused
}

// errStalePlan is PostgreSQL's refusal of a prepared statement whose result shape changed, with the
// fields it sends.
func errStalePlan() *pgError {
	e := newError(codeFeatureNotSupported, "cached plan must not change result type")
	e.File, e.Routine = "plancache.c", "RevalidateCachedQuery"
	return e
}

// prepareNow prepares statements (at least one) on sc at once, before anything of the client's batch is written:
// each Parse (with a Describe, to learn its result shape, when describe) has its own Sync, so that
// one PostgreSQL refuses affects no other. The statements found stale there are closed first.
func (c *client) prepareNow(sc *serverConn, todo []*prepStmt, describe bool) error {
	for _, name := range sc.stale {
		_ = sc.send(encodeNamed(c.out[:0], msgClose, 'S', name))
	}
	sc.stale = sc.stale[:0]
	for _, ps := range todo {
		delete(sc.shapes, ps.internal)
		_ = sc.send(encodeParse(c.out[:0], ps.internal, ps.sql, ps.paramTypes))
		if describe {
			_ = sc.send(encodeNamed(c.out[:0], msgDescribe, 'S', ps.internal))
		}
		_ = sc.send(rawSync)
	}
	if err := sc.wr.Flush(); err != nil {
		return c.serverLost(sc, err)
	}
	i := 0 // the statement being answered: each has its own Sync
	for !sc.settled() {
		typ, msg, err := sc.next()
		if err != nil {
			return c.serverLost(sc, err)
		}
		switch {
		case i >= len(todo):
		case typ == msgParseComplete:
			sc.prepared[todo[i].internal] = true
			delete(sc.late, todo[i].internal)
		case typ == msgRowDescription || typ == msgNoData:
			noteShape(sc, todo[i].internal, shapeOf(msg))
		case typ == msgErrorResponse:
			delete(sc.prepared, todo[i].internal)
			c.log.Debug("statement not prepared", "node", sc.pool.key.node, "code", errorCode(msg))
		}
		if typ == msgReadyForQuery {
			i++
		}
	}
	return nil
}

// shapeOf reduces a RowDescription (or NoData) to what decides whether PostgreSQL takes a plan's
// result as changed: the number of columns and each one's name, type and type modifier (not the
// table and column it comes from, which a table dropped and created again changes).
func shapeOf(msg []byte) string {
	if msg[0] != msgRowDescription || len(msg) < 7 {
		return "-"
	}
	b := msg[7:]
	n := int(binary.BigEndian.Uint16(msg[5:7]))
	var out strings.Builder
	for k := 0; k < n; k++ {
		name, rest, err := cstring(b)
		if err != nil || len(rest) < 18 {
			return string(msg) // malformed: compared as it is
		}
		out.WriteString(name)
		out.WriteByte(0)
		out.Write(rest[6:10])  // type OID
		out.Write(rest[12:16]) // type modifier
		b = rest[18:]
	}
	return out.String()
}

// noteShape records the result shape of statement name as prepared on sc.
func noteShape(sc *serverConn, name, shape string) {
	if sc.shapes == nil {
		sc.shapes = map[string]string{}
	}
	sc.shapes[name] = shape
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
				// Refused without running it; the server's transaction fails as it would directly.
				if err := c.failHeld(pe.Message); err != nil {
					return c.afterServerError(err)
				}
				c.p.metrics.errors.WithLabelValues(sqlstateClass(pe.Code)).Inc()
				out := appendError(c.out[:0], pe)
				if c.items[len(c.items)-1].typ == msgSync {
					c.txStatus = 'E'
					out = appendReadyForQuery(out, 'E')
				}
				return c.reply(out)
			}
		} else if t, err = c.routeFor(res); err == nil {
			t = c.stmtHome(t)
			_, t, err = c.checkoutRead(t)
		}
		if err != nil {
			return c.batchError(err)
		}
		sc = c.cur
		if err := c.checkShapes(sc); err != nil {
			return c.afterServerError(err)
		}
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
	if sc != nil {
		c.closeStale(sc) // statements the client closed (see forgetStmt)
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
			ps.internal = c.stmtName(it.name, ps.sql, ps.paramTypes)
			if c.p.cfg.AutoPrepare {
				c.noteCatalog(it.sql)
			}
			if _, dup := c.stmts[it.name]; dup {
				c.refuse(sc, newError(codeDuplicatePrepared, "prepared statement \"%s\" already exists", it.name))
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
			if c.sharesStatements() {
				// The result shape the client's statement has from now on (see checkShapes).
				c.write(sc, encodeNamed(c.out[:0], msgDescribe, 'S', ps.internal))
				c.steps = append(c.steps, step{kind: stepShape, name: ps.internal, ps: ps})
			}
			if c.ownNames() {
				for _, other := range c.held {
					if other != sc {
						if other.ahead == nil {
							other.ahead = map[string]bool{}
						}
						other.ahead[ps.internal] = true
					}
				}
			}
		case msgBind:
			ps := c.lookupStmt(it.name)
			if ps == nil || sc == nil {
				skipping = c.undefinedStatement(sc, it.name)
				continue
			}
			named := it.name != "" || ps.auto // runs under ps.internal on the server
			if it.name != "" && !ps.auto && c.sharesStatements() && c.refusedNow(sc, ps) {
				c.refuse(sc, errStalePlan())
				skipping = true
				continue
			}
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
			if it.name != "" && !ps.auto && c.sharesStatements() {
				st.ps = ps
			}
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
					skipping = c.undefinedStatement(sc, it.name)
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
	delete(sc.late, name)
	delete(sc.shapes, name) // known again only if described (see checkShapes)
	c.write(sc, encodeParse(c.out[:0], name, sql, paramTypes))
	c.steps = append(c.steps, step{kind: kind, name: name})
}

// undefinedStatement answers a reference to an unknown prepared statement with PostgreSQL's error;
// the rest of the batch up to Sync is then skipped (it returns true for the caller's skip flag).
func (c *client) undefinedStatement(sc *serverConn, name string) bool {
	c.refuse(sc, newError(codeUndefinedPrepared, "prepared statement \"%s\" does not exist", name))
	return true
}

// refuse answers a client's message with pe, PostgreSQL's error for it, without running the message.
// When the batch has a server connection, the server is made to fail at the same point (a Describe of
// a portal that does not exist, named after the error, which its log then shows), so that it skips to
// the Sync as it does after an error directly: the batch's earlier statements roll back with its
// implicit transaction, a transaction block fails (what follows gets 25P02, COMMIT answers ROLLBACK).
func (c *client) refuse(sc *serverConn, pe *pgError) {
	st := step{kind: stepSynthError, err: pe}
	if sc != nil {
		c.write(sc, encodeNamed(c.out[:0], msgDescribe, 'P', "meridian: "+pe.Message))
		st.fail = true
	}
	c.steps = append(c.steps, st)
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
