package lab

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Status is a running lab's state, as `meridian lab status` shows it.
type Status struct {
	Dir     string         `json:"dir"`
	Started time.Time      `json:"started"`
	Primary string         `json:"primary_region"`
	Regions []RegionStatus `json:"regions"`
	Links   []LinkStatus   `json:"links"`
}

// RegionStatus is one region: its server, its proxy and the proxy's traffic over the last second.
type RegionStatus struct {
	Name      string `json:"name"`
	Address   string `json:"address"`
	Node      string `json:"node"`
	Role      string `json:"role"` // primary, replica, or down
	Streaming bool   `json:"streaming"`
	// ReplayLagMs is how far behind the replica's applied state is in time (0 on the primary), null
	// when unknown: a replica cut off by a partition, or not streaming, that lacks WAL the primary has
	// written cannot say how old its state is, and it falls further behind with every write.
	ReplayLagMs *float64 `json:"replay_lag_ms"`
	LagBytes    int64    `json:"lag_bytes"` // WAL the primary has written that this replica has not replayed
	Partitioned bool     `json:"partitioned"`
	// PartitionedForSec is how long ago `lab partition` cut the region off.
	PartitionedForSec float64 `json:"partitioned_for_sec,omitempty"`
	Error             string  `json:"error,omitempty"`

	Proxy   string `json:"proxy"`
	Metrics string `json:"metrics"`
	// Traffic is the proxy's over the last second, except LocalReadShare: since the lab started.
	Traffic
}

// Traffic is what a region's clients did: rates, latencies and where reads were served.
type Traffic struct {
	ReadsPerSec  float64 `json:"reads_per_sec"`
	WritesPerSec float64 `json:"writes_per_sec"`
	ReadP50Ms    float64 `json:"read_p50_ms"`
	ReadP99Ms    float64 `json:"read_p99_ms"`
	WriteP50Ms   float64 `json:"write_p50_ms"`
	WriteP99Ms   float64 `json:"write_p99_ms"`
	// LocalReadShare is the share of reads served inside the region (its replica, or the primary in
	// the primary's region), from the proxy's meridian_proxy_reads_total; null without reads.
	LocalReadShare *float64 `json:"local_read_share"`
}

// LinkStatus is the emulated WAN path between two regions.
type LinkStatus struct {
	A           string  `json:"a"`
	B           string  `json:"b"`
	RTTMs       float64 `json:"rtt_ms"`
	Partitioned bool    `json:"partitioned"`
}

// sampler scrapes every proxy once a second, so that the status can show rates and latencies over
// the last second.
type sampler struct {
	l      *Lab
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex // guards first, prev, last
	first []proxySample
	prev  []proxySample
	last  []proxySample
}

func newSampler(l *Lab) *sampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sampler{l: l, cancel: cancel, done: make(chan struct{})}
	go s.run(ctx)
	return s
}

func (s *sampler) run(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		cur := make([]proxySample, len(s.l.regions))
		for i, r := range s.l.regions {
			if p := r.proxy; p != nil {
				cur[i], _ = scrapeProxy(ctx, p.HTTPAddr())
			}
		}
		s.mu.Lock()
		if s.first == nil {
			s.first = cur
		}
		s.prev, s.last = s.last, cur
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sampler) close() {
	s.cancel()
	<-s.done
}

// Status reports every region's server and proxy.
func (l *Lab) Status(ctx context.Context) Status {
	st := Status{Dir: l.cfg.Dir, Started: l.started, Primary: l.regions[l.primary].name}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	primaryLSN, _ := l.primaryLSN(ctx)
	var first, prev, last []proxySample
	if l.sampler != nil {
		l.sampler.mu.Lock()
		first, prev, last = l.sampler.first, l.sampler.prev, l.sampler.last
		l.sampler.mu.Unlock()
	}
	l.mu.Lock()
	partitioned := maps.Clone(l.partitioned)
	for k, d := range l.rtt {
		_, cut0 := partitioned[k[0]]
		_, cut1 := partitioned[k[1]]
		st.Links = append(st.Links, LinkStatus{A: l.regions[k[0]].name, B: l.regions[k[1]].name,
			RTTMs: ms(d), Partitioned: cut0 || cut1})
	}
	l.mu.Unlock()
	sortLinks(st.Links)
	for _, r := range l.regions {
		rs := RegionStatus{Name: r.name, Address: r.addr, Node: r.node.Name(), Role: "down",
			Proxy: fmt.Sprintf("%s:%d", r.addr, ProxyPort), Metrics: fmt.Sprintf("%s:%d", r.addr, MetricsPort)}
		if since, ok := partitioned[r.index]; ok {
			rs.Partitioned = true
			rs.PartitionedForSec = math.Round(time.Since(since).Seconds()*10) / 10
		}
		if ns, err := r.node.Status(ctx); err != nil {
			rs.Error = err.Error()
		} else {
			rs.Role = string(ns.Role)
			rs.Streaming = ns.Streaming
			if ns.Role != "primary" && primaryLSN > ns.Replayed {
				rs.LagBytes = int64(primaryLSN - ns.Replayed)
			}
			// A cut-off replica has replayed all it received, so PostgreSQL reports no lag (pgnode's
			// ReplayLag is zero then): the lag is unknown as soon as WAL is missing.
			if lag := ms(ns.ReplayLag); !((rs.Partitioned || !ns.Streaming) && rs.LagBytes > 0) {
				rs.ReplayLagMs = &lag
			}
		}
		if last != nil && prev != nil && !last[r.index].at.IsZero() && !prev[r.index].at.IsZero() {
			rt := between(prev[r.index], last[r.index], r.index == l.primary)
			rs.ReadsPerSec, rs.WritesPerSec = rt.readsPerSec, rt.writesPerSec
			rs.ReadP50Ms, rs.ReadP99Ms = ms(rt.readP50), ms(rt.readP99)
			rs.WriteP50Ms, rs.WriteP99Ms = ms(rt.writeP50), ms(rt.writeP99)
		}
		if last != nil && first != nil && !last[r.index].at.IsZero() && !first[r.index].at.IsZero() {
			if all := between(first[r.index], last[r.index], r.index == l.primary); !math.IsNaN(all.localShare) {
				v := all.localShare
				rs.LocalReadShare = &v
			}
		}
		st.Regions = append(st.Regions, rs)
	}
	return st
}

func sortLinks(ls []LinkStatus) {
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].A+ls[j].B < ls[j-1].A+ls[j-1].B; j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

// Render writes the status as tables for people.
func (s Status) Render(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tADDRESS\tNODE\tROLE\tREPLAY LAG\tPROXY\tREADS/S\tWRITES/S\tREAD p50/p99\tWRITE p50/p99\tLOCAL READS")
	for _, r := range s.Regions {
		role := r.Role
		if r.Partitioned {
			role += " (partitioned)"
		}
		lag := "-"
		if r.Role == "replica" {
			lag = r.lagText()
		}
		share := "-"
		if r.LocalReadShare != nil {
			share = fmt.Sprintf("%.1f %%", 100**r.LocalReadShare)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%.0f\t%s\t%s\t%s\n", r.Name, r.Address, r.Node, role, lag, r.Proxy,
			r.ReadsPerSec, r.WritesPerSec, pair2(r.ReadP50Ms, r.ReadP99Ms), pair2(r.WriteP50Ms, r.WriteP99Ms), share)
	}
	tw.Flush()
	var links []string
	for _, l := range s.Links {
		x := fmt.Sprintf("%s↔%s %.0f ms", l.A, l.B, l.RTTMs)
		if l.Partitioned {
			x += " (cut)"
		}
		links = append(links, x)
	}
	fmt.Fprintf(w, "WAN: %s\n", strings.Join(links, ", "))
}

// lagText is a replica's REPLAY LAG cell.
func (r RegionStatus) lagText() string {
	why := "not streaming"
	if r.Partitioned {
		why = fmt.Sprintf("cut off %s ago", (time.Duration(r.PartitionedForSec*10) * time.Second / 10).String())
	}
	if r.ReplayLagMs == nil {
		return fmt.Sprintf("unknown, growing (%s; %s behind)", why, bytesHuman(r.LagBytes))
	}
	lag := fmt.Sprintf("%.0f ms", *r.ReplayLagMs)
	if r.LagBytes > 0 {
		lag += ", " + bytesHuman(r.LagBytes)
	}
	if r.Partitioned || !r.Streaming {
		lag += " (" + why + ")"
	}
	return lag
}

func pair2(a, b float64) string {
	if a == 0 && b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f/%.1f ms", a, b)
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
