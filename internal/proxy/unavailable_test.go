package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/pgtest"
)

// TestUnreachableNodesAreExplained starts a real proxy whose nodes cannot be reached — a host name
// that does not resolve and a port nobody listens on — and checks what an operator sees: each node's
// first failure is logged with its reason at start, and again while it stays down, rate-limited, with
// the count of failures; a client's login fails with 57P03 naming both nodes, their errors in DETAIL;
// /readyz says why it is not ready, node by node. No PostgreSQL is needed.
func TestUnreachableNodesAreExplained(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen, cfg.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Region = "r1"
	cfg.PollInterval = 20 * time.Millisecond
	cfg.ServerConnectTimeout = time.Second
	cfg.Nodes = []NodeConfig{
		{Name: "gone", Address: "nosuchhost.invalid:5432", Region: "r1"},
		{Name: "closed", Address: refusedAddr(t), Region: "r2"},
	}
	cfg.Auth.Rules = []AuthRule{{Address: "127.0.0.1/32", Method: AuthTrust}}
	var logs syncBuffer
	p, err := New(cfg, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	const every = 300 * time.Millisecond
	p.disc.downLogEvery = every
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The logs: a first failure per node, then "still unreachable" with a growing count, at most
	// every 300ms although the nodes are polled every 20ms.
	var records []map[string]any
	err = pgtest.WaitFor(ctx, 20*time.Millisecond, func(context.Context) (bool, error) {
		records = logs.records(t)
		return len(find(records, "node still unreachable", "closed")) >= 2 && len(find(records, "node still unreachable", "gone")) > 0, nil
	})
	if err != nil {
		t.Fatalf("no repeated failure lines for both nodes: %v; logs:\n%s", err, logs.String())
	}
	elapsed := time.Since(start)
	for _, node := range []string{"gone", "closed"} {
		first := find(records, "node unreachable", node)
		if len(first) != 1 || first[0]["level"] != "WARN" || first[0]["err"] == "" ||
			first[0]["address"] != cfg.Nodes[map[string]int{"gone": 0, "closed": 1}[node]].Address {
			t.Errorf("node %s: first-failure lines %v, want one WARN with its address and error", node, first)
		}
		again := find(records, "node still unreachable", node)
		if limit := int(elapsed/every) + 1; len(again) > limit {
			t.Errorf("node %s: %d repeated failure lines in %v, want at most %d (one per %v)", node, len(again), elapsed, limit, every)
		}
		for i, r := range again {
			// A poll every 20ms and a line every 300ms: each line counts several failures more.
			if n := r["failures"].(float64); n < float64(2*(i+1)) || r["down_for"] == nil {
				t.Errorf("node %s: repeated failure line %d %v: want at least %d failures and the time down", node, i, r, 2*(i+1))
			}
		}
	}
	if err := find(records, "node unreachable", "closed")[0]["err"].(string); !strings.Contains(err, "connection refused") {
		t.Errorf("closed node's logged error %q does not say the connection was refused", err)
	}

	// A client: its login fails, naming the nodes and why.
	host, port, _ := net.SplitHostPort(p.Addr())
	_, err = pgx.Connect(ctx, "host="+host+" port="+port+" user=postgres dbname=postgres sslmode=disable")
	var pe *pgconn.PgError
	const wantMsg = "no server is available: nodes gone and closed do not answer this proxy (region r1)"
	if !errors.As(err, &pe) || pe.Code != "57P03" || pe.Severity != "FATAL" || pe.Message != wantMsg {
		t.Fatalf("login with no node reachable: %v, want FATAL 57P03 %q", err, wantMsg)
	}
	for _, want := range []string{"node gone (region r1, nosuchhost.invalid:5432): down for ",
		"node closed (region r2, " + cfg.Nodes[1].Address + "): down for ", "connection refused"} {
		if !strings.Contains(pe.Detail, want) {
			t.Errorf("login error's detail %q does not contain %q", pe.Detail, want)
		}
	}
	if !strings.Contains(pe.Hint, "monitor_user") {
		t.Errorf("login error's hint %q does not say what to check", pe.Hint)
	}

	t.Logf("client error: %s %s: %s\nDETAIL: %s\nHINT: %s", pe.Severity, pe.Code, pe.Message, pe.Detail, pe.Hint)
	// /readyz: 503, and why.
	resp, err := http.Get("http://" + p.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("/readyz: %d\n%s", resp.StatusCode, body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(string(body), "not ready: ") ||
		!strings.Contains(string(body), "\nnode gone (region r1, nosuchhost.invalid:5432): down for ") ||
		!strings.Contains(string(body), "\nnode closed (region r2, "+cfg.Nodes[1].Address+"): down for ") ||
		!strings.Contains(string(body), "connection refused") {
		t.Errorf("/readyz = %d %q, want 503 naming each node, how long it has been down and its error", resp.StatusCode, body)
	}
}

// refusedAddr returns a loopback address where nothing listens (a port the kernel just gave and took
// back): connecting there is refused at once.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// find returns the log records with message msg about node.
func find(records []map[string]any, msg, node string) []map[string]any {
	var out []map[string]any
	for _, r := range records {
		if r["msg"] == msg && r["node"] == node {
			out = append(out, r)
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer that a logger writes to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// records parses the JSON lines written so far.
func (b *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}
