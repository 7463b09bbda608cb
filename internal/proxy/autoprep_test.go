package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// autoPrepareCorpus are simple queries run both directly and through the proxy, which runs those it
// can as prepared statements with their numeric literals as parameters (auto_prepare). Each runs
// twice on both sides: the second run reuses the statement prepared by the first.
var autoPrepareCorpus = []string{
	"SELECT * FROM ap WHERE id = 12",
	"SELECT id, num * 1.50, num + 10 FROM ap WHERE big > 3000000000 ORDER BY 1",
	"SELECT small + 10, count(*) FROM ap GROUP BY small + 10 ORDER BY 1",
	"SELECT small + 10 AS s FROM ap GROUP BY 1 ORDER BY s DESC LIMIT 10",
	"SELECT 12345, 12345::bigint, 99999999999999999999, -2147483648, 2147483648, 12.50, 0.10 + 0.20, -9223372036854775808",
	"SELECT pg_typeof(12345), pg_typeof(3000000000), pg_typeof(12.5), pg_typeof(-2147483648), 12345 AS x",
	"SELECT * FROM ap WHERE r = 10.5 OR d < 20.25 ORDER BY id LIMIT 10 OFFSET 10",
	"SELECT id FROM ap ORDER BY 1 DESC LIMIT 15",
	"SELECT DISTINCT ON (small) small, id FROM ap ORDER BY small, id DESC LIMIT 12",
	"SELECT id::numeric(10,2), CAST(id AS varchar(10)), (id * 1000)::numeric(12,3), now() - interval '10 days' < now() FROM ap WHERE id IN (10, 20, 30) ORDER BY id",
	"SELECT t FROM ap WHERE t LIKE '%10%' ORDER BY id LIMIT 10",
	"SELECT generate_series(10, 15), repeat('ab', 12)",
	"SELECT (ARRAY[10, 20, 30])[2], (ARRAY[10,20,30])[2:3], 'x' || 12345",
	"SELECT sum(id) FILTER (WHERE id > 50) OVER (ORDER BY id ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) FROM ap ORDER BY id LIMIT 5",
	"WITH RECURSIVE r(n) AS (SELECT 10 UNION ALL SELECT n + 10 FROM r WHERE n < 100) SELECT * FROM r",
	"SELECT percentile_cont(0.25) WITHIN GROUP (ORDER BY id), round(avg(num), 3) FROM ap",
	"SELECT CASE WHEN id > 50 THEN 100 ELSE 200 END, coalesce(small, 77), greatest(id, 44) FROM ap ORDER BY id LIMIT 3",
	"SELECT id FROM ap WHERE id = 99999999999",
	"SELECT to_char(12345.678, '99999.99'), 12345 % 100, 2 ^ 10, 10 / 4, 10.0 / 4",
	"SELECT current_timestamp(3) IS NOT NULL, 33",
	"SELECT id, 10 FROM ap ORDER BY 10 LIMIT 2",
	"VALUES (10, 20), (30, 40.5)",
	"SELECT * FROM (SELECT id, small FROM ap ORDER BY id LIMIT 20) s WHERE small > 10 AND id < 18",
	// Errors: same SQLSTATE, message and position.
	"SELECT 10 / 0",
	"SELECT 'x' + 10",
	"SELECT nosuchcol + 10 FROM ap",
	"SELECT 3000000000::int",
	"SELECT * FROM ap WHERE t = 12345",
	"SELECT 10 FROM nosuchtable",
	// Writes.
	"UPDATE ap SET num = num + 1.25 WHERE id BETWEEN 10 AND 20",
	"DELETE FROM ap WHERE id > 990 AND id < 995 RETURNING id",
	"INSERT INTO ap (id, t) VALUES (2000, 'a') ON CONFLICT (id) DO UPDATE SET t = ap.t || 'b' RETURNING t, 2000",
	"INSERT INTO ap (id, small) VALUES (3000, 40000)",
	"INSERT INTO ap (id, big, num) VALUES (4000 + (SELECT count(*) FROM ap WHERE id >= 4000), 3000000000, 12.345) RETURNING *",
	"WITH moved AS (DELETE FROM ap WHERE id BETWEEN 980 AND 983 RETURNING *) SELECT count(*), sum(id) FROM moved",
	"SELECT id FROM ap WHERE id = 15 FOR UPDATE",
	// issue 13, section 5: the parser's typing of a negated literal in parentheses, quoted type
	// names with modifiers, negative and ALL output-column numbers, folding at planning.
	"SELECT pg_typeof(-(2147483648)), pg_typeof(-((2147483648))), -(2147483647)",
	"SELECT -(2147483648) * 2",
	"SELECT 12.345::\"numeric\"(10,2), CAST(12345 AS \"varchar\"(10)), bpchar(10) 'abc', CAST(id AS \"varchar\"(10)) FROM ap WHERE id = 12",
	"SELECT id FROM ap ORDER BY -10",
	"SELECT small FROM ap WHERE id < 100 GROUP BY -10",
	"SELECT small FROM ap WHERE id < 100 GROUP BY ALL 10",
	"SELECT small, count(*) FROM ap WHERE id < 100 GROUP BY ALL 1 ORDER BY 1",
	"SELECT CASE WHEN id > 0 THEN id ELSE 100/00 END FROM ap WHERE id = 12",
	// Folding a comparison of constants to false drops the branch before 1/0 is folded; with
	// 12345 a parameter, a generic plan keeps the branch and folds 1/0 (22012).
	"SELECT CASE WHEN id < 0 AND 10 = 12345 THEN 1/0 ELSE id END FROM ap WHERE id = 12",
	"SELECT CASE WHEN 10 = 12345 THEN 1/0 ELSE 55 END",
	"SELECT CASE WHEN id = 12345 THEN 100/00 END FROM ap WHERE id < 15 ORDER BY id",
	"SELECT id FROM ap WHERE id = 12345 AND 2147483647 + 10 > 0",
	"SELECT id FROM ap WHERE id BETWEEN 10 AND 13 AND small NOT IN (10, 11) AND t LIKE 'row 1%' ORDER BY id LIMIT 10 OFFSET 1",
	"UPDATE ap SET small = 40000 WHERE id = 123456",
	// Not parameterized: must still work.
	"SELECT 10 INTO newtab_never",
	"SELECT 10; SELECT 20",
	"SELECT 1e3, 10",
}

func TestAutoPrepareSameAsDirect(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.AutoPrepare, c.AutoPrepareThreshold = true, 1 }})
	ctx := pgtest.Context(t, 2*time.Minute)
	direct := e.connectDirect(t)
	proxied := e.connect(t)
	const setup = `CREATE TABLE ap (id int PRIMARY KEY, small smallint, big bigint, num numeric(10,2), r real,
		d double precision, t text);
		INSERT INTO ap SELECT g, g % 7, g * 10000000::bigint, g / 3.0, g / 2.0, g / 4.0, 'row ' || g FROM generate_series(1, 1000) g`
	for _, side := range []struct {
		conn   *pgx.Conn
		schema string
	}{{direct, "d"}, {proxied, "p"}} {
		if _, err := side.conn.PgConn().Exec(ctx, "CREATE SCHEMA "+side.schema+"; SET search_path = "+side.schema+"; "+setup).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	before := autoPrepareMetric(t, e, "executed")
	// Seven runs: PostgreSQL plans a prepared statement for its values five times, then may switch
	// to a generic plan.
	for _, sql := range autoPrepareCorpus {
		for run := 1; run <= 7; run++ {
			want := simpleResults(ctx, direct, sql)
			got := simpleResults(ctx, proxied, sql)
			if got != want {
				t.Errorf("%s (run %d)\n  direct: %s\n  proxy:  %s", sql, run, want, got)
			}
		}
	}
	// Most of the corpus ran as prepared statements (the rest were not parameterizable, or changed
	// the catalog, which starts over).
	if n := autoPrepareMetric(t, e, "executed") - before; n < float64(4*len(autoPrepareCorpus)) {
		t.Errorf("only %v simple queries ran as prepared statements, want at least %d", n, 4*len(autoPrepareCorpus))
	}
	// The same texts as the extended protocol's unnamed statement (Parse "" before every execution),
	// which the proxy prepares under an internal name.
	preparedBefore := autoPrepareMetric(t, e, "prepared")
	for _, sql := range append(autoPrepareCorpus, "SELECT * FROM ap WHERE id = $1 AND t <> $2") {
		var args [][]byte
		if strings.Contains(sql, "$1") {
			args = [][]byte{[]byte("12"), []byte("x")}
		}
		for run := 1; run <= 2; run++ {
			want := extendedResults(ctx, direct, sql, args)
			got := extendedResults(ctx, proxied, sql, args)
			if got != want {
				t.Errorf("extended: %s (run %d)\n  direct: %s\n  proxy:  %s", sql, run, want, got)
			}
		}
	}
	if autoPrepareMetric(t, e, "prepared") == preparedBefore {
		t.Errorf("no unnamed statement was prepared by the proxy")
	}

	// A table changes under a prepared SELECT *, by DDL the proxy does not see (another connection):
	// outside a transaction the proxy prepares the statement again and the client sees the new
	// column, as it would directly.
	invisible := func(ddl string) {
		t.Helper()
		for _, schema := range []string{"d", "p"} {
			if _, err := direct.Exec(ctx, strings.ReplaceAll(ddl, "S.", schema+".")); err != nil {
				t.Fatal(err)
			}
		}
	}
	// (On the primary: the proxy does not know to wait for a replica to replay DDL it did not see.)
	const q = "SELECT * FROM ap WHERE id = 12 /* meridian:primary */"
	for run := 0; run < 2; run++ {
		_ = simpleResults(ctx, proxied, q)
	}
	invisible("ALTER TABLE S.ap ADD COLUMN extra int DEFAULT 42")
	replannedBefore := autoPrepareMetric(t, e, "replanned")
	for run := 1; run <= 3; run++ {
		if want, got := simpleResults(ctx, direct, q), simpleResults(ctx, proxied, q); got != want {
			t.Fatalf("after ALTER TABLE (run %d)\n  direct: %s\n  proxy:  %s", run, want, got)
		}
	}
	if autoPrepareMetric(t, e, "replanned") == replannedBefore {
		t.Errorf("the stale statement was not replanned (meridian_proxy_auto_prepare_total{event=\"replanned\"} unchanged)")
	}
	// The same for the extended protocol: the batch runs again with the statement prepared again.
	replannedBefore = autoPrepareMetric(t, e, "replanned")
	const qe = "SELECT * FROM ap WHERE id = $1 /* meridian:primary */"
	args := [][]byte{[]byte("13")}
	for run := 0; run < 2; run++ {
		_ = extendedResults(ctx, proxied, qe, args)
	}
	invisible("ALTER TABLE S.ap ADD COLUMN extra2 int DEFAULT 43")
	for run := 1; run <= 3; run++ {
		if want, got := extendedResults(ctx, direct, qe, args), extendedResults(ctx, proxied, qe, args); got != want {
			t.Fatalf("extended, after ALTER TABLE (run %d)\n  direct: %s\n  proxy:  %s", run, want, got)
		}
	}
	if autoPrepareMetric(t, e, "replanned") == replannedBefore {
		t.Errorf("the stale statement was not replanned (meridian_proxy_auto_prepare_total{event=\"replanned\"} unchanged)")
	}
	// Inside a transaction block, a text seen before never fails with "cached plan must not change
	// result type" for a client that prepared nothing: after DDL the proxy did not see, and after
	// DDL in the same transaction (issue 13).
	const qp = q + " -- in transactions"
	for run := 0; run < 7; run++ {
		if want, got := simpleResults(ctx, direct, qp), simpleResults(ctx, proxied, qp); got != want {
			t.Fatalf("before DROP COLUMN (run %d)\n  direct: %s\n  proxy:  %s", run, want, got)
		}
	}
	invisible("ALTER TABLE S.ap DROP COLUMN extra")
	for _, steps := range [][]string{
		{"BEGIN", qp, qp, "ROLLBACK"},
		{"BEGIN", "ALTER TABLE ap DROP COLUMN extra2", qp, qp, "ROLLBACK"},
		{"BEGIN", "SELECT 1", "ALTER TABLE ap DROP COLUMN extra2", qp, "ROLLBACK"},
		{qp, qp},
	} {
		for _, sql := range steps {
			if want, got := simpleResults(ctx, direct, sql), simpleResults(ctx, proxied, sql); got != want {
				t.Fatalf("%q in %q\n  direct: %s\n  proxy:  %s", sql, steps, want, got)
			}
		}
	}
}

// simpleResults runs sql with the simple protocol and renders every result (see renderResults).
func simpleResults(ctx context.Context, conn *pgx.Conn, sql string) string {
	results, err := conn.PgConn().Exec(ctx, sql).ReadAll()
	return renderResults(results, err)
}

// extendedResults runs sql as the unnamed statement (Parse, Bind, Describe, Execute, Sync) with text
// arguments of unspecified types, and renders the result.
func extendedResults(ctx context.Context, conn *pgx.Conn, sql string, args [][]byte) string {
	r := conn.PgConn().ExecParams(ctx, sql, args, nil, nil, nil).Read()
	return renderResults([]*pgconn.Result{r}, r.Err)
}

// renderResults renders results: columns with their types, rows, command tags, and an error's
// SQLSTATE, message and position.
func renderResults(results []*pgconn.Result, err error) string {
	var b strings.Builder
	for _, r := range results {
		for _, f := range r.FieldDescriptions {
			fmt.Fprintf(&b, "%s:%d:%d ", f.Name, f.DataTypeOID, f.TypeModifier)
		}
		for _, row := range r.Rows {
			b.WriteString("[")
			for i, v := range row {
				if i > 0 {
					b.WriteString(",")
				}
				if v == nil {
					b.WriteString("NULL")
				} else {
					b.Write(v)
				}
			}
			b.WriteString("]")
		}
		fmt.Fprintf(&b, " %s; ", r.CommandTag)
		if r.Err != nil && err == nil {
			err = r.Err
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		fmt.Fprintf(&b, "ERROR %s %s (position %d)", pe.Code, pe.Message, pe.Position)
	} else if err != nil {
		fmt.Fprintf(&b, "ERROR %v", err)
	}
	// The schema names differ by side (d, p).
	return schemaName.ReplaceAllString(b.String(), "S.")
}

var schemaName = regexp.MustCompile(`\b[dp]\.`)

// autoPrepareMetric reads meridian_proxy_auto_prepare_total{event=...}.
func autoPrepareMetric(t *testing.T, e *env, event string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + e.proxy.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^meridian_proxy_auto_prepare_total\{event="` + event + `"\} (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no meridian_proxy_auto_prepare_total{event=%q} in /metrics", event)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestAutoPrepareSchemaPerTenant: sessions with different search_paths run the same text against
// tables of the same name with different columns, inside transactions, over one server connection.
// A statement shared between them would fail ("cached plan must not change result type"); each
// search_path gets its own.
func TestAutoPrepareSchemaPerTenant(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.AutoPrepare, c.AutoPrepareThreshold = true, 1; c.PoolSize = 1 }})
	ctx := pgtest.Context(t, time.Minute)
	setup := e.connect(t)
	if _, err := setup.PgConn().Exec(ctx, `CREATE SCHEMA t1; CREATE SCHEMA t2;
		CREATE TABLE t1.tt (id int, a text); CREATE TABLE t2.tt (id int, b int, c int);
		INSERT INTO t1.tt VALUES (10, 'one'); INSERT INTO t2.tt VALUES (10, 2, 3)`).ReadAll(); err != nil {
		t.Fatal(err)
	}
	tenants := map[string]*pgx.Conn{"t1": e.connect(t), "t2": e.connect(t)}
	want := map[string]string{"t1": "[10,one]", "t2": "[10,2,3]"}
	for name, conn := range tenants {
		if _, err := conn.Exec(ctx, "SET search_path = "+name); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 3; round++ {
		for _, name := range []string{"t1", "t2"} {
			conn := tenants[name]
			if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			res := simpleResults(ctx, conn, "SELECT * FROM tt WHERE id = 10")
			if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(res, want[name]) || strings.Contains(res, "ERROR") {
				t.Fatalf("round %d, tenant %s: %s, want the row %s", round, name, res, want[name])
			}
		}
	}
}

// TestAutoPrepareDecidesLikeDirect covers what a prepared statement freezes and a simple query
// decides again every time (issue 13, section 5): settings that change how literals are read or
// how statements are planned, catalog changes PostgreSQL does not invalidate prepared statements
// for, and rules. Each case runs on a direct connection and through the proxy (auto_prepare on,
// threshold 1) in schemas of their own; "xN" runs a text N times (past PostgreSQL's five custom
// plans), and every run must give the direct answer.
func TestAutoPrepareDecidesLikeDirect(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.AutoPrepare, c.AutoPrepareThreshold = true, 1 }})
	ctx := pgtest.Context(t, 3*time.Minute)
	direct := e.connectDirect(t)
	proxied := e.connect(t)
	if _, err := direct.Exec(ctx, "CREATE ROLE ap_user; CREATE SCHEMA d; CREATE SCHEMA p; GRANT USAGE ON SCHEMA d, p TO ap_user"); err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		conn   *pgx.Conn
		schema string
	}{{direct, "d"}, {proxied, "p"}} {
		if _, err := side.conn.Exec(ctx, "SET search_path = "+side.schema); err != nil {
			t.Fatal(err)
		}
	}
	const x = 8 // runs of a repeated text
	type step struct {
		sql  string
		runs int
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"standard_conforming_strings off", []step{
			{"CREATE TABLE scs (a text, b int, c text)", 1},
			{"SET standard_conforming_strings = off", 1},
			{"SET escape_string_warning = off", 1},
			{`INSERT INTO scs VALUES ('a\', 12345, ') --')`, x},
			{`SELECT * FROM scs WHERE b = 12345 AND a <> 'a\'`, x},
			{"SELECT a, b, c, count(*) FROM scs GROUP BY 1, 2, 3", 1},
			{"RESET standard_conforming_strings", 1},
			{"RESET escape_string_warning", 1},
		}},
		{"DateStyle", []step{
			{"SET datestyle = 'ISO, DMY'", 1},
			{"SELECT date '1/8/1999', '1/8/1999'::date = date '1999-08-01'", x},
			{"SET datestyle = 'ISO, MDY'", 1},
			{"SELECT date '1/8/1999', '1/8/1999'::date = date '1999-08-01'", 2},
			{"RESET datestyle", 1},
		}},
		{"TimeZone", []step{
			{"SET timezone = 'UTC'", 1},
			{"SELECT timestamptz '2020-01-01 00:00'::text, extract(epoch FROM timestamptz '2020-01-01 00:00')", x},
			{"SET timezone = 'Asia/Tokyo'", 1},
			{"SELECT timestamptz '2020-01-01 00:00'::text, extract(epoch FROM timestamptz '2020-01-01 00:00')", 2},
			{"RESET timezone", 1},
		}},
		{"SET inside a transaction", []step{
			{"SET datestyle = 'ISO, DMY'", 1},
			{"SELECT date '1/8/1999'", x},
			{"BEGIN", 1},
			{"SET LOCAL datestyle = 'ISO, MDY'", 1},
			{"SELECT date '1/8/1999'", 2},
			{"SET datestyle = 'ISO, YMD'", 1},
			{"SELECT date '1/8/1999'", 2},
			{"ROLLBACK", 1},
			{"SELECT date '1/8/1999'", 2},
			{"CREATE TABLE dtab (d date)", 1},
			{"INSERT INTO dtab VALUES (date '1/8/1999')", x},
			{"BEGIN", 1},
			{"SET LOCAL datestyle = 'ISO, MDY'", 1},
			{"INSERT INTO dtab VALUES (date '1/8/1999')", 2},
			{"COMMIT", 1},
			{"BEGIN", 1},
			{"SELECT set_config('datestyle', 'ISO, MDY', true)", 1},
			{"INSERT INTO dtab VALUES (date '1/8/1999')", 2},
			{"COMMIT", 1},
			{"INSERT INTO dtab VALUES (date '1/8/1999')", 2},
			{"SELECT d, count(*) FROM dtab GROUP BY d ORDER BY d", 1},
			{"RESET datestyle", 1},
		}},
		{"regtype after DROP and CREATE", []step{
			{"CREATE TYPE rt AS (a int)", 1},
			{"SELECT 'rt[]'::regtype::oid = (SELECT typarray FROM pg_type WHERE typname = 'rt' AND typnamespace = current_schema()::regnamespace)", x},
			{"DROP TYPE rt", 1},
			{"CREATE TYPE rt AS (b text)", 1},
			{"SELECT 'rt[]'::regtype::oid = (SELECT typarray FROM pg_type WHERE typname = 'rt' AND typnamespace = current_schema()::regnamespace)", 2},
		}},
		{"new overload", []step{
			{"CREATE FUNCTION ov(a int DEFAULT 1) RETURNS int LANGUAGE sql AS 'SELECT 1'", 1},
			{"SELECT ov()", x},
			{"CREATE FUNCTION ov(a text DEFAULT 'x') RETURNS int LANGUAGE sql AS 'SELECT 2'", 1},
			{"SELECT ov()", 2},
		}},
		{"CREATE CAST replaced", []step{
			{"CREATE TYPE ct AS (a int)", 1},
			{"CREATE FUNCTION ct1(int) RETURNS ct LANGUAGE sql AS 'SELECT ROW($1)::ct'", 1},
			{"CREATE FUNCTION ct2(int) RETURNS ct LANGUAGE sql AS 'SELECT ROW($1 * 2)::ct'", 1},
			{"CREATE CAST (int AS ct) WITH FUNCTION ct1(int)", 1},
			{"SELECT (12345::ct).a", x},
			{"DROP CAST (int AS ct)", 1},
			{"CREATE CAST (int AS ct) WITH FUNCTION ct2(int)", 1},
			{"SELECT (12345::ct).a", 2},
		}},
		{"ALTER DOMAIN SET DEFAULT", []step{
			{"CREATE DOMAIN dd AS int DEFAULT 1", 1},
			{"CREATE TABLE dt (id int, v dd)", 1},
			{"INSERT INTO dt (id) VALUES (12345)", x},
			{"ALTER DOMAIN dd SET DEFAULT 2", 1},
			{"INSERT INTO dt (id) VALUES (12345)", 2},
			{"SELECT v, count(*) FROM dt GROUP BY v ORDER BY v", 1},
		}},
		{"text search dictionary options", []step{
			{"CREATE TEXT SEARCH DICTIONARY sd (TEMPLATE = simple, STOPWORDS = english)", 1},
			{"CREATE TEXT SEARCH CONFIGURATION tsc (COPY = simple)", 1},
			{"ALTER TEXT SEARCH CONFIGURATION tsc ALTER MAPPING FOR asciiword WITH sd", 1},
			{"SELECT to_tsvector('tsc', 'the cat')", x},
			{"ALTER TEXT SEARCH DICTIONARY sd (StopWords)", 1},
			{"SELECT to_tsvector('tsc', 'the cat')", 2},
		}},
		{"SET enable_*", []step{
			{"CREATE TABLE eo (id int PRIMARY KEY)", 1},
			{"INSERT INTO eo SELECT g FROM generate_series(1000, 1, -1) g", 1},
			{"ANALYZE eo", 1},
			{"SELECT id FROM eo WHERE id > 10 LIMIT 3", x},
			{"SET enable_seqscan = off", 1},
			{"SET enable_bitmapscan = off", 1},
			{"SELECT id FROM eo WHERE id > 10 LIMIT 3", 2},
			{"RESET enable_seqscan", 1},
			{"RESET enable_bitmapscan", 1},
		}},
		{"UPDATE rewritten by a DO INSTEAD SELECT rule", []step{
			{"CREATE TABLE ru (id int, v int)", 1},
			{"INSERT INTO ru VALUES (12345, 1)", 1},
			{"UPDATE ru SET v = 2 WHERE id = 12345", x},
			{"CREATE RULE r AS ON UPDATE TO ru DO INSTEAD SELECT 'ruled' AS x, 42 AS y", 1},
			{"UPDATE ru SET v = 3 WHERE id = 12345", x},
			{"UPDATE ru SET v = 2 WHERE id = 12345", x},
		}},
		{"SETOF function after DROP COLUMN", []step{
			{"CREATE TABLE sf (a int, b int, c int)", 1},
			{"INSERT INTO sf VALUES (10, 20, 30)", 1},
			{"CREATE FUNCTION getsf() RETURNS SETOF sf LANGUAGE sql AS 'SELECT * FROM sf'", 1},
			{"SELECT * FROM getsf() WHERE a = 10", x},
			{"SELECT a FROM getsf() WHERE a = 10", x},
			{"ALTER TABLE sf DROP COLUMN b", 1},
			{"SELECT * FROM getsf() WHERE a = 10", 2},
			{"SELECT a FROM getsf() WHERE a = 10", 2},
		}},
		// Last: RESET SESSION AUTHORIZATION through a pooled connection is the session-state work of
		// issue 13, section 2.
		{"privileges of a folded function after SET SESSION AUTHORIZATION", []step{
			{"CREATE FUNCTION secret(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2'", 1},
			{"REVOKE EXECUTE ON FUNCTION secret(int) FROM PUBLIC", 1},
			{"SELECT secret(12345)", x},
			{"SET SESSION AUTHORIZATION ap_user", 1},
			{"SELECT secret(12345)", 2},
			{"RESET SESSION AUTHORIZATION", 1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, st := range tc.steps {
				for run := 1; run <= st.runs; run++ {
					want, got := simpleResults(ctx, direct, st.sql), simpleResults(ctx, proxied, st.sql)
					if got != want {
						t.Errorf("%s (run %d)\n  direct: %s\n  proxy:  %s", st.sql, run, want, got)
					}
				}
			}
		})
	}
}

// TestAutoPreparePlanGuard: a prepared statement's generic plan can be far slower than the plan
// for the values at hand (skewed data: one value in 98 % of the rows, planned like a rare one).
// The proxy notices that a text's prepared runs became much slower than its first (custom-plan)
// runs and runs it as sent from then on (issue 13, section 5). The test asserts that behaviour,
// not a speed.
func TestAutoPreparePlanGuard(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.AutoPrepare, c.AutoPrepareThreshold = true, 1; c.PoolSize = 1 }})
	ctx := pgtest.Context(t, 3*time.Minute)
	conn := e.connect(t)
	// A bitmap scan reads the heap in order and would be only a little slower than the sequential
	// scan; without it the generic plan walks the index and fetches rows in random order.
	// Wide rows (a few per page, more pages than the test servers' shared buffers) make each of the
	// generic plan's random heap fetches cost, so that it is several times slower than the custom
	// plan's sequential scan even where the proxy itself is slowed down (-race).
	if _, err := conn.PgConn().Exec(ctx, `CREATE TABLE skew (id int, sk int, x float8, pad text);
		INSERT INTO skew SELECT g, CASE WHEN g % 50 = 0 THEN 1000 + g % 997 ELSE 10 END, random(), repeat('p', 300) FROM generate_series(1, 200000) g;
		CREATE INDEX ON skew (sk, x); ANALYZE skew;
		SET enable_bitmapscan = off`).ReadAll(); err != nil {
		t.Fatal(err)
	}
	const q = "SELECT count(*), max(id) FROM skew WHERE sk = 10 /* meridian:primary */"
	disabled := autoPrepareMetric(t, e, "disabled")
	var last float64
	for run := 1; run <= 40; run++ {
		start := time.Now()
		res := simpleResults(ctx, conn, q)
		if !strings.Contains(res, "[196000,") {
			t.Fatalf("run %d: %s", run, res)
		}
		t.Logf("run %d: %v", run, time.Since(start))
		if autoPrepareMetric(t, e, "disabled") > disabled {
			last = autoPrepareMetric(t, e, "executed")
			break
		}
	}
	if last == 0 {
		t.Fatal("the text was still auto-prepared after 40 runs (meridian_proxy_auto_prepare_total{event=\"disabled\"} unchanged)")
	}
	// From now on it runs as sent.
	for run := 0; run < 3; run++ {
		_ = simpleResults(ctx, conn, q)
	}
	if n := autoPrepareMetric(t, e, "executed"); n != last {
		t.Errorf("the disabled text still ran prepared: executed %v → %v", last, n)
	}
	// A rare value still runs prepared for other texts; the guard is per text.
	before := autoPrepareMetric(t, e, "executed")
	for run := 0; run < 3; run++ {
		_ = simpleResults(ctx, conn, "SELECT count(*) FROM skew WHERE sk = 1050 /* meridian:primary */")
	}
	if autoPrepareMetric(t, e, "executed") == before {
		t.Errorf("another text was not auto-prepared")
	}
}
