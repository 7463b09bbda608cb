package lab

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// RYWConfig describes the read-your-writes benchmark: in every region, clients that each insert an
// order and at once read it back, half of them in session consistency and half in eventual, at the
// same time (so the two modes' write latencies are measured under the same conditions).
// Its clients alternate between the two modes; Rate counts write+read pairs.
type RYWConfig struct{ Workload }

// DefaultRYWRate is RYWConfig.Rate's default.
const DefaultRYWRate = 100

// Validate checks the workload; errors name the flag.
func (c RYWConfig) Validate() error { return c.validate() }

// The benchmark's statements: the write, and the read of what it wrote (with the kind of server that
// answered).
const (
	rywWrite = "INSERT INTO orders (customer_id, product_id, quantity, region) VALUES ($1, $2, 1, $3) RETURNING id"
	rywRead  = "SELECT count(*)::int, pg_is_in_recovery() FROM orders WHERE id = $1"
)

// RYWReport is the benchmark's result: a row per region and mode.
type RYWReport struct {
	RunInfo          // Rate counts write+read pairs
	Rows    []RYWRow `json:"rows"`
}

// RYWRow is what one region's clients of one mode saw. Latencies are measured by the clients, end to
// end through the proxy; the wait is the proxy's own (meridian_proxy_consistency_wait_seconds), for
// session mode only.
type RYWRow struct {
	Region         string  `json:"region"`
	Mode           string  `json:"mode"`
	RTTToPrimaryMs float64 `json:"rtt_to_primary_ms"`
	Pairs          int     `json:"pairs"`
	WriteP50Ms     float64 `json:"write_p50_ms"`
	WriteP99Ms     float64 `json:"write_p99_ms"`
	ReadP50Ms      float64 `json:"read_p50_ms"`
	ReadP99Ms      float64 `json:"read_p99_ms"`
	SawWrite       float64 `json:"saw_write"` // share of reads that found the row just written
	// OnReplica is the share of reads a replica answered; null in the primary's region, which has no
	// replica (its reads are served by the primary, locally).
	OnReplica  *float64 `json:"on_replica"`
	WaitP50Ms  *float64 `json:"wait_p50_ms"` // session mode
	WaitP99Ms  *float64 `json:"wait_p99_ms"` // session mode
	Errors     int      `json:"errors"`
	FirstError string   `json:"first_error,omitempty"`
}

// ReadYourWrites runs the benchmark against the lab described by st and links.
func ReadYourWrites(ctx context.Context, st State, links []LinkStatus, cfg RYWConfig) (RYWReport, error) {
	if err := cfg.Validate(); err != nil {
		return RYWReport{}, err
	}
	rep := RYWReport{RunInfo: runInfo(cfg.Workload, st.Primary)}
	modes := [2]string{"session", "eventual"}
	type worker struct {
		region, mode  int
		conn          *pgx.Conn
		writes, reads []time.Duration
		saw, replica  int
		errs          int
		first         error
	}
	var workers []*worker
	defer func() {
		for _, w := range workers {
			w.conn.Close(context.Background())
		}
	}()
	for i, r := range st.Regions {
		for k := range cfg.ClientsPerRegion {
			mode := k % 2
			conn, err := pgx.Connect(ctx, "postgres://postgres@"+r.Proxy+"/"+Database+
				"?sslmode=disable&connect_timeout=10&options=-c%20meridian.consistency%3D"+modes[mode])
			if err != nil {
				return rep, fmt.Errorf("connect to the proxy of %s (%s): %w", r.Name, r.Proxy, err)
			}
			workers = append(workers, &worker{region: i, mode: mode, conn: conn})
		}
	}
	before := make([]proxySample, len(st.Regions))
	for i, r := range st.Regions {
		s, err := scrapeProxy(ctx, r.Metrics)
		if err != nil {
			return rep, err
		}
		before[i] = s
	}
	interval := clientInterval(cfg.Rate, cfg.ClientsPerRegion)
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for n, w := range workers {
		region := st.Regions[w.region].Name
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(n), uint64(start.UnixNano())))
			pace := newPacer(start, interval, rng)
			fail := func(err error) bool {
				if runCtx.Err() != nil {
					return false // the run ended mid-statement: not an error of the system
				}
				w.errs++
				if w.first == nil {
					w.first = err
				}
				return !w.conn.IsClosed()
			}
			for pace.wait(runCtx) {
				t0 := time.Now()
				var id int64
				if err := w.conn.QueryRow(runCtx, rywWrite, 1+rng.IntN(SampleCustomers), 1+rng.IntN(SampleProducts), region).Scan(&id); err != nil {
					if fail(err) {
						continue
					}
					return
				}
				t1 := time.Now()
				var found int
				var onReplica bool
				if err := w.conn.QueryRow(runCtx, rywRead, id).Scan(&found, &onReplica); err != nil {
					if fail(err) {
						continue
					}
					return
				}
				w.writes = append(w.writes, t1.Sub(t0))
				w.reads = append(w.reads, time.Since(t1))
				if found == 1 {
					w.saw++
				}
				if onReplica {
					w.replica++
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	rep.DurationSec = math.Round(elapsed.Seconds()*10) / 10
	for i, r := range st.Regions {
		after, err := scrapeProxy(ctx, r.Metrics)
		if err != nil {
			return rep, err
		}
		for mode, name := range modes {
			row := RYWRow{Region: r.Name, Mode: name, RTTToPrimaryMs: rttToPrimary(r.Name, st.Primary, links)}
			var writes, reads []time.Duration
			saw, replica := 0, 0
			for _, w := range workers {
				if w.region != i || w.mode != mode {
					continue
				}
				writes, reads = append(writes, w.writes...), append(reads, w.reads...)
				saw, replica = saw+w.saw, replica+w.replica
				row.Errors += w.errs
				if w.first != nil && row.FirstError == "" {
					row.FirstError = w.first.Error()
				}
			}
			row.Pairs = len(reads)
			row.WriteP50Ms, row.WriteP99Ms = ms(percentile(writes, 0.5)), ms(percentile(writes, 0.99))
			row.ReadP50Ms, row.ReadP99Ms = ms(percentile(reads, 0.5)), ms(percentile(reads, 0.99))
			if row.Pairs > 0 {
				row.SawWrite = float64(saw) / float64(row.Pairs)
			}
			if r.Name != st.Primary {
				share := 0.0
				if row.Pairs > 0 {
					share = float64(replica) / float64(row.Pairs)
				}
				row.OnReplica = &share
			}
			if name == "session" {
				// Only session clients wait (eventual reads never do), and this is the only workload.
				if wh := after.wait.sub(before[i].wait); wh.total() > 0 {
					p50, p99 := ms(wh.quantile(0.5)), ms(wh.quantile(0.99))
					row.WaitP50Ms, row.WaitP99Ms = &p50, &p99
				}
			}
			rep.Rows = append(rep.Rows, row)
		}
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	return rep, nil
}

// rttToPrimary is the configured round trip between a region and the primary's (0 in the primary's).
func rttToPrimary(region, primary string, links []LinkStatus) float64 {
	if region == primary {
		return 0
	}
	for _, l := range links {
		if (l.A == region && l.B == primary) || (l.B == region && l.A == primary) {
			return l.RTTMs
		}
	}
	return 0
}

// WriteCost is the session clients' write p50 over the eventual clients' in a region (the cost of
// learning the commit position), NaN when either has no writes.
func (r RYWReport) WriteCost(region string) float64 {
	var s, e float64
	for _, row := range r.Rows {
		if row.Region != region {
			continue
		}
		switch row.Mode {
		case "session":
			s = row.WriteP50Ms
		case "eventual":
			e = row.WriteP50Ms
		}
	}
	if s == 0 || e == 0 {
		return math.NaN()
	}
	return s / e
}

// Render writes the report as a table.
func (r RYWReport) Render(w io.Writer) {
	rate := r.rateText("write+read pairs")
	fmt.Fprintf(w, "%.0f s, %d clients per region, half session and half eventual (%s); primary in %s\n\n",
		r.DurationSec, r.ClientsPerRegion, rate, r.PrimaryRegion)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "region\tmode\tpairs\twrite p50\twrite p99\tread p50\tread p99\tread saw the write\tread on a replica\tproxy wait p50\tproxy wait p99\terrors\t")
	optMs := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.2f ms", *v)
	}
	for _, g := range r.Rows {
		onReplica := "no replica here" // the primary's region: its reads are served by the primary, locally
		if g.OnReplica != nil {
			onReplica = fmt.Sprintf("%.1f %%", 100**g.OnReplica)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f ms\t%.1f ms\t%.2f ms\t%.2f ms\t%.1f %%\t%s\t%s\t%s\t%d\t\n", g.Region, g.Mode, g.Pairs,
			g.WriteP50Ms, g.WriteP99Ms, g.ReadP50Ms, g.ReadP99Ms, 100*g.SawWrite, onReplica, optMs(g.WaitP50Ms), optMs(g.WaitP99Ms), g.Errors)
	}
	tw.Flush()
	seen := map[string]bool{}
	for _, g := range r.Rows {
		if seen[g.Region] {
			continue
		}
		seen[g.Region] = true
		if c := r.WriteCost(g.Region); !math.IsNaN(c) {
			fmt.Fprintf(w, "%s: session write p50 / eventual write p50 = %.3f\n", g.Region, c)
		}
	}
	for _, g := range r.Rows {
		if g.FirstError != "" {
			fmt.Fprintf(w, "%s %s: first error: %s\n", g.Region, g.Mode, g.FirstError)
		}
	}
}
