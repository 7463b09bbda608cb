package lab

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// proxySample is what the lab reads from one proxy's /metrics at one moment.
type proxySample struct {
	at      time.Time
	reads   map[string]float64 // meridian_proxy_reads_total by route
	queries float64            // meridian_proxy_queries_total, all routes
	hist    [2]histogram       // meridian_proxy_query_duration_seconds: write, read
	wait    histogram          // meridian_proxy_consistency_wait_seconds
}

// readsTotal is every read statement, wherever it ran.
func (s proxySample) readsTotal() float64 {
	t := 0.0
	for _, v := range s.reads {
		t += v
	}
	return t
}

// histogram is a cumulative Prometheus histogram.
type histogram struct {
	upper []float64 // bucket upper bounds, ascending, +Inf last
	count []float64 // cumulative counts
}

// scrapeProxy reads a proxy's metrics over HTTP, as any monitoring system would.
func scrapeProxy(ctx context.Context, addr string) (proxySample, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return proxySample{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return proxySample{}, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return proxySample{}, fmt.Errorf("scrape %s: %w", addr, err)
	}
	s := proxySample{at: time.Now(), reads: map[string]float64{}}
	if f := fams["meridian_proxy_reads_total"]; f != nil {
		for _, m := range f.GetMetric() {
			s.reads[label(m, "route")] += m.GetCounter().GetValue()
		}
	}
	if f := fams["meridian_proxy_queries_total"]; f != nil {
		for _, m := range f.GetMetric() {
			s.queries += m.GetCounter().GetValue()
		}
	}
	if f := fams["meridian_proxy_query_duration_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			i := 0
			if label(m, "kind") == "read" {
				i = 1
			}
			s.hist[i] = histogramOf(m)
		}
	}
	if f := fams["meridian_proxy_consistency_wait_seconds"]; f != nil && len(f.GetMetric()) == 1 {
		s.wait = histogramOf(f.GetMetric()[0])
	}
	return s, nil
}

// histogramOf reads a histogram sample, with its +Inf bucket.
func histogramOf(m *dto.Metric) histogram {
	var h histogram
	for _, b := range m.GetHistogram().GetBucket() {
		h.upper = append(h.upper, b.GetUpperBound())
		h.count = append(h.count, float64(b.GetCumulativeCount()))
	}
	if len(h.upper) == 0 || !math.IsInf(h.upper[len(h.upper)-1], 1) {
		h.upper = append(h.upper, math.Inf(1))
		h.count = append(h.count, float64(m.GetHistogram().GetSampleCount()))
	}
	return h
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sub returns the observations between two scrapes of the same histogram.
func (h histogram) sub(o histogram) histogram {
	if len(o.count) != len(h.count) {
		return h
	}
	d := histogram{upper: h.upper, count: slices.Clone(h.count)}
	for i := range d.count {
		d.count[i] -= o.count[i]
	}
	return d
}

func (h histogram) total() float64 {
	if len(h.count) == 0 {
		return 0
	}
	return h.count[len(h.count)-1]
}

// quantile estimates the q-quantile by linear interpolation inside the bucket, as PromQL's
// histogram_quantile does. It returns 0 when there are no observations.
func (h histogram) quantile(q float64) time.Duration {
	n := h.total()
	if n == 0 {
		return 0
	}
	rank := q * n
	lower, below := 0.0, 0.0
	for i, c := range h.count {
		if c >= rank {
			upper := h.upper[i]
			if math.IsInf(upper, 1) {
				upper = lower // beyond the last bound: report the bound
			}
			frac := 0.0
			if c > below {
				frac = (rank - below) / (c - below)
			}
			return time.Duration((lower + (upper-lower)*frac) * float64(time.Second))
		}
		lower, below = h.upper[i], c
	}
	return time.Duration(lower * float64(time.Second))
}

// rates are one proxy's traffic between two samples.
type rates struct {
	readsPerSec, writesPerSec float64
	localShare                float64 // of reads, in [0,1]; NaN without reads
	readP50, readP99          time.Duration
	writeP50, writeP99        time.Duration
	reads, localReads         float64
}

// between computes the traffic from a to b; primaryHere says the primary is in the proxy's region, so
// that reads it serves count as local.
func between(a, b proxySample, primaryHere bool) rates {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 {
		return rates{localShare: math.NaN()}
	}
	reads := b.readsTotal() - a.readsTotal()
	local := b.reads["local_replica"] - a.reads["local_replica"]
	if primaryHere {
		local += b.reads["primary"] - a.reads["primary"]
	}
	writes := max(0, (b.queries-a.queries)-reads)
	r := rates{readsPerSec: reads / secs, writesPerSec: writes / secs, reads: reads, localReads: local, localShare: math.NaN()}
	if reads > 0 {
		r.localShare = local / reads
	}
	rh, wh := b.hist[1].sub(a.hist[1]), b.hist[0].sub(a.hist[0])
	r.readP50, r.readP99 = rh.quantile(0.5), rh.quantile(0.99)
	r.writeP50, r.writeP99 = wh.quantile(0.5), wh.quantile(0.99)
	return r
}
