// Package pgtest builds real, replicated PostgreSQL clusters for tests: a primary and streaming replicas
// on kernel-assigned ports in a temporary directory, ready in a few seconds and torn down by t.Cleanup.
//
// Servers are children of the test process that die with it (see pgnode), so no postgres process
// outlives `go test`, even when a test panics or the binary is killed on timeout.
//
// When the PostgreSQL server programs are missing, tests skip with a message naming
// MERIDIAN_PG_BINDIR, except under CI=true, where they fail: CI must never count a skip as a pass.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridiandb/meridian/internal/pgnode"
	"github.com/meridiandb/meridian/internal/topology"
)

// DirPrefix starts the name of every temporary directory pgtest creates; server command lines contain
// it, so `pgrep -f meridian-pgtest-` finds any server a test left behind.
const DirPrefix = "meridian-pgtest-"

// testSettings make test servers fast; durability against power loss is irrelevant here (a killed
// server still finds its writes in the OS page cache), while full_page_writes stays on for pg_rewind.
var testSettings = map[string]string{
	"fsync":                        "off",
	"synchronous_commit":           "on",
	"shared_buffers":               "16MB",
	"max_connections":              "60",
	"checkpoint_timeout":           "30min",
	"log_min_messages":             "warning",
	"log_checkpoints":              "off",
	"wal_keep_size":                "128MB",
	"wal_receiver_status_interval": "100ms",
}

// Options shape a test cluster.
type Options struct {
	// Replicas is the number of streaming replicas of the primary.
	Replicas int
	// Settings apply to every node; ReplicaSettings only to replicas (e.g. recovery_min_apply_delay).
	Settings        map[string]string
	ReplicaSettings map[string]string
	// Password, if set, makes servers require SCRAM authentication.
	Password string
	// Logger receives node lifecycle logs (default: the test log at Info level).
	Logger *slog.Logger
}

// Cluster is a primary with its replicas. Nodes are named "primary", "replica1", "replica2", ...
type Cluster struct {
	Base     string // the traversable temporary directory holding every node
	Primary  *pgnode.Node
	Replicas []*pgnode.Node

	t    testing.TB
	opts Options
	bin  pgnode.Binaries
	mu   sync.Mutex
	all  []*pgnode.Node
}

// Binaries returns the PostgreSQL server programs, or ends the test: with t.Skip on a developer's
// machine, with t.Fatal when CI=true.
func Binaries(t testing.TB) pgnode.Binaries {
	t.Helper()
	b, err := pgnode.FindBinaries()
	if err == nil {
		return b
	}
	msg := fmt.Sprintf("PostgreSQL server programs are needed for this test (set %s to their folder): %v", pgnode.EnvBinDir, err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " — failing, not skipping, because CI=true")
	}
	t.Skip(msg)
	return pgnode.Binaries{}
}

// NewCluster starts a primary and opts.Replicas replicas, and returns once every replica streams.
func NewCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c := NewEmpty(t, opts)
	ctx := Context(t, 2*time.Minute)
	c.Primary = c.NewNode(t, "primary", nil)
	if err := c.Primary.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Primary.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Clone concurrently: pg_basebackup is mostly waiting on the fast checkpoint and the copy.
	c.Replicas = make([]*pgnode.Node, opts.Replicas)
	errs := make([]error, opts.Replicas)
	var wg sync.WaitGroup
	for i := range opts.Replicas {
		c.Replicas[i] = c.NewNode(t, "replica"+strconv.Itoa(i+1), opts.ReplicaSettings)
		wg.Go(func() {
			r := c.Replicas[i]
			if errs[i] = r.Clone(ctx, c.Primary.Endpoint()); errs[i] == nil {
				errs[i] = r.Start(ctx)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, r := range c.Replicas {
		if err := WaitStreaming(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// NewEmpty creates a cluster directory with no nodes; add them with NewNode.
func NewEmpty(t testing.TB, opts Options) *Cluster {
	t.Helper()
	bin := Binaries(t)
	base, err := os.MkdirTemp("", DirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	// The servers run as an unprivileged user when we are root: it must be able to traverse base.
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	c := &Cluster{Base: base, t: t, opts: opts, bin: bin}
	t.Cleanup(func() {
		c.mu.Lock()
		nodes := c.all
		c.mu.Unlock()
		for _, n := range nodes {
			if t.Failed() && n.Running() {
				t.Logf("server log of %s (last lines):\n%s", n.Name(), n.LastLog(20))
			}
			n.Kill()
		}
		if err := os.RemoveAll(base); err != nil {
			t.Errorf("remove %s: %v", base, err)
		}
	})
	return c
}

// NewNode prepares (but does not create) a node named name in the cluster directory, with the
// cluster's settings plus extra. Call Init or Clone on it.
func (c *Cluster) NewNode(t testing.TB, name string, extra map[string]string) *pgnode.Node {
	t.Helper()
	settings := maps.Clone(testSettings)
	maps.Copy(settings, c.opts.Settings)
	maps.Copy(settings, extra)
	n, err := pgnode.New(pgnode.Config{
		Name:     name,
		Dir:      filepath.Join(c.Base, name),
		Bin:      c.bin,
		Password: c.opts.Password,
		Settings: settings,
		Logger:   c.opts.Logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.all = append(c.all, n)
	c.mu.Unlock()
	return n
}

// Nodes returns the primary followed by the replicas.
func (c *Cluster) Nodes() []*pgnode.Node { return append([]*pgnode.Node{c.Primary}, c.Replicas...) }

// Context returns a context that ends after d or when the test ends, whichever is first.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitFor calls cond every interval until it reports true, returns an error, or ctx ends.
func WaitFor(ctx context.Context, interval time.Duration, cond func(context.Context) (bool, error)) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if ok && err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// WaitStreaming waits until the replica's WAL receiver is streaming from its upstream.
func WaitStreaming(ctx context.Context, replica *pgnode.Node) error {
	err := WaitFor(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		st, err := replica.Status(ctx)
		return err == nil && st.Role == pgnode.RoleReplica && st.Streaming, err
	})
	if err != nil {
		return fmt.Errorf("wait for %s to stream: %w", replica.Name(), err)
	}
	return nil
}

// WaitReplayed waits until the replica has replayed WAL up to lsn.
func WaitReplayed(ctx context.Context, replica *pgnode.Node, lsn topology.LSN) error {
	err := WaitFor(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		st, err := replica.Status(ctx)
		return err == nil && st.Replayed >= lsn, err
	})
	if err != nil {
		return fmt.Errorf("wait for %s to replay %s: %w", replica.Name(), lsn, err)
	}
	return nil
}

// CurrentLSN returns the primary's current WAL insert position.
func CurrentLSN(t testing.TB, primary *pgnode.Node) topology.LSN {
	t.Helper()
	var s string
	QueryRow(t, primary, "SELECT pg_current_wal_lsn()::text").Scan(&s)
	l, err := topology.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Conn opens a connection to node's "postgres" database, closed when the test ends.
func Conn(t testing.TB, node *pgnode.Node) *pgx.Conn {
	t.Helper()
	ctx := Context(t, time.Minute)
	conn, err := node.Connect(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Exec runs sql on node and fails the test on error.
func Exec(t testing.TB, node *pgnode.Node, sql string, args ...any) {
	t.Helper()
	ctx := Context(t, time.Minute)
	conn, err := node.Connect(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec on %s: %s: %v", node.Name(), sql, err)
	}
}

// Row is a single-row query result that fails the test on error when scanned.
type Row struct {
	t    testing.TB
	node string
	sql  string
	row  pgx.Row
	conn *pgx.Conn
}

// QueryRow runs sql on node; Scan the result.
func QueryRow(t testing.TB, node *pgnode.Node, sql string, args ...any) Row {
	t.Helper()
	conn := Conn(t, node)
	return Row{t: t, node: node.Name(), sql: sql, row: conn.QueryRow(Context(t, time.Minute), sql, args...), conn: conn}
}

// Scan reads the row into dest, failing the test on error.
func (r Row) Scan(dest ...any) {
	r.t.Helper()
	if err := r.row.Scan(dest...); err != nil {
		r.t.Fatalf("query on %s: %s: %v", r.node, r.sql, err)
	}
	r.conn.Close(context.Background())
}

// testWriter sends slog output to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-min(1, len(p))]))
	return len(p), nil
}
