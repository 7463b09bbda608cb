package store

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridiandb/meridian/internal/topology"
)

// TestMain checks that the store, its sessions, watches and elections, and the embedded members leave
// no goroutine behind once closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger discards etcd's logs unless MERIDIAN_TEST_ETCD_LOG is set: members stopped on purpose
// warn a lot, and etcd's goroutines may log after a test has returned (so not through t.Log).
func testLogger() *slog.Logger {
	if os.Getenv("MERIDIAN_TEST_ETCD_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startCluster starts n embedded members in t.TempDir() on free ports; they stop when the test ends.
func startCluster(t *testing.T, n int) *Cluster {
	t.Helper()
	names := []string{"us-east-1", "us-west-2", "eu-west-1", "ap-south-1", "sa-east-1"}[:n]
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := StartCluster(ctx, ClusterConfig{Dir: t.TempDir(), Names: names, UnsafeNoFsync: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// openStore connects to endpoints as cluster "test"; the store closes when the test ends (before the
// members it uses, cleanups running last first).
func openStore(t *testing.T, endpoints []string, opt Options) *Store {
	t.Helper()
	opt.Logger = testLogger()
	s, err := Open(t.Context(), Config{Endpoints: endpoints, Cluster: "test", DialTimeout: 5 * time.Second, RequestTimeout: 3 * time.Second}, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testSessionConfig is a short lease for tests: 2 s TTL (etcd's minimum with its default 1 s
// election timeout), fence 0.5 s before expiry, renew every 0.5 s.
var testSessionConfig = SessionConfig{TTL: 2 * time.Second, SafetyMargin: 500 * time.Millisecond, RenewInterval: 500 * time.Millisecond}

func newSession(t *testing.T, s *Store) *Session {
	t.Helper()
	sess, err := s.NewSession(t.Context(), testSessionConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Revoking on a member without quorum would wait for the TTL: the test is over, do not wait.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		sess.Close(ctx)
	})
	return sess
}

func sampleTopology(epoch uint64, primary string) *topology.Topology {
	t := &topology.Topology{
		Epoch: epoch, Primary: primary, State: topology.StateSteady,
		Nodes: []topology.Node{
			{Name: "a", Region: "us-east-1", Address: "10.0.0.1:5432", Role: topology.RoleReplica},
			{Name: "b", Region: "us-west-2", Address: "10.0.1.1:5432", Role: topology.RoleReplica},
			{Name: "c", Region: "eu-west-1", Address: "10.0.2.1:5432", Role: topology.RoleReplica},
		},
		UpdatedAt: time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC),
	}
	for i := range t.Nodes {
		if t.Nodes[i].Name == primary {
			t.Nodes[i].Role = topology.RolePrimary
		} else if primary != "" {
			t.Nodes[i].Upstream = primary
		} else {
			t.Nodes[i].Role = topology.RoleFenced
		}
	}
	if primary == "" {
		t.State = topology.StateFailingOver
	}
	return t
}

// recv waits for one value from ch.
func recv[T any](t *testing.T, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return v
	case <-time.After(within):
		t.Fatalf("%s: nothing within %s", what, within)
	}
	panic("unreachable")
}

// waitClosed waits until ch is closed and returns when that was seen.
func waitClosed(t *testing.T, ch <-chan struct{}, within time.Duration, what string) time.Time {
	t.Helper()
	select {
	case <-ch:
		return time.Now()
	case <-time.After(within):
		t.Fatalf("%s: not within %s", what, within)
	}
	panic("unreachable")
}
