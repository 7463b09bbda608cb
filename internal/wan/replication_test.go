package wan

import (
	"context"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridiandb/meridian/internal/pgnode"
	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/topology"
)

// TestReplicationThroughWANKeepsUp streams a replica from its primary through a 64 ms RTT link (the
// us-east-1 ↔ us-west-2 median) while pgbench writes on the primary, and measures how long each WAL
// position takes to be replayed on the replica. Physics says one-way delay (32 ms) plus replay time; a
// link that collapsed bandwidth would show seconds of growing lag instead.
func TestReplicationThroughWANKeepsUp(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{})
	ctx := pgtest.Context(t, 2*time.Minute)
	const rtt = 64 * time.Millisecond
	link, err := New(Config{Name: "east-west", Listen: "127.0.0.1:0", Target: c.Primary.Endpoint().String(), Latency: OneWay(rtt)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	host, port, _ := net.SplitHostPort(link.Addr())
	via := pgnode.Endpoint{Host: host}
	via.Port, _ = strconv.Atoi(port)

	replica := c.NewNode(t, "west", nil)
	if err := replica.Clone(ctx, via); err != nil { // the base backup crosses the WAN too
		t.Fatal(err)
	}
	if err := replica.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.WaitStreaming(ctx, replica); err != nil {
		t.Fatal(err)
	}

	pgbench := c.Primary.Endpoint()
	bench := func(args ...string) {
		t.Helper()
		base := []string{"-h", pgbench.Host, "-p", strconv.Itoa(pgbench.Port), "-U", c.Primary.Superuser()}
		cmd := exec.CommandContext(ctx, pgtest.Binaries(t).Path("pgbench"), append(base, append(args, "postgres")...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pgbench %v: %v\n%s", args, err, out)
		} else {
			t.Logf("pgbench %v:\n%s", args, lastLines(string(out), 6))
		}
	}
	bench("-i", "-q", "-s", "5")

	primary, replicaConn := pgtest.Conn(t, c.Primary), pgtest.Conn(t, replica)
	var lags []time.Duration
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { lags = sampleReplayLag(sampleCtx, primary, replicaConn) })
	bench("-T", "10", "-c", "4", "-j", "2", "-n")
	stopSampling()
	wg.Wait()

	if len(lags) < 50 {
		t.Fatalf("only %d lag samples were completed", len(lags))
	}
	slices.Sort(lags)
	p50, p99, worst := lags[len(lags)/2], lags[len(lags)*99/100], lags[len(lags)-1]
	t.Logf("replay lag through a %v RTT link under pgbench: p50 %v, p99 %v, max %v over %d samples",
		rtt, p50.Round(time.Millisecond), p99.Round(time.Millisecond), worst.Round(time.Millisecond), len(lags))
	if p50 < OneWay(rtt) {
		t.Errorf("p50 lag %v is below the one-way latency %v: the link is not delaying replication", p50, OneWay(rtt))
	}
	if p99 > 500*time.Millisecond {
		t.Errorf("p99 replay lag %v: a replica behind a 64 ms link should stay within a few hundred milliseconds", p99)
	}
}

// sampleReplayLag records, every 20 ms, the primary's WAL position, and for each recorded position the
// time until the replica had replayed it. It returns the lags of positions that were replayed.
func sampleReplayLag(ctx context.Context, primary, replica *pgx.Conn) []time.Duration {
	type mark struct {
		at  time.Time
		lsn topology.LSN
	}
	var pending []mark
	var lags []time.Duration
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var s string
		if err := primary.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
			return lags
		}
		pending = append(pending, mark{time.Now(), topology.MustParseLSN(s)})
		if err := replica.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&s); err != nil {
			return lags
		}
		replayed, now := topology.MustParseLSN(s), time.Now()
		for len(pending) > 0 && pending[0].lsn <= replayed {
			lags = append(lags, now.Sub(pending[0].at))
			pending = pending[1:]
		}
		select {
		case <-ctx.Done():
			return lags
		case <-tick.C:
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
