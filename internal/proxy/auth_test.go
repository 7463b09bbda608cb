package proxy_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
	"github.com/meridiandb/meridian/internal/scram"
)

const superPassword = "super-secret"

// authCluster is a primary and a replica, requiring SCRAM over TCP when serverPassword is set, with
// the login roles "app" (SCRAM secret), "legacy" (md5 secret) and "blocked", and a proxy configuration
// for them (nodes and monitor login filled in, no auth settings yet).
func authCluster(t *testing.T, serverPassword string) (*pgtest.Cluster, proxy.Config) {
	t.Helper()
	c := pgtest.NewCluster(t, pgtest.Options{Replicas: 1, Password: serverPassword})
	pgtest.Exec(t, c.Primary, "CREATE ROLE app LOGIN PASSWORD 'app-secret'")
	pgtest.Exec(t, c.Primary, "CREATE ROLE blocked LOGIN PASSWORD 'blocked-secret'")
	pgtest.Exec(t, c.Primary, "GRANT ALL ON SCHEMA public TO app")
	pgtest.Exec(t, c.Primary, "SET password_encryption = 'md5'; CREATE ROLE legacy LOGIN PASSWORD 'legacy-secret'")
	if err := pgtest.WaitReplayed(pgtest.Context(t, time.Minute), c.Replicas[0], pgtest.CurrentLSN(t, c.Primary)); err != nil {
		t.Fatal(err)
	}
	cfg := proxy.DefaultConfig()
	cfg.Listen, cfg.HTTPListen, cfg.Region = "127.0.0.1:0", "127.0.0.1:0", "local"
	cfg.PollInterval = 100 * time.Millisecond
	cfg.MonitorPassword = serverPassword
	cfg.Nodes = []proxy.NodeConfig{
		{Name: "primary", Address: c.Primary.Endpoint().String(), Region: "local"},
		{Name: "replica", Address: c.Replicas[0].Endpoint().String(), Region: "local"},
	}
	return c, cfg
}

func proxyURL(p *proxy.Proxy, user, password string) string {
	host, port, _ := net.SplitHostPort(p.Addr())
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres sslmode=disable", host, port, user, password)
}

// wantSQLState checks an error's SQLSTATE.
func wantSQLState(t *testing.T, what string, err error, code string) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != code {
		t.Fatalf("%s: %v, want SQLSTATE %s", what, err, code)
	}
	return pe
}

// TestSCRAMPassthrough: clients log in with SCRAM-SHA-256 against the verifiers the primary stores
// (auth_query as a dedicated user); the proxy then logs in to both servers, which require SCRAM too,
// as the client — with the keys from the client's own exchange, since it has no password for it.
// A wrong password and an unknown user fail alike with 28P01.
func TestSCRAMPassthrough(t *testing.T) {
	c, cfg := authCluster(t, superPassword)
	cfg.Auth.Rules = []proxy.AuthRule{{Method: proxy.AuthSCRAM}}
	cfg.Auth.QueryUser = "postgres"
	cfg.Auth.QueryPassword = superPassword
	p := startProxy(t, cfg)
	ctx := pgtest.Context(t, time.Minute)

	conn, err := pgx.Connect(ctx, proxyURL(p, "app", "app-secret"))
	if err != nil {
		t.Fatalf("SCRAM login through the proxy: %v", err)
	}
	defer conn.Close(ctx)
	var who string
	var onReplica bool
	if err := conn.QueryRow(ctx, "SELECT current_user, pg_is_in_recovery()").Scan(&who, &onReplica); err != nil {
		t.Fatal(err)
	}
	if who != "app" || !onReplica {
		t.Errorf("read ran as %q on the replica %v; want app, on the replica", who, onReplica)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE scram_probe (x int)"); err != nil { // on the primary, as app
		t.Fatal(err)
	}

	// psql, the same way.
	host, port, _ := net.SplitHostPort(p.Addr())
	cmd := exec.Command(pgtest.Binaries(t).Path("psql"), "-X", "-A", "-t", "-h", host, "-p", port, "-U", "app", "-d", "postgres", "-c", "SELECT current_user")
	cmd.Env = append(os.Environ(), "PGPASSWORD=app-secret")
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "app" {
		t.Errorf("psql with SCRAM: %v\n%s", err, out)
	}

	_, err = pgx.Connect(ctx, proxyURL(p, "app", "wrong"))
	wrong := wantSQLState(t, "wrong password", err, "28P01")
	_, err = pgx.Connect(ctx, proxyURL(p, "nobody", "wrong"))
	unknown := wantSQLState(t, "unknown user", err, "28P01")
	if strings.ReplaceAll(wrong.Message, "app", "X") != strings.ReplaceAll(unknown.Message, "nobody", "X") || wrong.Severity != unknown.Severity {
		t.Errorf("wrong password %q and unknown user %q are told apart", wrong.Message, unknown.Message)
	}
	if got := scrapeGauge(t, p.HTTPAddr(), "meridian_proxy_auth_failures_total"); got != 2 {
		t.Errorf("meridian_proxy_auth_failures_total = %v, want 2", got)
	}

	// An auth file holding the servers' own verifier (copied from pg_authid): no auth query, no
	// server password, yet the proxy logs in to the SCRAM servers as app with the client's keys.
	same := filepath.Join(t.TempDir(), "same.txt")
	writeAuthFile(t, c, same, "app")
	cfg.Auth = proxy.AuthConfig{File: same, Rules: []proxy.AuthRule{{Method: proxy.AuthSCRAM}}}
	fromFile := startProxy(t, cfg)
	if c3, err := pgx.Connect(ctx, proxyURL(fromFile, "app", "app-secret")); err != nil {
		t.Errorf("pgx through an auth file to SCRAM servers: %v", err)
	} else {
		var onReplica bool
		if err := c3.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&onReplica); err != nil || !onReplica {
			t.Errorf("read through the auth-file proxy: on the replica %v, %v", onReplica, err)
		}
		c3.Close(ctx)
	}
	fhost, fport, _ := net.SplitHostPort(fromFile.Addr())
	cmd = exec.Command(pgtest.Binaries(t).Path("psql"), "-X", "-A", "-t", "-h", fhost, "-p", fport, "-U", "app", "-d", "postgres",
		"-c", "SELECT current_user || ' ' || pg_is_in_recovery()")
	cmd.Env = append(os.Environ(), "PGPASSWORD=app-secret")
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "app true" {
		t.Errorf("psql through an auth file to SCRAM servers: %v\n%s", err, out)
	}
	cmd = exec.Command(pgtest.Binaries(t).Path("psql"), "-X", "-A", "-t", "-h", fhost, "-p", fport, "-U", "app", "-d", "postgres", "-c", "SELECT 1")
	cmd.Env = append(os.Environ(), "PGPASSWORD=wrong")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "password authentication failed") {
		t.Errorf("psql with a wrong password: %v\n%s", err, out)
	}

	// A verifier of the same password with another salt (as `meridian proxy passwd` writes) checks
	// the client, but its keys cannot log in to servers that store pg_authid's: without a server
	// password that login fails and says why; with one, the proxy falls back to it.
	file := filepath.Join(t.TempDir(), "users.txt")
	v, err := scram.NewVerifier("app-secret", scram.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(proxy.QuoteAuthField("app")+" "+proxy.QuoteAuthField(v.String())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Auth = proxy.AuthConfig{File: file, Rules: []proxy.AuthRule{{Method: proxy.AuthSCRAM}}}
	other := startProxy(t, cfg)
	_, err = pgx.Connect(ctx, proxyURL(other, "app", "app-secret"))
	if err == nil || !strings.Contains(err.Error(), "another SCRAM verifier") {
		t.Errorf("keys from another verifier, no server password: %v; want an error saying the verifiers differ", err)
	}
	cfg.ServerPassword = "app-secret"
	fallback := startProxy(t, cfg)
	conn2, err := pgx.Connect(ctx, proxyURL(fallback, "app", "app-secret"))
	if err != nil {
		t.Fatalf("keys from another verifier, server password set: %v", err)
	}
	conn2.Close(ctx)
}

// TestAuthFileAndRules: secrets from an auth file (a SCRAM verifier and an md5 hash, copied from
// pg_authid), md5 and SCRAM chosen by rules per user, and the reject and no-match cases. The servers
// trust the proxy here: this is about the clients.
func TestAuthFileAndRules(t *testing.T) {
	c, cfg := authCluster(t, "")
	file := filepath.Join(t.TempDir(), "users.txt")
	writeAuthFile(t, c, file, "app", "legacy", "blocked")
	cfg.Auth.File = file
	cfg.Auth.Rules = []proxy.AuthRule{
		{User: []string{"blocked"}, Method: proxy.AuthReject},
		{User: []string{"legacy"}, Method: proxy.AuthMD5},
		{User: []string{"app", "ghost"}, Database: []string{"postgres"}, Address: "127.0.0.0/8", Method: proxy.AuthSCRAM},
	}
	p := startProxy(t, cfg)
	ctx := pgtest.Context(t, time.Minute)
	login := func(user, password string) error {
		conn, err := pgx.Connect(ctx, proxyURL(p, user, password))
		if err == nil {
			defer conn.Close(ctx)
			var who string
			err = conn.QueryRow(ctx, "SELECT current_user").Scan(&who)
			if err == nil && who != user {
				err = fmt.Errorf("logged in as %s", who)
			}
		}
		return err
	}
	if err := login("app", "app-secret"); err != nil {
		t.Errorf("app (SCRAM from the auth file): %v", err)
	}
	if err := login("legacy", "legacy-secret"); err != nil {
		t.Errorf("legacy (md5 from the auth file): %v", err)
	}
	wantSQLState(t, "app, wrong password", login("app", "nope"), "28P01")
	wantSQLState(t, "legacy, wrong password", login("legacy", "nope"), "28P01")
	wantSQLState(t, "ghost (a rule, no secret)", login("ghost", "nope"), "28P01")
	if pe := wantSQLState(t, "blocked (reject rule)", login("blocked", "blocked-secret"), "28000"); !strings.Contains(pe.Message, "reject") {
		t.Errorf("reject message: %q", pe.Message)
	}
	if pe := wantSQLState(t, "postgres (no rule)", login("postgres", "x"), "28000"); !strings.Contains(pe.Message, "no auth rule") {
		t.Errorf("no-rule message: %q", pe.Message)
	}

	// Configuration errors name the key.
	bad := cfg
	bad.Auth = proxy.AuthConfig{Rules: []proxy.AuthRule{{Method: "password"}, {Address: "10.0.0.0/33", Method: proxy.AuthTrust}}, File: filepath.Join(t.TempDir(), "missing")}
	_, err := proxy.New(bad, nil)
	for _, want := range []string{"auth.rules[0].method", "auth.rules[1].address", "auth.file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("invalid auth config: %v, want it to name %s", err, want)
		}
	}
	plain := filepath.Join(t.TempDir(), "plain.txt")
	os.WriteFile(plain, []byte(`"app" "app-secret"`+"\n"), 0o600)
	bad.Auth = proxy.AuthConfig{File: plain}
	if _, err := proxy.New(bad, nil); err == nil || !strings.Contains(err.Error(), "plaintext passwords are not accepted") {
		t.Errorf("auth file with a plaintext password: %v", err)
	}
}

// writeAuthFile writes "user" "secret" lines with the secrets read from the primary.
func writeAuthFile(t *testing.T, c *pgtest.Cluster, path string, users ...string) {
	t.Helper()
	var b strings.Builder
	for _, u := range users {
		var secret string
		pgtest.QueryRow(t, c.Primary, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", u).Scan(&secret)
		fmt.Fprintf(&b, "%s %s\n", proxy.QuoteAuthField(u), proxy.QuoteAuthField(secret))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}
