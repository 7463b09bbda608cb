package proxy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridiandb/meridian/internal/classify"
)

// Automatic preparation (auto_prepare, off by default). A simple Query holding one plannable
// statement is parameterized (classify.Parameterize: numeric literals that PostgreSQL could not
// fold differently become typed parameters; otherwise the text is prepared as it is); once the same
// parameterized text has been seen auto_prepare_threshold times, the proxy prepares it on each
// server connection that runs it (Parse under an internal name, once) and runs it as Bind /
// Describe / Execute / Sync with the literals as parameter values. The client still sees the
// answer of a simple Query: RowDescription (no NoData), rows, CommandComplete, ReadyForQuery, or
// the same error.
//
// A prepared statement keeps what PostgreSQL decided when it was parsed (literal input under
// DateStyle and TimeZone, names resolved under search_path, overloads, casts, rules, column
// lists) and, once on a generic plan, what it folded when it was planned. A simple query decides
// again every time. The proxy keeps the two equal by:
//   - keying statements by the session's whole tracked state (startup parameters and SETs): a
//     session with other settings gets statements of its own;
//   - not auto-preparing inside a transaction that ran SET or set_config, nor for a session that
//     ever called set_config (what it changed is not tracked), nor texts with a backslash in a
//     string (standard_conforming_strings);
//   - starting over (new statement names, counts from zero) whenever a statement that may change
//     the catalog passes through it (classify.ChangesCatalog), and again when its transaction ends;
//   - inside a transaction block, auto-preparing only statements that return no rows, which
//     cannot fail with "cached plan must not change result type" (the failed transaction could not
//     be repaired); outside one, such a failure is repaired by preparing again (see writeAuto);
//   - running an INSERT/UPDATE/DELETE without RETURNING once as a simple query first, and never
//     preparing it when that returned rows (a DO INSTEAD SELECT rule, whose rows the extended
//     protocol sends without a description);
//   - watching each text's prepared executions, and running it as a simple query for good when
//     they become much slower than its first ones (PostgreSQL switched to a generic plan that is
//     worse for these values: see planGuard).

// autoEntry is one parameterized text (with its parameter types) the proxy has seen, under one
// session state and catalog generation.
type autoEntry struct {
	uses       atomic.Int64
	name       string // the server-side statement name
	paramTypes []byte // Parse's parameter-type section
	gen        uint64 // autoStats.gen when the entry was made
	rows       bool   // the statement may return rows
	checked    atomic.Bool
	disabled   atomic.Bool // never auto-prepared again (plan guard, rule rewrite)
	guard      planGuard
}

// autoStats counts uses of parameterized texts across all clients, up to maxAutoEntries texts (then
// it starts over: texts that keep coming back are counted again soon enough).
type autoStats struct {
	m   sync.Map // key (text, NUL, type OIDs, NUL, session state) → *autoEntry
	n   atomic.Int64
	gen atomic.Uint64 // bumped when the catalog may have changed: every statement is prepared anew
}

const maxAutoEntries = 20000

// startOver forgets every entry: statements are prepared again under new names (the old ones stay
// on server connections until the per-connection bound resets them).
func (a *autoStats) startOver() {
	a.gen.Add(1)
	a.m.Clear()
	a.n.Store(0)
}

// entry returns the entry of a statement text with its parameter types (Parse's parameter-type
// section) under a session state (see client.autoState).
func (a *autoStats) entry(text string, paramTypes []byte, state string, rows bool) *autoEntry {
	var kb strings.Builder
	kb.Grow(len(text) + 2 + len(paramTypes) + len(state))
	kb.WriteString(text)
	kb.WriteByte(0)
	kb.Write(paramTypes)
	kb.WriteByte(0)
	kb.WriteString(state)
	key := kb.String()
	gen := a.gen.Load()
	if v, ok := a.m.Load(key); ok && v.(*autoEntry).gen == gen {
		return v.(*autoEntry)
	}
	pt := []byte(key[len(text)+1 : len(text)+1+len(paramTypes)])
	h := sha256.New()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write(strconv.AppendUint(nil, gen, 10))
	e := &autoEntry{name: "mdn_a" + hex.EncodeToString(h.Sum(nil)[:16]), paramTypes: pt, gen: gen, rows: rows}
	if a.n.Add(1) > maxAutoEntries {
		a.m.Clear()
		a.n.Store(1)
	}
	v, loaded := a.m.LoadOrStore(key, e)
	if loaded && v.(*autoEntry).gen != gen {
		a.m.Store(key, e) // made before a start-over that raced with this lookup
		return e
	}
	return v.(*autoEntry)
}

// autoRun is the simple query being run as a prepared statement.
type autoRun struct {
	e      *autoEntry
	text   string
	values []string
}

// autoSession is a client's auto_prepare state.
type autoSession struct {
	off        bool       // the session called set_config: its settings are not known
	catalogTxn bool       // a statement that may change the catalog ran in the current transaction
	timed      *autoEntry // the entry whose prepared execution is being timed
	binds      int        // executions of auto-prepared unnamed statements in the current batch
	watch      *autoEntry // the entry run as a simple query to check it returns no rows
	state      string     // autoState's value for stateFor
	stateFor   uint64
}

// autoState is the session state statements are keyed by: startup parameters and tracked SETs
// (DateStyle, TimeZone, search_path, role, enable_*, ...), hashed; "" for the server's defaults.
func (c *client) autoState() string {
	if c.stateKey == 0 {
		return ""
	}
	if c.ap.stateFor == c.stateKey && c.ap.state != "" {
		return c.ap.state
	}
	h := sha256.New()
	c.hashState(h)
	c.ap.state, c.ap.stateFor = hex.EncodeToString(h.Sum(nil)[:16]), c.stateKey
	return c.ap.state
}

// classifySimple classifies a simple Query's text and decides whether it runs as a prepared
// statement (then c.auto is set). The original text is classified: a text that does not parse is
// sent as it is, so that syntax errors name what the client wrote.
func (c *client) classifySimple(sql string) (classify.Result, bool) {
	res := c.classify(sql)
	c.ap.timed, c.ap.watch = nil, nil
	if !c.p.cfg.AutoPrepare {
		return res, false
	}
	if !c.autoEligible(res) {
		c.noteCatalog(sql)
		return res, false
	}
	p, ok := classify.Parameterize(sql)
	if !ok {
		c.noteCatalog(sql)
		return res, false
	}
	if p.Rows && c.inTxnBlock() {
		return res, false
	}
	pt := make([]byte, 2, 2+4*len(p.Types))
	binary.BigEndian.PutUint16(pt, uint16(len(p.Types)))
	for _, t := range p.Types {
		pt = binary.BigEndian.AppendUint32(pt, t)
	}
	e := c.p.auto.entry(p.Text, pt, c.autoState(), p.Rows)
	if e.disabled.Load() || e.uses.Add(1) < int64(c.p.cfg.AutoPrepareThreshold) {
		return res, false
	}
	if !p.Rows && !e.checked.Load() {
		c.ap.watch = e // run once as it is: does it return rows after all?
		return res, false
	}
	c.auto = autoRun{e: e, text: p.Text, values: p.Values}
	if len(p.Values) > 0 {
		c.ap.timed = e // without parameters the generic plan is the custom one
	}
	return res, true
}

// noteCatalog starts over when a statement may change what prepared statements decided.
func (c *client) noteCatalog(sql string) {
	if !c.ap.off && containsFold(sql, "set_config") {
		c.ap.off = true
	}
	if classify.ChangesCatalog(sql) {
		c.ap.catalogTxn = true
		c.p.auto.startOver()
	}
}

// containsFold reports whether s contains the lower-case ASCII word w, in any case.
func containsFold(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if s[i]|0x20 == w[0] && strings.EqualFold(s[i:i+len(w)], w) {
			return true
		}
	}
	return false
}

// inTxnBlock reports whether the client is inside a transaction block (or one is about to begin).
func (c *client) inTxnBlock() bool { return c.txStatus != 'I' || c.deferBegin != "" }

// autoEligible reports whether a statement may run as a statement the proxy prepared: one statement
// that parses and changes no session or transaction state, in a session whose state is known.
func (c *client) autoEligible(res classify.Result) bool {
	return c.p.cfg.AutoPrepare && res.Statements == 1 && res.Txn == classify.TxnNone && res.Pin == classify.PinNone &&
		len(res.Sets) == 0 && !res.Discard && !res.CopyIn && !c.ap.off && len(c.pending) == 0 && !c.ap.catalogTxn
}

// autoPrepareUnnamed decides whether a client's unnamed statement (Parse "") runs as a statement
// prepared under its internal name: the same text and parameter types seen auto_prepare_threshold
// times, with its parameters only where a generic plan cannot differ from the unnamed statement's
// plan for the values at hand (classify.PreparableWithParams). Drivers that send Parse "" before
// every execution (node-postgres, pgx's exec modes, pgbench -M extended, JDBC below
// prepareThreshold) then get it parsed and planned once per server connection.
func (c *client) autoPrepareUnnamed(ps *prepStmt) bool {
	if !c.p.cfg.AutoPrepare {
		return false
	}
	if !c.autoEligible(ps.res) {
		c.noteCatalog(ps.sql)
		return false
	}
	rows, ok := classify.PreparableWithParams(ps.sql)
	if !ok || rows && c.inTxnBlock() {
		c.noteCatalog(ps.sql)
		return false
	}
	e := c.p.auto.entry(ps.sql, ps.paramTypes, c.autoState(), rows)
	if e.disabled.Load() || e.uses.Add(1) < int64(c.p.cfg.AutoPrepareThreshold) {
		return false
	}
	ps.internal = e.name
	ps.entry = e
	return true
}

// afterAuto learns from a finished request: the plan guard's timing, whether a checked statement
// returned rows, and the end of a transaction that may have changed the catalog.
func (c *client) afterAuto(out relayResult, elapsed time.Duration) {
	if !c.p.cfg.AutoPrepare {
		return
	}
	if e := c.ap.timed; e != nil && !out.failed && c.ap.binds <= 1 {
		if e.guard.observe(elapsed) && e.disabled.CompareAndSwap(false, true) {
			c.p.metrics.autoDisabled.Inc()
			c.log.Info("auto_prepare: statement runs slower prepared than planned for its values; running it as sent from now on",
				"statement", e.name, "baseline", e.guard.baseline(), "last", elapsed)
		}
	}
	if e := c.ap.watch; e != nil && !out.failed {
		if out.rowDesc {
			if e.disabled.CompareAndSwap(false, true) {
				c.p.metrics.autoDisabled.Inc()
			}
		} else {
			e.checked.Store(true)
		}
	}
	c.ap.timed, c.ap.watch, c.ap.binds = nil, nil, 0
	if c.ap.catalogTxn && out.rfq && out.status == 'I' {
		// Committed (or rolled back): statements prepared meanwhile by others saw the old catalog.
		c.ap.catalogTxn = false
		c.p.auto.startOver()
	}
}

// planGuard watches the prepared executions of one text. PostgreSQL plans a prepared statement
// for its parameter values five times (custom plans), then usually switches to one generic plan,
// which can be far slower for skewed data (a value held by most rows planned like a rare one). The
// median of the first guardBaseline executions is the custom-plan baseline; an execution is slow
// when it takes more than guardFactor times the baseline and guardFloor more; guardStrikes slow
// ones among the last guardWindow end auto-preparation of the text.
type planGuard struct {
	mu     sync.Mutex
	first  []time.Duration // the first executions (the baseline), up to guardBaseline
	base   time.Duration
	recent uint32 // one bit per execution since the baseline, newest lowest: slow or not
	done   bool
}

const (
	guardBaseline = 5
	guardFactor   = 2
	guardFloor    = 2 * time.Millisecond
	guardWindow   = 5
	guardStrikes  = 3
)

// observe records one execution and reports whether the text should not be prepared any more.
func (g *planGuard) observe(d time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return true
	}
	if len(g.first) < guardBaseline {
		g.first = append(g.first, d)
		if len(g.first) == guardBaseline {
			s := slices.Clone(g.first)
			slices.Sort(s)
			g.base = s[len(s)/2]
		}
		return false
	}
	g.recent <<= 1
	if d > guardFactor*g.base && d-g.base > guardFloor {
		g.recent |= 1
	}
	g.recent &= 1<<guardWindow - 1
	g.done = bitsSet(g.recent) >= guardStrikes
	return g.done
}

func (g *planGuard) baseline() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.base
}

func bitsSet(x uint32) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
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
		c.ap.timed = nil // this run parses too: not a sample of the plan's speed
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
