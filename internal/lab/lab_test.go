package lab

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; empty: valid
	}{
		{name: "defaults", cfg: Config{}},
		{name: "two regions", cfg: Config{Regions: []string{"a", "b"}, Primary: "b"}},
		{name: "primary not a region", cfg: Config{Regions: []string{"a", "b"}, Primary: "c"}, want: "--primary"},
		{name: "duplicate region", cfg: Config{Regions: []string{"a", "a"}}, want: "listed twice"},
		{name: "bad region name", cfg: Config{Regions: []string{"a b"}}, want: "--regions"},
		{name: "not loopback", cfg: Config{FirstAddress: "10.0.0.1"}, want: "--first-address"},
		{name: "no room", cfg: Config{FirstAddress: "127.0.254.1"}, want: "leaves no room"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestAddressesAndRTT(t *testing.T) {
	if got := regionAddress("127.0.1.1", 2); got != "127.0.3.1" {
		t.Errorf("regionAddress = %s", got)
	}
	if DefaultRTT("us-west-2", "us-east-1") != 64*time.Millisecond || DefaultRTT("eu-west-1", "us-west-2") != 130*time.Millisecond {
		t.Error("default round trips are not the published ones, or not symmetric")
	}
	if DefaultRTT("x", "y") != FallbackRTT {
		t.Error("unknown pair")
	}
}

func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(1)
	h := histogram{upper: []float64{0.001, 0.002, 0.1, inf}, count: []float64{50, 90, 100, 100}}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, time.Millisecond},        // exactly the 50 observations under 1 ms
		{0.7, 1500 * time.Microsecond}, // halfway into (1 ms, 2 ms]
		{0.95, 51 * time.Millisecond},  // halfway into (2 ms, 100 ms]
		{0.25, 500 * time.Microsecond}, // halfway into [0, 1 ms]
		{1, 100 * time.Millisecond},    // the last finite bound
	} {
		if got := h.quantile(tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := (histogram{}).quantile(0.5); got != 0 {
		t.Errorf("empty histogram: %v", got)
	}
	d := h.sub(histogram{upper: h.upper, count: []float64{50, 50, 50, 50}})
	if d.total() != 50 || d.quantile(0.5) != 1625*time.Microsecond {
		t.Errorf("difference of two scrapes: %+v, p50 %v", d, d.quantile(0.5))
	}
}

func TestBetweenCountsLocalReads(t *testing.T) {
	a := proxySample{at: time.Unix(0, 0), reads: map[string]float64{"local_replica": 10, "primary": 5}, queries: 20}
	b := proxySample{at: time.Unix(2, 0), reads: map[string]float64{"local_replica": 108, "remote_replica": 2, "primary": 5}, queries: 140}
	r := between(a, b, false)
	if r.readsPerSec != 50 || r.writesPerSec != 10 || r.localShare != 0.98 {
		t.Errorf("between = %+v", r)
	}
	c := proxySample{at: time.Unix(4, 0), reads: map[string]float64{"local_replica": 108, "remote_replica": 2, "primary": 25}, queries: 160}
	if r := between(b, c, true); r.localShare != 1 {
		t.Errorf("reads served by the primary in its own region are local: %+v", r)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(ds, 0.5); p != 50*time.Millisecond {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(ds, 0.99); p != 99*time.Millisecond {
		t.Errorf("p99 = %v", p)
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("empty")
	}
}

func TestLoadConfigValidate(t *testing.T) {
	valid := LoadConfig{Workload: DefaultWorkload(DefaultRate), WriteRatio: DefaultWriteRatio}
	for _, tc := range []struct {
		name   string
		change func(*LoadConfig)
		want   string // substring of the error; empty: valid
	}{
		{name: "defaults", change: func(*LoadConfig) {}},
		{name: "unlimited rate", change: func(c *LoadConfig) { c.Rate = -1 }},
		{name: "write ratio 1.5", change: func(c *LoadConfig) { c.WriteRatio = 1.5 }, want: "--write-ratio"},
		{name: "no clients", change: func(c *LoadConfig) { c.ClientsPerRegion = 0 }, want: "--clients-per-region: 0 is out of range (1 to 500)"},
		{name: "negative clients", change: func(c *LoadConfig) { c.ClientsPerRegion = -1 }, want: "--clients-per-region"},
		{name: "zero duration", change: func(c *LoadConfig) { c.Duration = 0 }, want: "--duration: 0s is out of range (1s to 24h)"},
		{name: "zero rate", change: func(c *LoadConfig) { c.Rate = 0 }, want: "--rate: 0 is out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.change(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want an error with %q", err, tc.want)
			}
		})
	}
	if err := (RYWConfig{}).Validate(); err == nil {
		t.Error("a read-your-writes run with zero duration, clients and rate is valid")
	}
}

func TestLagText(t *testing.T) {
	zero, twelve := 0.0, 12.4
	for _, tc := range []struct {
		name string
		r    RegionStatus
		want string
	}{
		{"caught up", RegionStatus{Streaming: true, ReplayLagMs: &zero}, "0 ms"},
		{"behind while streaming", RegionStatus{Streaming: true, ReplayLagMs: &twelve, LagBytes: 2048}, "12 ms, 2.0 KiB"},
		{"cut off and behind", RegionStatus{Partitioned: true, PartitionedForSec: 12.3, LagBytes: 480},
			"unknown, growing (cut off 12.3s ago; 480 B behind)"},
		{"not streaming and behind", RegionStatus{LagBytes: 480}, "unknown, growing (not streaming; 480 B behind)"},
		{"cut off, nothing written since", RegionStatus{Partitioned: true, PartitionedForSec: 3, ReplayLagMs: &zero},
			"0 ms (cut off 3s ago)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.lagText(); got != tc.want {
				t.Errorf("lagText = %q, want %q", got, tc.want)
			}
		})
	}
}
