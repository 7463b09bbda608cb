package proxy

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// The modes and outcomes whose counters are bound once.
var (
	boundModes    = [3]string{consistencyBounded, consistencySession, consistencyGlobal}
	boundOutcomes = [3]string{outcomeImmediate, outcomeAfterWait, outcomePrimary}
)

// Route labels for queries (metrics and logs).
const (
	routeLocal   = "local_replica"
	routeRemote  = "remote_replica"
	routePrimary = "primary"
)

// metrics are the proxy's Prometheus series, in a registry of its own (no global state).
type metrics struct {
	reg *prometheus.Registry

	clientsActive       prometheus.Gauge
	clientsWaiting      prometheus.Gauge
	clientsTotal        prometheus.Counter
	clientsRejected     prometheus.Counter
	authFailures        prometheus.Counter
	reloads             *prometheus.CounterVec
	serversOpen         *prometheus.GaugeVec
	serversActive       *prometheus.GaugeVec
	serverConnectErrors *prometheus.CounterVec
	queries             *prometheus.CounterVec
	reads               *prometheus.CounterVec
	queryDuration       [2]prometheus.Observer // write, read
	transactions        *prometheus.CounterVec
	errors              *prometheus.CounterVec
	pins                *prometheus.CounterVec
	autoPrepared        prometheus.Counter // auto_prepare: statements prepared on a server connection
	autoExecuted        prometheus.Counter // auto_prepare: simple queries run as prepared statements
	autoDisabled        prometheus.Counter // auto_prepare: texts no longer prepared (plan guard, rule rewrite)
	autoReplanned       prometheus.Counter // prepared statements closed and prepared again after a schema change
	poolWait            prometheus.Histogram
	replicaLag          *prometheus.GaugeVec
	replicaLagBytes     *prometheus.GaugeVec
	consistencyReads    *prometheus.CounterVec
	consistencyWait     prometheus.Histogram
	consistencyBound    [3][3]prometheus.Counter // [mode][outcome] for bounded, session, global; read-only after newMetrics
}

func newMetrics(p *Proxy) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		clientsActive: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_proxy_clients",
			Help: "Client connections currently open."}),
		clientsWaiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_proxy_clients_waiting",
			Help: "Clients waiting for a free server connection."}),
		clientsTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_proxy_client_connections_total",
			Help: "Client connections accepted."}),
		clientsRejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_proxy_client_rejected_total",
			Help: "Client connections refused because max_client_conn was reached."}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_proxy_auth_failures_total",
			Help: "Client logins refused for a wrong password or an unknown user."}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_proxy_config_reloads_total",
			Help: "Configuration reloads (SIGHUP), by result (ok, error)."}, []string{"result"}),
		serversOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_proxy_server_connections",
			Help: "Server connections open, by node."}, []string{"node"}),
		serversActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_proxy_server_connections_active",
			Help: "Server connections lent to a client, by node."}, []string{"node"}),
		serverConnectErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_proxy_server_connect_errors_total",
			Help: "Failed attempts to open a server connection, by node."}, []string{"node"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_proxy_queries_total",
			Help: "Statements (simple queries and extended-protocol batches) routed, by route and node."}, []string{"route", "node"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_proxy_reads_total",
			Help: "Read-only statements (those a replica may run), by where they ran: local_replica, remote_replica, or primary as the fallback."}, []string{"route", "node"}),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_proxy_transactions_total",
			Help: "Server connection checkouts (transactions in transaction mode), by route and node."}, []string{"route", "node"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_proxy_errors_total",
			Help: "Errors sent to clients, by SQLSTATE class (first two characters)."}, []string{"class"}),
		pins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_proxy_pins_total",
			Help: "Clients pinned to one server connection in transaction mode, by reason."}, []string{"reason"}),
		poolWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meridian_proxy_pool_wait_seconds",
			Help:    "Time to obtain a server connection.",
			Buckets: []float64{.00001, .0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 10}}),
	}
	queryDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meridian_proxy_query_duration_seconds",
		Help:    "Time from sending a statement (or extended-protocol batch) to a server until its answer is relayed, by kind (read or write).",
		Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .075, .1, .15, .2, .3, .5, 1, 2.5, 5, 10}},
		[]string{"kind"})
	m.queryDuration = [2]prometheus.Observer{queryDuration.WithLabelValues("write"), queryDuration.WithLabelValues("read")}
	m.replicaLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_proxy_replica_lag_seconds",
		Help: "How long the oldest WAL a replica has not replayed has existed on the primary, as last sampled (lag_sample_interval)."}, []string{"node"})
	m.replicaLagBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_proxy_replica_lag_bytes",
		Help: "WAL the primary had, as last sampled, that a replica had not replayed."}, []string{"node"})
	m.consistencyReads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_proxy_consistency_reads_total",
		Help: "Reads in the bounded, session and global modes, by mode and outcome (replica_immediately, replica_after_wait, primary_fallback)."},
		[]string{"mode", "outcome"})
	m.consistencyWait = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meridian_proxy_consistency_wait_seconds",
		Help:    "Time reads with a consistency condition (staleness bound or WAL position) spent waiting for a replica before being routed.",
		Buckets: []float64{.0001, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}})
	for i, mode := range boundModes {
		for j, outcome := range boundOutcomes {
			m.consistencyBound[i][j] = m.consistencyReads.WithLabelValues(mode, outcome)
		}
	}
	autoPrepare := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_proxy_auto_prepare_total",
		Help: "Automatic preparation of simple queries (auto_prepare), by event: prepared (a Parse sent to a server connection), executed (a simple query or an execution of the unnamed statement run as a statement the proxy prepared), replanned (a statement closed and prepared again because its result columns changed), disabled (a text run as sent from then on: its prepared executions were much slower than its first ones, or it returned rows the extended protocol would send without a description)."},
		[]string{"event"})
	m.autoPrepared, m.autoExecuted, m.autoReplanned = autoPrepare.WithLabelValues("prepared"), autoPrepare.WithLabelValues("executed"), autoPrepare.WithLabelValues("replanned")
	m.autoDisabled = autoPrepare.WithLabelValues("disabled")
	reg.MustRegister(autoPrepare)
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	reg.MustRegister(newScrapeCollector(p))
	reg.MustRegister(queryDuration, m.reads, m.replicaLag, m.replicaLagBytes, m.consistencyReads, m.consistencyWait)
	reg.MustRegister(m.clientsActive, m.clientsWaiting, m.clientsTotal, m.clientsRejected, m.authFailures, m.reloads, m.serversOpen,
		m.serversActive, m.serverConnectErrors, m.queries, m.transactions, m.errors, m.pins, m.poolWait,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeQuery records a statement's server time.
func (m *metrics) observeQuery(read bool, d time.Duration) {
	i := 0
	if read {
		i = 1
	}
	m.queryDuration[i].Observe(d.Seconds())
}

// countConsistency records a read of a consistency mode that had no condition to meet (session mode
// before the session's first write): routed at once, without waiting.
func (m *metrics) countConsistency(mode, outcome string) {
	m.consistencyCounter(mode, outcome).Inc()
}

// consistencyCounter returns the counter of a mode and outcome, bound once (reads in session mode,
// the default, count on every statement).
func (m *metrics) consistencyCounter(mode, outcome string) prometheus.Counter {
	i, j := slices.Index(boundModes[:], mode), slices.Index(boundOutcomes[:], outcome)
	if i >= 0 && j >= 0 {
		return m.consistencyBound[i][j]
	}
	return m.consistencyReads.WithLabelValues(mode, outcome)
}

// observeConsistency records how a read with a consistency bound was routed and how long it waited.
func (m *metrics) observeConsistency(mode, outcome string, waited time.Duration) {
	m.consistencyCounter(mode, outcome).Inc()
	m.consistencyWait.Observe(waited.Seconds())
}
