package proxy

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridiandb/meridian/internal/topology"
)

// lagMonitor samples every node's WAL position every LagSampleInterval, each over a connection of its
// own: the primary's pg_current_wal_lsn() and the replicas' pg_last_wal_replay_lsn(). From a short
// history of the primary's positions it derives each replica's lag in bytes and in time: how long ago
// the primary first had WAL the replica has not replayed yet. (pg_last_xact_replay_timestamp() would
// be simpler, but on a quiet primary it grows forever while the replica is in fact up to date.)
//
// Routing reads the results without locks (one atomic load per node).
type lagMonitor struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	nodes atomic.Pointer[[]*lagNode] // in configuration order; replaced on reload

	runMu   sync.Mutex      // guards runCtx and stopped, and serialises node list changes
	runCtx  context.Context // run's; nil before run
	stopped bool            // run is waiting for the sample loops to end
	loops   sync.WaitGroup

	mu      sync.Mutex  // guards history
	history []lsnSample // the primary's positions, oldest first, at most maxLagHistory long

	sampled atomic.Pointer[chan struct{}] // closed (and replaced) after every sample of any node
}

// maxLagHistory bounds the primary's position history; at 100 ms it covers 10 minutes, beyond which
// a replica's lag is reported as "at least" the history's age.
const maxLagHistory = 6000

type lsnSample struct {
	at  time.Time
	lsn topology.LSN
}

// lagNode is one node's latest sample.
type lagNode struct {
	name, address string
	cancel        context.CancelFunc // stops its sample loop
	state         atomic.Pointer[LagState]
	hurried       chan struct{} // a read waits for this replica to reach a position: sample now
	lagSeconds    prometheus.Gauge
	lagBytes      prometheus.Gauge
}

// LagState is a node's replication position as last sampled.
type LagState struct {
	Primary   bool          // the node reported it is not in recovery
	LSN       topology.LSN  // pg_current_wal_lsn() on the primary, pg_last_wal_replay_lsn() on a replica
	LagBytes  uint64        // WAL the primary had that this replica had not replayed (replicas)
	Lag       time.Duration // how long the oldest of that WAL has existed on the primary (replicas)
	SampledAt time.Time
}

func newLagMonitor(cfg Config, log *slog.Logger, m *metrics) *lagMonitor {
	lm := &lagMonitor{cfg: cfg, log: log, m: m}
	ch := make(chan struct{})
	lm.sampled.Store(&ch)
	nodes := make([]*lagNode, 0, len(cfg.Nodes))
	for _, n := range cfg.Nodes {
		nodes = append(nodes, lm.newNode(n))
	}
	lm.nodes.Store(&nodes)
	return lm
}

func (lm *lagMonitor) newNode(n NodeConfig) *lagNode {
	return &lagNode{name: n.Name, address: n.Address, hurried: make(chan struct{}, 1),
		lagSeconds: lm.m.replicaLag.WithLabelValues(n.Name), lagBytes: lm.m.replicaLagBytes.WithLabelValues(n.Name)}
}

func (lm *lagMonitor) list() []*lagNode { return *lm.nodes.Load() }

// setNodes follows a new node list: nodes that stay keep sampling, new ones start, removed ones stop.
func (lm *lagMonitor) setNodes(nodes []NodeConfig) {
	lm.runMu.Lock()
	defer lm.runMu.Unlock()
	old := map[string]*lagNode{}
	for _, n := range lm.list() {
		old[n.name] = n
	}
	next := make([]*lagNode, 0, len(nodes))
	for _, nc := range nodes {
		if n := old[nc.Name]; n != nil && n.address == nc.Address {
			next = append(next, n)
			delete(old, nc.Name)
			continue
		}
		n := lm.newNode(nc)
		next = append(next, n)
		if lm.runCtx != nil && !lm.stopped {
			lm.start(n)
		}
	}
	for _, n := range old {
		if n.cancel != nil {
			n.cancel()
		}
		lm.m.replicaLag.DeleteLabelValues(n.name)
		lm.m.replicaLagBytes.DeleteLabelValues(n.name)
	}
	lm.nodes.Store(&next)
}

// start runs a node's sample loop (runMu held).
func (lm *lagMonitor) start(n *lagNode) {
	ctx, cancel := context.WithCancel(lm.runCtx)
	n.cancel = cancel
	lm.loops.Go(func() {
		defer cancel()
		lm.sampleLoop(ctx, n)
	})
}

// state returns a node's latest sample, or nil before the first one or when sampling fails.
func (lm *lagMonitor) state(name string) *LagState {
	for _, n := range lm.list() {
		if n.name == name {
			return n.state.Load()
		}
	}
	return nil
}

// tooFarBehind reports whether a replica's last sampled lag exceeds max_replica_lag. A replica without
// a recent sample is judged by the role poller alone.
func (lm *lagMonitor) tooFarBehind(name string) bool {
	if lm == nil || lm.cfg.MaxReplicaLag <= 0 {
		return false
	}
	st := lm.state(name)
	return st != nil && !st.Primary && st.Lag > lm.cfg.MaxReplicaLag
}

// run samples every node until ctx ends.
func (lm *lagMonitor) run(ctx context.Context) {
	lm.runMu.Lock()
	lm.runCtx = ctx
	for _, n := range lm.list() {
		lm.start(n)
	}
	lm.runMu.Unlock()
	<-ctx.Done()
	lm.runMu.Lock()
	lm.stopped = true
	lm.runMu.Unlock()
	lm.loops.Wait()
}

// lagQuery asks for the node's role and position; COALESCE evaluates pg_current_wal_lsn() only on a
// primary, where the replay position is NULL (on a standby it would fail).
const lagQuery = "SELECT pg_is_in_recovery(), COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text"

func (lm *lagMonitor) sampleLoop(ctx context.Context, n *lagNode) {
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(lm.cfg.LagSampleInterval)
	defer t.Stop()
	var last time.Time
	for {
		if conn == nil || conn.IsClosed() {
			conn = lm.dial(ctx, n)
		}
		if conn != nil {
			last = time.Now()
			if !lm.sample(ctx, n, conn) {
				conn.Close(context.Background())
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.hurried:
			// Reads are waiting for this replica: sample again at once, at most every
			// hurriedSampleGap however many reads wait.
			if d := hurriedSampleGap - time.Since(last); d > 0 {
				time.Sleep(d)
			}
		}
	}
}

// hurriedSampleGap is the shortest time between two samples of a node while reads wait for it.
const hurriedSampleGap = time.Millisecond

// hurry asks every replica's sampler for a sample now (reads wait for a position the last samples do
// not show). Requests made while one is pending are merged.
func (lm *lagMonitor) hurry() {
	for _, n := range lm.list() {
		if st := n.state.Load(); st != nil && st.Primary {
			continue
		}
		select {
		case n.hurried <- struct{}{}:
		default:
		}
	}
}

func (lm *lagMonitor) dial(ctx context.Context, n *lagNode) *pgconn.PgConn {
	cfg, err := pgconn.ParseConfig(lm.cfg.serverConnString(n.address, lm.cfg.MonitorUser, lm.cfg.MonitorDatabase, lm.cfg.MonitorPassword))
	if err != nil {
		return nil
	}
	cfg.RuntimeParams["application_name"] = "meridian-proxy-lag"
	dctx, cancel := context.WithTimeout(ctx, lm.cfg.ServerConnectTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(dctx, cfg)
	if err != nil {
		n.state.Store(nil)
		return nil
	}
	return conn
}

// sample takes one sample; false means the connection is no longer usable.
func (lm *lagMonitor) sample(ctx context.Context, n *lagNode, conn *pgconn.PgConn) bool {
	qctx, cancel := context.WithTimeout(ctx, lm.cfg.ServerConnectTimeout)
	defer cancel()
	res, err := conn.Exec(qctx, lagQuery).ReadAll()
	now := time.Now()
	if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
		n.state.Store(nil)
		return false
	}
	row := res[0].Rows[0]
	lsn, err := topology.ParseLSN(string(row[1]))
	if err != nil {
		n.state.Store(nil)
		return true
	}
	st := &LagState{Primary: string(row[0]) == "f", LSN: lsn, SampledAt: now}
	if st.Primary {
		lm.recordPrimary(now, lsn)
	} else {
		st.LagBytes, st.Lag = lm.lagOf(now, lsn)
		n.lagSeconds.Set(st.Lag.Seconds())
		n.lagBytes.Set(float64(st.LagBytes))
	}
	n.state.Store(st)
	lm.announce()
	return true
}

// nextSample returns a channel closed when the next sample of any node is in: readers waiting for a
// replica to catch up wait on it instead of asking the replica.
func (lm *lagMonitor) nextSample() <-chan struct{} { return *lm.sampled.Load() }

func (lm *lagMonitor) announce() {
	ch := make(chan struct{})
	close(*lm.sampled.Swap(&ch))
}

func (lm *lagMonitor) recordPrimary(at time.Time, lsn topology.LSN) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	if k := len(lm.history); k > 0 && lsn < lm.history[k-1].lsn {
		lm.history = lm.history[:0] // a new primary (another timeline): start over
	}
	if k := len(lm.history); k > 0 && lm.history[k-1].lsn == lsn {
		return // unchanged: the first time the primary was at lsn is what lag is measured from
	}
	if len(lm.history) == maxLagHistory {
		lm.history = append(lm.history[:0], lm.history[1:]...)
	}
	lm.history = append(lm.history, lsnSample{at: at, lsn: lsn})
}

// lagOf returns how far a replica at replayed is behind the primary's latest known position: in bytes,
// and in time since the primary first had WAL beyond replayed.
func (lm *lagMonitor) lagOf(now time.Time, replayed topology.LSN) (uint64, time.Duration) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	k := len(lm.history)
	if k == 0 || replayed >= lm.history[k-1].lsn {
		return 0, 0
	}
	bytes := uint64(lm.history[k-1].lsn - replayed)
	// The oldest sample beyond replayed: positions only grow, so search from the newest backwards.
	i := k - 1
	for i > 0 && lm.history[i-1].lsn > replayed {
		i--
	}
	return bytes, max(0, now.Sub(lm.history[i].at))
}
