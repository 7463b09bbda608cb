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
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in /metrics", series)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}
