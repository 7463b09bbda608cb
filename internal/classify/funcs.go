package classify

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxIdentLen is NAMEDATALEN-1: PostgreSQL truncates longer identifiers.
const maxIdentLen = 63

// funcReason is why calling a function needs the primary.
type funcReason struct {
	reason string
	pin    Pin
}

// builtinWriteFuncs are the standard functions (and those of common
// extensions) that write, assign a transaction id, change server or session
// state, or fail on a hot standby. They match whatever schema the call
// names: a user function called public.nextval is unknown to us, and the
// primary is the safe guess.
var builtinWriteFuncs = func() map[string]funcReason {
	m := map[string]funcReason{}
	add := func(reason string, pin Pin, names ...string) {
		for _, n := range names {
			r := reason
			if r == "" {
				r = n + "()"
			}
			m[n] = funcReason{reason: r, pin: pin}
		}
	}
	// Sequences: currval and lastval read state of the session that called
	// nextval, which ran on the primary.
	add("", 0, "nextval", "setval", "currval", "lastval")
	// Transaction ids ("cannot assign TransactionIds during recovery").
	add("", 0, "txid_current", "txid_current_if_assigned", "pg_current_xact_id", "pg_current_xact_id_if_assigned")
	// WAL positions and WAL writes ("recovery is in progress").
	add("", 0, "pg_current_wal_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn",
		"pg_switch_wal", "pg_create_restore_point", "pg_logical_emit_message")
	// Advisory locks: session-level ones also pin the session
	// (https://www.postgresql.org/docs/15/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS).
	add("advisory lock", PinAdvisoryLock, "pg_advisory_lock", "pg_advisory_lock_shared",
		"pg_try_advisory_lock", "pg_try_advisory_lock_shared")
	add("advisory lock", 0, "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
		"pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared",
		"pg_advisory_unlock", "pg_advisory_unlock_shared", "pg_advisory_unlock_all")
	add("", 0, "pg_notify", "set_config")
	// Large objects: writers, and lo_open whose mode we do not inspect.
	add("", 0, "lo_creat", "lo_create", "lo_import", "lo_export", "lo_unlink", "lo_from_bytea",
		"lo_put", "lowrite", "lo_open", "lo_truncate", "lo_truncate64")
	// Server administration.
	add("", 0, "pg_terminate_backend", "pg_cancel_backend", "pg_promote", "pg_reload_conf",
		"pg_rotate_logfile", "pg_import_system_collations")
	// pg_backend_pid goes where pg_cancel_backend and pg_terminate_backend go, so that the pid a
	// client learns is one those functions can signal (a replica's pid means nothing to the primary).
	add("", 0, "pg_backend_pid")
	// Replication slots and origins.
	add("", 0, "pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
		"pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot",
		"pg_drop_replication_slot", "pg_replication_slot_advance",
		"pg_logical_slot_get_changes", "pg_logical_slot_get_binary_changes",
		"pg_replication_origin_create", "pg_replication_origin_drop",
		"pg_replication_origin_advance", "pg_replication_origin_session_setup",
		"pg_replication_origin_xact_setup")
	// Index maintenance.
	add("", 0, "brin_summarize_new_values", "brin_summarize_range", "brin_desummarize_range",
		"gin_clean_pending_list")
	// dblink: runs a command (usually a write) on the named connection.
	add("", 0, "dblink_exec")
	return m
}()

// funcName is a parsed WriteFunctions entry.
type funcName struct {
	schema string // lower case, "" if unqualified
	name   string // lower case
}

var errEmptyFuncName = errors.New("empty function name")

// parseFuncName parses "name" or "schema.name" (split at the last dot).
func parseFuncName(s string) (funcName, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return funcName{}, errEmptyFuncName
	}
	var fn funcName
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		fn.schema, fn.name = s[:i], s[i+1:]
		if fn.schema == "" || fn.name == "" {
			return funcName{}, fmt.Errorf("function name %q: empty schema or name part", s)
		}
	} else {
		fn.name = s
	}
	fn.schema, fn.name = truncateIdent(fn.schema), truncateIdent(fn.name)
	return fn, nil
}

// truncateIdent truncates like PostgreSQL's truncate_identifier: to
// maxIdentLen bytes, not splitting a UTF-8 sequence.
func truncateIdent(s string) string {
	if len(s) <= maxIdentLen {
		return s
	}
	n := maxIdentLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func parseFuncNames(names []string) []funcName {
	out := make([]funcName, 0, len(names))
	for _, s := range names {
		if fn, err := parseFuncName(s); err == nil {
			out = append(out, fn)
		}
	}
	return out
}

// funcEntry describes one function name in a funcSet.
type funcEntry struct {
	funcReason
	// anySchema: matches whatever schema the call names. Otherwise a call
	// matches when unqualified or qualified with one of schemas.
	anySchema bool
	schemas   []string
}

// funcSet is an immutable snapshot of the functions that need the primary.
type funcSet struct {
	// gen increases with every SetWriteFunctions; cache entries computed
	// with another generation are not served.
	gen    uint64
	byName map[string]*funcEntry // keyed by lower-case unqualified name
	views  map[string]*funcEntry // views that call volatile functions, the same way; nil if none
}

func newFuncSet(gen uint64, lists ...[]funcName) *funcSet {
	fs := &funcSet{gen: gen, byName: make(map[string]*funcEntry, len(builtinWriteFuncs)+8)}
	for name, r := range builtinWriteFuncs {
		fs.byName[name] = &funcEntry{funcReason: r, anySchema: true}
	}
	for _, list := range lists {
		for _, fn := range list {
			addName(fs.byName, fn, "volatile function "+fn.name+"()")
		}
	}
	return fs
}

// addName records a (possibly schema-qualified) name in m: unqualified, it matches in any schema.
func addName(m map[string]*funcEntry, n funcName, reason string) {
	e := m[n.name]
	if e == nil {
		e = &funcEntry{funcReason: funcReason{reason: reason}}
		m[n.name] = e
	}
	if n.schema == "" {
		e.anySchema = true
	} else if !e.anySchema {
		e.schemas = append(e.schemas, n.schema)
	}
}

// withViews adds views (schema-qualified names) whose reading needs the primary.
func (fs *funcSet) withViews(views []funcName) *funcSet {
	if len(views) == 0 {
		return fs
	}
	fs.views = make(map[string]*funcEntry, len(views))
	for _, v := range views {
		addName(fs.views, v, "view "+v.name+" calls a volatile function")
	}
	return fs
}

// lookupView matches a relation schema.name (schema "" if unqualified) against the views.
func (fs *funcSet) lookupView(schema, name string) (funcReason, bool) {
	if fs.views == nil {
		return funcReason{}, false
	}
	return lookupIn(fs.views, schema, name)
}

// mayMatchView reports whether a relation called name (in any schema) could be such a view: the
// fast path gives up on it.
func (fs *funcSet) mayMatchView(name string) bool {
	return fs.views != nil && fs.views[strings.ToLower(name)] != nil
}

// lookup matches a call of schema.name (schema "" if unqualified). Both
// are compared case-insensitively.
func (fs *funcSet) lookup(schema, name string) (funcReason, bool) {
	return lookupIn(fs.byName, schema, name)
}

func lookupIn(byName map[string]*funcEntry, schema, name string) (funcReason, bool) {
	e := byName[lowerASCII(name)]
	if e == nil {
		return funcReason{}, false
	}
	if schema == "" || e.anySchema {
		return e.funcReason, true
	}
	schema = strings.ToLower(schema)
	for _, s := range e.schemas {
		if s == schema {
			return e.funcReason, true
		}
	}
	return funcReason{}, false
}

// mayMatch reports whether a call of name (in any schema) could match:
// the fast path gives up on such calls.
func (fs *funcSet) mayMatch(name string) bool {
	var buf [maxIdentLen]byte
	if len(name) > len(buf) {
		return true
	}
	n := copy(buf[:], name)
	for i := range n {
		if c := buf[i]; 'A' <= c && c <= 'Z' {
			buf[i] = c + 'a' - 'A'
		} else if c >= utf8.RuneSelf {
			// Non-ASCII names: let the exact lookup decide.
			return fs.byName[strings.ToLower(name)] != nil
		}
	}
	return fs.byName[string(buf[:n])] != nil
}

// lowerASCII is strings.ToLower, without allocating for the common case of
// a name that is already lower case.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; ('A' <= c && c <= 'Z') || c >= utf8.RuneSelf {
			return strings.ToLower(s)
		}
	}
	return s
}
