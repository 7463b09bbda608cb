package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridiandb/meridian/internal/pgtest"
)

// TestProxySIGHUPRotatesCertificate runs `meridian proxy --config` with client TLS, keeps a session
// open, rotates the certificate files and sends SIGHUP: new connections get the new certificate, the
// running session is not dropped. Cancelling the command shuts the proxy down gracefully.
func TestProxySIGHUPRotatesCertificate(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{})
	dir := t.TempDir()
	ca1, ca2 := pgtest.NewCA(t, dir, "ca1"), pgtest.NewCA(t, dir, "ca2")
	cert, key := filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key")
	ca1.Issue(t, cert, key, "meridian-proxy", false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(dir, "proxy.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: %s
region: r1
shutdown_timeout: 2s
client_tls: {cert_file: %s, key_file: %s}
auth: {rules: [{address: 127.0.0.1/32, method: trust}]}  # authentication is not under test here
nodes:
  - {name: primary, address: %s, region: r1}
`, addr, cert, key, c.Primary.Endpoint().String())), 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		cmd := newRootCmd(&out, &out)
		cmd.SetArgs([]string{"proxy", "--config", cfg, "--log-level", "warn"})
		done <- cmd.ExecuteContext(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	host, port, _ := net.SplitHostPort(addr)
	connect := func(ca string) (*pgx.Conn, error) {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		return pgx.Connect(cctx, "host="+host+" port="+port+" user=postgres dbname=postgres sslmode=verify-full sslrootcert="+ca)
	}
	var held *pgx.Conn
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if held, err = connect(ca1.File); err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("the proxy did not come up: %v\n%s", err, out.String())
		}
	}
	defer held.Close(context.Background())

	ca2.Issue(t, cert, key, "meridian-proxy", false)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var rotated bool
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(50 * time.Millisecond) {
		if c2, err := connect(ca2.File); err == nil {
			c2.Close(context.Background())
			rotated = true
			break
		}
	}
	if !rotated {
		t.Fatalf("after SIGHUP the proxy does not present the new certificate\n%s", out.String())
	}
	var one int
	if err := held.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Errorf("the session opened before the rotation was dropped: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("proxy command after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy command did not stop")
	}
	done <- nil // for the deferred wait
}
