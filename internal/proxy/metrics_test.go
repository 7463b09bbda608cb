package proxy_test

import (
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// TestMetricsParse scrapes /metrics after some traffic and parses it with the Prometheus text
// parser: every family the operations docs list is there, with plausible values; /readyz answers;
// pprof is served only when enabled.
func TestMetricsParse(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.Pprof = true }})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t)
	if _, err := conn.Exec(ctx, "CREATE TABLE m (x int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT * FROM m"); err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Exec(ctx, "SELECT 1/0")
	resp, err := http.Get("http://" + e.proxy.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	sum := func(name string, labels map[string]string) (float64, bool) {
		f := fams[name]
		if f == nil {
			return 0, false
		}
		total := 0.0
	metric:
		for _, m := range f.GetMetric() {
			for k, v := range labels {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == k && l.GetValue() == v)
				}
				if !found {
					continue metric
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				total += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				total += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				total += float64(m.GetHistogram().GetSampleCount())
			default:
				total += m.GetUntyped().GetValue()
			}
		}
		return total, true
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"meridian_proxy_clients_by_state", map[string]string{"state": "idle"}, 1},
		{"meridian_proxy_client_connections_total", nil, 1},
		{"meridian_proxy_server_connections", nil, 1},
		{"meridian_proxy_pool_server_connections", map[string]string{"state": "idle"}, 1},
		{"meridian_proxy_pool_saturation", nil, 0.01},
		{"meridian_proxy_pool_wait_seconds", nil, 1},
		{"meridian_proxy_queries_total", map[string]string{"route": "primary"}, 1},
		{"meridian_proxy_queries_total", map[string]string{"route": "local_replica"}, 1},
		{"meridian_proxy_transactions_total", nil, 2},
		{"meridian_proxy_query_duration_seconds", map[string]string{"kind": "read"}, 1},
		{"meridian_proxy_bytes_total", map[string]string{"side": "client", "direction": "in"}, 20},
		{"meridian_proxy_bytes_total", map[string]string{"side": "server", "direction": "out"}, 20},
		{"meridian_proxy_errors_total", map[string]string{"class": "22"}, 1},
		{"meridian_proxy_auth_failures_total", nil, 0},
		{"meridian_proxy_config_reloads_total", nil, 0},
		{"meridian_proxy_node_up", nil, 2},
		{"meridian_proxy_replica_lag_seconds", nil, 0},
		{"meridian_proxy_consistency_reads_total", map[string]string{"mode": "session"}, 1},
		{"meridian_proxy_consistency_wait_seconds", nil, 1},
	} {
		v, ok := sum(c.name, c.labels)
		if !ok || v < c.min {
			t.Errorf("%s%v = %v (present %v), want ≥ %v", c.name, c.labels, v, ok, c.min)
		}
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/debug/pprof/": 200} {
		resp, err := http.Get("http://" + e.proxy.HTTPAddr() + path)
		if err != nil || resp.StatusCode != want {
			t.Errorf("GET %s: %v %v, want %d", path, resp.StatusCode, err, want)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	// Without pprof enabled, there is none.
	cfg := e.cfg
	cfg.Pprof = false
	p := startProxy(t, cfg)
	if resp, err := http.Get("http://" + p.HTTPAddr() + "/debug/pprof/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("pprof served although not enabled")
		}
	}
}
