package classify

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// testWriteFunctions is the Config.WriteFunctions of the table test.
var testWriteFunctions = []string{"bump_counter", "audit.touch"}

func newTestClassifier() *Classifier {
	return New(Config{WriteFunctions: testWriteFunctions})
}

// Shorthands for the expected results.
func read(n int) Result { return Result{Route: RouteReplica, Statements: n} }

func primary(reason string) Result {
	return Result{Route: RoutePrimary, Reason: reason, Statements: 1}
}

func with(r Result, f func(*Result)) Result { f(&r); return r }

type classifyCase struct {
	name string
	sql  string
	want Result
	// fast: the fast path must answer this case itself.
	fast bool
}

var classifyCases = []classifyCase{
	// Reads.
	{name: "select literal", sql: "SELECT 1", want: read(1), fast: true},
	{name: "select where param", sql: "SELECT id, name FROM users WHERE id = $1", want: read(1), fast: true},
	{name: "select lower case clauses", sql: "select * from t where a > 1 order by a desc nulls last limit 10 offset 5", want: read(1), fast: true},
	{name: "string literal for update", sql: "SELECT 'for update'", want: read(1), fast: true},
	{name: "string literal with semicolon and delete", sql: "SELECT 'a;DELETE FROM t' AS s;", want: read(1), fast: true},
	{name: "block comment with insert", sql: "/* INSERT INTO t VALUES (1) */ SELECT 1", want: read(1), fast: true},
	{name: "line comment with delete", sql: "SELECT 1 -- ; DELETE FROM t", want: read(1), fast: true},
	{name: "nested comment with semicolon", sql: "SELECT 1 /* a /* ; DELETE FROM t */ b */", want: read(1), fast: true},
	{name: "ordinary functions", sql: "SELECT now(), count(*), random(), lower(name) FROM t", want: read(1), fast: true},
	{name: "joins", sql: "SELECT a.x, b.y FROM a JOIN b ON a.id = b.id LEFT OUTER JOIN c AS cc ON cc.id = a.id CROSS JOIN d", want: read(1), fast: true},
	{name: "quoted identifiers", sql: `SELECT "users"."id", "users".* FROM "public"."users" WHERE "users"."email" = $1 LIMIT 1`, want: read(1), fast: true},
	{name: "casts", sql: "SELECT '2020-01-01'::date, 1::int, x::numeric(10,2), y::varchar(3)[] FROM t", want: read(1), fast: true},
	{name: "in not in is not null", sql: "SELECT * FROM t WHERE a IN (1, 2, 3) AND b NOT IN (4) OR c IS NOT NULL AND NOT d", want: read(1), fast: true},
	{name: "group by having", sql: "SELECT a, count(*) AS n FROM t GROUP BY a HAVING count(*) > 1 ORDER BY n DESC", want: read(1), fast: true},
	{name: "like and concat", sql: "SELECT a || '-' || b FROM t WHERE a LIKE 'x%' AND b NOT ILIKE $2", want: read(1), fast: true},
	{name: "function in from", sql: "SELECT g FROM generate_series(1, 10) AS g", want: read(1), fast: true},
	{name: "subquery in from", sql: "SELECT * FROM (SELECT 1) s", want: read(1)},
	{name: "exists subquery", sql: "SELECT EXISTS (SELECT 1 FROM t WHERE a = 1)", want: read(1)},
	{name: "union all", sql: "SELECT 1 UNION ALL SELECT 2", want: read(1)},
	{name: "read cte", sql: "WITH x AS (SELECT 1) SELECT * FROM x", want: read(1)},
	{name: "window function", sql: "SELECT row_number() OVER (ORDER BY a) FROM t", want: read(1)},
	{name: "values", sql: "VALUES (1), (2)", want: read(1)},
	{name: "table", sql: "TABLE t", want: read(1)},
	{name: "show", sql: "SHOW search_path", want: read(1), fast: true},
	{name: "show meridian", sql: "SHOW meridian.route", want: read(1), fast: true},
	{name: "show all", sql: "SHOW ALL", want: read(1)},
	{name: "show transaction isolation level", sql: "SHOW TRANSACTION ISOLATION LEVEL", want: read(1)},
	{name: "explain select", sql: "EXPLAIN SELECT 1", want: read(1)},
	{name: "explain analyze select", sql: "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t", want: read(1)},
	{name: "copy to stdout", sql: "COPY t TO STDOUT", want: read(1)},
	{name: "copy query to stdout", sql: "COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)", want: read(1)},
	{name: "empty", sql: "", want: read(0), fast: true},
	{name: "only comment", sql: "  -- nothing\n", want: read(0), fast: true},
	{name: "only semicolon", sql: ";", want: read(0)},
	{name: "two reads", sql: "SELECT 1; SELECT 2", want: read(2)},
	{name: "fetch", sql: "FETCH 10 FROM c", want: read(1)},
	{name: "close", sql: "CLOSE c", want: read(1)},
	{name: "declare", sql: "DECLARE c CURSOR FOR SELECT 1", want: read(1)},
	{name: "dollar quoted for update", sql: "SELECT $$ for update $$", want: read(1)},
	{name: "unlisted function", sql: "SELECT my_func(1)", want: read(1), fast: true},
	{name: "write function in other schema", sql: "SELECT other.touch(1)", want: read(1)},
	{name: "nextval as column", sql: "SELECT nextval FROM t", want: read(1), fast: true},
	{name: "set transaction read only", sql: "SET TRANSACTION READ ONLY", want: with(read(1), func(r *Result) { r.Txn = TxnSetReadOnly })},
	{name: "begin read only lower", sql: "begin read only", want: with(read(1), func(r *Result) { r.Txn = TxnBeginReadOnly }), fast: true},
	// A hot standby refuses SERIALIZABLE: such transactions go to the primary even when READ ONLY.
	{name: "begin serializable read only", sql: "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY", want: with(primary("BEGIN"), func(r *Result) { r.Txn = TxnBegin }), fast: true},
	{name: "start transaction read only serializable deferrable", sql: "START TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE DEFERRABLE;", want: with(primary("BEGIN"), func(r *Result) { r.Txn = TxnBegin }), fast: true},
	{name: "begin repeatable read read only", sql: "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", want: with(read(1), func(r *Result) { r.Txn = TxnBeginReadOnly }), fast: true},
	{name: "begin transaction read only", sql: "BEGIN TRANSACTION READ ONLY", want: with(read(1), func(r *Result) { r.Txn = TxnBeginReadOnly }), fast: true},

	// Data changes.
	{name: "insert", sql: "INSERT INTO t VALUES (1)", want: primary("INSERT")},
	{name: "insert on conflict", sql: "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = excluded.a RETURNING *", want: primary("INSERT")},
	{name: "update", sql: "UPDATE t SET a = 1 WHERE b = 2", want: primary("UPDATE")},
	{name: "delete", sql: "DELETE FROM t WHERE a = 1", want: primary("DELETE")},
	{name: "merge", sql: "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", want: primary("MERGE")},
	{name: "for update", sql: "SELECT * FROM t FOR UPDATE", want: primary("FOR UPDATE")},
	{name: "for update lower case", sql: "select * from t for update", want: primary("FOR UPDATE")},
	{name: "for share", sql: "SELECT * FROM t WHERE a = 1 FOR SHARE", want: primary("FOR SHARE")},
	{name: "for no key update nowait", sql: "SELECT * FROM t FOR NO KEY UPDATE NOWAIT", want: primary("FOR NO KEY UPDATE")},
	{name: "for key share skip locked", sql: "SELECT * FROM t FOR KEY SHARE SKIP LOCKED", want: primary("FOR KEY SHARE")},
	{name: "for update of", sql: "SELECT * FROM a JOIN b ON a.id = b.id FOR UPDATE OF a", want: primary("FOR UPDATE")},
	{name: "for update in from subquery", sql: "SELECT * FROM (SELECT * FROM t FOR UPDATE) s", want: primary("FOR UPDATE")},
	{name: "for update in exists", sql: "SELECT 1 WHERE EXISTS (SELECT 1 FROM t FOR UPDATE)", want: primary("FOR UPDATE")},
	{name: "for update in cte", sql: "WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", want: primary("FOR UPDATE")},
	{name: "for update after union", sql: "(SELECT 1 FROM t) UNION (SELECT 2 FROM u FOR SHARE)", want: primary("FOR SHARE")},
	{name: "delete cte", sql: "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", want: primary("DELETE")},
	{name: "insert cte", sql: "WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", want: primary("INSERT")},
	{name: "update cte nested", sql: "WITH a AS (SELECT 1), u AS (UPDATE t SET x = 1 RETURNING x) SELECT * FROM a, u", want: primary("UPDATE")},
	{name: "select into", sql: "SELECT * INTO t2 FROM t", want: primary("SELECT INTO")},
	{name: "select into temp", sql: "SELECT * INTO TEMP t2 FROM t", want: with(primary("temp table"), func(r *Result) { r.Pin = PinTempTable })},
	{name: "copy from stdin", sql: "COPY t FROM STDIN", want: with(primary("COPY FROM"), func(r *Result) { r.CopyIn = true })},
	{name: "copy from file", sql: "COPY t (a, b) FROM '/tmp/t.csv' WITH (FORMAT csv)", want: primary("COPY FROM")},
	{name: "copy to file", sql: "COPY t TO '/tmp/t.csv'", want: primary("COPY TO file")},
	{name: "copy to program", sql: "COPY t TO PROGRAM 'gzip > /tmp/t.gz'", want: primary("COPY TO PROGRAM")},
	{name: "copy dml returning to stdout", sql: "COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", want: primary("INSERT")},

	// Functions.
	{name: "nextval", sql: "SELECT nextval('s')", want: primary("nextval()")},
	{name: "nextval public schema", sql: "select public.nextval('s')", want: primary("nextval()")},
	{name: "nextval upper case catalog", sql: "SELECT PG_CATALOG.NEXTVAL('s')", want: primary("nextval()")},
	{name: "nextval quoted", sql: `SELECT "nextval"('s')`, want: primary("nextval()")},
	{name: "nextval in subquery", sql: "SELECT * FROM t WHERE id = (SELECT nextval('s'))", want: primary("nextval()")},
	{name: "nextval in values", sql: "VALUES (nextval('s'))", want: primary("nextval()")},
	{name: "nextval in from", sql: "SELECT * FROM nextval('s')", want: primary("nextval()")},
	{name: "nextval in lateral", sql: "SELECT * FROM t, LATERAL (SELECT setval('s', t.a)) x", want: primary("setval()")},
	{name: "currval", sql: "SELECT currval('s')", want: primary("currval()")},
	{name: "lastval", sql: "SELECT lastval()", want: primary("lastval()")},
	{name: "txid current", sql: "SELECT txid_current()", want: primary("txid_current()")},
	{name: "current xact id", sql: "SELECT pg_current_xact_id()", want: primary("pg_current_xact_id()")},
	{name: "current wal lsn", sql: "SELECT pg_current_wal_lsn()", want: primary("pg_current_wal_lsn()")},
	{name: "advisory lock pins", sql: "SELECT pg_advisory_lock(1)", want: with(primary("advisory lock"), func(r *Result) { r.Pin = PinAdvisoryLock })},
	{name: "try advisory lock shared pins", sql: "SELECT pg_try_advisory_lock_shared(1, 2)", want: with(primary("advisory lock"), func(r *Result) { r.Pin = PinAdvisoryLock })},
	{name: "advisory xact lock", sql: "SELECT pg_advisory_xact_lock(1)", want: primary("advisory lock")},
	{name: "advisory unlock", sql: "SELECT pg_advisory_unlock_all()", want: primary("advisory lock")},
	{name: "explain advisory lock does not pin", sql: "EXPLAIN SELECT pg_advisory_lock(1)", want: primary("advisory lock")},
	{name: "explain analyze advisory lock pins", sql: "EXPLAIN ANALYZE SELECT pg_advisory_lock(1)", want: with(primary("advisory lock"), func(r *Result) { r.Pin = PinAdvisoryLock })},
	{name: "pg notify", sql: "SELECT pg_notify('ch', 'x')", want: primary("pg_notify()")},
	{name: "set config", sql: "SELECT set_config('search_path', 'a', false)", want: with(primary("set_config()"), func(r *Result) { r.Pin = PinSetConfig })},
	{name: "set config computed is_local", sql: "SELECT set_config('work_mem', '8MB', $1)", want: with(primary("set_config()"), func(r *Result) { r.Pin = PinSetConfig })},
	{name: "set config local", sql: "SELECT set_config('app.tenant', '42', true)", want: primary("set_config()")},
	{name: "lo import", sql: "SELECT lo_import('/tmp/x')", want: primary("lo_import()")},
	{name: "terminate backend", sql: "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'x'", want: primary("pg_terminate_backend()")},
	{name: "dblink exec", sql: "SELECT dblink_exec('conn', 'DELETE FROM t')", want: primary("dblink_exec()")},
	{name: "configured function", sql: "SELECT bump_counter(1)", want: primary("volatile function bump_counter()")},
	{name: "configured function case", sql: "SELECT Bump_Counter(1)", want: primary("volatile function bump_counter()")},
	{name: "configured schema function", sql: "SELECT audit.touch(1)", want: primary("volatile function touch()")},
	{name: "configured schema function unqualified", sql: "SELECT touch(1) FROM t", want: primary("volatile function touch()")},

	// DDL and utility commands.
	{name: "create table", sql: "CREATE TABLE x (a int)", want: primary("DDL")},
	{name: "create table as", sql: "CREATE TABLE t2 AS SELECT * FROM t", want: primary("DDL")},
	{name: "create temp table", sql: "CREATE TEMP TABLE x(a int)", want: with(primary("temp table"), func(r *Result) { r.Pin = PinTempTable })},
	{name: "create temporary sequence", sql: "CREATE TEMPORARY SEQUENCE s", want: with(primary("temp table"), func(r *Result) { r.Pin = PinTempTable })},
	{name: "create temp view", sql: "CREATE TEMP VIEW v AS SELECT 1", want: with(primary("temp table"), func(r *Result) { r.Pin = PinTempTable })},
	{name: "create table in pg_temp", sql: "CREATE TABLE pg_temp.x (a int)", want: with(primary("temp table"), func(r *Result) { r.Pin = PinTempTable })},
	{name: "create temp table on commit drop", sql: "CREATE TEMP TABLE x (a int) ON COMMIT DROP", want: with(primary("temp table"), func(r *Result) { r.Pin = PinTempTable })},
	{name: "create temp table as", sql: "CREATE TEMP TABLE x AS SELECT 1", want: with(primary("temp table"), func(r *Result) { r.Pin = PinTempTable })},
	{name: "create index", sql: "CREATE INDEX CONCURRENTLY i ON t (a)", want: primary("DDL")},
	{name: "alter table", sql: "ALTER TABLE t ADD COLUMN b int", want: primary("DDL")},
	{name: "drop table", sql: "DROP TABLE IF EXISTS t", want: primary("DDL")},
	{name: "truncate", sql: "TRUNCATE t", want: primary("TRUNCATE")},
	{name: "grant", sql: "GRANT SELECT ON t TO bob", want: primary("DDL")},
	{name: "revoke", sql: "REVOKE ALL ON t FROM bob", want: primary("DDL")},
	{name: "comment", sql: "COMMENT ON TABLE t IS 'x'", want: primary("DDL")},
	{name: "create function", sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$", want: primary("DDL")},
	{name: "alter system", sql: "ALTER SYSTEM SET work_mem = '64MB'", want: primary("DDL")},
	{name: "reindex", sql: "REINDEX TABLE t", want: primary("REINDEX")},
	{name: "cluster", sql: "CLUSTER t USING i", want: primary("CLUSTER")},
	{name: "vacuum", sql: "VACUUM (ANALYZE) t", want: primary("VACUUM")},
	{name: "analyze", sql: "ANALYZE t", want: primary("ANALYZE")},
	{name: "refresh materialized view", sql: "REFRESH MATERIALIZED VIEW CONCURRENTLY mv", want: primary("REFRESH MATERIALIZED VIEW")},
	{name: "checkpoint", sql: "CHECKPOINT", want: primary("CHECKPOINT")},
	{name: "load", sql: "LOAD 'auto_explain'", want: primary("LOAD")},
	{name: "lock", sql: "LOCK TABLE t", want: primary("LOCK")},
	{name: "lock in mode", sql: "LOCK t IN SHARE MODE NOWAIT", want: primary("LOCK")},
	{name: "listen", sql: "LISTEN ch", want: with(primary("LISTEN"), func(r *Result) { r.Pin = PinListen })},
	{name: "unlisten", sql: "UNLISTEN *", want: primary("UNLISTEN")},
	{name: "notify", sql: "NOTIFY ch, 'x'", want: primary("NOTIFY")},
	{name: "call", sql: "CALL p(1)", want: primary("CALL")},
	{name: "do", sql: "DO $$BEGIN PERFORM 1; END$$", want: primary("DO")},
	{name: "set constraints", sql: "SET CONSTRAINTS ALL DEFERRED", want: primary("SET CONSTRAINTS")},

	// Cursors and prepared statements.
	{name: "declare with hold", sql: "DECLARE c CURSOR WITH HOLD FOR SELECT 1", want: with(read(1), func(r *Result) { r.Pin = PinHoldCursor })},
	{name: "declare for update", sql: "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", want: primary("FOR UPDATE")},
	{name: "prepare", sql: "PREPARE p AS SELECT 1", want: with(primary("PREPARE"), func(r *Result) { r.Pin = PinPrepare })},
	{name: "prepare insert", sql: "PREPARE p (int) AS INSERT INTO t VALUES ($1)", want: with(primary("PREPARE"), func(r *Result) { r.Pin = PinPrepare })},
	{name: "execute", sql: "EXECUTE p(1)", want: primary("EXECUTE")},
	{name: "deallocate", sql: "DEALLOCATE p", want: primary("DEALLOCATE")},
	{name: "deallocate all", sql: "DEALLOCATE ALL", want: with(primary("DEALLOCATE"), func(r *Result) { r.Discard = true })},
	{name: "discard all", sql: "DISCARD ALL", want: with(primary("DISCARD"), func(r *Result) { r.Discard = true; r.Sets = []SetOp{{Kind: SetResetAll, Stmt: "DISCARD ALL"}} })},
	{name: "discard temp", sql: "DISCARD TEMP", want: primary("DISCARD")},

	// Session state.
	{name: "set search path list", sql: "SET search_path = a, b", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetSession, Name: "search_path", Value: "a, b", Stmt: "SET search_path = a, b"}}
	})},
	{name: "set local statement timeout", sql: "SET LOCAL statement_timeout = '1s'", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetLocal, Name: "statement_timeout", Value: "1s", Stmt: "SET LOCAL statement_timeout = '1s'"}}
	})},
	{name: "set session number", sql: "set session work_mem to 65536;", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetSession, Name: "work_mem", Value: "65536", Stmt: "set session work_mem to 65536"}}
	})},
	{name: "set meridian route", sql: "SET meridian.route = primary", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetSession, Name: "meridian.route", Value: "primary", Stmt: "SET meridian.route = primary"}}
	})},
	{name: "set meridian route replica", sql: "SET meridian.route = replica", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetSession, Name: "meridian.route", Value: "replica", Stmt: "SET meridian.route = replica"}}
	})},
	{name: "set local meridian route quoted", sql: "SET LOCAL meridian.route TO 'primary';", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetLocal, Name: "meridian.route", Value: "primary", Stmt: "SET LOCAL meridian.route TO 'primary'"}}
	})},
	{name: "set meridian reserved word elsewhere", sql: "SET other.route = primary", want: Result{Route: RoutePrimary, Reason: "parse error"}},
	{name: "set meridian max staleness", sql: "SET Meridian.Max_Staleness TO '200ms'", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetSession, Name: "meridian.max_staleness", Value: "200ms", Stmt: "SET Meridian.Max_Staleness TO '200ms'"}}
	})},
	{name: "set time zone", sql: "SET TIME ZONE 'UTC'", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetSession, Name: "timezone", Value: "UTC", Stmt: "SET TIME ZONE 'UTC'"}}
	})},
	{name: "set time zone interval", sql: "SET TIME ZONE INTERVAL '+01:00' HOUR TO MINUTE", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetSession, Name: "timezone", Value: "INTERVAL '+01:00' HOUR TO MINUTE", Stmt: "SET TIME ZONE INTERVAL '+01:00' HOUR TO MINUTE"}}
	})},
	{name: "set to default", sql: "SET search_path TO DEFAULT", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetReset, Name: "search_path", Stmt: "SET search_path TO DEFAULT"}}
	})},
	{name: "set role", sql: "SET ROLE app", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetSession, Name: "role", Value: "app", Stmt: "SET ROLE app"}}
	})},
	{name: "reset", sql: "RESET search_path", want: with(primary("RESET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetReset, Name: "search_path", Stmt: "RESET search_path"}}
	})},
	{name: "reset all", sql: "RESET ALL", want: with(primary("RESET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetResetAll, Stmt: "RESET ALL"}}
	})},
	{name: "session characteristics read only", sql: "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", want: with(primary("SET"), func(r *Result) {
		r.Sets = []SetOp{{Kind: SetSession, Name: "default_transaction_read_only", Value: "on", Stmt: "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"}}
	})},
	{name: "set transaction isolation", sql: "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", want: with(primary("SET TRANSACTION"), func(r *Result) { r.Txn = TxnSetTransaction })},

	// Transaction control.
	{name: "begin", sql: "BEGIN", want: with(primary("BEGIN"), func(r *Result) { r.Txn = TxnBegin }), fast: true},
	{name: "begin work semicolon", sql: "begin work;", want: with(primary("BEGIN"), func(r *Result) { r.Txn = TxnBegin }), fast: true},
	{name: "start transaction isolation", sql: "START TRANSACTION ISOLATION LEVEL REPEATABLE READ", want: with(primary("BEGIN"), func(r *Result) { r.Txn = TxnBegin }), fast: true},
	{name: "begin read only then read write", sql: "BEGIN READ ONLY, READ WRITE", want: with(primary("BEGIN"), func(r *Result) { r.Txn = TxnBegin }), fast: true},
	{name: "commit", sql: "COMMIT", want: with(primary("COMMIT"), func(r *Result) { r.Txn = TxnCommit }), fast: true},
	{name: "end", sql: "END TRANSACTION", want: with(primary("COMMIT"), func(r *Result) { r.Txn = TxnCommit }), fast: true},
	{name: "commit and chain", sql: "COMMIT AND CHAIN", want: with(primary("COMMIT"), func(r *Result) { r.Txn = TxnCommitAndChain })},
	{name: "rollback", sql: "ROLLBACK", want: with(primary("ROLLBACK"), func(r *Result) { r.Txn = TxnRollback }), fast: true},
	{name: "abort", sql: "abort", want: with(primary("ROLLBACK"), func(r *Result) { r.Txn = TxnRollback }), fast: true},
	{name: "savepoint", sql: "SAVEPOINT s1", want: with(primary("SAVEPOINT"), func(r *Result) { r.Txn = TxnSavepoint })},
	{name: "release", sql: "RELEASE SAVEPOINT s1", want: with(primary("RELEASE"), func(r *Result) { r.Txn = TxnRelease })},
	{name: "rollback to", sql: "ROLLBACK TO s1", want: with(primary("ROLLBACK"), func(r *Result) { r.Txn = TxnRollbackTo })},
	{name: "prepare transaction", sql: "PREPARE TRANSACTION 'g1'", want: with(primary("PREPARE TRANSACTION"), func(r *Result) { r.Txn = TxnPrepare })},
	{name: "commit prepared", sql: "COMMIT PREPARED 'g1'", want: with(primary("COMMIT PREPARED"), func(r *Result) { r.Txn = TxnCommitPrepared })},
	{name: "rollback prepared", sql: "ROLLBACK PREPARED 'g1'", want: with(primary("ROLLBACK PREPARED"), func(r *Result) { r.Txn = TxnRollbackPrepared })},

	// EXPLAIN.
	{name: "explain analyze delete", sql: "EXPLAIN ANALYZE DELETE FROM t", want: primary("DELETE")},
	{name: "explain insert", sql: "EXPLAIN INSERT INTO t VALUES (1)", want: primary("INSERT")},
	{name: "explain for update", sql: "EXPLAIN (COSTS off) SELECT * FROM t FOR UPDATE", want: primary("FOR UPDATE")},
	{name: "explain create temp table as", sql: "EXPLAIN ANALYZE CREATE TEMP TABLE x AS SELECT 1", want: with(primary("temp table"), func(r *Result) { r.Pin = PinTempTable })},

	// Several statements.
	{name: "read then delete", sql: "SELECT 1; DELETE FROM t", want: with(primary("DELETE"), func(r *Result) { r.Statements = 2 })},
	{name: "begin select commit", sql: "BEGIN; SELECT 1; COMMIT;", want: with(primary("BEGIN"), func(r *Result) { r.Txn = TxnCommit; r.Statements = 3 })},
	{name: "begin read only and select", sql: "BEGIN READ ONLY; SELECT 1", want: with(primary("multiple statements"), func(r *Result) { r.Txn = TxnBeginReadOnly; r.Statements = 2 })},
	{name: "set then select", sql: "SET search_path = a; SELECT 1", want: with(primary("SET"), func(r *Result) {
		r.Statements = 2
		r.Sets = []SetOp{{Kind: SetSession, Name: "search_path", Value: "a", Stmt: "SET search_path = a"}}
	})},
	{name: "select then set and reset", sql: "SELECT 1;\n  SET a.b = 1;\n RESET c.d ;", want: with(primary("SET"), func(r *Result) {
		r.Statements = 3
		r.Sets = []SetOp{
			{Kind: SetSession, Name: "a.b", Value: "1", Stmt: "SET a.b = 1"},
			{Kind: SetReset, Name: "c.d", Stmt: "RESET c.d"},
		}
	})},
	{name: "listen and advisory lock", sql: "LISTEN a; SELECT pg_advisory_lock(1)", want: with(primary("LISTEN"), func(r *Result) { r.Statements = 2; r.Pin = PinListen | PinAdvisoryLock })},

	// Parse errors.
	{name: "misspelt keyword", sql: "SELEC 1", want: Result{Route: RoutePrimary, Reason: "parse error"}},
	{name: "unterminated string", sql: "SELECT 'abc", want: Result{Route: RoutePrimary, Reason: "parse error"}},
	{name: "non associative comparison", sql: "SELECT 1 = 1 = 1", want: Result{Route: RoutePrimary, Reason: "parse error"}},
	{name: "nul byte", sql: "SELECT 1\x00; DELETE FROM t", want: Result{Route: RoutePrimary, Reason: "parse error"}},
	{name: "invalid utf8", sql: "SELECT '\xff'", want: Result{Route: RoutePrimary, Reason: "parse error"}},
	{name: "trailing junk after number", sql: "SELECT 1a", want: Result{Route: RoutePrimary, Reason: "parse error"}},

	// Hints.
	{name: "primary hint", sql: "/* meridian:primary */ SELECT 1", want: with(primary("hint"), func(r *Result) { r.Hint = RoutePrimary }), fast: true},
	{name: "primary hint line comment", sql: "SELECT * FROM t -- meridian:primary", want: with(primary("hint"), func(r *Result) { r.Hint = RoutePrimary }), fast: true},
	{name: "primary hint upper case", sql: "/* MERIDIAN:PRIMARY */ SELECT 1", want: with(primary("hint"), func(r *Result) { r.Hint = RoutePrimary }), fast: true},
	{name: "primary hint on slow path read", sql: "WITH x AS (SELECT 1) /* app=shop meridian:primary */ SELECT * FROM x", want: with(primary("hint"), func(r *Result) { r.Hint = RoutePrimary })},
	{name: "primary hint on begin read only", sql: "BEGIN READ ONLY /* meridian:primary */", want: with(primary("hint"), func(r *Result) { r.Hint = RoutePrimary; r.Txn = TxnBeginReadOnly }), fast: true},
	{name: "replica hint on read", sql: "/* meridian:replica */ SELECT 1", want: with(read(1), func(r *Result) { r.Hint = RouteReplica }), fast: true},
	{name: "replica hint on write", sql: "/* meridian:replica */ INSERT INTO t VALUES (1)", want: with(primary("INSERT (replica hint ignored)"), func(r *Result) { r.Hint = RouteReplica })},
	{name: "both hints", sql: "/* meridian:replica */ SELECT 1 /* meridian:primary */", want: with(primary("hint"), func(r *Result) { r.Hint = RoutePrimary }), fast: true},
	{name: "hint inside string", sql: "SELECT '/* meridian:primary */'", want: read(1), fast: true},
	{name: "hint word must end", sql: "/* meridian:primaryish */ SELECT 1", want: read(1), fast: true},
	{name: "hint on parse error", sql: "/* meridian:replica */ SELEC 1", want: Result{Route: RoutePrimary, Reason: "parse error (replica hint ignored)", Hint: RouteReplica}},
}

func TestClassify(t *testing.T) {
	c := newTestClassifier()
	for _, tc := range classifyCases {
		t.Run(tc.name, func(t *testing.T) {
			// Twice: the second answer comes from the cache.
			for i := range 2 {
				got := c.Classify(tc.sql)
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Fatalf("Classify(%q) #%d mismatch (-want +got):\n%s", tc.sql, i+1, diff)
				}
			}
		})
	}
}

func TestClassifyCaseCount(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range classifyCases {
		if seen[tc.name] {
			t.Errorf("duplicate case name %q", tc.name)
		}
		seen[tc.name] = true
	}
	if len(classifyCases) < 60 {
		t.Errorf("only %d cases", len(classifyCases))
	}
	t.Logf("%d table cases", len(classifyCases))
}

// TestFastPathAgrees runs every table case through the fast path and the
// real parser: whenever the fast path answers, the answers must be equal.
func TestFastPathAgrees(t *testing.T) {
	fs := newTestClassifier().funcs.Load()
	answered := 0
	for _, tc := range classifyCases {
		slow := classifySlow(tc.sql, fs)
		if diff := cmp.Diff(tc.want, slow); diff != "" {
			t.Errorf("%s: slow path mismatch (-want +got):\n%s", tc.name, diff)
		}
		fast, ok := classifyFast(tc.sql, fs)
		if !ok {
			if tc.fast {
				t.Errorf("%s: fast path did not answer %q", tc.name, tc.sql)
			}
			continue
		}
		answered++
		if diff := cmp.Diff(slow, fast); diff != "" {
			t.Errorf("%s: fast path disagrees with the parser on %q (-slow +fast):\n%s", tc.name, tc.sql, diff)
		}
	}
	t.Logf("fast path answered %d of %d cases", answered, len(classifyCases))
}

// fastCorpus holds extra texts at the edges of the fast path's grammar:
// each must get the same answer from both paths, or none from the fast
// path.
var fastCorpus = []string{
	"SELECT", "SELECT ;", "SELECT 1,", "SELECT 1 2", "SELECT (1", "SELECT 1)", "SELECT * + 1",
	"SELECT a FROM", "SELECT a FROM t WHERE", "SELECT a FROM t t2 t3", "SELECT a FROM t AS",
	"SELECT 1 < 2 = true", "SELECT 1 = 2 IS NULL", "SELECT 1 IS NULL = true", "SELECT null is null is null",
	"SELECT a LIKE b LIKE c FROM t", "SELECT a LIKE b IN (1) FROM t", "SELECT a IN (1) IN (true) FROM t",
	"SELECT a IN (1) LIKE 'x' FROM t", "SELECT true = NOT false", "SELECT true = not false = true",
	"SELECT NOT a = b = c FROM t", "SELECT a = -b = c FROM t", "SELECT - - 1", "SELECT +-1", "SELECT 1 +-1",
	"SELECT 1*-1", "SELECT 1 <-> 2", "SELECT 1 ! 2", "SELECT ~1", "SELECT 1 => 2", "SELECT f(a => 1)",
	"SELECT 1::int(3)", "SELECT 1::numeric(1,2,3)", "SELECT 1::varchar(1.5)", "SELECT 1::varchar(99999999999)",
	"SELECT 1::int[]", "SELECT 1::int[3]", "SELECT 1::text::int", "SELECT 1::double precision", "SELECT 1::double",
	"SELECT 1::pg_catalog.int4", "SELECT 1::a.b.c", "SELECT x::\"MyType\" FROM t",
	"SELECT t.* FROM t", "SELECT t.*.a FROM t", "SELECT t.*() FROM t", "SELECT t.* = 1 FROM t", "SELECT a.b.c.d FROM t",
	"SELECT * FROM a.b.c", "SELECT * FROM a.b.c.d", "SELECT 1 AS from", "SELECT 1 AS \"x\"", "SELECT 1 \"x\"",
	"SELECT 1 x", "SELECT 1 name", "SELECT name FROM t", "SELECT name, type, value FROM t",
	"SELECT count(*) total FROM t", "SELECT count(*) over w FROM t", "SELECT f() filter (where true) FROM t",
	"SELECT 1.", "SELECT 1.5", "SELECT .5", "SELECT 1e5", "SELECT 0x1F", "SELECT 1_000", "SELECT 1..2",
	"SELECT $1", "SELECT $1a", "SELECT $", "SELECT 'a' 'b'", "SELECT 'a'\n'b'", "SELECT e'\\''", "SELECT E'\\'' ; DELETE FROM t; --'",
	"SELECT u&'\\0041'", "SELECT U&\"a\" FROM t", "SELECT \"\"", "SELECT \"a\"\"b\"", "SELECT b'101'", "SELECT x'1F'",
	"SELECT n'x'", "SELECT date '2020-01-01'", "SELECT interval '1 day'", "SELECT int '1'",
	"SELECT 1 /* unterminated", "SELECT 1 /* a */ /* b", "SELECT 1 /*/ x */", "SELECT 1 /**/", "SELECT 1 /* /* */",
	"SELECT 1 --\n + 2", "SELECT 1 +--x\n 1", "SELECT 1 +/* c */ 1", "SELECT 1\v", "SELECT\t1\f",
	"SELECT a FROM t GROUP BY rollup(a)", "SELECT a FROM t GROUP BY rollup()", "SELECT a FROM t GROUP BY cube()",
	"SELECT a FROM t GROUP BY ()", "SELECT a FROM t GROUP BY ALL a", "SELECT a FROM t ORDER BY a NULLS",
	"SELECT a FROM t ORDER BY nulls first", "SELECT a FROM t LIMIT ALL", "SELECT a FROM t LIMIT 1, 2",
	"SELECT a FROM t OFFSET 1 LIMIT 2", "SELECT a FROM t LIMIT 1 LIMIT 2", "SELECT a FROM t OFFSET 1 ROWS",
	"SELECT DISTINCT a FROM t", "SELECT DISTINCT ON (a) a FROM t", "SELECT ALL a FROM t", "SELECT DISTINCT",
	"SELECT a FROM t JOIN u", "SELECT a FROM t JOIN u ON true JOIN v ON true", "SELECT a FROM t NATURAL JOIN u",
	"SELECT a FROM t INNER JOIN u USING (a)", "SELECT a FROM t CROSS JOIN u ON true", "SELECT a FROM t LEFT u",
	"SELECT a FROM t WHERE a BETWEEN 1 AND 2", "SELECT a FROM t WHERE a NOT BETWEEN 1 AND 2", "SELECT a FROM t WHERE a ISNULL",
	"SELECT a FROM t WHERE a IS DISTINCT FROM b", "SELECT a FROM t WHERE a IS NOT TRUE", "SELECT a FROM t WHERE a IS UNKNOWN",
	"SELECT a FROM t WHERE a IN ()", "SELECT a FROM t WHERE a IN (SELECT 1)", "SELECT a FROM t WHERE NOT IN (1)",
	"SELECT a[1] FROM t", "SELECT (a).b FROM t", "SELECT ROW(1, 2)", "SELECT (1, 2)", "SELECT ARRAY[1]",
	"SELECT CASE WHEN a THEN 1 END FROM t", "SELECT coalesce(a, 1) FROM t", "SELECT current_timestamp",
	"SELECT version()", "SELECT text 'x'", "SELECT f(1) 'x'", "SELECT format json", "SELECT nulls last",
	"SELECT a FROM only t", "SELECT a FROM t *", "SELECT a FROM t TABLESAMPLE system (1)", "SELECT a FROM t AS x(a)",
	"SELECT a FROM generate_series(1, 2) WITH ORDINALITY", "SELECT * FROM rows from (f())",
	"SELECT 1;", "SELECT 1;;", "SELECT 1; ", "SELECT 1; -- c", "SELECT 1 ; SELECT 2", ";SELECT 1",
	"SELECT 1 FOR UPDATE", "SELECT 1 INTO x", "SELECT 1 UNION SELECT 2", "SELECT 1 WINDOW w AS ()",
	"BEGIN", "BEGIN;", "BEGIN WORK", "BEGIN TRANSACTION", "BEGIN ISOLATION", "BEGIN ISOLATION LEVEL",
	"BEGIN ISOLATION LEVEL READ", "BEGIN ISOLATION LEVEL READ COMMITTED", "BEGIN READ", "BEGIN , READ ONLY",
	"BEGIN READ ONLY,", "BEGIN READ ONLY READ WRITE", "BEGIN NOT DEFERRABLE", "BEGIN NOT", "BEGIN DEFERRABLE, DEFERRABLE",
	"START", "START TRANSACTION", "START READ ONLY", "COMMIT WORK", "COMMIT TRANSACTION;", "COMMIT AND NO CHAIN",
	"COMMIT PREPARED 'x'", "END WORK", "ROLLBACK WORK", "ROLLBACK TO SAVEPOINT a", "ROLLBACK AND CHAIN", "ABORT TRANSACTION",
	"SHOW", "SHOW a", "SHOW a.b", "SHOW a.b.c", "SHOW a.b.c.d", "SHOW a.select", "SHOW \"A\"", "SHOW time zone",
	"SHOW transaction", "SHOW session authorization", "SHOW name", "SHOW all;",
	"SELECT a FROM t WHERE b = 'it''s'", "SELECT 'x' || \"y\" FROM t", "SELECT a -> 'b' ->> 'c' FROM t",
	"SELECT a @> b, a <@ b, a && b FROM t", "SELECT a #>> '{a}' FROM t", "SELECT 2 ^ 3 ^ 4", "SELECT 7 % 3 * 2 / 1",
	"SELECT -1::int", "SELECT (-1)::int", "SELECT a FROM t WHERE a = ANY($1)", "SELECT a FROM t WHERE a <> ALL($1)",
	"SELECT pg_advisory_lock(1)", "SELECT public.pg_advisory_lock(1)", "SELECT \"PG_ADVISORY_LOCK\"(1)", "SELECT touch(1)",
	"SELECT x.touch(1)", "SELECT audit.touch(1)", "SELECT lo_open(1, 2)",
	"SELECT t.not in (1) FROM t", "SELECT t.not FROM t", "SELECT 1 AS not IN (1)", "SELECT 1 AS not FROM t",
	"SELECT 1 AS nulls first", "SELECT x::a.not in (1) FROM t", "SELECT * FROM a.nulls first",
	"SELECT $99999999999", "SELECT $2147483647", "SELECT $2147483648", "SELECT $0",
	"SELECT " + strings.Repeat("(", 60) + "1" + strings.Repeat(")", 60),
	"SELECT " + strings.Repeat("-", 1) + strings.Repeat(" -", 70) + " 1",
	"SELECT " + strings.Repeat("NOT ", 70) + "true",
	"SELECT 0" + strings.Repeat("!", 63) + "1", "SELECT 0" + strings.Repeat("!", 64) + "1",
	// Data-modifying statements as the simple protocol sends them (pgbench's TPC-B-like script).
	"UPDATE pgbench_accounts SET abalance = abalance + -4123 WHERE aid = 77812;",
	"UPDATE pgbench_tellers SET tbalance = tbalance + 12 WHERE tid = 3", "UPDATE s.t AS x SET a = 1, b = x.b * 2",
	"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 77812, -4123, CURRENT_TIMESTAMP);",
	"INSERT INTO t VALUES (1, 'a'), (2, 'b')", "INSERT INTO t (a) VALUES ($1)", "INSERT INTO t (a) VALUES (DEFAULT)",
	"INSERT INTO t (a) VALUES (1) RETURNING a", "INSERT INTO t SELECT 1", "INSERT INTO t (select) VALUES (1)",
	"DELETE FROM t WHERE a = 1", "DELETE FROM t", "DELETE FROM a.b.c.d WHERE x", "DELETE FROM t AS u WHERE u.a = 1",
	"UPDATE t SET a = pg_advisory_lock(1)", "UPDATE t SET a = touch(1)", "UPDATE t x SET a = 1", "UPDATE t SET (a, b) = (1, 2)",
	"UPDATE t SET a = 1 WHERE", "UPDATE t SET a.b = 1", "INSERT INTO t VALUES (1); SELECT 1", "DELETE t",
	"UPDATE ONLY t SET a = 1", "INSERT INTO t (a,) VALUES (1)", "UPDATE t SET a = 1 FROM u",
	"SELECT current_timestamp, current_time(3), localtimestamp(0), localtime, current_date, current_user, user",
	"SELECT session_user, current_role, current_catalog", "SELECT current_timestamp(x)", "SELECT current_timestamp()",
	"SELECT current_date(1)", "SELECT current_timestamp::text", "SELECT localtime(-1)", "SELECT current_schema",
}

func TestFastCorpusAgrees(t *testing.T) {
	fs := newTestClassifier().funcs.Load()
	answered := 0
	for _, sql := range fastCorpus {
		fast, ok := classifyFast(sql, fs)
		if !ok {
			continue
		}
		answered++
		slow := classifySlow(sql, fs)
		if diff := cmp.Diff(slow, fast); diff != "" {
			t.Errorf("fast path disagrees with the parser on %q (-slow +fast):\n%s", sql, diff)
		}
	}
	t.Logf("fast path answered %d of %d corpus texts", answered, len(fastCorpus))
}

// TestKeywordsMatchScanner checks the generated keyword table against the
// real lexer.
func TestKeywordsMatchScanner(t *testing.T) {
	want := map[pg_query.KeywordKind]kwCategory{
		pg_query.KeywordKind_NO_KEYWORD:             kwNone,
		pg_query.KeywordKind_UNRESERVED_KEYWORD:     kwUnreserved,
		pg_query.KeywordKind_COL_NAME_KEYWORD:       kwColName,
		pg_query.KeywordKind_TYPE_FUNC_NAME_KEYWORD: kwTypeFuncName,
		pg_query.KeywordKind_RESERVED_KEYWORD:       kwReserved,
	}
	check := func(word string) {
		res, err := pg_query.Scan(word)
		if err != nil || len(res.Tokens) != 1 {
			t.Errorf("Scan(%q) = %v, %v", word, res, err)
			return
		}
		if got, w := keywordOf(word), want[res.Tokens[0].KeywordKind]; got != w {
			t.Errorf("keywordOf(%q) = %d, scanner says %v", word, got, res.Tokens[0].KeywordKind)
		}
	}
	for kw := range keywords {
		check(kw)
	}
	for _, word := range []string{"users", "nextval", "count", "x", "Select", "TRUE", "Name"} {
		check(word)
	}
}

func TestStringers(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{RoutePrimary.String(), "primary"},
		{RouteReplica.String(), "replica"},
		{RouteNone.String(), "none"},
		{Route(9).String(), "Route(9)"},
		{TxnBeginReadOnly.String(), "BEGIN READ ONLY"},
		{TxnOp(200).String(), "TxnOp(200)"},
		{(PinListen | PinTempTable).String(), "listen|temp-table"},
		{PinNone.String(), "none"},
		{Pin(0x80).String(), "0x80"},
		{SetLocal.String(), "set-local"},
		{SetKind(0).String(), "SetKind(0)"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{WriteFunctions: []string{"f", "s.f", " S.G "}}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	err := (Config{WriteFunctions: []string{"ok", "", "s."}}).Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, key := range []string{"write_functions[1]", "write_functions[2]"} {
		if !contains(err.Error(), key) {
			t.Errorf("error %q does not name %s", err, key)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// tokenVocabulary is the material of TestFastPathRandomTokens: pieces of
// SQL that exercise the fast path's grammar, its keywords and the tokens
// around its edges.
var tokenVocabulary = []string{
	"SELECT", "FROM", "WHERE", "GROUP", "BY", "HAVING", "ORDER", "LIMIT", "OFFSET", "ALL", "DISTINCT", "ON",
	"AS", "JOIN", "LEFT", "OUTER", "INNER", "CROSS", "FULL", "RIGHT", "USING", "NATURAL",
	"AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE", "UNKNOWN", "IN", "LIKE", "ILIKE", "BETWEEN", "SIMILAR",
	"ASC", "DESC", "NULLS", "FIRST", "LAST", "WITH", "WITHOUT", "FORMAT", "JSON", "TIME", "ORDINALITY",
	"FOR", "UPDATE", "SHARE", "INTO", "UNION", "CASE", "WHEN", "THEN", "END", "ROLLUP", "CUBE",
	"name", "type", "value", "a", "b", "t", "x", `"q"`, `"Q x"`, "nextval", "now", "count", "touch", "audit",
	"int", "integer", "numeric", "varchar", "double", "precision", "text", "interval",
	"1", "2.5", "0", "99999999999", "'s'", "'it''s'", "$1", "$2",
	"(", ")", ",", ".", "*", "::", "[", "]", ";",
	"+", "-", "/", "%", "^", "=", "<", ">", "<=", ">=", "<>", "!=", "||", "->>", "@>", "~", "!", "=>",
	"/* c */", "/* meridian:primary */", "-- meridian:replica\n", "\n",
	"BEGIN", "START", "TRANSACTION", "WORK", "COMMIT", "ROLLBACK", "ABORT", "READ", "ONLY", "WRITE",
	"ISOLATION", "LEVEL", "SERIALIZABLE", "REPEATABLE", "COMMITTED", "UNCOMMITTED", "DEFERRABLE", "CHAIN", "SHOW",
}

// TestFastPathRandomTokens strings random tokens together after a
// statement start and checks that the fast path, whenever it answers,
// agrees with the real parser. Byte-level fuzzing rarely builds such
// grammatical near-misses.
func TestFastPathRandomTokens(t *testing.T) {
	n := 30000
	if testing.Short() {
		n = 3000
	}
	fs := newTestClassifier().funcs.Load()
	rng := rand.New(rand.NewPCG(1, 2))
	starts := []string{"SELECT", "SELECT", "SELECT", "SELECT a FROM t", "SELECT * FROM t WHERE", "BEGIN", "SHOW", "COMMIT"}
	answered := 0
	var sb strings.Builder
	for range n {
		sb.Reset()
		sb.WriteString(starts[rng.IntN(len(starts))])
		for range 1 + rng.IntN(10) {
			sb.WriteByte(' ')
			sb.WriteString(tokenVocabulary[rng.IntN(len(tokenVocabulary))])
		}
		sql := sb.String()
		fast, ok := classifyFast(sql, fs)
		if !ok {
			continue
		}
		answered++
		if diff := cmp.Diff(classifySlow(sql, fs), fast); diff != "" {
			t.Errorf("fast path disagrees with the parser on %q (-slow +fast):\n%s", sql, diff)
		}
	}
	t.Logf("fast path answered %d of %d random texts", answered, n)
}
