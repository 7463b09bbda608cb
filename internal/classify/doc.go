// Package classify is the statement classifier of Meridian's proxy: it
// decides whether a query text (one or more SQL statements, outside an
// explicit transaction) may run on a read replica or must go to the primary,
// and reports what else the proxy must know about it — transaction control,
// session state to track (SET/RESET), and state that pins the session to
// one server connection. See DESIGN.md §3.
//
// The main types are [Classifier] (New, Classify, SetWriteFunctions) and
// its [Result].
//
// # Reference and fast path
//
// The reference is PostgreSQL's own grammar, through libpg_query
// (github.com/pganalyze/pg_query_go/v6, PostgreSQL 17's parser): the text
// is parsed and the whole tree is walked, so that a locking clause or a
// data-modifying CTE is found wherever it is. A fast path (fast.go, lex.go)
// answers for plain SELECTs, BEGIN/START TRANSACTION, COMMIT, ROLLBACK and
// SHOW without calling the parser; it parses a strict subset of the grammar
// and gives up on anything outside it. Tests run every table case, and the
// fuzzer every input, through both paths and require equal results
// whenever the fast path answers. The parser's results are cached by query
// text in a bounded CLOCK cache (a hit takes a read lock and does not
// allocate); the fast path's are not, because it is as cheap as a cache
// insertion and texts with inline literals would only churn the cache.
//
// # Rules
//
// A statement goes to the primary (Result.Reason says why) when it, or any
// part of its tree:
//
//   - is INSERT, UPDATE, DELETE or MERGE, also inside WITH;
//   - has FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE, also in a subquery;
//   - is SELECT ... INTO, CREATE TABLE AS, or any other DDL or maintenance
//     command (CREATE, ALTER, DROP, TRUNCATE, GRANT, REVOKE, COMMENT,
//     REINDEX, CLUSTER, VACUUM, ANALYZE, REFRESH MATERIALIZED VIEW,
//     CHECKPOINT, LOAD, ...);
//   - calls a function that writes or needs the primary: nextval, setval,
//     currval, lastval, txid_current, pg_current_xact_id, pg_current_wal_*,
//     pg_switch_wal, the pg_advisory_* lock functions, pg_notify,
//     set_config, the large-object writers, pg_terminate_backend,
//     pg_promote, dblink_exec, ... (see builtinWriteFuncs), whatever schema
//     the call names, plus Config.WriteFunctions and SetWriteFunctions;
//   - is COPY ... FROM, or COPY ... TO a server file or program
//     (COPY ... TO STDOUT reads);
//   - is LOCK, LISTEN, UNLISTEN, NOTIFY, CALL, DO, PREPARE, EXECUTE,
//     DEALLOCATE, DISCARD, SET or RESET (reported in Result.Sets for the
//     proxy to track and replay; SET LOCAL as well), SET CONSTRAINTS;
//   - is BEGIN / START TRANSACTION, unless READ ONLY (Txn =
//     TxnBeginReadOnly, route replica), or any other transaction control
//     (COMMIT, ROLLBACK, SAVEPOINT, RELEASE, PREPARE TRANSACTION,
//     COMMIT PREPARED, ...), which Result.Txn reports;
//   - does not parse ("parse error": the primary produces the real error).
//
// Reads — SELECT, VALUES, TABLE, SHOW, FETCH, CLOSE, COPY ... TO STDOUT,
// EXPLAIN of a read, DECLARE of a read, SET TRANSACTION READ ONLY — go to a
// replica. EXPLAIN and DECLARE take the route of the statement they
// contain. A text of several statements goes to a replica only if every
// statement is a read and none is transaction control.
//
// Pins: LISTEN, session-level advisory locks (pg_advisory_lock and
// pg_try_advisory_lock, shared or not; the _xact_ ones only need the
// primary), DECLARE ... WITH HOLD, temporary tables, sequences and views
// (CREATE TEMP, ON COMMIT, the pg_temp schema, SELECT INTO TEMP) and
// SQL-level PREPARE.
//
// Hints: a comment containing meridian:primary (/* meridian:primary */ or
// -- meridian:primary) anywhere in the text sends a read to the primary
// (Reason "hint"); meridian:replica is reported in Result.Hint but never
// moves a statement that needs the primary. SET meridian.route = ... is an
// ordinary SetOp the proxy handles itself.
//
// The statements are those of
// https://www.postgresql.org/docs/15/sql-commands.html.
package classify
