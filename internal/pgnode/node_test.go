package pgnode_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/pgnode"
	"github.com/meridiandb/meridian/internal/pgtest"
)

func TestReplicasReadPrimaryWrites(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{Replicas: 2})
	ctx := pgtest.Context(t, time.Minute)

	pgtest.Exec(t, c.Primary, "CREATE TABLE items (id int PRIMARY KEY, name text)")
	pgtest.Exec(t, c.Primary, "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g")
	lsn := pgtest.CurrentLSN(t, c.Primary)

	for _, r := range c.Replicas {
		if err := pgtest.WaitReplayed(ctx, r, lsn); err != nil {
			t.Fatal(err)
		}
		var n int
		var name string
		pgtest.QueryRow(t, r, "SELECT count(*), max(name) FROM items").Scan(&n, &name)
		if n != 1000 || name != "item 999" {
			t.Errorf("%s reads count=%d max=%q, want 1000 and \"item 999\"", r.Name(), n, name)
		}
		st, err := r.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Role != pgnode.RoleReplica || !st.Streaming || st.Upstream != c.Primary.Endpoint().String() {
			t.Errorf("%s status = %+v, want a replica streaming from %s", r.Name(), st, c.Primary.Endpoint())
		}
		if st.Timeline != 1 || st.Replayed < lsn || st.Received < st.Replayed {
			t.Errorf("%s status = %+v: want timeline 1, replayed >= %s, received >= replayed", r.Name(), st, lsn)
		}
	}
	// A replica is read-only: PostgreSQL answers a write with SQLSTATE 25006.
	conn := pgtest.Conn(t, c.Replicas[0])
	if _, err := conn.Exec(ctx, "INSERT INTO items VALUES (0, 'x')"); err == nil || !strings.Contains(err.Error(), "25006") {
		t.Errorf("write on a replica: err = %v, want SQLSTATE 25006", err)
	}

	st, err := c.Primary.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != pgnode.RolePrimary || st.Timeline != 1 || st.Current < lsn {
		t.Errorf("primary status = %+v", st)
	}
	var names []string
	for _, r := range st.Replicas {
		if r.State == "streaming" {
			names = append(names, r.Name)
		}
	}
	if strings.Join(names, ",") != "replica1,replica2" {
		t.Errorf("primary sees streaming replicas %v, want replica1,replica2 (all: %+v)", names, st.Replicas)
	}
}

func TestPromoteAcceptsWrites(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{Replicas: 1})
	ctx := pgtest.Context(t, time.Minute)
	r := c.Replicas[0]
	pgtest.Exec(t, c.Primary, "CREATE TABLE t (v int)")
	if err := pgtest.WaitReplayed(ctx, r, pgtest.CurrentLSN(t, c.Primary)); err != nil {
		t.Fatal(err)
	}
	c.Primary.Kill()
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, r, "INSERT INTO t VALUES (42)")
	st, err := r.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != pgnode.RolePrimary || st.Timeline != 2 {
		t.Errorf("after promotion: role %s timeline %d, want primary on timeline 2", st.Role, st.Timeline)
	}
	if _, ok := r.Upstream(); ok {
		t.Error("after promotion the node still has an upstream")
	}
	if err := r.Promote(ctx); err == nil || !strings.Contains(err.Error(), "already a primary") {
		t.Errorf("promoting a primary: err = %v", err)
	}
}

// writer commits rows with increasing ids until stopped, and remembers which commits were acknowledged.
type writer struct {
	acked atomic.Int64 // highest id whose COMMIT returned success
	stop  chan struct{}
	done  chan struct{}
}

func startWriter(t *testing.T, n *pgnode.Node) *writer {
	t.Helper()
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	conn := pgtest.Conn(t, n)
	go func() {
		defer close(w.done)
		for id := int64(1); ; id++ {
			select {
			case <-w.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := conn.Exec(ctx, "INSERT INTO ledger VALUES ($1)", id)
			cancel()
			if err != nil {
				return // the server went away: the demotion ended our session
			}
			w.acked.Store(id)
		}
	}()
	return w
}

func (w *writer) halt() int64 {
	close(w.stop)
	<-w.done
	return w.acked.Load()
}

func TestPlannedSwitchoverLosesNothing(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{Replicas: 2})
	ctx := pgtest.Context(t, 2*time.Minute)
	oldPrimary, target, other := c.Primary, c.Replicas[0], c.Replicas[1]
	pgtest.Exec(t, oldPrimary, "CREATE TABLE ledger (id bigint PRIMARY KEY)")

	w := startWriter(t, oldPrimary)
	if err := pgtest.WaitFor(ctx, 5*time.Millisecond, func(context.Context) (bool, error) { return w.acked.Load() >= 200, nil }); err != nil {
		t.Fatal(err)
	}
	// Demote under write load: the writer's session is terminated by the fast shutdown.
	final, err := oldPrimary.Demote(ctx, target.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	acked := w.halt()
	if err := pgtest.WaitFor(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		st, err := target.Status(ctx)
		return err == nil && st.Replayed > final, err
	}); err != nil {
		t.Fatalf("target never replayed the old primary's shutdown checkpoint %s: %v", final, err)
	}
	if err := target.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := other.Repoint(ctx, target.Endpoint()); err != nil {
		t.Fatal(err)
	}

	var count, maxID int64
	pgtest.QueryRow(t, target, "SELECT count(*), COALESCE(max(id), 0) FROM ledger").Scan(&count, &maxID)
	t.Logf("writer had %d acknowledged commits; new primary has %d rows (max id %d)", acked, count, maxID)
	if count < acked || maxID < acked || count != maxID {
		t.Fatalf("lost committed rows: %d acknowledged, new primary has %d rows up to id %d", acked, count, maxID)
	}

	// The old primary follows the new one onto timeline 2 without pg_rewind, and so does the other replica.
	pgtest.Exec(t, target, "INSERT INTO ledger VALUES (-1)")
	lsn := pgtest.CurrentLSN(t, target)
	for _, r := range []*pgnode.Node{oldPrimary, other} {
		if err := pgtest.WaitStreaming(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := pgtest.WaitReplayed(ctx, r, lsn); err != nil {
			t.Fatal(err)
		}
		st, err := r.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Upstream != target.Endpoint().String() || st.Timeline != 2 {
			t.Errorf("%s streams from %q on timeline %d, want %s on timeline 2", r.Name(), st.Upstream, st.Timeline, target.Endpoint())
		}
		var n int64
		pgtest.QueryRow(t, r, "SELECT count(*) FROM ledger").Scan(&n)
		if n != count+1 {
			t.Errorf("%s has %d rows, want %d", r.Name(), n, count+1)
		}
	}
}

func TestUnplannedFailoverRepairedByRewind(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{Replicas: 1})
	ctx := pgtest.Context(t, 2*time.Minute)
	oldPrimary, newPrimary := c.Primary, c.Replicas[0]
	pgtest.Exec(t, oldPrimary, "CREATE TABLE t (v text PRIMARY KEY)")
	pgtest.Exec(t, oldPrimary, "INSERT INTO t VALUES ('common')")
	if err := pgtest.WaitReplayed(ctx, newPrimary, pgtest.CurrentLSN(t, oldPrimary)); err != nil {
		t.Fatal(err)
	}
	// Split the histories for certain: promote the replica while the old primary still runs, let the
	// old primary commit a row the new one never receives (plus enough WAL to span segments), then crash it.
	if err := newPrimary.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, oldPrimary, "INSERT INTO t VALUES ('divergent')")
	pgtest.Exec(t, oldPrimary, "CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 100000) g")
	oldPrimary.Kill()
	pgtest.Exec(t, newPrimary, "INSERT INTO t VALUES ('after failover')")

	if err := oldPrimary.Rewind(ctx, newPrimary.Endpoint()); err != nil {
		t.Fatal(err)
	}
	lsn := pgtest.CurrentLSN(t, newPrimary)
	if err := pgtest.WaitStreaming(ctx, oldPrimary); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.WaitReplayed(ctx, oldPrimary, lsn); err != nil {
		t.Fatal(err)
	}
	var got string
	pgtest.QueryRow(t, oldPrimary, "SELECT string_agg(v, ',' ORDER BY v) FROM t").Scan(&got)
	if got != "after failover,common" {
		t.Errorf("rewound old primary has rows %q, want the new primary's history: \"after failover,common\"", got)
	}
	var hasFiller bool
	pgtest.QueryRow(t, oldPrimary, "SELECT to_regclass('filler') IS NOT NULL").Scan(&hasFiller)
	if hasFiller {
		t.Error("the divergent table survived pg_rewind")
	}
	st, err := oldPrimary.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != pgnode.RoleReplica || st.Upstream != newPrimary.Endpoint().String() || st.Timeline != 2 {
		t.Errorf("rewound node status = %+v, want a replica of %s on timeline 2", st, newPrimary.Endpoint())
	}
}

func TestRepointWithoutReclone(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{Replicas: 2})
	ctx := pgtest.Context(t, time.Minute)
	r1, r2 := c.Replicas[0], c.Replicas[1]
	pidBefore := postmasterPID(t, r2)
	if err := r2.Repoint(ctx, r1.Endpoint()); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.WaitFor(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		st, err := r2.Status(ctx)
		return err == nil && st.Streaming && st.Upstream == r1.Endpoint().String(), err
	}); err != nil {
		t.Fatalf("replica2 never streamed from replica1: %v", err)
	}
	if pid := postmasterPID(t, r2); pid != pidBefore {
		t.Errorf("repoint restarted the server (pid %s → %s); it must only reload", pidBefore, pid)
	}
	pgtest.Exec(t, c.Primary, "CREATE TABLE cascade_check AS SELECT 7 AS v")
	if err := pgtest.WaitReplayed(ctx, r2, pgtest.CurrentLSN(t, c.Primary)); err != nil {
		t.Fatal(err)
	}
	var v int
	pgtest.QueryRow(t, r2, "SELECT v FROM cascade_check").Scan(&v)
	if v != 7 {
		t.Fatalf("cascaded read = %d", v)
	}
	st, err := r1.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Replicas) != 1 || st.Replicas[0].Name != "replica2" {
		t.Errorf("replica1's downstream = %+v, want replica2", st.Replicas)
	}
	if err := c.Primary.Repoint(ctx, r1.Endpoint()); err == nil {
		t.Error("repointing a primary must fail")
	}
}

func postmasterPID(t *testing.T, n *pgnode.Node) string {
	t.Helper()
	b, err := os.ReadFile(n.DataDir() + "/postmaster.pid")
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitN(string(b), "\n", 2)[0]
}

func TestStopModes(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{})
	ctx := pgtest.Context(t, time.Minute)
	p := c.Primary
	pgtest.Exec(t, p, "CREATE TABLE t AS SELECT 1 AS v")
	for _, mode := range []pgnode.StopMode{pgnode.Smart, pgnode.Fast, pgnode.Immediate} {
		if err := p.Stop(ctx, mode); err != nil {
			t.Fatalf("stop %s: %v", mode, err)
		}
		if p.Running() {
			t.Fatalf("still running after %s stop", mode)
		}
		if _, err := p.Status(ctx); err == nil {
			t.Fatalf("status answered after %s stop", mode)
		}
		if err := p.Start(ctx); err != nil {
			t.Fatalf("start after %s stop: %v", mode, err)
		}
	}
	if !strings.Contains(p.LastLog(200), "not properly shut down") {
		t.Error("after an immediate stop the server should have run crash recovery")
	}
	var v int
	pgtest.QueryRow(t, p, "SELECT v FROM t").Scan(&v)
	if v != 1 {
		t.Fatalf("v = %d", v)
	}
	// Smart waits for clients: with a session open it must not finish before its context ends.
	conn := pgtest.Conn(t, p)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := p.Stop(short, pgnode.Smart); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("smart stop with an open session: err = %v, want a deadline", err)
	}
	conn.Close(ctx)
	if err := pgtest.WaitFor(ctx, 10*time.Millisecond, func(context.Context) (bool, error) { return !p.Running(), nil }); err != nil {
		t.Fatal("smart shutdown did not finish once the client left")
	}
}

func TestStartFailureShowsServerLog(t *testing.T) {
	c := pgtest.NewEmpty(t, pgtest.Options{})
	ctx := pgtest.Context(t, time.Minute)
	n := c.NewNode(t, "broken", map[string]string{"shared_buffers": "lots"})
	if err := n.Init(ctx); err != nil {
		t.Fatal(err)
	}
	err := n.Start(ctx)
	var exit *pgnode.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("start with a bad setting: err = %v, want *ExitError", err)
	}
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Fatalf("error does not carry the server's reason: %v", err)
	}
	if err := n.Init(ctx); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Fatalf("second Init over existing data: err = %v", err)
	}
}

func TestUntraversableBaseIsExplained(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root hands servers to another user; as a normal user the servers run as the caller")
	}
	bin := pgtest.Binaries(t)
	private := t.TempDir() // mode 0700, owned by root
	n, err := pgnode.New(pgnode.Config{Name: "n", Dir: private + "/n", Bin: bin})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Init(pgtest.Context(t, time.Minute))
	if err == nil || !strings.Contains(err.Error(), "cannot traverse") || !strings.Contains(err.Error(), "chmod o+x") {
		t.Fatalf("Init under a private directory: err = %v, want an explanation naming %s", err, private)
	}
}

func TestConcurrentStatusDuringLoad(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{Replicas: 1})
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, c.Primary, "CREATE TABLE ledger (id bigint PRIMARY KEY)")
	w := startWriter(t, c.Primary)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 4 {
		wg.Go(func() {
			for range 10 {
				st, err := c.Replicas[0].Status(ctx)
				if err != nil {
					errs <- err
					return
				}
				if st.Replayed > st.Received && st.Received.Valid() {
					errs <- fmt.Errorf("replayed %s beyond received %s", st.Replayed, st.Received)
				}
			}
		})
	}
	wg.Wait()
	w.halt()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
