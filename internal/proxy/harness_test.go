package proxy_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridiandb/meridian/internal/pgnode"
	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
	"github.com/meridiandb/meridian/internal/scram"
	"github.com/meridiandb/meridian/internal/wan"
)

// env is a two-region test bed: the primary in us-east-1, a replica in us-west-2 streaming through a
// WAN link, and a proxy in us-west-2 that reaches the primary through another WAN link.
type env struct {
	cluster *pgtest.Cluster
	primary *pgnode.Node // us-east-1
	replica *pgnode.Node // us-west-2, local to the proxy
	proxy   *proxy.Proxy
	cfg     proxy.Config
	// toPrimary is the WAN link from us-west-2 to the primary, which both the proxy's connections to
	// the primary and the replica's replication use: partitioning it cuts the region off.
	toPrimary *wan.Link
}

const testRTT = 10 * time.Millisecond

type envOptions struct {
	configure       func(*proxy.Config)
	replicaSettings map[string]string
	logStatements   bool
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	settings := map[string]string{}
	if o.logStatements {
		settings["log_statement"] = "all"
		settings["log_min_messages"] = "info"
	}
	c := pgtest.NewCluster(t, pgtest.Options{Settings: settings})
	ctx := pgtest.Context(t, time.Minute)
	link := startLink(t, "west→east", c.Primary.Endpoint().String())
	toPrimary := linkEndpoint(link)
	replica := c.NewNode(t, "west", o.replicaSettings)
	if err := replica.Clone(ctx, toPrimary); err != nil {
		t.Fatal(err)
	}
	if err := replica.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.WaitStreaming(ctx, replica); err != nil {
		t.Fatal(err)
	}
	cfg := proxy.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.Region = "us-west-2"
	cfg.PollInterval = 100 * time.Millisecond
	cfg.Nodes = []proxy.NodeConfig{
		{Name: "primary", Address: toPrimary.String(), Region: "us-east-1"},
		{Name: "west", Address: replica.Endpoint().String(), Region: "us-west-2"},
	}
	if o.configure != nil {
		o.configure(&cfg)
	}
	testAuth(t, &cfg) // in e.cfg too: tests reload it
	return &env{cluster: c, primary: c.Primary, replica: replica, proxy: startProxy(t, cfg), cfg: cfg, toPrimary: link}
}

// testAdminPassword is the password of the admin console's users in tests (see testAuth).
const testAdminPassword = "admin-secret"

// testAuth gives a configuration without auth rules the tests' rules: the admin console (which never
// accepts trust) by SCRAM-SHA-256 against an auth file with testAdminPassword for "postgres" and
// "viewer", and trust from 127.0.0.1 for everything else, where authentication is not under test.
// The proxy's own default (SCRAM for everyone) is tested in auth_test.go.
func testAuth(t testing.TB, cfg *proxy.Config) {
	t.Helper()
	if len(cfg.Auth.Rules) > 0 {
		return
	}
	if cfg.Auth.File == "" {
		file := filepath.Join(t.TempDir(), "admin-users.txt")
		var b strings.Builder
		for _, u := range []string{"postgres", "viewer"} {
			// Few iterations: tests open the admin console many times, under the race detector, and
			// timing-sensitive ones (pgbench across PAUSE) must not spend seconds hashing.
			v, err := scram.NewVerifier(testAdminPassword, 16)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s %s\n", proxy.QuoteAuthField(u), proxy.QuoteAuthField(v.String()))
		}
		if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Auth.File = file
	}
	cfg.Auth.Rules = []proxy.AuthRule{
		{Database: []string{proxy.AdminDatabase}, Method: proxy.AuthSCRAM},
		{Address: "127.0.0.1/32", Method: proxy.AuthTrust},
	}
}

// startProxy starts a proxy with cfg (given the tests' auth rules when it has none, see testAuth) and
// waits until it can route reads and writes.
func startProxy(t *testing.T, cfg proxy.Config) *proxy.Proxy {
	t.Helper()
	testAuth(t, &cfg)
	return startProxyAsIs(t, cfg)
}

// startProxyAsIs is startProxy with cfg's auth section as it is (no rules: the proxy's defaults).
func startProxyAsIs(t *testing.T, cfg proxy.Config) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New(cfg, slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo})))
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

// secondProxy starts another proxy over the same servers (another application instance's).
func (e *env) secondProxy(t *testing.T) *env {
	t.Helper()
	o := *e
	o.proxy = startProxy(t, e.cfg)
	return &o
}

// startLink starts a WAN link to target, closed when the test ends.
func startLink(t *testing.T, name, target string) *wan.Link {
	t.Helper()
	l, err := wan.New(wan.Config{Name: name, Listen: "127.0.0.1:0", Target: target, Latency: wan.OneWay(testRTT)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// linkEndpoint is the address of a link, to connect through it.
func linkEndpoint(l *wan.Link) pgnode.Endpoint {
	host, port, _ := net.SplitHostPort(l.Addr())
	ep := pgnode.Endpoint{Host: host}
	ep.Port = atoi(port)
	return ep
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// connString returns a libpq connection string to the proxy.
func (e *env) connString(extra ...string) string {
	host, port, _ := net.SplitHostPort(e.proxy.Addr())
	return strings.Join(append([]string{"host=" + host, "port=" + port, "user=postgres", "dbname=postgres", "sslmode=disable"}, extra...), " ")
}

// connect opens a pgx connection through the proxy.
func (e *env) connect(t *testing.T, extra ...string) *pgx.Conn {
	t.Helper()
	ctx := pgtest.Context(t, time.Minute)
	conn, err := pgx.Connect(ctx, e.connString(extra...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// connectDirect opens a pgx connection straight to the primary, to compare answers with.
func (e *env) connectDirect(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx := pgtest.Context(t, time.Minute)
	ep := e.primary.Endpoint()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", ep.Host, ep.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// served tells which server executed a statement by the unique marker it carried: the servers log
// every statement (log_statement=all).
func (e *env) served(t *testing.T, marker string) []string {
	t.Helper()
	var on []string
	for _, n := range []*pgnode.Node{e.primary, e.replica} {
		b, err := os.ReadFile(filepath.Clean(n.LogPath()))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), marker) {
			on = append(on, n.Name())
		}
	}
	return on
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func getenv(k string) string { return os.Getenv(k) }
