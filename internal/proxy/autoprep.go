package proxy

import (
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/meridiandb/meridian/internal/classify"
)

// Automatic preparation (auto_prepare). A simple Query holding one plannable statement is
// parameterized (classify.Parameterize: numeric literals become typed parameters); once the same
// parameterized text has been seen auto_prepare_threshold times, the proxy prepares it on each server
// connection that runs it (Parse under an internal name, once) and runs it as Bind / Describe /
// Execute / Sync with the literals as parameter values. The client still sees the answer of a simple
// Query: RowDescription (no NoData), rows, CommandComplete, ReadyForQuery, or the same error.
// PostgreSQL then parses, analyses and, once its plan cache settles on a generic plan, plans the
// statement once per server connection instead of at every execution.

// autoEntry is one parameterized text (with its parameter types) the proxy has seen.
type autoEntry struct {
	uses       atomic.Int64
	name       string // the server-side statement name
	paramTypes []byte // Parse's parameter-type section
}

// autoStats counts uses of parameterized texts across all clients, up to maxAutoEntries texts (then
// it starts over: texts that keep coming back are counted again soon enough).
type autoStats struct {
	m sync.Map // key (text, NUL, type OIDs) → *autoEntry
	n atomic.Int64
}

const maxAutoEntries = 20000

// entry returns the entry of a statement text with its parameter types (Parse's parameter-type
// section) under a session search_path: a simple query parameterized by the proxy and the same text
// prepared by an extended-protocol client share it, and the server-side statement. Sessions with
// different search_paths (a schema per tenant) get statements of their own: PostgreSQL would
// otherwise analyse a shared one again at every switch, and refuse it when the tables it resolves
// to have other columns.
func (a *autoStats) entry(text string, paramTypes []byte, searchPath string) *autoEntry {
	var kb strings.Builder
	kb.Grow(len(text) + 2 + len(paramTypes) + len(searchPath))
	kb.WriteString(text)
	kb.WriteByte(0)
	kb.Write(paramTypes)
	kb.WriteByte(0)
	kb.WriteString(searchPath)
	key := kb.String()
	if v, ok := a.m.Load(key); ok {
		return v.(*autoEntry)
	}
	pt := []byte(key[len(text)+1 : len(text)+1+len(paramTypes)])
	name := internalName(text, pt)
	if searchPath != "" {
		name = internalName(text+"\x00search_path "+searchPath, pt)
	}
	e := &autoEntry{name: name, paramTypes: pt}
	if a.n.Add(1) > maxAutoEntries {
		a.m.Clear()
		a.n.Store(1)
	}
	v, _ := a.m.LoadOrStore(key, e)
	return v.(*autoEntry)
}

// autoRun is the simple query being run as a prepared statement.
type autoRun struct {
	e      *autoEntry
	text   string
	values []string
}

// classifySimple classifies a simple Query's text and decides whether it runs as a prepared
// statement (then c.auto is set). The original text is classified: a text that does not parse is
// sent as it is, so that syntax errors name what the client wrote.
func (c *client) classifySimple(sql string) (classify.Result, bool) {
	res := c.classify(sql)
	if !c.autoEligible(res) {
		return res, false
	}
	p, ok := classify.Parameterize(sql)
	if !ok {
		return res, false
	}
	pt := make([]byte, 2, 2+4*len(p.Types))
	binary.BigEndian.PutUint16(pt, uint16(len(p.Types)))
	for _, t := range p.Types {
		pt = binary.BigEndian.AppendUint32(pt, t)
	}
	e := c.p.auto.entry(p.Text, pt, c.spKey)
	if e.uses.Add(1) < int64(c.p.cfg.AutoPrepareThreshold) {
		return res, false
	}
	c.auto = autoRun{e: e, text: p.Text, values: p.Values}
	return res, true
}

// autoEligible reports whether a statement may run as a statement the proxy prepared: one statement
// that parses and changes no session or transaction state.
func (c *client) autoEligible(res classify.Result) bool {
	return c.p.cfg.AutoPrepare && res.Statements == 1 && res.Txn == classify.TxnNone && res.Pin == classify.PinNone &&
		len(res.Sets) == 0 && !res.Discard && !res.CopyIn
}

// autoPrepareUnnamed decides whether a client's unnamed statement (Parse "") runs as a statement
// prepared under its internal name: the same text and parameter types seen auto_prepare_threshold
// times. Drivers that send Parse "" before every execution (node-postgres, pgx's exec modes, pgbench
// -M extended, JDBC below prepareThreshold) then get it parsed and planned once per server connection.
func (c *client) autoPrepareUnnamed(ps *prepStmt) bool {
	if !c.autoEligible(ps.res) {
		return false
	}
	e := c.p.auto.entry(ps.sql, ps.paramTypes, c.spKey)
	if e.uses.Add(1) < int64(c.p.cfg.AutoPrepareThreshold) {
		return false
	}
	ps.internal = e.name
	return true
}

// canonicalBatch reports whether the batch is one execution of the unnamed statement: [Parse ""]
// Bind "" [Describe ""] Execute "" Sync. Such a batch can run again from the start when it failed
// only because its auto-prepared statement was stale (the failed implicit transaction did nothing).
func (c *client) canonicalBatch() bool {
	want := [...]byte{msgParse, msgBind, msgDescribe, msgExecute, msgSync}
	optional := [...]bool{true, false, true, false, false}
	i := 0
	for _, it := range c.items {
		for i < len(want) && it.typ != want[i] && optional[i] {
			i++
		}
		if i == len(want) || it.typ != want[i] || it.name != "" || it.portal != "" {
			return false
		}
		i++
	}
	return i == len(want)
}

// writeAuto writes c.auto to sc as an extended-protocol batch: Parse when sc does not have the
// statement yet, Bind, Describe (portal), Execute, Sync. With retry, a "cached plan must not change
// result type" error at the Bind (a table changed under the statement) is not relayed: the caller
// prepares the statement again and runs it once more (outside a transaction block that is safe:
// the failed implicit transaction did nothing).
func (c *client) writeAuto(sc *serverConn, retry bool) {
	a := &c.auto
	if !sc.prepared[a.e.name] {
		c.prepareOn(sc, a.e.name, a.text, a.e.paramTypes, stepSwallowParse)
		c.p.metrics.autoPrepared.Inc()
	}
	out, start := appendMsgHeader(c.out[:0], msgBind)
	out = append(out, 0) // unnamed portal
	out = append(out, a.e.name...)
	out = append(out, 0, 0, 0) // no parameter format codes: all text
	out = binary.BigEndian.AppendUint16(out, uint16(len(a.values)))
	for _, v := range a.values {
		out = binary.BigEndian.AppendUint32(out, uint32(len(v)))
		out = append(out, v...)
	}
	out = append(out, 0, 0) // no result format codes: all text
	c.write(sc, finishMsg(out, start))
	c.steps = append(c.steps, step{kind: stepSwallowBind, name: a.e.name, retry: retry})
	c.write(sc, autoTail)
	c.steps = append(c.steps, step{kind: stepRowDesc}, step{kind: stepExecute}, step{kind: stepSync})
	c.p.metrics.autoExecuted.Inc()
}

// autoTail is Describe (unnamed portal), Execute (unnamed portal, all rows) and Sync.
var autoTail = []byte{
	msgDescribe, 0, 0, 0, 6, 'P', 0,
	msgExecute, 0, 0, 0, 9, 0, 0, 0, 0, 0,
	msgSync, 0, 0, 0, 4,
}

// closeStale closes, on sc, the statements found stale (see markStale); prepareOn calls it first,
// so that a stale statement is closed before it is prepared again under its name.
func (c *client) closeStale(sc *serverConn) {
	for _, name := range sc.stale {
		c.write(sc, encodeNamed(c.out[:0], msgClose, 'S', name))
		c.steps = append(c.steps, step{kind: stepSwallowClose, name: name})
	}
	sc.stale = sc.stale[:0]
}

// markStale handles PostgreSQL's refusal to run a prepared statement whose result columns changed
// since it was prepared (ALTER TABLE under a SELECT *): the statement is closed and prepared again
// at its next use, as a client re-preparing it would.
func markStale(sc *serverConn, name string) {
	delete(sc.prepared, name)
	sc.stale = append(sc.stale, name)
}

// isStalePlan reports whether an ErrorResponse is "cached plan must not change result type".
func isStalePlan(code string, msg []byte) bool {
	return code == codeFeatureNotSupported && strings.Contains(string(msg), "cached plan must not change result type")
}
