package proxy

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// byteCounters count the bytes the proxy reads and writes on client and server sockets: plain atomic
// adds on the data path, exported as counters when scraped.
type byteCounters struct {
	clientIn, clientOut, serverIn, serverOut atomic.Uint64
}

// scrapeCollector computes, when /metrics is scraped, what would cost the data path to keep current:
// bytes, clients by state, and each pool's connections and saturation.
type scrapeCollector struct {
	p                                           *Proxy
	bytes, clients, pool, satu, nodeUp, primary *prometheus.Desc
}

func newScrapeCollector(p *Proxy) *scrapeCollector {
	return &scrapeCollector{p: p,
		bytes: prometheus.NewDesc("meridian_proxy_bytes_total", "Bytes read and written by the proxy, by side (client, server) and direction (in: received by the proxy, out: sent).",
			[]string{"side", "direction"}, nil),
		clients: prometheus.NewDesc("meridian_proxy_clients_by_state", "Client connections by state: active (holding a server connection), waiting (for one, or paused), idle, admin.",
			[]string{"state"}, nil),
		pool: prometheus.NewDesc("meridian_proxy_pool_server_connections", "Server connections of each pool (node, user, database) by state (active, idle).",
			[]string{"node", "user", "database", "state"}, nil),
		satu: prometheus.NewDesc("meridian_proxy_pool_saturation", "Open server connections of each pool over pool_size (1: full; clients then wait).",
			[]string{"node", "user", "database"}, nil),
		nodeUp: prometheus.NewDesc("meridian_proxy_node_up", "1 if the node answered the last poll.", []string{"node", "region"}, nil),
		primary: prometheus.NewDesc("meridian_proxy_node_primary", "1 if the node is the primary writes are sent to.",
			[]string{"node", "region"}, nil),
	}
}

func (s *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.bytes
	ch <- s.clients
	ch <- s.pool
	ch <- s.satu
	ch <- s.nodeUp
	ch <- s.primary
}

func (s *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	b := &s.p.bytes
	for _, v := range []struct {
		side, dir string
		n         *atomic.Uint64
	}{{"client", "in", &b.clientIn}, {"client", "out", &b.clientOut}, {"server", "in", &b.serverIn}, {"server", "out", &b.serverOut}} {
		ch <- prometheus.MustNewConstMetric(s.bytes, prometheus.CounterValue, float64(v.n.Load()), v.side, v.dir)
	}
	states := map[string]int{"active": 0, "waiting": 0, "idle": 0, "admin": 0}
	for _, c := range s.p.clientList() {
		c.mu.Lock()
		busy := c.cur != nil
		c.mu.Unlock()
		switch {
		case c.database == AdminDatabase:
			states["admin"]++
		case busy:
			states["active"]++
		case c.waiting.Load() != nil:
			states["waiting"]++
		default:
			states["idle"]++
		}
	}
	for st, n := range states {
		ch <- prometheus.MustNewConstMetric(s.clients, prometheus.GaugeValue, float64(n), st)
	}
	snap := s.p.disc.Current()
	for _, n := range snap.Nodes {
		up, primary := 0.0, 0.0
		if n.Up {
			up = 1
		}
		if n.Name == snap.Primary {
			primary = 1
		}
		ch <- prometheus.MustNewConstMetric(s.nodeUp, prometheus.GaugeValue, up, n.Name, n.Region)
		ch <- prometheus.MustNewConstMetric(s.primary, prometheus.GaugeValue, primary, n.Name, n.Region)
	}
	size := float64(s.p.poolSize.Load())
	for _, pl := range s.p.poolList() {
		pl.mu.Lock()
		idle, open := len(pl.idle), len(pl.conns)
		pl.mu.Unlock()
		k := pl.key
		ch <- prometheus.MustNewConstMetric(s.pool, prometheus.GaugeValue, float64(open-idle), k.node, k.user, k.database, "active")
		ch <- prometheus.MustNewConstMetric(s.pool, prometheus.GaugeValue, float64(idle), k.node, k.user, k.database, "idle")
		ch <- prometheus.MustNewConstMetric(s.satu, prometheus.GaugeValue, float64(open)/size, k.node, k.user, k.database)
	}
}
