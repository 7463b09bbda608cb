package proxy_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// TestClientTLS: verify-full with the right CA succeeds (pgx and psql) and fails with another CA;
// plaintext still works in allow mode; a certificate rotated on disk is served after Reload (what
// SIGHUP runs) while a session opened before keeps working; require mode refuses plaintext with a
// clear error; a CA file makes the proxy verify client certificates.
func TestClientTLS(t *testing.T) {
	e := newEnv(t, envOptions{})
	dir := t.TempDir()
	ca1, ca2 := pgtest.NewCA(t, dir, "ca1"), pgtest.NewCA(t, dir, "ca2")
	cert, key := filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key")
	ca1.Issue(t, cert, key, "meridian-proxy", false)
	cfg := e.cfg
	cfg.ClientTLS = proxy.ClientTLSConfig{CertFile: cert, KeyFile: key}
	p := startProxy(t, cfg)
	ctx := pgtest.Context(t, time.Minute)
	host, port, _ := net.SplitHostPort(p.Addr())
	url := func(extra string) string {
		return "host=" + host + " port=" + port + " user=postgres dbname=postgres " + extra
	}
	connect := func(extra string) (*pgx.Conn, error) { return pgx.Connect(ctx, url(extra)) }

	held, err := connect("sslmode=verify-full sslrootcert=" + ca1.File)
	if err != nil {
		t.Fatalf("verify-full with the right CA: %v", err)
	}
	defer held.Close(ctx)
	if _, ok := held.PgConn().Conn().(*tls.Conn); !ok {
		t.Fatalf("verify-full connection is %T, not TLS", held.PgConn().Conn())
	}
	if _, err := connect("sslmode=verify-full sslrootcert=" + ca2.File); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("verify-full with the wrong CA: %v, want a certificate error", err)
	}
	if c, err := connect("sslmode=disable"); err != nil {
		t.Errorf("plaintext in allow mode: %v", err)
	} else {
		c.Close(ctx)
	}
	psql := func(conninfo string) (string, error) {
		out, err := exec.Command(pgtest.Binaries(t).Path("psql"), "-X", "-A", "-t", "-c", "SELECT 'ok'", conninfo).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := psql(url("sslmode=verify-full sslrootcert=" + ca1.File)); err != nil || out != "ok" {
		t.Errorf("psql verify-full: %v\n%s", err, out)
	}
	if out, err := psql(url("sslmode=verify-full sslrootcert=" + ca2.File)); err == nil {
		t.Errorf("psql verify-full with the wrong CA succeeded: %s", out)
	}

	// Rotation: a new certificate from another CA, in place, then a reload.
	ca2.Issue(t, cert, key, "meridian-proxy", false)
	if restart, err := p.Reload(cfg); err != nil || len(restart) != 0 {
		t.Fatalf("Reload: %v, need restart %v", err, restart)
	}
	if c, err := connect("sslmode=verify-full sslrootcert=" + ca2.File); err != nil {
		t.Errorf("after rotation, verify-full with the new CA: %v", err)
	} else {
		c.Close(ctx)
	}
	if _, err := connect("sslmode=verify-full sslrootcert=" + ca1.File); err == nil {
		t.Error("after rotation, the old CA still verifies the proxy")
	}
	var one int
	if err := held.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Errorf("the session opened before the rotation: %v", err)
	}
	// A broken file on reload keeps the running certificate.
	os.WriteFile(key, []byte("garbage"), 0o600)
	if _, err := p.Reload(cfg); err == nil {
		t.Error("Reload with a broken key file: no error")
	}
	if c, err := connect("sslmode=verify-full sslrootcert=" + ca2.File); err != nil {
		t.Errorf("after a failed reload: %v", err)
	} else {
		c.Close(ctx)
	}
	ca2.Issue(t, cert, key, "meridian-proxy", false)

	// require: plaintext is refused, saying why.
	req := cfg
	req.ClientTLS.Mode = proxy.TLSRequire
	rp := startProxy(t, req)
	rhost, rport, _ := net.SplitHostPort(rp.Addr())
	_, err = pgx.Connect(ctx, "host="+rhost+" port="+rport+" user=postgres dbname=postgres sslmode=disable")
	if pe := wantSQLState(t, "plaintext to a require proxy", err, "28000"); !strings.Contains(pe.Message, "requires TLS") {
		t.Errorf("message: %q", pe.Message)
	}
	if c, err := pgx.Connect(ctx, "host="+rhost+" port="+rport+" user=postgres dbname=postgres sslmode=require"); err != nil {
		t.Errorf("TLS to a require proxy: %v", err)
	} else {
		c.Close(ctx)
	}

	// Client certificates: required and verified against ca_file.
	ccert, ckey := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	ca1.Issue(t, ccert, ckey, "postgres", true)
	mtls := cfg
	mtls.ClientTLS.CAFile, mtls.ClientTLS.RequireClientCert, mtls.ClientTLS.Mode = ca1.File, true, proxy.TLSRequire
	mp := startProxy(t, mtls)
	mhost, mport, _ := net.SplitHostPort(mp.Addr())
	base := "host=" + mhost + " port=" + mport + " user=postgres dbname=postgres sslmode=verify-full sslrootcert=" + ca2.File
	if _, err := pgx.Connect(ctx, base); err == nil {
		t.Error("no client certificate, but one is required: connected")
	}
	if c, err := pgx.Connect(ctx, base+" sslcert="+ccert+" sslkey="+ckey); err != nil {
		t.Errorf("with a client certificate from ca_file: %v", err)
	} else {
		c.Close(ctx)
	}
}

// TestServerTLS: the proxy reaches servers that require SCRAM over TLS with server_tls verify-full —
// its monitor and auth-query logins (pgconn) and the client's passthrough login with SCRAM keys (the
// proxy's own SCRAM client) — and every server session it opens is encrypted.
func TestServerTLS(t *testing.T) {
	dir, err := os.MkdirTemp("", "meridian-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	ca := pgtest.NewCA(t, dir, "server-ca")
	cert, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	ca.Issue(t, cert, key, "postgres-server", false)
	if os.Geteuid() == 0 { // the servers run as postgres, which must own its key
		if u, err := user.Lookup("postgres"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			os.Chown(key, uid, gid)
		}
	}
	c := pgtest.NewCluster(t, pgtest.Options{Replicas: 1, Password: superPassword,
		Settings: map[string]string{"ssl": "on", "ssl_cert_file": cert, "ssl_key_file": key}})
	pgtest.Exec(t, c.Primary, "CREATE ROLE app LOGIN PASSWORD 'app-secret'")
	if err := pgtest.WaitReplayed(pgtest.Context(t, time.Minute), c.Replicas[0], pgtest.CurrentLSN(t, c.Primary)); err != nil {
		t.Fatal(err)
	}
	cfg := proxy.DefaultConfig()
	cfg.Listen, cfg.Region = "127.0.0.1:0", "local"
	cfg.PollInterval = 100 * time.Millisecond
	cfg.MonitorPassword = superPassword
	cfg.ServerTLS, cfg.ServerCAFile = proxy.ServerTLSVerifyFull, ca.File
	cfg.Auth = proxy.AuthConfig{Rules: []proxy.AuthRule{{Method: proxy.AuthSCRAM}}, QueryUser: "postgres", QueryPassword: superPassword}
	cfg.Nodes = []proxy.NodeConfig{
		{Name: "primary", Address: c.Primary.Endpoint().String(), Region: "local"},
		{Name: "replica", Address: c.Replicas[0].Endpoint().String(), Region: "local"},
	}
	p := startProxy(t, cfg)
	ctx := pgtest.Context(t, time.Minute)
	conn, err := pgx.Connect(ctx, proxyURL(p, "app", "app-secret"))
	if err != nil {
		t.Fatalf("login through the proxy to TLS servers: %v", err)
	}
	defer conn.Close(ctx)
	// The replica's session is found by its client port: pg_backend_pid() is routed to the primary.
	for _, sql := range []string{"SELECT ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE client_port = inet_client_port() AND client_addr = inet_client_addr()",
		"SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid() /* meridian:primary */"} {
		var ssl bool
		if err := conn.QueryRow(ctx, sql).Scan(&ssl); err != nil || !ssl {
			t.Errorf("%s: ssl=%v, %v; want an encrypted server session", sql, ssl, err)
		}
	}
	// With the wrong CA the proxy refuses the servers' certificate.
	other := pgtest.NewCA(t, dir, "other-ca")
	cfg.ServerCAFile = other.File
	bad, err := proxy.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Start(); err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := bad.WaitReady(wctx); err == nil {
		t.Error("a proxy that cannot verify the servers' certificate became ready")
	}
}
