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
	// Not parameterized: must still work.
	"SELECT 10 INTO newtab_never",
	"SELECT 10; SELECT 20",
	"SELECT 1e3, 10",
}

func TestAutoPrepareSameAsDirect(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.AutoPrepare, c.AutoPrepareThreshold = true, 1 }})
	ctx := pgtest.Context(t, 2*time.Minute)
	direct, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable",
		e.primary.Endpoint().Host, e.primary.Endpoint().Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { direct.Close(context.Background()) })
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
	for _, sql := range autoPrepareCorpus {
		for run := 1; run <= 2; run++ {
			want := simpleResults(ctx, direct, sql)
			got := simpleResults(ctx, proxied, sql)
			if got != want {
				t.Errorf("%s (run %d)\n  direct: %s\n  proxy:  %s", sql, run, want, got)
			}
		}
	}
	// Most of the corpus ran as prepared statements (the rest were not parameterizable).
	if n := autoPrepareMetric(t, e, "executed") - before; n < float64(2*(len(autoPrepareCorpus)-5)) {
		t.Errorf("only %v simple queries ran as prepared statements, want at least %d", n, 2*(len(autoPrepareCorpus)-5))
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

	// A table changes under a prepared SELECT *: outside a transaction the proxy prepares it again and
	// the client sees the new column, as it would directly.
	const q = "SELECT * FROM ap WHERE id = 12"
	for _, conn := range []*pgx.Conn{direct, proxied} {
		if _, err := conn.Exec(ctx, "ALTER TABLE ap ADD COLUMN extra int DEFAULT 42"); err != nil {
			t.Fatal(err)
		}
	}
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
	const qe = "SELECT * FROM ap WHERE id = $1 /* extended */"
	args := [][]byte{[]byte("13")}
	for run := 0; run < 2; run++ {
		_ = extendedResults(ctx, proxied, qe, args)
	}
	for _, conn := range []*pgx.Conn{direct, proxied} {
		if _, err := conn.Exec(ctx, "ALTER TABLE ap ADD COLUMN extra2 int DEFAULT 43"); err != nil {
			t.Fatal(err)
		}
	}
	for run := 1; run <= 3; run++ {
		if want, got := extendedResults(ctx, direct, qe, args), extendedResults(ctx, proxied, qe, args); got != want {
			t.Fatalf("extended, after ALTER TABLE (run %d)\n  direct: %s\n  proxy:  %s", run, want, got)
		}
	}
	if autoPrepareMetric(t, e, "replanned") == replannedBefore {
		t.Errorf("the stale statement was not replanned (meridian_proxy_auto_prepare_total{event=\"replanned\"} unchanged)")
	}
	// Inside a transaction block a statement whose table changed fails the transaction (as a client's
	// own prepared statement would, with "cached plan must not change result type"); the next
	// statement prepares it again.
	const qp = q + " /* meridian:primary */"
	for run := 0; run < 2; run++ {
		if _, err := proxied.Exec(ctx, qp, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
	}
	for _, conn := range []*pgx.Conn{direct, proxied} {
		if _, err := conn.Exec(ctx, "ALTER TABLE ap DROP COLUMN extra"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := proxied.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	var pe *pgconn.PgError
	if _, err := proxied.Exec(ctx, qp, pgx.QueryExecModeSimpleProtocol); err != nil && !(errors.As(err, &pe) && pe.Code == "0A000") {
		t.Fatalf("in a transaction after DROP COLUMN: %v", err)
	}
	if _, err := proxied.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		if want, got := simpleResults(ctx, direct, qp), simpleResults(ctx, proxied, qp); got != want {
			t.Fatalf("after DROP COLUMN (run %d)\n  direct: %s\n  proxy:  %s", run, want, got)
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
