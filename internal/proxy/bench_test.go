package proxy_test

import (
	"log/slog"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// BenchmarkPgbenchSelectOnly runs pgbench -S through the proxy (replica in the proxy's region) and
// directly against the replica, and reports both TPS and their ratio. Use -cpuprofile to see where
// the proxy spends its time: pgbench runs in a separate process.
//
//	go test -run '^$' -bench PgbenchSelectOnly -benchtime 1x ./internal/proxy/
func BenchmarkPgbenchSelectOnly(b *testing.B) {
	c := pgtest.NewCluster(b, pgtest.Options{Replicas: 1, Settings: map[string]string{"max_connections": "200"}})
	cfg := proxy.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Region = "local"
	cfg.Nodes = []proxy.NodeConfig{
		{Name: "primary", Address: c.Primary.Endpoint().String(), Region: "local"},
		{Name: "replica", Address: c.Replicas[0].Endpoint().String(), Region: "local"},
	}
	p, err := proxy.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	if err := p.WaitReady(pgtest.Context(b, time.Minute)); err != nil {
		b.Fatal(err)
	}
	bin := pgtest.Binaries(b)
	host, port, _ := net.SplitHostPort(p.Addr())
	run := func(h string, port string, args ...string) float64 {
		cmd := exec.Command(bin.Path("pgbench"), append([]string{"-h", h, "-p", port, "-U", "postgres"}, append(args, "postgres")...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("pgbench: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`tps = ([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			return 0
		}
		tps, _ := strconv.ParseFloat(string(m[1]), 64)
		return tps
	}
	prim := c.Primary.Endpoint()
	run(prim.Host, strconv.Itoa(prim.Port), "-i", "-q", "-s", "5")
	if err := pgtest.WaitReplayed(pgtest.Context(b, time.Minute), c.Replicas[0], pgtest.CurrentLSN(b, c.Primary)); err != nil {
		b.Fatal(err)
	}
	mode := envOr("BENCH_MODE", "simple")
	clients := envOr("BENCH_CLIENTS", "16")
	dur := envOr("BENCH_SECONDS", "8")
	args := []string{"-S", "-n", "-M", mode, "-c", clients, "-j", "2", "-T", dur}
	rep := c.Replicas[0].Endpoint()
	b.ResetTimer()
	for range b.N {
		proxied := run(host, port, args...)
		direct := run(rep.Host, strconv.Itoa(rep.Port), args...)
		b.ReportMetric(proxied, "proxy-tps")
		b.ReportMetric(direct, "direct-tps")
		b.ReportMetric(proxied/direct, "ratio")
	}
}

func envOr(k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}
