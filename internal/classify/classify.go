package classify

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Route says where a statement may run.
type Route uint8

const (
	// RouteNone is the zero Route; it only appears as Result.Hint when the
	// text carries no routing hint.
	RouteNone Route = iota
	// RouteReplica: the statement only reads and may run on a replica.
	RouteReplica
	// RoutePrimary: the statement writes, takes locks, changes session state
	// or otherwise needs the primary.
	RoutePrimary
)

func (r Route) String() string {
	switch r {
	case RouteNone:
		return "none"
	case RouteReplica:
		return "replica"
	case RoutePrimary:
		return "primary"
	}
	return fmt.Sprintf("Route(%d)", uint8(r))
}

// TxnOp is the transaction-control effect of a statement. For a text with
// several statements it is the last one's (which decides whether a
// transaction is open afterwards).
type TxnOp uint8

const (
	TxnNone             TxnOp = iota
	TxnBegin                  // BEGIN / START TRANSACTION (read write)
	TxnBeginReadOnly          // BEGIN READ ONLY, START TRANSACTION ... READ ONLY
	TxnCommit                 // COMMIT / END
	TxnCommitAndChain         // COMMIT AND CHAIN: commits and opens a new transaction
	TxnRollback               // ROLLBACK / ABORT
	TxnRollbackAndChain       // ROLLBACK AND CHAIN
	TxnSavepoint              // SAVEPOINT name
	TxnRelease                // RELEASE [SAVEPOINT] name
	TxnRollbackTo             // ROLLBACK TO [SAVEPOINT] name
	TxnSetReadOnly            // SET TRANSACTION READ ONLY
	TxnSetTransaction         // any other SET TRANSACTION (isolation, READ WRITE, SNAPSHOT)
	TxnPrepare                // PREPARE TRANSACTION 'gid' (two-phase commit)
	TxnCommitPrepared         // COMMIT PREPARED 'gid'
	TxnRollbackPrepared       // ROLLBACK PREPARED 'gid'
)

var txnNames = [...]string{
	TxnNone:             "none",
	TxnBegin:            "BEGIN",
	TxnBeginReadOnly:    "BEGIN READ ONLY",
	TxnCommit:           "COMMIT",
	TxnCommitAndChain:   "COMMIT AND CHAIN",
	TxnRollback:         "ROLLBACK",
	TxnRollbackAndChain: "ROLLBACK AND CHAIN",
	TxnSavepoint:        "SAVEPOINT",
	TxnRelease:          "RELEASE",
	TxnRollbackTo:       "ROLLBACK TO SAVEPOINT",
	TxnSetReadOnly:      "SET TRANSACTION READ ONLY",
	TxnSetTransaction:   "SET TRANSACTION",
	TxnPrepare:          "PREPARE TRANSACTION",
	TxnCommitPrepared:   "COMMIT PREPARED",
	TxnRollbackPrepared: "ROLLBACK PREPARED",
}

func (t TxnOp) String() string {
	if int(t) < len(txnNames) {
		return txnNames[t]
	}
	return fmt.Sprintf("TxnOp(%d)", uint8(t))
}

// TxnMode is the set of transaction characteristics a BEGIN, START
// TRANSACTION or SET TRANSACTION states explicitly. PostgreSQL applies the
// modes in order, so the last access mode and the last isolation level
// stated win; at most one of each pair is set.
type TxnMode uint8

const (
	ModeReadOnly     TxnMode = 1 << iota // READ ONLY
	ModeReadWrite                        // READ WRITE
	ModeSerializable                     // ISOLATION LEVEL SERIALIZABLE: a hot standby refuses it
	ModeIsolation                        // another ISOLATION LEVEL (READ COMMITTED, REPEATABLE READ, ...)
)

func (m TxnMode) String() string {
	var parts []string
	for _, n := range []struct {
		bit  TxnMode
		name string
	}{
		{ModeReadOnly, "read-only"},
		{ModeReadWrite, "read-write"},
		{ModeSerializable, "serializable"},
		{ModeIsolation, "isolation"},
	} {
		if m&n.bit != 0 {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "|")
}

// Pin is a set of reasons why the client session must from now on keep the
// same server connection (session state that lives on one server only). It
// is a bit set: one text can pin for several reasons.
type Pin uint8

const (
	PinNone         Pin = 0
	PinListen       Pin = 1 << (iota - 1) // LISTEN
	PinAdvisoryLock                       // session-level pg_advisory_lock*, pg_try_advisory_lock*
	PinHoldCursor                         // DECLARE ... WITH HOLD
	PinTempTable                          // CREATE TEMP table/sequence/view, ON COMMIT, pg_temp schema
	PinPrepare                            // SQL-level PREPARE
	PinSetConfig                          // set_config(name, value, false): session state the proxy cannot track
)

func (p Pin) String() string {
	if p == PinNone {
		return "none"
	}
	var parts []string
	for _, n := range []struct {
		bit  Pin
		name string
	}{
		{PinListen, "listen"},
		{PinAdvisoryLock, "advisory-lock"},
		{PinHoldCursor, "hold-cursor"},
		{PinTempTable, "temp-table"},
		{PinPrepare, "prepare"},
		{PinSetConfig, "set-config"},
	} {
		if p&n.bit != 0 {
			parts = append(parts, n.name)
			p &^= n.bit
		}
	}
	if p != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", uint8(p)))
	}
	return strings.Join(parts, "|")
}

// SetKind says what a SET or RESET does to a run-time parameter.
type SetKind uint8

const (
	SetSession  SetKind = iota + 1 // SET name = value (session-wide until RESET)
	SetReset                       // RESET name, SET name TO DEFAULT
	SetResetAll                    // RESET ALL
	SetLocal                       // SET LOCAL, set_config(..., true): ends with the transaction, not tracked
)

func (k SetKind) String() string {
	switch k {
	case SetSession:
		return "set"
	case SetReset:
		return "reset"
	case SetResetAll:
		return "reset-all"
	case SetLocal:
		return "set-local"
	}
	return fmt.Sprintf("SetKind(%d)", uint8(k))
}

// SetOp is one change of a run-time parameter found in the text, for the
// proxy to track and replay on other server connections.
type SetOp struct {
	Kind SetKind
	// Name is the lower-case parameter name ("search_path",
	// "meridian.route", "timezone"); empty for RESET ALL.
	Name string
	// Value is the new value: string and identifier values unquoted,
	// numbers as written, list items joined with ", " ("a, b"), anything
	// more complex as its source text. Empty for RESET.
	Value string
	// Stmt is the statement's own SQL text (without the trailing ';'),
	// ready to replay: replay Stmt rather than rebuilding it from Value,
	// which loses quoting ("$user").
	Stmt string
}

// Result is the classification of one query text (one or more statements).
type Result struct {
	Route Route
	// Reason is a short explanation of a primary route ("INSERT",
	// "FOR UPDATE", "nextval()", "DDL", "hint", "parse error", ...); empty
	// for a read.
	Reason string
	Txn    TxnOp
	// Modes are the transaction characteristics the Txn statement (BEGIN,
	// START TRANSACTION, SET TRANSACTION) states explicitly.
	Modes TxnMode
	Pin   Pin
	// Sets lists the SET / RESET statements in order. It is shared with the
	// cache and memos: callers must not modify it.
	Sets []SetOp
	// Discard is set for DISCARD ALL and DEALLOCATE ALL, which drop the
	// session's server-side prepared statements (and, for DISCARD ALL, the
	// rest of its state).
	Discard bool
	// CopyIn is set when the text runs COPY ... FROM STDIN: the server then
	// reads CopyData from the client, and nothing else may be sent to it
	// until the copy ends.
	CopyIn bool
	// Catalog is set when the text may change which functions need the
	// primary: CREATE/ALTER/DROP of functions, procedures, extensions,
	// schemas, views and rules, renames, and DO blocks (which often create
	// functions). Volatility learnt from the catalog must be read again.
	Catalog bool
	// Hint is the route asked for by a /* meridian:primary */ or
	// /* meridian:replica */ comment (RouteNone without one). A primary hint
	// sends a read to the primary; a replica hint never moves a statement
	// that needs the primary.
	Hint Route
	// Statements is the number of statements in the text (0 for an empty
	// query, and for a text that does not parse).
	Statements int
}

// Config configures a Classifier.
type Config struct {
	// CacheSize bounds the number of query texts whose Result is cached.
	// 0 means DefaultCacheSize; a negative value disables the cache.
	CacheSize int
	// WriteFunctions are extra function names, optionally schema-qualified
	// ("audit_log", "app.touch"), whose calls must run on the primary. An
	// unqualified entry matches a call in any schema; a qualified one
	// matches calls qualified with that schema and unqualified calls (which
	// the search_path may resolve to it). Matching ignores case.
	WriteFunctions []string
}

// DefaultCacheSize is the cache size used when Config.CacheSize is 0.
const DefaultCacheSize = 10000

// maxCachedLen is the longest query text kept in the cache: statements
// longer than this (bulk INSERTs with inline values, mostly) are rarely
// repeated verbatim and would make the cache's memory unbounded.
const maxCachedLen = 16 << 10

// Validate reports configuration errors, naming the key.
func (c Config) Validate() error {
	var errs []error
	for i, name := range c.WriteFunctions {
		if _, err := parseFuncName(name); err != nil {
			errs = append(errs, fmt.Errorf("write_functions[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// Classifier classifies statements. It is safe for concurrent use.
type Classifier struct {
	// funcs is the current write-function set; replaced as a whole by
	// SetWriteFunctions, read without locks by Classify.
	funcs atomic.Pointer[funcSet]
	// mu serialises SetWriteFunctions so that generations increase with
	// the order in which lists are installed.
	mu     sync.Mutex
	gen    uint64                // guarded by mu: the last funcSet generation handed out
	sets   map[string]*Functions // guarded by mu: Functions by their sorted name list
	static []funcName            // from Config.WriteFunctions
	cache  *cache                // nil when disabled
}

// Functions is one database's set of user-defined functions whose calls need the primary (the
// proxy reads them from that database's catalog), on top of Config.WriteFunctions and the built-in
// list. It is immutable; make one with Classifier.Functions and classify with ClassifyIn.
type Functions struct{ fs *funcSet }

// maxFunctionSets bounds the distinct Functions a Classifier keeps for reuse.
const maxFunctionSets = 256

// Functions returns the set for funcs, the functions whose calls need the primary, and views, the
// views whose reading needs it (they call such functions); names are "schema.name" or "name", and
// invalid ones are ignored. Equal lists give the same *Functions, so databases with the same schema
// share cached results.
func (c *Classifier) Functions(funcs, views []string) *Functions {
	sortNames := func(names []string) []string {
		sorted := slices.Clone(names)
		slices.Sort(sorted)
		return slices.Compact(sorted)
	}
	funcs, views = sortNames(funcs), sortNames(views)
	key := strings.Join(funcs, "\x00") + "\x01" + strings.Join(views, "\x00")
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.sets[key]; f != nil {
		return f
	}
	if len(c.sets) >= maxFunctionSets {
		clear(c.sets) // sets in use stay valid; they are only no longer shared
	}
	c.gen++
	f := &Functions{fs: newFuncSet(c.gen, c.static, parseFuncNames(funcs)).withViews(parseFuncNames(views))}
	c.sets[key] = f
	return f
}

// New returns a Classifier. Invalid WriteFunctions entries (see
// Config.Validate) are ignored.
func New(cfg Config) *Classifier {
	c := &Classifier{static: parseFuncNames(cfg.WriteFunctions), sets: map[string]*Functions{}, gen: 1}
	size := cfg.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	if size > 0 {
		c.cache = newCache(size)
	}
	c.funcs.Store(newFuncSet(1, c.static, nil))
	return c
}

// SetWriteFunctions replaces the dynamic list of write functions (the proxy
// fills it from pg_proc with user-defined VOLATILE functions); the names in
// Config.WriteFunctions stay. Cached results are invalidated. Invalid names
// are ignored.
func (c *Classifier) SetWriteFunctions(names []string) {
	dyn := parseFuncNames(names)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.funcs.Store(newFuncSet(c.gen, c.static, dyn))
	if c.cache != nil {
		// Entries also carry their generation, so one computed with the old
		// list and stored after this purge is never served.
		c.cache.purge()
	}
}

// Classify classifies a query text: one statement or several separated by
// semicolons, as sent in a simple Query message.
func (c *Classifier) Classify(sql string) Result {
	return c.classify(c.funcs.Load(), sql)
}

// ClassifyIn classifies a query text as Classify does, with fn as the user-defined functions that
// need the primary (those of the client's database); nil means the Classifier's own list.
func (c *Classifier) ClassifyIn(fn *Functions, sql string) Result {
	if fn == nil {
		return c.Classify(sql)
	}
	return c.classify(fn.fs, sql)
}

// Memo remembers the last text one caller classified, with its Result: a session that classifies
// the same text again — a driver's statement named by each Parse, Bind and Describe of a batch, or
// run batch after batch — gets the Result without the fast path or the shared cache's lock. It is
// for one goroutine; the zero value is empty.
type Memo struct {
	sql string
	gen uint64 // the funcSet generation res was computed with; 0 (never handed out) when empty
	res Result
}

// ClassifyMemo is ClassifyIn remembering its last answer in m. A Result depends only on the text and
// the function set, whose generation identifies it (generations are never reused), so the
// remembered Result is the one ClassifyIn would return; like a cached one, it is shared.
func (c *Classifier) ClassifyMemo(m *Memo, fn *Functions, sql string) Result {
	fs := c.funcs.Load()
	if fn != nil {
		fs = fn.fs
	}
	if m.gen == fs.gen && m.sql == sql {
		return m.res
	}
	r := c.classify(fs, sql)
	m.sql, m.gen, m.res = sql, fs.gen, r
	return r
}

// ForgetLong empties m when it remembers a text longer than the shared cache keeps: such a text is
// remembered while its batch is served (a long statement's Parse, Bind and Execute are classified
// once, not once each), and is not kept alive while the session waits for its next message.
func (m *Memo) ForgetLong() {
	if len(m.sql) > maxCachedLen {
		*m = Memo{}
	}
}

func (c *Classifier) classify(fs *funcSet, sql string) Result {
	cacheable := c.cache != nil && len(sql) <= maxCachedLen
	if cacheable {
		if r, ok := c.cache.get(sql, fs.gen); ok {
			return r
		}
	}
	// The fast path costs about as much as a cache insertion and allocates nothing, so only the
	// parser's answers are cached: statements with inline literals (each text unique, as with
	// pgbench -M simple) would otherwise churn the cache and evict the expensive entries.
	if r, ok := classifyFast(sql, fs); ok {
		return r
	}
	r := classifySlow(sql, fs)
	if cacheable {
		c.cache.put(sql, fs.gen, r)
	}
	return r
}

// finish applies the routing hint: a primary hint moves a read to the
// primary, a replica hint is noted but never overrides a primary route.
func finish(r Result, hint Route) Result {
	r.Hint = hint
	switch {
	case hint == RoutePrimary && r.Route != RoutePrimary:
		r.Route = RoutePrimary
		r.Reason = "hint"
	case hint == RouteReplica && r.Route == RoutePrimary:
		r.Reason += " (replica hint ignored)"
	}
	return r
}
