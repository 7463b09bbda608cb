package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/topology"
)

// NodeState is what the proxy currently knows about one server.
type NodeState struct {
	Name    string
	Region  string
	Address string
	Up      bool // answered the last poll
	Primary bool // not in recovery
	// LastSeenPrimary is true while a node that was last seen as the primary does not answer: the
	// cluster has not elected another, so writes wait for it (and errors can name it).
	LastSeenPrimary bool
	ReplayLSN       topology.LSN // replicas only
	RTT             time.Duration
	Err             string // why it is down
	CheckedAt       time.Time
	// DownSince is when the node's current run of failed polls began (zero while it answers or
	// before its first poll); Failures counts those polls.
	DownSince time.Time
	Failures  int
}

// Snapshot is an immutable view of the cluster at one moment. Routing reads it without locks.
type Snapshot struct {
	Nodes   []NodeState // in configuration order
	Primary string      // name of the single node not in recovery; empty when none or when several claim it
	Version uint64      // increases with every poll that changed something
	Seq     uint64      // increases with every poll
}

// Node returns the state of the named node.
func (s *Snapshot) Node(name string) (NodeState, bool) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeState{}, false
}

// Discovery tells the proxy which server is the primary and which replicas are healthy. Polling is
// the implementation here; the control plane replaces it with the etcd topology and its epochs.
type Discovery interface {
	// Current returns the latest snapshot (never nil).
	Current() *Snapshot
	// Refresh asks for an immediate re-check (after a server said 25006, or a connection broke).
	Refresh()
}

// poller discovers roles by asking each node pg_is_in_recovery() every interval.
type poller struct {
	cfg  Config
	log  *slog.Logger
	snap atomic.Pointer[Snapshot]
	kick chan struct{}

	// onRefreshFunctions re-reads, from the primary at the given address, the user-defined
	// volatile functions whose calls must run there (the classifier cannot know them from the
	// statement text); see volatility.
	onRefreshFunctions func(ctx context.Context, primaryAddr string)
	// onNodeDown is told when a node that answered stops answering.
	onNodeDown func(node, reason string)
	// downLogEvery is how often a node that stays down is logged again (downLogInterval; tests
	// shorten it). logged is when each down node was last logged; only pollOnce uses it.
	downLogEvery time.Duration
	logged       map[string]time.Time

	mu      sync.Mutex // guards conns and pending
	conns   map[string]*pgconn.PgConn
	pending []NodeConfig // a new node list (reload), applied by the next poll
}

// setNodes replaces the node list from the next poll on; nodes that stay keep their state.
func (p *poller) setNodes(nodes []NodeConfig) {
	p.mu.Lock()
	p.pending = slices.Clone(nodes)
	p.mu.Unlock()
	p.Refresh()
}

func newPoller(cfg Config, log *slog.Logger) *poller {
	p := &poller{cfg: cfg, log: log, kick: make(chan struct{}, 1), conns: map[string]*pgconn.PgConn{},
		downLogEvery: downLogInterval, logged: map[string]time.Time{}}
	nodes := make([]NodeState, len(cfg.Nodes))
	for i, n := range cfg.Nodes {
		nodes[i] = NodeState{Name: n.Name, Region: n.Region, Address: n.Address, Err: "not polled yet"}
	}
	p.snap.Store(&Snapshot{Nodes: nodes})
	return p
}

func (p *poller) Current() *Snapshot { return p.snap.Load() }

func (p *poller) Refresh() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// run polls until ctx ends, then closes its connections.
func (p *poller) run(ctx context.Context) {
	defer p.closeAll()
	tick := time.NewTicker(p.cfg.PollInterval)
	defer tick.Stop()
	kicked := true
	for {
		p.pollOnce(ctx, kicked)
		kicked = false
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-p.kick:
			kicked = true
		}
	}
}

// pollOnce checks every node concurrently and publishes a new snapshot. The volatile functions of
// the databases in use are re-read every tenth poll, on demand (kicked) and when the primary changes.
func (p *poller) pollOnce(ctx context.Context, kicked bool) {
	prev := p.Current()
	p.mu.Lock()
	pending := p.pending
	p.pending = nil
	p.mu.Unlock()
	if pending != nil {
		prev = p.withNodes(prev, pending)
	}
	next := make([]NodeState, len(prev.Nodes))
	var wg sync.WaitGroup
	for i, n := range prev.Nodes {
		wg.Go(func() { next[i] = p.check(ctx, n) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	var primaries []string
	for _, n := range next {
		if n.Up && n.Primary {
			primaries = append(primaries, n.Name)
		}
	}
	snap := &Snapshot{Nodes: next, Version: prev.Version, Seq: prev.Seq + 1}
	switch len(primaries) {
	case 1:
		snap.Primary = primaries[0]
	case 0:
	default:
		// Never two writers: with two servers out of recovery, refuse writes until it is resolved.
		p.log.Error("several nodes claim to be primary; refusing writes", "nodes", strings.Join(primaries, ","))
	}
	for i, n := range next {
		p.logNode(prev.Nodes[i], n)
	}
	if changed(prev, snap) {
		snap.Version++
		for i, n := range next {
			if prev.Nodes[i].Up && !n.Up && p.onNodeDown != nil {
				p.onNodeDown(n.Name, n.Err)
			}
		}
	}
	if snap.Primary != "" && p.onRefreshFunctions != nil && (kicked || snap.Seq%10 == 0 || snap.Primary != prev.Primary) {
		if n, ok := snap.Node(snap.Primary); ok {
			p.onRefreshFunctions(ctx, n.Address)
		}
	}
	p.snap.Store(snap)
}

// withNodes is prev with the node list replaced: nodes with the same name and address keep their
// state, the others start unpolled; connections to nodes that left are closed.
func (p *poller) withNodes(prev *Snapshot, nodes []NodeConfig) *Snapshot {
	next := &Snapshot{Version: prev.Version + 1, Seq: prev.Seq, Primary: prev.Primary}
	keep := map[string]bool{}
	for _, n := range nodes {
		st := NodeState{Name: n.Name, Region: n.Region, Address: n.Address, Err: "not polled yet"}
		if o, ok := prev.Node(n.Name); ok && o.Address == n.Address {
			st = o
			st.Region = n.Region
			keep[n.Name] = true
		}
		next.Nodes = append(next.Nodes, st)
	}
	if _, ok := next.Node(next.Primary); !ok {
		next.Primary = ""
	}
	for name := range p.logged {
		if !keep[name] {
			delete(p.logged, name)
		}
	}
	p.mu.Lock()
	for name, c := range p.conns {
		if !keep[name] {
			c.Close(context.Background())
			delete(p.conns, name)
		}
	}
	p.mu.Unlock()
	p.log.Info("node list changed", "nodes", len(nodes))
	return next
}

// downLogInterval is how often a node that stays down is logged again, with its failures since.
const downLogInterval = time.Minute

// logNode logs what changed about a node between two polls: a node coming up or changing role, the
// first failed poll of a node (at start, or after it answered), and, at most every downLogEvery, a
// node that stays down with its latest error and failure count. Nodes start as down, so logging
// only changes would leave a proxy whose nodes never answer silent.
func (p *poller) logNode(o, n NodeState) {
	attrs := []any{"node", n.Name, "region", n.Region, "address", n.Address}
	switch {
	case n.Up && (!o.Up || o.Primary != n.Primary):
		attrs = append(attrs, "primary", n.Primary)
		if o.Failures > 0 {
			attrs = append(attrs, "down_for", n.CheckedAt.Sub(o.DownSince).Round(time.Millisecond), "failures", o.Failures)
		}
		p.log.Info("node state changed", append(attrs, "up", true)...)
		delete(p.logged, n.Name)
	case n.Up:
	case n.Failures == 1:
		if o.Up {
			attrs = append(attrs, "was_primary", o.Primary)
		}
		p.log.Warn("node unreachable", append(attrs, "err", n.Err)...)
		p.logged[n.Name] = n.CheckedAt
	case n.CheckedAt.Sub(p.logged[n.Name]) >= p.downLogEvery:
		p.log.Warn("node still unreachable", append(attrs, "err", n.Err, "failures", n.Failures,
			"down_for", n.CheckedAt.Sub(n.DownSince).Round(time.Millisecond))...)
		p.logged[n.Name] = n.CheckedAt
	}
}

func changed(a, b *Snapshot) bool {
	if a.Primary != b.Primary {
		return true
	}
	return !slices.EqualFunc(a.Nodes, b.Nodes, func(x, y NodeState) bool { return x.Up == y.Up && x.Primary == y.Primary })
}

const pollQuery = "SELECT pg_is_in_recovery(), COALESCE(pg_last_wal_replay_lsn()::text, '0/0')"

// check polls one node over its monitor connection, reconnecting when needed.
func (p *poller) check(ctx context.Context, n NodeState) NodeState {
	n.CheckedAt = time.Now()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ServerConnectTimeout)
	defer cancel()
	conn, err := p.conn(ctx, n)
	if err != nil {
		return down(n, err)
	}
	start := time.Now()
	res, err := conn.Exec(ctx, pollQuery).ReadAll()
	rtt := time.Since(start)
	if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
		p.dropConn(n.Name, conn)
		if err == nil {
			err = fmt.Errorf("unexpected answer to the role query")
		}
		return down(n, err)
	}
	row := res[0].Rows[0]
	n.Up, n.Err, n.DownSince, n.Failures = true, "", time.Time{}, 0
	n.Primary = string(row[0]) == "f"
	n.LastSeenPrimary = n.Primary
	n.ReplayLSN, _ = topology.ParseLSN(string(row[1]))
	// Smooth RTT a little so one slow poll does not reorder replicas.
	if n.RTT == 0 {
		n.RTT = rtt
	} else {
		n.RTT = (3*n.RTT + rtt) / 4
	}
	return n
}

func down(n NodeState, err error) NodeState {
	n.Up, n.Primary, n.Err = false, false, err.Error()
	if n.Failures == 0 {
		n.DownSince = n.CheckedAt
	}
	n.Failures++
	return n
}

func (p *poller) conn(ctx context.Context, n NodeState) (*pgconn.PgConn, error) {
	p.mu.Lock()
	c := p.conns[n.Name]
	p.mu.Unlock()
	if c != nil && !c.IsClosed() {
		return c, nil
	}
	cfg, err := pgconn.ParseConfig(p.cfg.serverConnString(n.Address, p.cfg.MonitorUser, p.cfg.MonitorDatabase, p.cfg.MonitorPassword))
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["application_name"] = "meridian-proxy-monitor"
	c, err = pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.conns[n.Name] = c
	p.mu.Unlock()
	return c, nil
}

func (p *poller) dropConn(name string, c *pgconn.PgConn) {
	p.mu.Lock()
	if p.conns[name] == c {
		delete(p.conns, name)
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Close(ctx)
}

func (p *poller) closeAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[string]*pgconn.PgConn{}
	p.mu.Unlock()
	for _, c := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.Close(ctx)
		cancel()
	}
}

// connString builds a keyword/value connection string.
func connString(address, user, database, password string) string {
	host, port := splitAddr(address)
	s := fmt.Sprintf("host=%s port=%s user=%s dbname=%s", quoteConn(host), port, quoteConn(user), quoteConn(database))
	if password != "" {
		s += " password=" + quoteConn(password)
	}
	return s
}

func quoteConn(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
