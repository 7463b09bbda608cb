package controller

import (
	"errors"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/meridiandb/meridian/internal/topology"
)

func TestConfigValidate(t *testing.T) {
	def := DefaultConfig()
	if err := def.Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for name, tc := range map[string]struct {
		change func(*Config)
		want   string
	}{
		"no ttl":               {func(c *Config) { c.LeaseTTL = 0 }, "lease_ttl"},
		"no failover timeout":  {func(c *Config) { c.FailoverTimeout = 0 }, "failover_timeout"},
		"no switchover limit":  {func(c *Config) { c.SwitchoverTimeout = -time.Second }, "switchover_timeout"},
		"negative apply wait":  {func(c *Config) { c.ProxyApplyWait = -1 }, "proxy_apply_wait"},
		"negative lag":         {func(c *Config) { c.MaxFailoverLag.Bytes = -1 }, "max_failover_lag"},
		"negative switch lag":  {func(c *Config) { c.MaxSwitchoverLag.Time = -1 }, "max_switchover_lag"},
		"unknown rpo":          {func(c *Config) { c.RPO.Mode = "fast" }, `rpo.mode must be async, max_lag or sync, got "fast"`},
		"max_lag without lag":  {func(c *Config) { c.RPO = RPO{Mode: RPOMaxLag} }, "rpo.max_lag must be positive"},
		"empty rpo mode":       {func(c *Config) { c.RPO.Mode = "" }, "rpo.mode"},
		"max_lag with its lag": {func(c *Config) { c.RPO = RPO{Mode: RPOMaxLag, MaxLag: time.Second} }, ""},
	} {
		c := DefaultConfig()
		tc.change(&c)
		err := c.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an ErrInvalidConfig naming %q", name, err, tc.want)
		}
	}
}

func TestTimersObserve(t *testing.T) {
	topo := steadyTopo()
	nodes := healthyNodes()
	down := nodes["b"]
	down.Up = false
	nodes["b"] = down
	inRecovery := nodes["a"]
	inRecovery.Role = topology.RoleReplica // the primary running in recovery counts as down
	nodes["a"] = inRecovery

	t1 := Timers{}.Observe(t0, topo, nodes)
	if diff := cmp.Diff(map[string]time.Time{"a": t0, "b": t0}, t1.DownSince); diff != "" {
		t.Errorf("DownSince after the first look (-want +got):\n%s", diff)
	}
	// Still down a second later: the first time stays. c's lease expires: its last status is kept.
	delete(nodes, "c")
	t2 := t1.Observe(t0.Add(time.Second), topo, nodes)
	if !t2.DownSince["b"].Equal(t0) || !t2.DownSince["a"].Equal(t0) {
		t.Errorf("DownSince moved: %v", t2.DownSince)
	}
	if st, ok := t2.LastSeen["c"]; !ok || st.ReceivedLSN != l48 {
		t.Errorf("last status of c lost: %+v", st)
	}
	// b back: its timer is cleared; t1 itself is unchanged (Observe returns a new value).
	nodes["b"] = healthyNodes()["b"]
	t3 := t2.Observe(t0.Add(2*time.Second), topo, nodes)
	if _, ok := t3.DownSince["b"]; ok {
		t.Error("b is up but its down timer remains")
	}
	if len(t1.DownSince) != 2 {
		t.Errorf("Observe changed its receiver: %v", t1.DownSince)
	}
}

// TestImports: the decision depends on the shared model only (and the standard library), does no I/O
// and never reads the clock, so that it stays pure and testable on its own.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			switch {
			case path == "github.com/meridiandb/meridian/internal/topology":
			case strings.Contains(strings.SplitN(path, "/", 2)[0], "."):
				t.Errorf("%s imports %s: the decision may import only the shared model and the standard library", name, path)
			case slices.Contains([]string{"os", "net", "net/http", "io/fs", "math/rand", "math/rand/v2", "crypto/rand", "log", "log/slog"}, path):
				t.Errorf("%s imports %s: the decision does no I/O and draws no random numbers", name, path)
			}
		}
		for _, clock := range []string{"time.Now(", "time.Since(", "time.Until(", "time.After(", "time.Sleep("} {
			if strings.Contains(string(src), clock) {
				t.Errorf("%s calls %s: the decision reads the time from Input.Now only", name, clock)
			}
		}
	}
}
