package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/pgtest"
)

// TestLoggerKeysOnceDurationsAsStrings builds loggers in layers as the lab does (the lab's logger, a
// proxy's with its region, a component of the proxy) and logs a record that names the region again
// and a duration: the JSON line has each key once, the most specific value, and "19.36s".
func TestLoggerKeysOnceDurationsAsStrings(t *testing.T) {
	var out bytes.Buffer
	log := newJSONLogger(&out, -4).With("component", "lab").
		With("component", "proxy", "region", "us-west-2").
		With("component", "discovery")
	log.Info("node up", "region", "us-west-2", "took", 19360*time.Millisecond, "node", "west")
	log.WithGroup("pool").With("node", "a").Info("grouped", "node", "b", "wait", 1500*time.Microsecond)

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), out.String())
	}
	for _, line := range lines {
		if dup := duplicateKeys(t, line); len(dup) > 0 {
			t.Errorf("keys %v repeated in %s", dup, line)
		}
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["component"] != "discovery" || rec["region"] != "us-west-2" || rec["took"] != "19.36s" {
		t.Errorf("component %v, region %v, took %v; want discovery, us-west-2, \"19.36s\"", rec["component"], rec["region"], rec["took"])
	}
	if err := json.Unmarshal([]byte(lines[1]), &rec); err != nil {
		t.Fatal(err)
	}
	if g, _ := rec["pool"].(map[string]any); rec["component"] != "discovery" || g["node"] != "b" || g["wait"] != "1.5ms" {
		t.Errorf("grouped record %s: want component discovery and pool {node: b, wait: \"1.5ms\"}", lines[1])
	}
}

// TestProxyLogsJSON runs `meridian proxy` on a configuration whose only node is unreachable, at debug
// level: it logs the node's failure and reason (component discovery, once), and its shutdown line has
// the timeout as a string; no line repeats a key.
func TestProxyLogsJSON(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String() // nothing listens there once closed
	ln.Close()
	cfg := filepath.Join(dir, "proxy.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
region: r1
shutdown_timeout: 2s
poll_interval: 50ms
nodes:
  - {name: only, address: %s, region: r1}
`, closed)), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		cmd := newRootCmd(&stdout, &stderr)
		cmd.SetArgs([]string{"proxy", "--config", cfg, "--log-level", "debug"})
		done <- cmd.ExecuteContext(ctx)
	}()
	err = pgtest.WaitFor(pgtest.Context(t, 30*time.Second), 20*time.Millisecond, func(context.Context) (bool, error) {
		return strings.Contains(stderr.String(), `"msg":"node unreachable"`), nil
	})
	cancel()
	if err != nil {
		<-done
		t.Fatalf("no failure logged for the unreachable node: %v\n%s", err, stderr.String())
	}
	if err := <-done; err != nil {
		t.Fatalf("proxy: %v", err)
	}
	var sawNode, sawShutdown bool
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if dup := duplicateKeys(t, line); len(dup) > 0 {
			t.Errorf("keys %v repeated in %s", dup, line)
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		switch rec["msg"] {
		case "node unreachable":
			sawNode = true
			if rec["component"] != "discovery" || rec["node"] != "only" || rec["address"] != closed ||
				!strings.Contains(fmt.Sprint(rec["err"]), "connection refused") {
				t.Errorf("failure line %s: want component discovery, the node, its address and the reason", line)
			}
		case "shutting down: no new clients, waiting for running transactions":
			sawShutdown = true
			if rec["timeout"] != "2s" {
				t.Errorf("shutdown line %s: want \"timeout\":\"2s\"", line)
			}
		}
	}
	if !sawNode || !sawShutdown {
		t.Errorf("want a node failure line and a shutdown line:\n%s", stderr.String())
	}
}

// duplicateKeys returns the keys that occur more than once in one JSON object (at any depth), which
// decoding into a map would hide.
func duplicateKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	var dup []string
	var object func() // reads an object's members; its '{' has been read
	var value func()
	value = func() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		switch tok {
		case json.Delim('{'):
			object()
		case json.Delim('['):
			for dec.More() {
				value()
			}
			_, _ = dec.Token()
		}
	}
	object = func() {
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			k := tok.(string)
			if seen[k] {
				dup = append(dup, k)
			}
			seen[k] = true
			value()
		}
		_, _ = dec.Token()
	}
	value()
	return dup
}
