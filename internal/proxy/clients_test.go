package proxy_test

import (
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/meridiandb/meridian/internal/pgnode"
	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// TestPgbenchThroughProxy runs pgbench unchanged in all three query modes in transaction pooling and
// checks TPC-B's invariant: every balance update reached all three tables exactly once.
func TestPgbenchThroughProxy(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.AutoPrepare = true }})
	bin := pgtest.Binaries(t)
	host, port, _ := net.SplitHostPort(e.proxy.Addr())
	pgbench := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin.Path("pgbench"), append([]string{"-h", host, "-p", port, "-U", "postgres"}, append(args, "postgres")...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	pgbench("-i", "-q", "-s", "1")
	executed := autoPrepareMetric(t, e, "executed")
	for _, mode := range []string{"simple", "extended", "prepared"} {
		for _, script := range [][]string{{"-S"}, {"-N"}, {}} {
			args := append([]string{"-M", mode, "-c", "4", "-j", "2", "-t", "25", "-n"}, script...)
			out := pgbench(args...)
			if !strings.Contains(out, "number of failed transactions: 0") {
				t.Errorf("pgbench %v reported failures:\n%s", args, out)
			}
			if m := regexp.MustCompile(`processed: (\d+)/(\d+)`).FindStringSubmatch(out); m == nil || m[1] != m[2] {
				t.Errorf("pgbench %v did not process every transaction:\n%s", args, out)
			}
		}
	}
	// -M simple and -M extended ran through auto_prepare (statements prepared by the proxy): all of
	// select-only's 2×100 reads but the first few. TPC-B's updates (a foldable SET value) and its
	// reads inside transaction blocks are not auto-prepared; its history inserts are.
	if n := autoPrepareMetric(t, e, "executed") - executed; n < 180 {
		t.Errorf("only %v statements ran auto-prepared, want at least %d", n, 180)
	}
	// Every transaction adds its delta to one account and logs it in history; the default script also
	// adds it to a teller and a branch (-N skips those two).
	var a, b, tl, h int64
	pgtest.QueryRow(t, e.primary, `SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(bbalance) FROM pgbench_branches),
		(SELECT sum(tbalance) FROM pgbench_tellers), (SELECT sum(delta) FROM pgbench_history)`).Scan(&a, &b, &tl, &h)
	if a != h || b != tl {
		t.Fatalf("balances disagree: accounts %d vs history %d, branches %d vs tellers %d", a, h, b, tl)
	}
	var hist int64
	pgtest.QueryRow(t, e.primary, "SELECT count(*) FROM pgbench_history").Scan(&hist)
	if hist != 2*3*100 { // -N and the default script write history, in three modes, 4×25 each
		t.Fatalf("pgbench_history has %d rows, want %d", hist, 2*3*100)
	}
}

// TestPsqlScriptSameAsDirect runs one psql script directly against the primary and through the proxy
// and requires identical output.
func TestPsqlScriptSameAsDirect(t *testing.T) {
	e := newEnv(t, envOptions{})
	const script = `\set ON_ERROR_STOP on
CREATE SCHEMA :s;
SET search_path = :s;
CREATE TABLE t (id int PRIMARY KEY, name text, at date);
INSERT INTO t VALUES (1, 'one', '2026-01-01'), (2, 'two', NULL);
\copy t FROM stdin
3	three	2026-03-03
4	four	\N
\.
BEGIN;
UPDATE t SET name = upper(name) WHERE id % 2 = 0;
SAVEPOINT s1;
DELETE FROM t;
ROLLBACK TO SAVEPOINT s1;
COMMIT;
PREPARE q(int) AS SELECT name FROM t WHERE id = $1;
EXECUTE q(2);
SELECT * FROM t ORDER BY id /* meridian:primary */;
\copy (SELECT id, name FROM t ORDER BY id) TO stdout
SELECT count(*) AS n, string_agg(name, ',' ORDER BY id) FROM t /* meridian:primary */ \gset
\echo :n :string_agg
DO $$ BEGIN RAISE NOTICE 'hello from %', current_schema(); END $$;
SELECT 1/0;
`
	run := func(ep pgnode.Endpoint, schema string) string {
		t.Helper()
		cmd := exec.Command(pgtest.Binaries(t).Path("psql"), "-X", "-h", ep.Host, "-p", strconv.Itoa(ep.Port), "-U", "postgres",
			"-d", "postgres", "-v", "s="+schema, "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		out, _ := cmd.CombinedOutput() // the script ends with a deliberate error
		return strings.ReplaceAll(string(out), schema, "S")
	}
	host, port, _ := net.SplitHostPort(e.proxy.Addr())
	direct := run(e.primary.Endpoint(), "direct_run")
	proxied := run(pgnode.Endpoint{Host: host, Port: atoi(port)}, "proxy_run")
	if direct != proxied {
		t.Fatalf("psql output differs.\ndirect:\n%s\nthrough the proxy:\n%s", direct, proxied)
	}
	if !strings.Contains(direct, "division by zero") || !strings.Contains(direct, "4 one,TWO,three,FOUR") {
		t.Fatalf("the script did not run as expected:\n%s", direct)
	}
}
