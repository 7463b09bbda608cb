package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// applyDelay makes the replica deterministically late: it applies each commit this long after the
// primary wrote it (recovery_min_apply_delay).
const applyDelay = 300 * time.Millisecond

// newLaggingEnv is the two-region bed with a replica that applies commits applyDelay late and stays in
// read routing (the consistency modes decide).
func newLaggingEnv(t *testing.T, maxWait time.Duration) *env {
	t.Helper()
	e := newEnv(t, envOptions{
		replicaSettings: map[string]string{"recovery_min_apply_delay": fmt.Sprintf("%dms", applyDelay.Milliseconds())},
		configure: func(c *proxy.Config) {
			c.MaxReplicaLag = 0
			c.ConsistencyMaxWait = maxWait
		},
	})
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE ryw (id bigint PRIMARY KEY, v text)")
	if err := pgtest.WaitReplayed(ctx, e.replica, pgtest.CurrentLSN(t, e.primary)); err != nil {
		t.Fatal(err)
	}
	return e
}

// readRow reads row id: its value ("" when the row is not there) and whether a replica answered.
func readRow(ctx context.Context, conn *pgx.Conn, id int64) (string, bool, error) {
	var v string
	var onReplica bool
	err := conn.QueryRow(ctx, "SELECT coalesce((SELECT v FROM ryw WHERE id = $1), ''), pg_is_in_recovery()", id).Scan(&v, &onReplica)
	return v, onReplica, err
}

// TestSessionReadYourWrites: in session mode (the default) a read right after a write sees it, 1,000
// times out of 1,000, although the local replica applies every commit 300 ms late; it waits for the
// replica (which serves every read) because max_wait (2s) is longer than the lag. With max_wait
// shorter than the lag the read goes to the primary, and still sees the write. In eventual mode the
// same read is stale. Writes and reads are pgx's extended protocol with its statement cache.
func TestSessionReadYourWrites(t *testing.T) {
	e := newLaggingEnv(t, 2*time.Second)
	ctx := pgtest.Context(t, 3*time.Minute)
	const workers, tries = 20, 50
	type outcome struct{ seen, onReplica, lsnReported int }
	results := make([]outcome, workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for w := range workers {
		conn := e.connect(t)
		wg.Go(func() {
			var lastLSN string
			for i := range tries {
				id := int64(w*tries + i + 1)
				want := fmt.Sprintf("w%d-%d", w, i)
				if _, err := conn.Exec(ctx, "INSERT INTO ryw VALUES ($1, $2)", id, want); err != nil {
					errs <- err
					return
				}
				if lsn := conn.PgConn().ParameterStatus("meridian.commit_lsn"); lsn != "" && lsn != lastLSN {
					results[w].lsnReported++
					lastLSN = lsn
				}
				got, onReplica, err := readRow(ctx, conn, id)
				if err != nil {
					errs <- err
					return
				}
				if got == want {
					results[w].seen++
				}
				if onReplica {
					results[w].onReplica++
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var total outcome
	for _, r := range results {
		total.seen += r.seen
		total.onReplica += r.onReplica
		total.lsnReported += r.lsnReported
	}
	t.Logf("session mode: %d/%d reads saw their write, %d served by the replica, %d new commit LSNs reported; %v for %d write+read pairs on %d connections",
		total.seen, workers*tries, total.onReplica, total.lsnReported, time.Since(start).Round(time.Millisecond), workers*tries, workers)
	if total.seen != workers*tries {
		t.Errorf("session mode: %d of %d reads right after their write saw it, want all", total.seen, workers*tries)
	}
	if total.onReplica != workers*tries {
		t.Errorf("session mode: %d of %d reads served by the replica; with max_wait 2s > lag %v every read should wait for it", total.onReplica, workers*tries, applyDelay)
	}
	if total.lsnReported != workers*tries {
		t.Errorf("ParameterStatus meridian.commit_lsn advanced %d times for %d writes", total.lsnReported, workers*tries)
	}
	// Each read waited for the replica, or found it caught up already (on a loaded machine the read
	// may reach the proxy after the apply delay): none went to the primary.
	waited := scrapeGauge(t, e.proxy.HTTPAddr(), `meridian_proxy_consistency_reads_total{mode="session",outcome="replica_after_wait"}`)
	immediately, _ := scrapeSeries(t, e.proxy.HTTPAddr(), `meridian_proxy_consistency_reads_total{mode="session",outcome="replica_immediately"}`)
	if waited+immediately < workers*tries || waited == 0 {
		t.Errorf("session reads on the replica: %v after waiting + %v at once, want %d with some waits", waited, immediately, workers*tries)
	}

	// max_wait shorter than the lag: the primary answers, after waiting max_wait.
	conn := e.connect(t)
	if _, err := conn.Exec(ctx, "SET meridian.max_wait = '50ms'"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		id := int64(100000 + i)
		if _, err := conn.Exec(ctx, "INSERT INTO ryw VALUES ($1, 'short')", id); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		got, onReplica, err := readRow(ctx, conn, id)
		if err != nil {
			t.Fatal(err)
		}
		if got != "short" || onReplica {
			t.Fatalf("max_wait 50ms < lag: read %q, on the replica %v; want the write, from the primary", got, onReplica)
		}
		if waited := time.Since(t0); waited < 40*time.Millisecond {
			t.Fatalf("max_wait 50ms: the read went to the primary after %v, without waiting for the replica", waited)
		}
	}

	// eventual: the same read is stale.
	if _, err := conn.Exec(ctx, "SET meridian.consistency = eventual"); err != nil {
		t.Fatal(err)
	}
	stale := 0
	for i := range 20 {
		id := int64(200000 + i)
		if _, err := conn.Exec(ctx, "INSERT INTO ryw VALUES ($1, 'eventual')", id); err != nil {
			t.Fatal(err)
		}
		got, onReplica, err := readRow(ctx, conn, id)
		if err != nil {
			t.Fatal(err)
		}
		if got == "" && onReplica {
			stale++
		}
	}
	if stale == 0 {
		t.Errorf("eventual mode: no read right after a write was stale, with a replica %v late", applyDelay)
	}
	t.Logf("eventual mode: %d/20 reads right after a write were stale", stale)
}

// TestTokensAcrossProxies: a commit position learned through one proxy (ParameterStatus and SHOW
// meridian.commit_lsn) makes a session of another proxy wait for it with SET meridian.min_lsn; global
// mode sees a write made through another proxy without a token. pgx (extended protocol).
func TestTokensAcrossProxies(t *testing.T) {
	e := newLaggingEnv(t, 2*time.Second)
	b := e.secondProxy(t)
	ctx := pgtest.Context(t, time.Minute)
	writer := e.connect(t)
	reader := b.connect(t)

	// min_lsn carries read-your-writes from proxy A to proxy B.
	for i := range 5 {
		id := int64(i + 1)
		if _, err := writer.Exec(ctx, "INSERT INTO ryw VALUES ($1, 'token')", id); err != nil {
			t.Fatal(err)
		}
		token := writer.PgConn().ParameterStatus("meridian.commit_lsn")
		var shown string
		if err := writer.QueryRow(ctx, "SHOW meridian.commit_lsn").Scan(&shown); err != nil || shown != token || token == "" {
			t.Fatalf("commit LSN: ParameterStatus %q, SHOW %q (%v); want the same, non-empty", token, shown, err)
		}
		if i == 0 {
			// Without the token, proxy B's session has not written anything: its read is stale.
			got, onReplica, err := readRow(ctx, reader, id)
			if err != nil || got != "" || !onReplica {
				t.Fatalf("read through proxy B without the token: %q on the replica %v (%v); want stale", got, onReplica, err)
			}
		}
		if _, err := reader.Exec(ctx, "SET meridian.min_lsn = '"+token+"'"); err != nil {
			t.Fatal(err)
		}
		got, onReplica, err := readRow(ctx, reader, id)
		if err != nil || got != "token" || !onReplica {
			t.Fatalf("read through proxy B with min_lsn %s: %q on the replica %v (%v); want the write, from the replica", token, got, onReplica, err)
		}
		var shown2 string
		if err := reader.QueryRow(ctx, "SHOW meridian.min_lsn").Scan(&shown2); err != nil || shown2 != token {
			t.Fatalf("SHOW meridian.min_lsn = %q (%v), want %s", shown2, err, token)
		}
	}
	if _, err := reader.Exec(ctx, "RESET meridian.min_lsn"); err != nil {
		t.Fatal(err)
	}

	// global: proxy B sees proxy A's write with no token at all.
	if _, err := reader.Exec(ctx, "SET meridian.consistency = global"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		id := int64(100 + i)
		if _, err := writer.Exec(ctx, "INSERT INTO ryw VALUES ($1, 'global')", id); err != nil {
			t.Fatal(err)
		}
		got, onReplica, err := readRow(ctx, reader, id)
		if err != nil || got != "global" || !onReplica {
			t.Fatalf("global read through proxy B: %q on the replica %v (%v); want proxy A's write, from the replica", got, onReplica, err)
		}
	}
	if got := scrapeGauge(t, b.proxy.HTTPAddr(), `meridian_proxy_consistency_reads_total{mode="global",outcome="replica_after_wait"}`); got < 5 {
		t.Errorf("global replica_after_wait reads = %v, want ≥ 5", got)
	}
}

// TestModesWithPsql runs each mode with psql (simple protocol): session read-your-writes, eventual
// staleness, bounded staleness, the token from one proxy to another, and global across proxies.
func TestModesWithPsql(t *testing.T) {
	e := newLaggingEnv(t, 2*time.Second)
	b := e.secondProxy(t)
	psql := func(p *env, script string) string {
		t.Helper()
		host, port, _ := net.SplitHostPort(p.proxy.Addr())
		cmd := exec.Command(pgtest.Binaries(t).Path("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
			"-h", host, "-p", port, "-U", "postgres", "-d", "postgres")
		cmd.Stdin = strings.NewReader(script)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("psql: %v\n%s\nscript:\n%s", err, out, script)
		}
		return strings.TrimSpace(string(out))
	}
	read := func(id int) string {
		return fmt.Sprintf("SELECT coalesce((SELECT v FROM ryw WHERE id = %d), 'missing'), pg_is_in_recovery();\n", id)
	}
	cases := []struct {
		name   string
		writer *env
		script func(id int) string
		reader *env // a second psql session on this proxy, after the first, when set
		second func(id int, first string) string
		want   string
	}{
		{name: "session", writer: e, want: "psql|t",
			script: func(id int) string { return fmt.Sprintf("INSERT INTO ryw VALUES (%d, 'psql');\n", id) + read(id) }},
		{name: "eventual", writer: e, want: "missing|t",
			script: func(id int) string {
				return "SET meridian.consistency = eventual;\n" + fmt.Sprintf("INSERT INTO ryw VALUES (%d, 'psql');\n", id) + read(id)
			}},
		{name: "bounded", writer: e, want: "missing|t", // 300 ms late is within a 5 s bound: the replica answers, stale
			script: func(id int) string {
				return "SET meridian.consistency = bounded;\nSET meridian.max_staleness = '5s';\n" +
					fmt.Sprintf("INSERT INTO ryw VALUES (%d, 'psql');\n", id) + read(id)
			}},
		{name: "min_lsn across proxies", writer: e, reader: b, want: "psql|t",
			script: func(id int) string {
				return fmt.Sprintf("INSERT INTO ryw VALUES (%d, 'psql');\n", id) + "SHOW meridian.commit_lsn;\n"
			},
			second: func(id int, token string) string {
				return fmt.Sprintf("SET meridian.min_lsn = '%s';\n", token) + read(id)
			}},
		{name: "global across proxies", writer: e, reader: b, want: "psql|t",
			script: func(id int) string { return fmt.Sprintf("INSERT INTO ryw VALUES (%d, 'psql');\n", id) },
			second: func(id int, _ string) string { return "SET meridian.consistency = global;\n" + read(id) }},
	}
	for i, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			id := 1000 + i
			out := psql(tc.writer, tc.script(id))
			if tc.reader != nil {
				out = psql(tc.reader, tc.second(id, out))
			}
			if out != tc.want {
				t.Errorf("%s: psql printed %q, want %q", tc.name, out, tc.want)
			}
		})
	}
}

// TestConsistencyDefaultsByUser: consistency_overrides give a user its own default mode, and the
// startup options can choose one too.
func TestConsistencyDefaultsByUser(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) {
		c.ConsistencyOverrides = []proxy.ConsistencyOverride{{User: "reporting", Consistency: "eventual"}, {Database: "postgres", Consistency: "bounded"}}
	}})
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE ROLE reporting LOGIN SUPERUSER")
	show := func(conn *pgx.Conn) string {
		var v string
		if err := conn.QueryRow(ctx, "SHOW meridian.consistency").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		extra []string
		want  string
	}{
		{nil, "bounded"},
		{[]string{"user=reporting"}, "eventual"},
		{[]string{"options='-c meridian.consistency=global'"}, "global"},
	} {
		conn, err := pgx.Connect(ctx, e.connString(tc.extra...))
		if err != nil {
			t.Fatal(err)
		}
		if got := show(conn); got != tc.want {
			t.Errorf("connection %v: meridian.consistency = %q, want %q", tc.extra, got, tc.want)
		}
		if _, err := conn.Exec(ctx, "RESET meridian.consistency"); err != nil {
			t.Fatal(err)
		}
		if got := show(conn); got != tc.want {
			t.Errorf("connection %v after RESET: meridian.consistency = %q, want its default %q", tc.extra, got, tc.want)
		}
		conn.Close(ctx)
	}
	var pe interface{ SQLState() string }
	conn := e.connect(t)
	_, err := conn.Exec(ctx, "SET meridian.consistency = strong")
	if !errors.As(err, &pe) || pe.SQLState() != "22023" {
		t.Errorf("SET meridian.consistency = strong: %v, want SQLSTATE 22023", err)
	}
}

// TestCommitLSNAfterFailedTransaction: the position query pipelined behind a statement that leaves the
// session in a failed transaction fails quietly (the client sees only its own error), and the next
// write after ROLLBACK reports its position and is read back.
func TestCommitLSNAfterFailedTransaction(t *testing.T) {
	e := newLaggingEnv(t, 2*time.Second)
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t)
	for round := range 2 {
		var pe interface{ SQLState() string }
		if _, err := conn.Exec(ctx, "BEGIN; INSERT INTO ryw VALUES (0, 'never'); SELECT 1/0"); !errors.As(err, &pe) || pe.SQLState() != "22012" {
			t.Fatalf("round %d: multi-statement BEGIN ending in division by zero: %v, want only SQLSTATE 22012", round, err)
		}
		if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
			t.Fatal(err)
		}
		id := int64(round + 1)
		before := conn.PgConn().ParameterStatus("meridian.commit_lsn")
		if _, err := conn.Exec(ctx, "INSERT INTO ryw VALUES ($1, 'after')", id); err != nil {
			t.Fatal(err)
		}
		if after := conn.PgConn().ParameterStatus("meridian.commit_lsn"); after == "" || after == before {
			t.Fatalf("round %d: commit LSN %q → %q after a write, want a new one", round, before, after)
		}
		got, onReplica, err := readRow(ctx, conn, id)
		if err != nil || got != "after" || !onReplica {
			t.Fatalf("round %d: read after the write: %q on the replica %v (%v)", round, got, onReplica, err)
		}
	}
}

// TestReadRefusedDuringPartition cuts the proxy's region off from the primary's (a WAN partition,
// which delivers nothing and resets nothing). A global read, which needs the primary's position, and a
// read whose meridian.min_lsn no replica reaches both fail with 57P03 and a message about the read —
// what it needed and why it cannot be had — not about writes; an eventual read is served by the local
// replica meanwhile, and global reads work again once the partition heals.
func TestReadRefusedDuringPartition(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) {
		c.ServerConnectTimeout = time.Second // how long a blackholed poll takes to count as down
	}})
	ctx := pgtest.Context(t, 2*time.Minute)
	conn := e.connect(t)
	if _, err := conn.Exec(ctx, "SET meridian.consistency = global"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("a global read before the partition: %v", err)
	}

	e.toPrimary.Partition()
	defer e.toPrimary.Heal()
	// Until discovery marks the primary down, a global read waits server_connect_timeout for its
	// position and fails with that; then it fails at once, naming the primary.
	var pe *pgconn.PgError
	err := pgtest.WaitFor(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		_, err := conn.Exec(ctx, "SELECT 1")
		if !errors.As(err, &pe) {
			return false, fmt.Errorf("a global read during the partition: %v, want an error from the proxy", err)
		}
		return strings.Contains(pe.Message, "does not answer this proxy"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const wantGlobal = "a read in global consistency needs the primary's current WAL position (to see everything committed " +
		"before it started), and the primary primary (region us-east-1) does not answer this proxy (region us-west-2)"
	if pe.Code != "57P03" || pe.Message != wantGlobal || !strings.Contains(pe.Detail, "last error from the primary: ") ||
		!strings.Contains(pe.Hint, "SET meridian.consistency = eventual") {
		t.Errorf("global read during the partition:\n%s %q\ndetail %q\nhint %q\nwant 57P03 %q", pe.Code, pe.Message, pe.Detail, pe.Hint, wantGlobal)
	}

	// A read with a position no replica reaches: it would go to the primary after max_wait.
	for _, set := range []string{"SET meridian.consistency = session", "SET meridian.min_lsn = 'FFFF/0'", "SET meridian.max_wait = '100ms'"} {
		if _, err := conn.Exec(ctx, set); err != nil {
			t.Fatal(err)
		}
	}
	_, err = conn.Exec(ctx, "SELECT 1")
	const wantFloor = "a read in session consistency needs a replica that has replayed the session's last commit or " +
		"meridian.min_lsn (FFFF/0), or the primary, and the primary primary (region us-east-1) does not answer this proxy (region us-west-2)"
	if !errors.As(err, &pe) || pe.Code != "57P03" || pe.Message != wantFloor ||
		!strings.HasPrefix(pe.Detail, "no replica met it within 100ms (meridian.max_wait)\nlast error from the primary: ") {
		t.Errorf("read with an unreachable min_lsn during the partition: %v (detail %q), want 57P03 %q", err, detailOf(err), wantFloor)
	}

	// Eventual reads do not need the primary: the local replica serves them.
	for _, set := range []string{"SET meridian.consistency = eventual", "SET meridian.min_lsn = default"} {
		if _, err := conn.Exec(ctx, set); err != nil {
			t.Fatal(err)
		}
	}
	var node string
	if err := conn.QueryRow(ctx, "SELECT current_setting('cluster_name')").Scan(&node); err != nil || node != "west" {
		t.Errorf("eventual read during the partition: %q, %v; want it served by west", node, err)
	}

	e.toPrimary.Heal()
	if _, err := conn.Exec(ctx, "SET meridian.consistency = global"); err != nil {
		t.Fatal(err)
	}
	err = pgtest.WaitFor(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		_, err := conn.Exec(ctx, "SELECT 1")
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("global reads after the partition healed: %v", err)
	}
}

func detailOf(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Detail
	}
	return ""
}
