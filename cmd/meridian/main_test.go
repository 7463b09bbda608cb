package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	cmd := newRootCmd(&out, &out)
	cmd.SetArgs([]string{"version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "meridian ") || !strings.Contains(out.String(), "commit ") {
		t.Fatalf("version output = %q", out.String())
	}
	out.Reset()
	cmd = newRootCmd(&out, &out)
	cmd.SetArgs([]string{"version", "--json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var info map[string]string
	if err := json.Unmarshal(out.Bytes(), &info); err != nil || info["version"] == "" || info["commit"] == "" {
		t.Fatalf("version --json = %q (%v)", out.String(), err)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	var out bytes.Buffer
	cmd := newRootCmd(&out, &out)
	cmd.SetArgs([]string{"version", "--no-such-flag"})
	err := cmd.Execute()
	if code := exitCode(err); code != 2 {
		t.Fatalf("unknown flag: exit code %d (err %v), want 2", code, err)
	}
	if exitCode(nil) != 0 {
		t.Fatal("success must exit 0")
	}
}

func TestProxyConfigErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/proxy.yaml"
	if err := os.WriteFile(path, []byte("region: r\npool_mode: statement\nnodes: [{name: a, address: 'h:1', region: r}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := newRootCmd(&out, &out)
	cmd.SetArgs([]string{"proxy", "--config", path})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "pool_mode") || exitCode(err) != 1 {
		t.Fatalf("bad config: err = %v (exit %d), want an error naming pool_mode", err, exitCode(err))
	}
	cmd = newRootCmd(&out, &out)
	cmd.SetArgs([]string{"proxy"})
	if err := cmd.Execute(); exitCode(err) != 2 {
		t.Fatalf("missing --config: err = %v, want a usage error", err)
	}
}
