package proxy_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// adminPsql runs psql on a proxy's admin console and returns its output (aligned off, with headers).
func adminPsql(t *testing.T, p *proxy.Proxy, user, command string) (string, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(p.Addr())
	cmd := exec.Command(pgtest.Binaries(t).Path("psql"), "-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1",
		"-h", host, "-p", port, "-U", user, "-d", proxy.AdminDatabase, "-c", command)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+testAdminPassword)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustAdmin(t *testing.T, p *proxy.Proxy, command string) string {
	t.Helper()
	out, err := adminPsql(t, p, "postgres", command)
	if err != nil {
		t.Fatalf("%s: %v\n%s", command, err, out)
	}
	return out
}

// TestAdminConsole drives the admin console with psql: every SHOW, errors that leave the session
// usable, KILL, RECONNECT, RELOAD, and who may connect.
func TestAdminConsole(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) {
		c.AdminUsers = []string{"postgres"}
		c.ServerPassword = "not-shown"
	}})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t, "application_name=shop")
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid() /* meridian:primary */").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	for cmd, want := range map[string][]string{
		"SHOW POOLS":   {"database|user|cl_active|cl_waiting|sv_active|sv_idle|sv_used|sv_login|maxwait|maxwait_us|pool_mode|node|pool_size|paused", "postgres|postgres|0|0|0|1|0|0|0|0|transaction|primary|20|false"},
		"SHOW CLIENTS": {"type|user|database|state|addr|port|local_addr|local_port|connect_time|request_time|wait|wait_us|id|link|tls|pinned_node", "C|postgres|postgres|idle|127.0.0.1|", "C|postgres|meridian|admin|"},
		"SHOW SERVERS": {"type|user|database|state|addr|port|local_addr|local_port|connect_time|request_time|remote_pid|node", "S|postgres|postgres|idle|127.0.0.1|", "|" + strconv.Itoa(backend) + "|primary"},
		"SHOW STATS":   {"database|node|route|total_xact_count|total_query_count", "postgres|primary|primary|"},
		"SHOW NODES":   {"name|region|address|role|up|replay_lsn|lag_bytes|lag_seconds|rtt_ms|checked_at|last_error", "primary|us-east-1|", "|primary|true|", "west|us-west-2|", "|replica|true|"},
		"SHOW CONFIG":  {"key|value|default|changeable|pending_restart", "pool_size|20|20|yes (SIGHUP, RELOAD)|", "server_password|********||no (restart)|", "auth|", "region|us-west-2||no (restart)|"},
		"SHOW HELP":    {"PAUSE [db]", "SHUTDOWN"},
	} {
		out := mustAdmin(t, e.proxy, cmd)
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: no %q in\n%s", cmd, w, out)
			}
		}
	}
	if strings.Contains(mustAdmin(t, e.proxy, "SHOW CONFIG"), "not-shown") {
		t.Error("SHOW CONFIG shows the server password")
	}

	// Errors: an unknown command, then the session still answers.
	host, port, _ := net.SplitHostPort(e.proxy.Addr())
	cmd := exec.Command(pgtest.Binaries(t).Path("psql"), "-X", "-A", "-h", host, "-p", port, "-U", "postgres", "-d", "meridian",
		"-c", "SHOW WHATEVER", "-c", "SHOW HELP")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+testAdminPassword)
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "unknown admin command: SHOW WHATEVER") || !strings.Contains(string(out), "RESUME") {
		t.Errorf("unknown command, then SHOW HELP:\n%s", out)
	}
	pgtest.Exec(t, e.primary, "CREATE ROLE viewer LOGIN")
	if out, err := adminPsql(t, e.proxy, "viewer", "SHOW POOLS"); err == nil || !strings.Contains(out, "not in admin_users") {
		t.Errorf("a user not in admin_users: %v\n%s", err, out)
	}
	if out, err := adminPsql(t, e.proxy, "postgres", "RELOAD"); err == nil || !strings.Contains(out, "not started from a configuration file") {
		t.Errorf("RELOAD without a configuration source: %v\n%s", err, out)
	}
	e.proxy.SetReloadSource(func() (proxy.Config, error) { return e.cfg, nil })
	mustAdmin(t, e.proxy, "RELOAD")
	// A changed setting that needs a restart: RELOAD says so, and SHOW CONFIG shows it pending.
	changed := e.cfg
	changed.MaxMessageSize = 1 << 20
	e.proxy.SetReloadSource(func() (proxy.Config, error) { return changed, nil })
	if out := mustAdmin(t, e.proxy, "RELOAD"); !strings.Contains(out, "need a restart: max_message_size") {
		t.Errorf("RELOAD with a restart-only change:\n%s", out)
	}
	if out := mustAdmin(t, e.proxy, "SHOW CONFIG"); !strings.Contains(out, "max_message_size|268435456|268435456|no (restart)|1048576") {
		t.Errorf("SHOW CONFIG does not show max_message_size 1048576 pending a restart:\n%s", out)
	}

	// RECONNECT: the next transaction runs on a new server connection.
	mustAdmin(t, e.proxy, "RECONNECT")
	var after int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid() /* meridian:primary */").Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after == backend {
		t.Errorf("after RECONNECT the statement ran on the same server backend %d", backend)
	}

	// KILL: the client's connection ends with 57P01; the others go on.
	other := e.connect(t)
	id := conn.PgConn().PID()
	mustAdmin(t, e.proxy, "KILL "+strconv.Itoa(int(id)))
	_, err := conn.Exec(ctx, "SELECT 1")
	var pe *pgconn.PgError
	if err == nil || (errors.As(err, &pe) && pe.Code != "57P01") {
		t.Errorf("statement on a killed connection: %v, want the connection terminated (57P01)", err)
	}
	if _, err := other.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("another client after KILL: %v", err)
	}
	if out, err := adminPsql(t, e.proxy, "postgres", "KILL 12345"); err == nil || !strings.Contains(out, "no client 12345") {
		t.Errorf("KILL of an unknown client: %v\n%s", err, out)
	}

	// Limits apply on reload: max_client_conn 1 refuses a second client at once.
	lim := e.cfg
	lim.MaxClientConn = 1
	if restart, err := e.proxy.Reload(lim); err != nil || len(restart) != 0 {
		t.Fatalf("Reload of max_client_conn: %v (need restart: %v)", err, restart)
	}
	_, err = pgx.Connect(ctx, e.connString())
	wantSQLState(t, "a second client with max_client_conn reloaded to 1", err, "53300")
}

// TestPauseResumeUnderPgbench: PAUSE waits for running transactions and holds new ones, with
// pgbench running through the proxy; RESUME lets them go on; pgbench ends without a single error.
func TestPauseResumeUnderPgbench(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.AdminUsers = []string{"postgres"} }})
	ctx := pgtest.Context(t, 2*time.Minute)
	bin := pgtest.Binaries(t)
	prim := e.primary.Endpoint()
	if out, err := exec.Command(bin.Path("pgbench"), "-i", "-q", "-s", "1", "-h", prim.Host, "-p", strconv.Itoa(prim.Port), "-U", "postgres", "postgres").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	host, port, _ := net.SplitHostPort(e.proxy.Addr())
	bench := exec.Command(bin.Path("pgbench"), "-n", "-c", "4", "-j", "2", "-T", "8", "-h", host, "-p", port, "-U", "postgres", "postgres")
	var out []byte
	var benchErr error
	var wg sync.WaitGroup
	wg.Go(func() { out, benchErr = bench.CombinedOutput() })
	xacts := func() int {
		total := 0
		for _, line := range strings.Split(mustAdmin(t, e.proxy, "SHOW STATS"), "\n") {
			if f := strings.Split(line, "|"); len(f) == 5 && f[0] == "postgres" {
				n, _ := strconv.Atoi(f[3])
				total += n
			}
		}
		return total
	}
	// PAUSE once pgbench runs transactions, not before (the test would check nothing).
	if err := pgtest.WaitFor(ctx, 20*time.Millisecond, func(context.Context) (bool, error) { return xacts() > 100, nil }); err != nil {
		t.Fatalf("pgbench did not start: %v", err)
	}
	t0 := time.Now()
	mustAdmin(t, e.proxy, "PAUSE")
	t.Logf("PAUSE returned after %v", time.Since(t0).Round(time.Millisecond))
	before := xacts()
	time.Sleep(1500 * time.Millisecond) // an observation window: nothing may happen in it
	if during := xacts(); during != before {
		t.Errorf("transactions went on while paused: %d → %d", before, during)
	}
	if clients := mustAdmin(t, e.proxy, "SHOW CLIENTS"); strings.Count(clients, "|waiting|") != 4 {
		t.Errorf("while paused, want pgbench's 4 clients waiting:\n%s", clients)
	}
	mustAdmin(t, e.proxy, "RESUME")
	wg.Wait()
	if benchErr != nil || !regexp.MustCompile(`number of failed transactions: 0 `).Match(out) {
		t.Fatalf("pgbench across PAUSE/RESUME: %v\n%s", benchErr, out)
	}
	if after := xacts(); after <= before {
		t.Errorf("no transactions after RESUME (%d → %d)", before, after)
	}
	if out, err := adminPsql(t, e.proxy, "postgres", "RESUME"); err == nil || !strings.Contains(out, "not paused") {
		t.Errorf("RESUME when not paused: %v\n%s", err, out)
	}
}

// TestGracefulShutdown: Shutdown refuses new clients, ends idle sessions at once with 57P01, lets a
// transaction in progress commit, and after shutdown_timeout ends the sessions still in a transaction
// with 57P01 (their transaction rolled back).
func TestGracefulShutdown(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE gs (x int)")
	idle := e.connect(t)
	busy := e.connect(t)
	stuck := e.connect(t)
	for _, c := range []*pgx.Conn{busy, stuck} {
		if _, err := c.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := busy.Exec(ctx, "INSERT INTO gs VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if _, err := stuck.Exec(ctx, "INSERT INTO gs VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		e.proxy.Shutdown(2 * time.Second)
	}()
	// The idle session is ended with 57P01 as soon as the shutdown begins.
	var err error
	if werr := pgtest.WaitFor(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		_, err = idle.Exec(ctx, "SELECT 1")
		return err != nil, nil
	}); werr != nil {
		t.Fatalf("idle session still works during shutdown: %v", werr)
	}
	if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "57P01" {
		t.Errorf("idle session during shutdown: %v, want 57P01", err)
	}
	// New clients are refused.
	if c, err := pgx.Connect(ctx, e.connString()); err == nil {
		c.Close(ctx)
		t.Error("a new client connected during shutdown")
	}
	// The transaction in progress may finish, then its session ends.
	if _, err := busy.Exec(ctx, "INSERT INTO gs VALUES (3)"); err != nil {
		t.Errorf("statement in a running transaction during shutdown: %v", err)
	}
	if _, err := busy.Exec(ctx, "COMMIT"); err != nil {
		t.Errorf("COMMIT during shutdown: %v", err)
	}
	<-done
	if took := time.Since(start); took < 1500*time.Millisecond || took > 5*time.Second {
		t.Errorf("shutdown took %v with a transaction left open and a 2s timeout", took)
	}
	_, err = stuck.Exec(ctx, "COMMIT")
	if err == nil {
		t.Error("a transaction still open at the shutdown timeout committed")
	}
	var n int
	pgtest.QueryRow(t, e.primary, "SELECT count(*) FROM gs").Scan(&n)
	if n != 2 {
		t.Errorf("rows after shutdown: %d, want the committed transaction's 2 (the other rolled back)", n)
	}
}

// TestReloadUnderPgbench: with pgbench running through the proxy (autocommit reads and writes),
// reloads grow the pool, add a replica (reads start reaching it) and remove the first one (reads
// leave it) — and pgbench finishes without a single failed transaction.
func TestReloadUnderPgbench(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) {
		c.PoolSize = 2
		c.AdminUsers = []string{"postgres"}
	}})
	ctx := pgtest.Context(t, 2*time.Minute)
	bin := pgtest.Binaries(t)
	prim := e.primary.Endpoint()
	if out, err := exec.Command(bin.Path("pgbench"), "-i", "-q", "-s", "1", "-h", prim.Host, "-p", strconv.Itoa(prim.Port), "-U", "postgres", "postgres").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	// A second replica in the proxy's region, not yet in its configuration.
	west2 := e.cluster.NewNode(t, "west2", nil)
	if err := west2.Clone(ctx, prim); err != nil {
		t.Fatal(err)
	}
	if err := west2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.WaitReplayed(ctx, west2, pgtest.CurrentLSN(t, e.primary)); err != nil {
		t.Fatal(err)
	}
	script := t.TempDir() + "/mixed.sql"
	if err := os.WriteFile(script, []byte("\\set aid random(1, 100000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(e.proxy.Addr())
	bench := exec.Command(bin.Path("pgbench"), "-n", "-c", "8", "-j", "2", "-T", "12", "-f", script, "-h", host, "-p", port, "-U", "postgres", "postgres")
	var out []byte
	var benchErr error
	var wg sync.WaitGroup
	wg.Go(func() { out, benchErr = bench.CombinedOutput() })
	reads := func(node string) float64 {
		v, _ := scrapeSeries(t, e.proxy.HTTPAddr(), `meridian_proxy_reads_total{node="`+node+`",route="local_replica"}`)
		return v // 0 before the first read reached the node
	}
	reload := func(cfg proxy.Config) {
		t.Helper()
		if restart, err := e.proxy.Reload(cfg); err != nil || len(restart) > 0 {
			t.Fatalf("Reload: %v (need restart: %v)", err, restart)
		}
	}
	if err := pgtest.WaitFor(ctx, 20*time.Millisecond, func(context.Context) (bool, error) { return reads("west") > 0, nil }); err != nil {
		t.Fatalf("pgbench's reads do not reach west: %v", err)
	}

	cfg := e.cfg
	cfg.PoolSize = 6
	reload(cfg)
	if err := pgtest.WaitFor(ctx, 20*time.Millisecond, func(context.Context) (bool, error) {
		return strings.Contains(mustAdmin(t, e.proxy, "SHOW POOLS"), "|primary|6|"), nil
	}); err != nil {
		t.Errorf("after the reload, SHOW POOLS does not show pool_size 6:\n%s", mustAdmin(t, e.proxy, "SHOW POOLS"))
	}

	cfg.Nodes = append(slices.Clone(cfg.Nodes), proxy.NodeConfig{Name: "west2", Address: west2.Endpoint().String(), Region: "us-west-2"})
	reload(cfg)
	if err := pgtest.WaitFor(ctx, 20*time.Millisecond, func(context.Context) (bool, error) { return reads("west2") > 0, nil }); err != nil {
		t.Error("after adding west2, no read reached it")
	}

	cfg.Nodes = []proxy.NodeConfig{cfg.Nodes[0], cfg.Nodes[2]} // primary and west2: west leaves
	reload(cfg)
	// Once reads keep reaching west2 after the reload, none may reach west any more.
	if w2 := reads("west2"); pgtest.WaitFor(ctx, 20*time.Millisecond, func(context.Context) (bool, error) { return reads("west2") > w2+20, nil }) != nil {
		t.Fatal("reads stopped after removing west")
	}
	before := reads("west")
	time.Sleep(1500 * time.Millisecond) // an observation window: no read may reach west in it
	if after := reads("west"); after != before {
		t.Errorf("reads still reach the removed replica west: %v → %v", before, after)
	}
	wg.Wait()
	if benchErr != nil || !regexp.MustCompile(`number of failed transactions: 0 `).Match(out) {
		t.Fatalf("pgbench across the reloads: %v\n%s", benchErr, out)
	}
	t.Logf("pgbench across three reloads:\n%s", out)
}
