//go:build compat

package compat

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/pgnode"
	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// The modes every suite runs in: straight to the primary, and through the proxy in each pool mode.
const (
	modeDirect      = "direct"
	modeSession     = "session"
	modeTransaction = "transaction"
)

var allModes = []string{modeDirect, modeSession, modeTransaction}

// database is the database the suites use, prepared as pgx's CI prepares pgx_test.
const database = "pgx_test"

// setupSQL is pgx's testsetup/postgresql_setup.sql for what the suites reach through
// PGX_TEST_DATABASE (the TLS, password and unix-socket users serve connection strings we do not set).
var setupSQL = []string{
	`CREATE EXTENSION hstore`,
	`CREATE EXTENSION ltree`,
	`CREATE DOMAIN uint64 AS numeric(20,0)`,
	// pgtype's aclitem test needs this role to exist.
	`CREATE USER " tricky, ' } "" \ test user " SUPERUSER PASSWORD 'secret'`,
}

// settings of the test servers: pgx's suite and the driver pools open many connections at once.
var settings = map[string]string{"max_connections": "200"}

// TestCompat runs the pgx suite and the node driver smoke suites in every mode and checks the
// failures against expected-failures.txt. COMPAT_MODES and COMPAT_SUITES (comma-separated) narrow a
// run while developing; the expectations are then checked only for what ran.
func TestCompat(t *testing.T) {
	modes := listEnv("COMPAT_MODES", allModes)
	suites := listEnv("COMPAT_SUITES", []string{"pgx", "node"})
	expected, err := readExpected("expected-failures.txt")
	if err != nil {
		t.Fatal(err)
	}
	out, err := filepath.Abs(envOr("COMPAT_OUT", "out"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}

	var pgx string
	if slices.Contains(suites, "pgx") {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		if pgx, err = pgxDir(pgtest.Context(t, 10*time.Minute), cache); err != nil {
			t.Fatal(err)
		}
	}
	if slices.Contains(suites, "node") {
		if err := nodeReady(); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%v — failing, not skipping, because CI=true", err)
			}
			t.Logf("SKIP node suites: %v", err)
			suites = slices.DeleteFunc(suites, func(s string) bool { return s == "node" })
		}
	}

	c := pgtest.NewCluster(t, pgtest.Options{Replicas: 1, Settings: settings, Logger: fileLogger(t, filepath.Join(out, "servers.log"))})
	prepare(t, c)

	type row struct {
		mode, suite string
		res         suiteResult
	}
	var rows []row
	for _, mode := range modes {
		target := c.Primary.Endpoint().String()
		var p *proxy.Proxy
		if mode != modeDirect {
			p = startProxy(t, c, proxy.PoolMode(mode), filepath.Join(out, mode+"-proxy.log"))
			target = p.Addr()
		}
		for _, suite := range suites {
			start := time.Now()
			var res suiteResult
			switch suite {
			case "pgx":
				res = runPgxMode(t, pgx, mode, target, out)
			case "node":
				res = runNodeMode(t, mode, target, c, out)
			}
			t.Logf("%s %s: %d pass, %d fail, %d skip (%s)", mode, suite, res.Pass, res.Fail, res.Skip, time.Since(start).Round(time.Second))
			rows = append(rows, row{mode, suite, res})
		}
		if p != nil {
			if err := p.Close(); err != nil {
				t.Logf("close %s proxy: %v", mode, err)
			}
		}
	}

	// The report, then the check against the expectations.
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-12s %-5s %6s %6s %6s\n", "mode", "suite", "pass", "fail", "skip")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-12s %-5s %6d %6d %6d\n", r.mode, r.suite, r.res.Pass, r.res.Fail, r.res.Skip)
	}
	for _, r := range rows {
		names := make([]string, 0, len(r.res.Failed))
		for n := range r.res.Failed {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			mark := "UNEXPECTED"
			if _, ok := expected[key{r.mode, n}]; ok {
				mark = "expected"
			}
			fmt.Fprintf(&b, "FAIL %-11s %s (%s, %s)\n", r.mode, n, r.res.Failed[n], mark)
		}
	}
	t.Log(b.String())
	if err := os.WriteFile(filepath.Join(out, "summary.txt"), []byte(b.String()), 0o644); err != nil {
		t.Error(err)
	}

	ran := map[string]map[string]suiteResult{} // mode → suite → result
	for _, r := range rows {
		if ran[r.mode] == nil {
			ran[r.mode] = map[string]suiteResult{}
		}
		ran[r.mode][r.suite] = r.res
	}
	problems, notes := check(expected, ran)
	for _, n := range notes {
		t.Log(n)
	}
	for _, problem := range problems {
		t.Error(problem)
	}
}

// runPgxMode runs pgx's suite against target (host:port) and summarizes it.
func runPgxMode(t *testing.T, dir, mode, target, out string) suiteResult {
	t.Helper()
	host, port, _ := net.SplitHostPort(target)
	conn := fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable", host, port, database)
	log, err := os.Create(filepath.Join(out, mode+"-pgx.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	timeout := durationEnv(t, "COMPAT_PGX_TIMEOUT", 110*time.Second)
	results, notes, err := runPgx(pgtest.Context(t, 30*time.Minute), pgxRun{
		Dir:      dir,
		Env:      []string{"PGX_TEST_DATABASE=" + conn, "PGX_TEST_TCP_CONN_STRING=" + conn},
		Timeout:  timeout,
		Deadline: time.Now().Add(durationEnv(t, "COMPAT_PGX_BUDGET", 8*time.Minute)),
		Log:      log,
	})
	if err != nil {
		t.Fatalf("%s pgx: %v", mode, err)
	}
	for _, n := range notes {
		t.Logf("%s pgx: %s", mode, n)
	}
	return summarize("pgx", results)
}

// prepare creates the suites' database on the primary, as pgx's ci/setup_test.bash does, and waits
// until the replica has it.
func prepare(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	pgtest.Exec(t, c.Primary, "CREATE DATABASE "+database)
	ctx := pgtest.Context(t, time.Minute)
	conn, err := c.Primary.Connect(ctx, database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range setupSQL {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	for _, r := range c.Replicas {
		if err := pgtest.WaitReplayed(ctx, r, pgtest.CurrentLSN(t, c.Primary)); err != nil {
			t.Fatal(err)
		}
	}
}

// startProxy starts meridian proxy in-process over the cluster, with its default configuration
// except: the given pool mode (session mode with a pool_size for the suites' connections),
// kernel-assigned ports, a fast poll, an explicit trust rule for
// loopback clients (the suites log in without passwords; the built-in default may change), and
// default_consistency COMPAT_CONSISTENCY (global unless set). The suites were written against one
// server: a row committed on one connection is read at once on another (pgx's stdlib
// TestConnConcurrency writes through 50 pooled connections and reads back through others). That is
// what `global` promises; the default, `session`, promises it only on the connection that wrote
// (docs/consistency.md), and a replica may answer another connection before it replayed the write.
func startProxy(t *testing.T, c *pgtest.Cluster, mode proxy.PoolMode, logPath string) *proxy.Proxy {
	t.Helper()
	cfg := proxy.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.HTTPListen = ""
	cfg.Region = "local"
	cfg.PoolMode = mode
	if mode == proxy.PoolSession {
		// A session holds its primary connection for its whole life (docs/proxy.md, session mode):
		// pool_size covers the suites' concurrent connections, as it would in a session-mode
		// deployment; past it a session has no backend of its own and the PID tests cannot hold.
		cfg.PoolSize = 150
	}
	cfg.PollInterval = 100 * time.Millisecond
	cfg.DefaultConsistency = "global"
	if v := os.Getenv("COMPAT_CONSISTENCY"); v != "" {
		cfg.DefaultConsistency = v
	}
	for _, n := range c.Nodes() {
		cfg.Nodes = append(cfg.Nodes, proxy.NodeConfig{Name: n.Name(), Address: n.Endpoint().String(), Region: "local"})
	}
	cfg.Auth.Rules = []proxy.AuthRule{{Address: "127.0.0.1/32", Method: "trust"}}
	p, err := proxy.New(cfg, fileLogger(t, logPath))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.WaitReady(pgtest.Context(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	return p
}

// fileLogger logs to path (kept in the output directory for diagnosis).
func fileLogger(t *testing.T, path string) *slog.Logger {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// nodeEndpoints returns the direct addresses of the cluster's nodes.
func nodeEndpoints(c *pgtest.Cluster) []pgnode.Endpoint {
	var eps []pgnode.Endpoint
	for _, n := range c.Nodes() {
		eps = append(eps, n.Endpoint())
	}
	return eps
}

// nodeReady reports why the node suites cannot run, if they cannot.
func nodeReady() error {
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("node is needed for the node-postgres and postgres.js suites: %w", err)
	}
	for _, m := range []string{"pg", "postgres", "pg-copy-streams"} {
		if _, err := os.Stat(filepath.Join("node", "node_modules", m, "package.json")); err != nil {
			return fmt.Errorf("compat/node/node_modules/%s missing (run npm ci in compat/node): %w", m, err)
		}
	}
	return nil
}

func listEnv(name string, def []string) []string {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	return strings.Split(v, ",")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func durationEnv(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// ctxDone is a small helper for subprocess contexts bound to the test.
func ctxDone(t *testing.T, d time.Duration) context.Context { return pgtest.Context(t, d) }
