package lab

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// Workload is what every lab workload is told: how long, how many clients, how fast. Every field must
// be set: a zero is refused, not replaced by a default (`--duration 0s` must not run for 30 s), so
// callers start from DefaultWorkload, as the commands' flags do.
type Workload struct {
	Duration         time.Duration // 1s to 24h
	ClientsPerRegion int           // connections per region, each running one thing at a time (1 to 500)
	// Rate is the statements (or pairs) per second each region's clients start together, spread
	// evenly over them; negative means as fast as they can. The defaults (DefaultRate,
	// DefaultRYWRate) keep a 2-core machine out of saturation, so that latencies show the network,
	// not a CPU queue.
	Rate float64
}

// Defaults of every workload (the rate is the workload's own).
const (
	DefaultDuration         = 30 * time.Second
	DefaultClientsPerRegion = 8
)

// DefaultWorkload is a workload with the default duration and clients, at rate.
func DefaultWorkload(rate float64) Workload {
	return Workload{Duration: DefaultDuration, ClientsPerRegion: DefaultClientsPerRegion, Rate: rate}
}

// validate checks the common flags; errors name the flag, the value and what is valid.
func (w Workload) validate() error {
	switch {
	case w.Duration < time.Second || w.Duration > 24*time.Hour:
		return fmt.Errorf("--duration: %v is out of range (1s to 24h)", w.Duration)
	case w.ClientsPerRegion < 1 || w.ClientsPerRegion > 500:
		return fmt.Errorf("--clients-per-region: %d is out of range (1 to 500)", w.ClientsPerRegion)
	case math.IsNaN(w.Rate) || w.Rate == 0 || w.Rate > 1e6:
		return fmt.Errorf("--rate: %v is out of range (above 0 and up to 1000000 per second, or -1 for as fast as the clients can)", w.Rate)
	}
	return nil
}

// LoadConfig describes a mixed workload run through every region's proxy at once.
type LoadConfig struct {
	Workload
	WriteRatio float64 // share of statements that are writes, in [0,1] (DefaultWriteRatio)
}

// DefaultWriteRatio is the share of writes of `lab load`.
const DefaultWriteRatio = 0.2

// DefaultRate is LoadConfig.Rate's default.
const DefaultRate = 500

// Validate checks the workload; errors name the flag.
func (c LoadConfig) Validate() error {
	if math.IsNaN(c.WriteRatio) || c.WriteRatio < 0 || c.WriteRatio > 1 {
		return fmt.Errorf("--write-ratio: %v is out of range (0 to 1)", c.WriteRatio)
	}
	return c.validate()
}

// The workload's statements: a product page read and an order insert.
const (
	loadRead  = "SELECT name, price, stock FROM products WHERE id = $1"
	loadWrite = "INSERT INTO orders (customer_id, product_id, quantity, region) VALUES ($1, $2, $3, $4)"
)

// RunInfo is what every workload report says about its run.
type RunInfo struct {
	DurationSec      float64 `json:"duration_sec"`
	ClientsPerRegion int     `json:"clients_per_region"`
	Rate             float64 `json:"rate_per_region"` // statements (or pairs) per second; negative: unlimited
	PrimaryRegion    string  `json:"primary_region"`
}

func runInfo(w Workload, primary string) RunInfo {
	return RunInfo{ClientsPerRegion: w.ClientsPerRegion, Rate: w.Rate, PrimaryRegion: primary}
}

// rateText describes the run's pacing, unit being what Rate counts.
func (r RunInfo) rateText(unit string) string {
	if r.Rate > 0 {
		return fmt.Sprintf("%.0f %s/s per region", r.Rate, unit)
	}
	return "as fast as they can"
}

// LoadReport is what each region saw during a load run.
type LoadReport struct {
	RunInfo
	WriteRatio float64      `json:"write_ratio"`
	Regions    []RegionLoad `json:"regions"`
}

// RegionLoad is one region's result. Latencies are measured by the clients, end to end through the
// proxy; LocalReadShare comes from the proxy's own metrics (meridian_proxy_reads_total).
type RegionLoad struct {
	Region         string  `json:"region"`
	RTTToPrimaryMs float64 `json:"rtt_to_primary_ms"` // configured WAN round trip; 0 in the primary's region
	Reads          int     `json:"reads"`
	Writes         int     `json:"writes"`
	Traffic                // over the whole run
	ReadErrors     int     `json:"read_errors"`
	WriteErrors    int     `json:"write_errors"`
	FirstError     string  `json:"first_error,omitempty"`
}

// Load runs the workload against the lab described by st and rtt (the configured round trips, by
// unordered region pair as in Status.Links).
func Load(ctx context.Context, st State, links []LinkStatus, cfg LoadConfig) (LoadReport, error) {
	if err := cfg.Validate(); err != nil {
		return LoadReport{}, err
	}
	rep := LoadReport{RunInfo: runInfo(cfg.Workload, st.Primary), WriteRatio: cfg.WriteRatio}
	interval := clientInterval(cfg.Rate, cfg.ClientsPerRegion)

	// Connect every client and prepare its statements before the clock starts.
	type worker struct {
		region int
		conn   *pgx.Conn
		reads  []time.Duration
		writes []time.Duration
		rerr   int
		werr   int
		first  error
	}
	var workers []*worker
	defer func() {
		for _, w := range workers {
			w.conn.Close(context.Background())
		}
	}()
	for i, r := range st.Regions {
		for range cfg.ClientsPerRegion {
			conn, err := pgx.Connect(ctx, "postgres://postgres@"+r.Proxy+"/"+Database+"?sslmode=disable&connect_timeout=10")
			if err != nil {
				return rep, fmt.Errorf("connect to the proxy of %s (%s): %w", r.Name, r.Proxy, err)
			}
			workers = append(workers, &worker{region: i, conn: conn})
			if _, err := conn.Prepare(ctx, "r", loadRead); err != nil {
				return rep, fmt.Errorf("prepare through %s: %w", r.Name, err)
			}
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
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for n, w := range workers {
		region := st.Regions[w.region].Name
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(n), uint64(start.UnixNano())))
			pace := newPacer(start, interval, rng)
			for pace.wait(runCtx) {
				write := rng.Float64() < cfg.WriteRatio
				t0 := time.Now()
				var err error
				if write {
					_, err = w.conn.Exec(runCtx, loadWrite, 1+rng.IntN(SampleCustomers), 1+rng.IntN(SampleProducts), 1+rng.IntN(3), region)
				} else {
					var name string
					var price float64
					var stock int
					err = w.conn.QueryRow(runCtx, loadRead, 1+rng.IntN(SampleProducts)).Scan(&name, &price, &stock)
				}
				d := time.Since(t0)
				if err != nil {
					if runCtx.Err() != nil {
						return // the run ended mid-statement: not an error of the system
					}
					if write {
						w.werr++
					} else {
						w.rerr++
					}
					if w.first == nil {
						w.first = err
					}
					if w.conn.IsClosed() {
						return
					}
					continue
				}
				if write {
					w.writes = append(w.writes, d)
				} else {
					w.reads = append(w.reads, d)
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
		rl := RegionLoad{Region: r.Name, RTTToPrimaryMs: rttToPrimary(r.Name, st.Primary, links)}
		var reads, writes []time.Duration
		for _, w := range workers {
			if w.region != i {
				continue
			}
			reads, writes = append(reads, w.reads...), append(writes, w.writes...)
			rl.ReadErrors += w.rerr
			rl.WriteErrors += w.werr
			if w.first != nil && rl.FirstError == "" {
				rl.FirstError = w.first.Error()
			}
		}
		rl.Reads, rl.Writes = len(reads), len(writes)
		rl.ReadsPerSec = math.Round(float64(len(reads))/elapsed.Seconds()*10) / 10
		rl.WritesPerSec = math.Round(float64(len(writes))/elapsed.Seconds()*10) / 10
		rl.ReadP50Ms, rl.ReadP99Ms = ms(percentile(reads, 0.5)), ms(percentile(reads, 0.99))
		rl.WriteP50Ms, rl.WriteP99Ms = ms(percentile(writes, 0.5)), ms(percentile(writes, 0.99))
		if rt := between(before[i], after, r.Name == st.Primary); !math.IsNaN(rt.localShare) {
			v := rt.localShare
			rl.LocalReadShare = &v
		}
		rep.Regions = append(rep.Regions, rl)
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	return rep, nil
}

// clientInterval is the time between one client's statement starts when a region's clients together
// start rate per second (0: as fast as they can).
func clientInterval(rate float64, clients int) time.Duration {
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(clients) / rate * float64(time.Second))
}

// pacer schedules one client's statements open loop: the schedule does not slip when a statement is
// slow, but a client that fell behind does not burst to catch up either.
type pacer struct {
	interval time.Duration
	next     time.Time
}

func newPacer(start time.Time, interval time.Duration, rng *rand.Rand) *pacer {
	return &pacer{interval: interval, next: start.Add(time.Duration(rng.Int64N(int64(interval) + 1)))} // spread the clients' phases
}

// wait sleeps until the next start; false when ctx ended.
func (p *pacer) wait(ctx context.Context) bool {
	if p.interval > 0 {
		if d := time.Until(p.next); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return false
			case <-t.C:
			}
		}
		if p.next = p.next.Add(p.interval); p.next.Before(time.Now()) {
			p.next = time.Now()
		}
	}
	return ctx.Err() == nil
}

// percentile returns the q-quantile of ds (nearest rank), or 0 for none.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Render writes the report as a table.
func (r LoadReport) Render(w io.Writer) {
	rate := r.rateText("statements")
	fmt.Fprintf(w, "%.0f s, %d clients per region (%s), %.0f %% writes; primary in %s\n\n", r.DurationSec, r.ClientsPerRegion, rate,
		100*r.WriteRatio, r.PrimaryRegion)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "region\treads/s\tread p50\tread p99\tlocal reads\twrites/s\twrite p50\twrite p99\tRTT to primary\terrors\t")
	for _, g := range r.Regions {
		share := "-"
		if g.LocalReadShare != nil {
			share = fmt.Sprintf("%.1f %%", 100**g.LocalReadShare)
		}
		rtt := "-"
		if g.RTTToPrimaryMs > 0 {
			rtt = fmt.Sprintf("%.0f ms", g.RTTToPrimaryMs)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f ms\t%.2f ms\t%s\t%.0f\t%.1f ms\t%.1f ms\t%s\t%d\t\n", g.Region, g.ReadsPerSec, g.ReadP50Ms, g.ReadP99Ms,
			share, g.WritesPerSec, g.WriteP50Ms, g.WriteP99Ms, rtt, g.ReadErrors+g.WriteErrors)
	}
	tw.Flush()
	for _, g := range r.Regions {
		if g.FirstError != "" {
			fmt.Fprintf(w, "%s: first error: %s\n", g.Region, g.FirstError)
		}
	}
}
