package proxy_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// rawStartup is a protocol 3.0 StartupMessage, built by hand so that tests measuring the proxy's
// memory allocate almost nothing themselves.
func rawStartup(user, database string) []byte {
	body := []byte{0, 3, 0, 0}
	body = append(body, "user\x00"+user+"\x00database\x00"+database+"\x00\x00"...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

// readMessage reads one backend message into buf (grown if needed) and returns its type and body.
func readMessage(conn net.Conn, buf []byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
	if n < 0 || n > 1<<20 {
		return 0, nil, fmt.Errorf("message %q of length %d", hdr[0], n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(conn, buf)
	return hdr[0], buf, err
}

// authRequest returns the code of an AuthenticationRequest ('R') body: 5 md5, 10 SASL, 0 ok.
func authRequest(t *testing.T, typ byte, body []byte) uint32 {
	t.Helper()
	if typ != 'R' || len(body) < 4 {
		t.Fatalf("got message %q (%q), want an authentication request", typ, body)
	}
	return binary.BigEndian.Uint32(body)
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestDefaultAuthIsSCRAM: without rules every client must prove a password with SCRAM-SHA-256, from
// loopback too (servers that trust everyone would let a trusted client in as anyone); and a trust
// rule never opens the admin console.
func TestDefaultAuthIsSCRAM(t *testing.T) {
	_, cfg := authCluster(t, "")
	cfg.Auth.QueryUser = "postgres" // the servers trust the proxy: no password
	p := startProxyAsIs(t, cfg)
	ctx := pgtest.Context(t, time.Minute)
	host, port, _ := net.SplitHostPort(p.Addr())
	_, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=app dbname=postgres sslmode=disable", host, port))
	if err == nil {
		t.Fatal("a loopback client without a password logged in as app under the default rules")
	}
	if !strings.Contains(err.Error(), "password") {
		t.Errorf("no password under the default rules: %v, want a password error", err)
	}
	_, err = pgx.Connect(ctx, proxyURL(p, "app", "wrong"))
	wantSQLState(t, "default rules, wrong password", err, "28P01")
	conn, err := pgx.Connect(ctx, proxyURL(p, "app", "app-secret"))
	if err != nil {
		t.Fatalf("default rules, SCRAM with the right password: %v", err)
	}
	conn.Close(ctx)

	// The admin console skips trust rules: with only a trust rule, no rule matches it.
	cfg.Auth = proxy.AuthConfig{Rules: []proxy.AuthRule{{Method: proxy.AuthTrust}}}
	cfg.AdminUsers = []string{"postgres"}
	trusting := startProxyAsIs(t, cfg)
	host, port, _ = net.SplitHostPort(trusting.Addr())
	_, err = pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable", host, port, proxy.AdminDatabase))
	if pe := wantSQLState(t, "admin console under a trust rule", err, "28000"); !strings.Contains(pe.Message, "no auth rule") {
		t.Errorf("admin console under a trust rule: %q", pe.Message)
	}
	if conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable", host, port)); err != nil {
		t.Errorf("a database under the same trust rule: %v", err)
	} else {
		conn.Close(ctx)
	}
}

// TestServerKeysOnlyForTheirClient: the SCRAM keys app proved in its login let the proxy log in to
// the SCRAM servers for that client only; a client admitted as app by a trust rule afterwards gets no
// server login from them (without a server password it fails, as it would directly).
func TestServerKeysOnlyForTheirClient(t *testing.T) {
	c, cfg := authCluster(t, superPassword)
	pgtest.Exec(t, c.Primary, "CREATE DATABASE appdb")
	cfg.Auth = proxy.AuthConfig{QueryUser: "postgres", QueryPassword: superPassword, Rules: []proxy.AuthRule{
		{User: []string{"app"}, Database: []string{"postgres"}, Method: proxy.AuthSCRAM},
		{User: []string{"app"}, Database: []string{"appdb"}, Method: proxy.AuthTrust},
	}}
	p := startProxy(t, cfg)
	ctx := pgtest.Context(t, time.Minute)
	proven, err := pgx.Connect(ctx, proxyURL(p, "app", "app-secret"))
	if err != nil {
		t.Fatalf("SCRAM login: %v", err)
	}
	defer proven.Close(ctx)
	if _, err := proven.Exec(ctx, "SELECT 1 /* meridian:primary */"); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(p.Addr())
	trusted, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=app dbname=appdb sslmode=disable", host, port))
	if err == nil {
		trusted.Close(ctx)
		t.Fatal("a trust client logged in to the servers as app with the keys another client proved")
	}
	wantSQLState(t, "trust client, servers requiring SCRAM, no server password", err, "28P01")
}

// TestMD5RulesDoNotRevealUsers: under an md5 rule an unknown user gets the same md5 challenge and the
// same error as a known user with a wrong password.
func TestMD5RulesDoNotRevealUsers(t *testing.T) {
	c, cfg := authCluster(t, "")
	file := filepath.Join(t.TempDir(), "users.txt")
	writeAuthFile(t, c, file, "legacy")
	cfg.Auth = proxy.AuthConfig{File: file, Rules: []proxy.AuthRule{{Method: proxy.AuthMD5}}}
	p := startProxy(t, cfg)
	answers := map[string]string{}
	for _, user := range []string{"legacy", "ghost"} {
		conn, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := conn.Write(rawStartup(user, "postgres")); err != nil {
			t.Fatal(err)
		}
		typ, body, err := readMessage(conn, nil)
		if err != nil {
			t.Fatal(err)
		}
		if code := authRequest(t, typ, body); code != 5 {
			t.Errorf("%s: authentication request %d, want 5 (md5)", user, code)
			continue
		}
		pw := append([]byte("md5"+strings.Repeat("0", 32)), 0)
		msg := append(binary.BigEndian.AppendUint32([]byte{'p'}, uint32(len(pw)+4)), pw...)
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		typ, body, err = readMessage(conn, nil)
		if err != nil || typ != 'E' {
			t.Fatalf("%s: %q %v, want an ErrorResponse", user, typ, err)
		}
		answers[user] = strings.ReplaceAll(string(body), user, "USER")
	}
	if answers["legacy"] != answers["ghost"] {
		t.Errorf("wrong password and unknown user answered differently:\n%q\n%q", answers["legacy"], answers["ghost"])
	}
}

// TestCertRule: the cert method admits a client whose verified certificate names the user, and
// refuses another user with the same certificate, and a client without one.
func TestCertRule(t *testing.T) {
	_, cfg := authCluster(t, "")
	dir := t.TempDir()
	ca := pgtest.NewCA(t, dir, "ca")
	cert, key := filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key")
	ca.Issue(t, cert, key, "meridian-proxy", false)
	appCert, appKey := filepath.Join(dir, "app.crt"), filepath.Join(dir, "app.key")
	ca.Issue(t, appCert, appKey, "app", true)
	cfg.ClientTLS = proxy.ClientTLSConfig{CertFile: cert, KeyFile: key, CAFile: ca.File}
	cfg.Auth = proxy.AuthConfig{Rules: []proxy.AuthRule{{Method: proxy.AuthCert}}}
	p := startProxy(t, cfg)
	ctx := pgtest.Context(t, time.Minute)
	host, port, _ := net.SplitHostPort(p.Addr())
	url := func(user, extra string) string {
		return fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=require %s", host, port, user, extra)
	}
	withCert := "sslcert=" + appCert + " sslkey=" + appKey
	conn, err := pgx.Connect(ctx, url("app", withCert))
	if err != nil {
		t.Fatalf("app with app's certificate: %v", err)
	}
	var who string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "app" {
		t.Errorf("current_user %q, %v", who, err)
	}
	conn.Close(ctx)
	_, err = pgx.Connect(ctx, url("postgres", withCert))
	if pe := wantSQLState(t, "postgres with app's certificate", err, "28000"); !strings.Contains(pe.Message, "certificate authentication failed") {
		t.Errorf("postgres with app's certificate: %q", pe.Message)
	}
	_, err = pgx.Connect(ctx, url("app", ""))
	wantSQLState(t, "app without a certificate", err, "28000")
	_, err = pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=app dbname=postgres sslmode=disable", host, port))
	wantSQLState(t, "app in plaintext", err, "28000")
}

// TestUnauthenticatedMemory: 200 connections that announce a password message of 60 000 bytes
// (under the 64 KiB limit before authentication) and send ten bytes of it make the proxy hold well
// under 64 KiB each; a larger announcement is refused at once; a logged-in client announcing a
// 200 MB query and trickling bytes makes the proxy hold about what it sent.
func TestUnauthenticatedMemory(t *testing.T) {
	c, cfg := authCluster(t, "")
	file := filepath.Join(t.TempDir(), "users.txt")
	writeAuthFile(t, c, file, "app")
	cfg.Auth = proxy.AuthConfig{File: file, Rules: []proxy.AuthRule{{User: []string{"postgres"}, Address: "127.0.0.1/32", Method: proxy.AuthTrust}, {Method: proxy.AuthSCRAM}}}
	cfg.HTTPListen = "127.0.0.1:0"
	p := startProxy(t, cfg)
	ctx := pgtest.Context(t, 2*time.Minute)
	clientIn := func() float64 {
		return scrapeGauge(t, p.HTTPAddr(), `meridian_proxy_bytes_total{direction="in",side="client"}`)
	}
	waitIn := func(want float64) {
		t.Helper()
		if err := pgtest.WaitFor(ctx, 20*time.Millisecond, func(context.Context) (bool, error) { return clientIn() >= want, nil }); err != nil {
			t.Fatalf("the proxy did not receive the bytes sent: %v (got %v, want %v)", err, clientIn(), want)
		}
	}

	// Refused at once: more than 64 KiB before authentication.
	big, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = big.SetDeadline(time.Now().Add(30 * time.Second))
	big.Write(rawStartup("app", "postgres"))
	if typ, body, err := readMessage(big, nil); err != nil || authRequest(t, typ, body) != 10 {
		t.Fatalf("SASL request: %v", err)
	}
	big.Write(binary.BigEndian.AppendUint32([]byte{'p'}, 200<<20))
	if typ, body, err := readMessage(big, nil); err != nil || typ != 'E' || !strings.Contains(string(body), "too large") {
		t.Errorf("a 200 MB password message: %q %q %v, want an error saying it is too large", typ, body, err)
	}
	big.Close()

	const n = 200
	in0 := clientIn()
	before := heapInUse()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := rawStartup("app", "postgres")
	partial := append(binary.BigEndian.AppendUint32([]byte{'p'}, 60000), "n,,n=,r=ab"...)
	buf := make([]byte, 64)
	for range n {
		conn, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		_ = conn.SetDeadline(time.Now().Add(time.Minute))
		if _, err := conn.Write(start); err != nil {
			t.Fatal(err)
		}
		typ, body, err := readMessage(conn, buf)
		if err != nil || authRequest(t, typ, body) != 10 {
			t.Fatalf("SASL request: %v", err)
		}
		if _, err := conn.Write(partial); err != nil {
			t.Fatal(err)
		}
	}
	waitIn(in0 + float64(n*len(partial))) // the startup packet is read before the byte counters start
	after := heapInUse()
	per := (int64(after) - int64(before)) / n
	t.Logf("%d unauthenticated connections, each announcing 60000 bytes and sending 10: heap in use %d → %d bytes, %d bytes per connection", n, before, after, per)
	if per > 64<<10 {
		t.Errorf("each unauthenticated connection costs %d bytes of heap, want < 64 KiB", per)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = conns[:0]

	// A logged-in client announcing a 200 MB query.
	host, port, _ := net.SplitHostPort(p.Addr())
	pc, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable", host, port))
	if err != nil {
		t.Fatal(err)
	}
	h, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Conn.Close()
	before = heapInUse()
	in0 = clientIn()
	if _, err := h.Conn.Write(binary.BigEndian.AppendUint32([]byte{'Q'}, 200<<20)); err != nil {
		t.Fatal(err)
	}
	chunk := []byte(strings.Repeat("x", 1000))
	for range 100 {
		if _, err := h.Conn.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	waitIn(in0 + 5 + 100*1000)
	after = heapInUse()
	t.Logf("a logged-in client announcing 200 MB and sending 100 kB: heap in use %d → %d bytes", before, after)
	if grew := int64(after) - int64(before); grew > 4<<20 {
		t.Errorf("a logged-in client that sent 100 kB of an announced 200 MB made the heap grow by %d bytes, want < 4 MiB", grew)
	}
}

// TestClientLimitAtAccept: max_client_conn counts sockets from the accept: with the limit taken by
// silent sockets a real client is refused at once with 53300, the silent sockets are closed after
// client_login_timeout, and then a real client gets in.
func TestClientLimitAtAccept(t *testing.T) {
	_, cfg := authCluster(t, "")
	cfg.MaxClientConn = 30
	cfg.ClientLoginTimeout = 2 * time.Second
	p := startProxy(t, cfg)
	ctx := pgtest.Context(t, time.Minute)
	host, port, _ := net.SplitHostPort(p.Addr())
	url := fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable connect_timeout=5", host, port)
	silent := make([]net.Conn, 0, cfg.MaxClientConn)
	opened := time.Now()
	for range cfg.MaxClientConn {
		conn, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		silent = append(silent, conn)
	}
	// The accept loop may still be taking the last silent sockets: retry until refused.
	var refusedIn time.Duration
	err := pgtest.WaitFor(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		start := time.Now()
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			conn.Close(ctx)
			return false, nil
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "53300" {
			refusedIn = time.Since(start)
			return true, nil
		}
		return false, err
	})
	if err != nil {
		t.Fatalf("with max_client_conn silent sockets open, a real client was not refused with 53300: %v", err)
	}
	if time.Since(opened) > cfg.ClientLoginTimeout {
		t.Fatalf("the check took longer than client_login_timeout: the silent sockets may have been closed meanwhile")
	}
	if refusedIn > time.Second {
		t.Errorf("refused after %v, want at once", refusedIn)
	}
	for _, conn := range silent {
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.Copy(io.Discard, conn); err != nil {
			t.Fatalf("a silent socket was not closed by the proxy after client_login_timeout: %v", err)
		}
	}
	if err := pgtest.WaitFor(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return false, nil
		}
		conn.Close(ctx)
		return true, nil
	}); err != nil {
		t.Errorf("after the silent sockets were closed, a real client still cannot log in: %v", err)
	}
}

// TestSlowAuthQuery: while the auth query for one user takes two seconds, a trust login and an
// auth-file login are not delayed, an auth-query login of another user runs on its own connection,
// the five concurrent logins of the slow user share one query, and an unknown user is looked up once
// for two logins in a row (negative cache).
func TestSlowAuthQuery(t *testing.T) {
	c, cfg := authCluster(t, "")
	pgtest.Exec(t, c.Primary, "CREATE SEQUENCE public.authq; CREATE ROLE slow LOGIN PASSWORD 'slow-secret'; CREATE ROLE trusted LOGIN")
	file := filepath.Join(t.TempDir(), "users.txt")
	writeAuthFile(t, c, file, "legacy")
	cfg.Auth = proxy.AuthConfig{File: file, QueryUser: "postgres",
		// One row per lookup (NULL for an unknown user), counted in authq; slow sleeps two seconds.
		Query: "SELECT (SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1) FROM (SELECT nextval('public.authq')) n, " +
			"pg_catalog.pg_sleep(CASE WHEN $1 = 'slow' THEN 2 ELSE 0 END) s",
		Rules: []proxy.AuthRule{{User: []string{"trusted"}, Method: proxy.AuthTrust}, {User: []string{"legacy"}, Method: proxy.AuthMD5}, {Method: proxy.AuthSCRAM}}}
	p := startProxy(t, cfg)
	ctx := pgtest.Context(t, time.Minute)
	lookups := func() int64 {
		var n int64
		pgtest.QueryRow(t, c.Primary, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.authq").Scan(&n)
		return n
	}
	var wg sync.WaitGroup
	slowErrs := make(chan error, 5)
	for range 5 {
		wg.Go(func() {
			conn, err := pgx.Connect(ctx, proxyURL(p, "slow", "slow-secret"))
			if err == nil {
				conn.Close(ctx)
			}
			slowErrs <- err
		})
	}
	if err := pgtest.WaitFor(ctx, 10*time.Millisecond, func(context.Context) (bool, error) {
		var n int
		pgtest.QueryRow(t, c.Primary, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'meridian-proxy-auth' AND state = 'active' AND query LIKE '%pg_sleep%'").Scan(&n)
		return n > 0, nil
	}); err != nil {
		t.Fatal(err)
	}
	timed := func(what, user, password string) {
		t.Helper()
		start := time.Now()
		host, port, _ := net.SplitHostPort(p.Addr())
		conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=%s password='%s' dbname=postgres sslmode=disable", host, port, user, password))
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		conn.Close(ctx)
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s took %v while another user's auth query ran, want well under a second", what, d)
		}
	}
	timed("trust login", "trusted", "")
	timed("auth-file login", "legacy", "legacy-secret")
	timed("auth-query login of another user", "app", "app-secret")
	wg.Wait()
	close(slowErrs)
	for err := range slowErrs {
		if err != nil {
			t.Errorf("slow user's login: %v", err)
		}
	}
	if got := lookups(); got != 2 {
		t.Errorf("%d auth queries for five concurrent logins of one user and one of another, want 2", got)
	}
	for range 2 {
		_, err := pgx.Connect(ctx, proxyURL(p, "ghost", "x"))
		wantSQLState(t, "unknown user", err, "28P01")
	}
	if got := lookups(); got != 3 {
		t.Errorf("%d auth queries after two logins of an unknown user, want 3 (one lookup, then the negative cache)", got)
	}
}

// TestFailedLoginsLeaveNoPools: logins to databases that do not exist create no pools; a pool whose
// connections were all reaped is dropped, with its metric series.
func TestFailedLoginsLeaveNoPools(t *testing.T) {
	_, cfg := authCluster(t, "")
	cfg.AdminUsers = []string{"postgres"}
	cfg.ServerIdleTimeout = 500 * time.Millisecond
	cfg.HTTPListen = "127.0.0.1:0"
	p := startProxy(t, cfg)
	ctx := pgtest.Context(t, time.Minute)
	host, port, _ := net.SplitHostPort(p.Addr())
	pools := func() []string {
		var rows []string
		for _, l := range strings.Split(strings.TrimSpace(mustAdmin(t, p, "SHOW POOLS")), "\n")[1:] {
			if strings.Contains(l, "|") {
				rows = append(rows, l)
			}
		}
		return rows
	}
	base := len(pools())
	for i := range 40 {
		_, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=postgres dbname=nodb_%d sslmode=disable", host, port, i))
		wantSQLState(t, "a database that does not exist", err, "3D000")
	}
	if got := pools(); len(got) != base {
		t.Fatalf("after 40 failed logins: %d pools, want %d:\n%s", len(got), base, strings.Join(got, "\n"))
	}
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=app dbname=postgres sslmode=disable", host, port))
	if err != nil {
		t.Fatal(err)
	}
	// Inside a transaction the pool holds a lent connection, so it cannot be dropped while we look.
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if got := pools(); !strings.Contains(strings.Join(got, "\n"), "postgres|app|") {
		t.Errorf("no pool of app while it runs a transaction:\n%s", strings.Join(got, "\n"))
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := pgtest.WaitFor(ctx, 100*time.Millisecond, func(context.Context) (bool, error) {
		return !strings.Contains(strings.Join(pools(), "\n"), "|app|"), nil
	}); err != nil {
		t.Fatalf("the idle pool of app was not dropped: %v\n%s", err, strings.Join(pools(), "\n"))
	}
	resp := httpGet(t, "http://"+p.HTTPAddr()+"/metrics")
	if strings.Contains(resp, `user="app"`) || strings.Contains(resp, "nodb_") {
		t.Errorf("metric series of dropped or never created pools remain")
	}
}
