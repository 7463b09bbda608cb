package proxy_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// TestLaggingReplicaLeavesReadRouting: a replica whose sampled lag exceeds max_replica_lag stops
// serving reads until it catches up. The lag is made deterministic with recovery_min_apply_delay: the
// replica applies each commit two seconds after the primary wrote it.
func TestLaggingReplicaLeavesReadRouting(t *testing.T) {
	e := newEnv(t, envOptions{
		replicaSettings: map[string]string{"recovery_min_apply_delay": "2s"},
		configure: func(c *proxy.Config) {
			c.MaxReplicaLag = 300 * time.Millisecond
			c.LagSampleInterval = 50 * time.Millisecond
		},
	})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t)
	onReplica := func(ctx context.Context) (bool, error) {
		var r bool
		err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&r)
		return r, err
	}
	// The cluster's own setup commits are delayed too: wait until reads are on the replica.
	if err := pgtest.WaitFor(ctx, 20*time.Millisecond, onReplica); err != nil {
		t.Fatalf("reads never reached the replica: %v", err)
	}
	wrote := time.Now()
	pgtest.Exec(t, e.primary, "CREATE TABLE lag_probe (x int)")
	// Between 300 ms and 2 s after the commit the replica is too far behind: reads go to the primary.
	err := pgtest.WaitFor(pgtest.Context(t, 1900*time.Millisecond), 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		r, err := onReplica(ctx)
		return !r, err
	})
	if err != nil {
		t.Fatalf("reads stayed on a replica %v behind (max_replica_lag 300ms): %v", time.Since(wrote), err)
	}
	movedAfter := time.Since(wrote)
	if movedAfter < 250*time.Millisecond {
		t.Errorf("reads left the replica %v after the commit, before its lag could exceed 300ms", movedAfter)
	}
	if lag := scrapeGauge(t, e.proxy.HTTPAddr(), `meridian_proxy_replica_lag_seconds{node="west"}`); lag < 0.3 {
		t.Errorf("meridian_proxy_replica_lag_seconds for the lagging replica = %v, want > 0.3", lag)
	}
	// Once the commit is applied the replica serves reads again.
	if err := pgtest.WaitFor(ctx, 20*time.Millisecond, onReplica); err != nil {
		t.Fatalf("reads did not return to the replica after it caught up: %v", err)
	}
	back := time.Since(wrote)
	if back < 1900*time.Millisecond {
		t.Errorf("reads returned to the replica %v after the commit, before it could have applied it (2s delay)", back)
	}
	t.Logf("reads left the replica %v after the commit and returned after %v", movedAfter.Round(time.Millisecond), back.Round(time.Millisecond))
}

// scrapeGauge reads one sample from a proxy's /metrics.
func scrapeGauge(t *testing.T, addr, series string) float64 {
	t.Helper()
	v, ok := scrapeSeries(t, addr, series)
	if !ok {
		t.Fatalf("no %s in /metrics", series)
	}
	return v
}

// scrapeSeries returns a series' value, and false when /metrics has no such series (yet).
func scrapeSeries(t *testing.T, addr, series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0, false
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v, true
}

// TestConsistencyModes: with a replica that applies commits two seconds late, an eventual read right
// after a write is stale; a bounded read respects its bound (served by the replica while it is within
// the bound, by the primary after max_wait when it is not, by the replica after waiting when
// max_wait is long enough); the settings answer SHOW and reject nonsense.
func TestConsistencyModes(t *testing.T) {
	e := newEnv(t, envOptions{
		replicaSettings: map[string]string{"recovery_min_apply_delay": "2s"},
		configure: func(c *proxy.Config) {
			c.MaxReplicaLag = 0 // keep the lagging replica in routing: the modes decide
			c.LagSampleInterval = 50 * time.Millisecond
		},
	})
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE cm (x int)")
	if err := pgtest.WaitReplayed(ctx, e.replica, pgtest.CurrentLSN(t, e.primary)); err != nil {
		t.Fatal(err)
	}
	conn := e.connect(t)
	// read returns the row count and whether a replica answered.
	read := func() (int, bool) {
		t.Helper()
		var n int
		var rec bool
		if err := conn.QueryRow(ctx, "SELECT count(*)::int, pg_is_in_recovery() FROM cm").Scan(&n, &rec); err != nil {
			t.Fatal(err)
		}
		return n, rec
	}
	set := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var show string
	if err := conn.QueryRow(ctx, "SHOW meridian.consistency").Scan(&show); err != nil || show != "session" {
		t.Fatalf("SHOW meridian.consistency = %q, %v; want the default, session", show, err)
	}

	// eventual: stale right after a write.
	set("SET meridian.consistency = eventual")
	pgtest.Exec(t, e.primary, "INSERT INTO cm VALUES (1)")
	if n, rec := read(); n != 0 || !rec {
		t.Errorf("eventual read right after a write: %d rows, on a replica %v; want the stale replica (0 rows)", n, rec)
	}
	if err := pgtest.WaitReplayed(ctx, e.replica, pgtest.CurrentLSN(t, e.primary)); err != nil {
		t.Fatal(err)
	}

	// bounded, short wait: within the bound the replica answers; beyond it, the primary after max_wait.
	set("SET meridian.consistency = bounded")
	set("SET meridian.max_staleness = '500ms'")
	set("SET meridian.max_wait = 300")
	wrote := time.Now()
	pgtest.Exec(t, e.primary, "INSERT INTO cm VALUES (2)")
	if n, rec := read(); !rec || n != 1 || time.Since(wrote) > 400*time.Millisecond {
		t.Errorf("bounded read %v after a write: %d rows, on a replica %v; want the replica, stale within the bound", time.Since(wrote), n, rec)
	}
	time.Sleep(time.Until(wrote.Add(700 * time.Millisecond)))
	t0 := time.Now()
	n, rec := read()
	if rec || n != 2 {
		t.Errorf("bounded read with the replica beyond the bound: %d rows, on a replica %v; want the primary", n, rec)
	}
	if waited := time.Since(t0); waited < 250*time.Millisecond {
		t.Errorf("bounded read went to the primary after %v, without waiting max_wait (300ms) for the replica", waited)
	}

	// bounded, long wait: the read waits for the replica to catch up instead.
	set("SET meridian.max_wait = '5s'")
	t0 = time.Now()
	n, rec = read()
	if !rec || n != 2 {
		t.Errorf("bounded read with a long max_wait: %d rows, on a replica %v; want the replica after it caught up", n, rec)
	}
	t.Logf("bounded read waited %v for the replica", time.Since(t0).Round(time.Millisecond))
	if got := scrapeGauge(t, e.proxy.HTTPAddr(), `meridian_proxy_consistency_reads_total{mode="bounded",outcome="replica_after_wait"}`); got < 1 {
		t.Errorf("replica_after_wait reads = %v", got)
	}
	if got := scrapeGauge(t, e.proxy.HTTPAddr(), `meridian_proxy_consistency_reads_total{mode="bounded",outcome="primary_fallback"}`); got < 1 {
		t.Errorf("primary_fallback reads = %v", got)
	}

	// Settings: SHOW answers, nonsense is an error.
	if err := conn.QueryRow(ctx, "SHOW meridian.max_staleness").Scan(&show); err != nil || show != "500ms" {
		t.Errorf("SHOW meridian.max_staleness = %q, %v", show, err)
	}
	for _, bad := range []string{"SET meridian.consistency = sometimes", "SET meridian.max_staleness = 'soon'",
		"SET meridian.min_lsn = 'yesterday'", "SET meridian.commit_lsn = '0/1'"} {
		if _, err := conn.Exec(ctx, bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
