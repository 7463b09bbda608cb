package proxy

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/topology"
)

// Read consistency modes (SET meridian.consistency), DESIGN §4.
const (
	consistencyEventual = "eventual" // any healthy replica (within max_replica_lag)
	consistencyBounded  = "bounded"  // a replica at most meridian.max_staleness behind, else wait, else the primary
	consistencySession  = "session"  // the session's own commits are visible: replay LSN ≥ its last commit LSN
	consistencyGlobal   = "global"   // everything committed anywhere before the read started is visible
)

// Outcomes of a read with a consistency condition, for meridian_proxy_consistency_reads_total.
const (
	outcomeImmediate = "replica_immediately"
	outcomeAfterWait = "replica_after_wait"
	outcomePrimary   = "primary_fallback"
)

// commitLSNQuery is pipelined behind a write's commit, on the same server connection, in session
// mode: its answer is the session's new read floor. The insert position (not the write position) is
// taken so that a commit with synchronous_commit = off, not yet written when the query runs, is still
// covered; see floorOf for the one case where the two differ on an idle server.
const commitLSNQuery = "SELECT pg_catalog.pg_current_wal_insert_lsn()"

// floorOf turns an insert position into the WAL position a replica's replay position reaches once it
// has replayed everything inserted before it. They differ when the last record ended exactly at a page
// boundary: the insert position then points past the next page's header, which no record fills until
// the next one is written (an idle server could leave the replica "behind" forever).
func floorOf(insert topology.LSN) topology.LSN {
	const page, segment = 8192, 16 << 20
	const shortHeader, longHeader = 24, 40 // MAXALIGN'd XLogPageHeaderData / XLogLongPageHeaderData
	switch {
	case insert%segment == longHeader:
		return insert - longHeader
	case insert%page == shortHeader:
		return insert - shortHeader
	}
	return insert
}

// parseSessionDuration reads a duration as PostgreSQL's GUCs accept it: a number of milliseconds, or
// with a unit ("200ms", "1s", "1.5s", "2min").
func parseSessionDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if ms, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(ms * float64(time.Millisecond)), nil
	}
	v = strings.Replace(v, "min", "m", 1)
	return time.ParseDuration(strings.ReplaceAll(v, " ", ""))
}

// validConsistency reports whether mode is a consistency mode name.
func validConsistency(mode string) bool {
	switch mode {
	case consistencyEventual, consistencyBounded, consistencySession, consistencyGlobal:
		return true
	}
	return false
}

// setConsistency applies SET meridian.consistency / max_staleness / max_wait / min_lsn.
func (c *client) setConsistency(name, value string) error {
	switch name {
	case "meridian.consistency":
		switch {
		case value == "" || value == "default":
			c.consistency = c.defaults.Consistency
		case validConsistency(value):
			c.consistency = value
		default:
			return &pgError{Severity: "ERROR", Code: codeInvalidParameter,
				Message: fmt.Sprintf("invalid value for parameter \"meridian.consistency\": %q", value),
				Hint:    "Available values: eventual, bounded, session, global."}
		}
		return nil
	case "meridian.max_staleness", "meridian.max_wait":
		d := time.Duration(-1)
		if value == "" || value == "default" {
			d = c.defaults.MaxStaleness
			if name == "meridian.max_wait" {
				d = c.defaults.MaxWait
			}
		} else if v, err := parseSessionDuration(value); err == nil {
			d = v
		}
		if d < 0 || d > time.Hour {
			return &pgError{Severity: "ERROR", Code: codeInvalidParameter,
				Message: fmt.Sprintf("invalid value for parameter %q: %q", name, value),
				Hint:    "Use a duration from 0 to 1h, such as '200ms' or '1s' (a plain number is milliseconds)."}
		}
		if name == "meridian.max_staleness" {
			c.maxStaleness = d
		} else {
			c.maxWait = d
		}
		return nil
	case "meridian.min_lsn":
		if value == "" || value == "default" {
			c.minLSN = 0
			return nil
		}
		lsn, err := topology.ParseLSN(strings.ToUpper(value))
		if err != nil {
			return &pgError{Severity: "ERROR", Code: codeInvalidParameter,
				Message: fmt.Sprintf("invalid value for parameter \"meridian.min_lsn\": %q", value),
				Hint:    "Use a WAL position as PostgreSQL prints it, such as '0/3000148' (SHOW meridian.commit_lsn after a write gives one)."}
		}
		c.minLSN = max(c.minLSN, lsn) // positions only grow: an older token never lowers the floor
		return nil
	case "meridian.commit_lsn":
		return &pgError{Severity: "ERROR", Code: "55P02", Message: "parameter \"meridian.commit_lsn\" cannot be changed",
			Hint: "It reports the session's last commit position; to make reads wait for a position, SET meridian.min_lsn."}
	}
	return errUnknownSetting
}

// readCondition is what a read must see, from the session's mode and positions.
type readCondition struct {
	mode  string
	floor topology.LSN  // the replica must have replayed at least this far (0: no floor)
	bound time.Duration // the replica's lag must be at most this (< 0: no bound)
}

// readCondition returns the condition the session's next read must meet.
func (c *client) readCondition() readCondition {
	rc := readCondition{mode: c.consistency, floor: c.minLSN, bound: -1}
	switch c.consistency {
	case consistencyBounded:
		rc.bound = c.maxStaleness
	case consistencySession:
		rc.floor = max(rc.floor, c.commitLSN)
	}
	return rc
}

// readTarget routes a read under the session's consistency condition.
func (c *client) readTarget(snap *Snapshot) (target, error) {
	if c.copyFloor && c.consistency == consistencySession {
		// A COPY FROM STDIN committed, and nothing could be pipelined behind it to learn where: the
		// primary's position now, asked once for this read (and shared with global reads), is past
		// it. It becomes the session's commit position, reported as for any write.
		lsn, err := c.p.global.position(c.p.ctx, c.canceled, snap)
		if err != nil {
			if t, err := c.p.primaryTarget(snap); err == nil {
				return t, nil // the primary has the rows
			}
			return target{}, c.p.readRefused(snap, "the first read in session consistency after a COPY FROM STDIN "+
				"needs the primary's current WAL position (to see the copied rows), or the primary", "")
		}
		c.copyFloor = false
		if lsn = floorOf(lsn); lsn > c.commitLSN {
			c.commitLSN = lsn
			_, _ = c.wr.Write(appendParameterStatus(c.out[:0], "meridian.commit_lsn", lsn.String()))
		}
	}
	rc := c.readCondition()
	if c.consistency == consistencyGlobal {
		lsn, err := c.p.global.position(c.p.ctx, c.canceled, snap)
		if err != nil {
			return target{}, err
		}
		rc.floor = max(rc.floor, floorOf(lsn))
	}
	if rc.floor == 0 && rc.bound < 0 {
		t, err := c.p.replicaTarget(snap)
		if rc.mode != consistencyEventual && err == nil {
			outcome := outcomeImmediate
			if t.route == routePrimary {
				outcome = outcomePrimary
			}
			c.p.metrics.countConsistency(rc.mode, outcome)
		}
		return t, err
	}
	return c.p.consistentTarget(snap, rc, c.maxWait, c.canceled)
}

// consistentTarget picks a replica that meets rc — in this region first, then the nearest — waiting up
// to maxWait for one to catch up, else the primary. It holds no server connection while it waits, and
// waits on the lag monitor's samples, not by asking the replicas itself: when a read needs a position
// the last samples do not show, it asks the samplers to hurry (one query per replica however many
// reads wait).
func (p *Proxy) consistentTarget(snap *Snapshot, rc readCondition, maxWait time.Duration, canceled <-chan struct{}) (target, error) {
	start := time.Now()
	fresh := p.cfg.LagSampleInterval*5 + time.Second
	meets := func(name string) bool {
		st := p.lag.state(name)
		if st == nil || st.Primary || time.Since(st.SampledAt) > fresh {
			return false
		}
		return st.LSN >= rc.floor && (rc.bound < 0 || st.Lag <= rc.bound)
	}
	var deadline *time.Timer // started on the first wait
	defer func() {
		if deadline != nil {
			deadline.Stop()
		}
	}()
	for {
		next := p.lag.nextSample() // taken before looking, so a sample in between is not missed
		if t, ok := p.replicaWhere(snap, meets); ok {
			outcome := outcomeImmediate
			switch {
			case t.route == routePrimary:
				outcome = outcomePrimary
			case deadline != nil:
				outcome = outcomeAfterWait
			}
			p.metrics.observeConsistency(rc.mode, outcome, time.Since(start))
			return t, nil
		}
		if deadline == nil {
			if maxWait <= 0 {
				break
			}
			deadline = time.NewTimer(maxWait)
		}
		if rc.floor > 0 {
			p.lag.hurry()
		}
		select {
		case <-next:
			snap = p.disc.Current()
			continue
		case <-canceled: // the client canceled its statement (nil: never)
			return target{}, errCanceled()
		case <-deadline.C:
		case <-p.ctx.Done():
		}
		break
	}
	p.metrics.observeConsistency(rc.mode, outcomePrimary, time.Since(start))
	t, err := p.primaryTarget(snap)
	if err != nil {
		return target{}, p.readRefused(snap, rc.need(), fmt.Sprintf("no replica met it within %v (meridian.max_wait)", max(maxWait, 0)))
	}
	return t, nil
}

// need says, for a read refused because neither a replica nor the primary could serve it, what the read
// needed.
func (rc readCondition) need() string {
	var want []string
	if rc.floor > 0 {
		switch rc.mode {
		case consistencySession:
			want = append(want, fmt.Sprintf("has replayed the session's last commit or meridian.min_lsn (%s)", rc.floor))
		case consistencyGlobal:
			want = append(want, fmt.Sprintf("has replayed up to the primary's position when the read started (%s)", rc.floor))
		default:
			want = append(want, fmt.Sprintf("has replayed up to meridian.min_lsn (%s)", rc.floor))
		}
	}
	if rc.bound >= 0 {
		want = append(want, fmt.Sprintf("is at most %v behind (meridian.max_staleness)", rc.bound))
	}
	return fmt.Sprintf("a read in %s consistency needs a replica that %s, or the primary", rc.mode, strings.Join(want, " and "))
}

// replicaWhere returns a healthy replica that also satisfies ok: in this region first (round robin is
// not needed for correctness here; the first is taken), then a primary in this region (it has
// everything), then the nearest replica elsewhere by RTT.
func (p *Proxy) replicaWhere(snap *Snapshot, ok func(name string) bool) (target, bool) {
	var nearest *NodeState
	for i := range snap.Nodes {
		n := &snap.Nodes[i]
		if !n.Up || n.Primary || n.Name == snap.Primary || !ok(n.Name) {
			continue
		}
		if n.Region == p.cfg.Region {
			return target{node: *n, route: routeLocal}, true
		}
		if nearest == nil || n.RTT < nearest.RTT {
			nearest = n
		}
	}
	if pn, found := snap.Node(snap.Primary); found && pn.Region == p.cfg.Region {
		return target{node: pn, route: routePrimary}, true // no lag on the primary, and it is here
	}
	if nearest != nil {
		return target{node: *nearest, route: routeRemote}, true
	}
	return target{}, false
}

// globalPosition learns the primary's current WAL position for global reads. Reads that arrive while
// a query is in flight wait for the next one (a position read before they started would not cover
// commits acknowledged just before them); every read waiting at that moment shares it, so a burst of
// global reads costs one round trip to the primary, not one each.
type globalPosition struct {
	p *Proxy

	mu      sync.Mutex
	waiters []chan globalAnswer // reads waiting for the next query
	running bool                // a query is in flight (its result is not for the current waiters)
	conn    *pgconn.PgConn      // to the primary, reused between queries
	address string              // conn's primary
}

type globalAnswer struct {
	lsn topology.LSN
	err error
}

// position returns a WAL position of the primary read after the call began.
func (g *globalPosition) position(ctx context.Context, canceled <-chan struct{}, snap *Snapshot) (topology.LSN, error) {
	t, err := g.p.primaryTarget(snap)
	if err != nil {
		return 0, g.p.readRefused(snap, "a read in global consistency needs the primary's current WAL position "+
			"(to see everything committed before it started)", "")
	}
	ch := make(chan globalAnswer, 1)
	g.mu.Lock()
	g.waiters = append(g.waiters, ch)
	if !g.running {
		g.running = true
		go g.run(t.node.Address)
	}
	g.mu.Unlock()
	select {
	case a := <-ch:
		return a.lsn, a.err
	case <-canceled: // the client canceled its statement (nil: never); the answer goes unread
		return 0, errCanceled()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run answers batches of waiters until none is left.
func (g *globalPosition) run(address string) {
	for {
		g.mu.Lock()
		batch := g.waiters
		g.waiters = nil
		if len(batch) == 0 {
			g.running = false
			if g.p.ctx.Err() != nil && g.conn != nil {
				g.conn.Close(context.Background())
				g.conn = nil
			}
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		lsn, err := g.query(address)
		for _, ch := range batch {
			ch <- globalAnswer{lsn, err}
		}
		if snap := g.p.disc.Current(); snap.Primary != "" {
			if n, ok := snap.Node(snap.Primary); ok {
				address = n.Address
			}
		}
	}
}

func (g *globalPosition) query(address string) (topology.LSN, error) {
	cfg := g.p.cfg
	ctx, cancel := context.WithTimeout(g.p.ctx, cfg.ServerConnectTimeout)
	defer cancel()
	if g.conn != nil && (g.address != address || g.conn.IsClosed()) {
		g.conn.Close(context.Background())
		g.conn = nil
	}
	if g.conn == nil {
		pc, err := pgconn.ParseConfig(cfg.serverConnString(address, cfg.MonitorUser, cfg.MonitorDatabase, cfg.MonitorPassword))
		if err == nil {
			pc.RuntimeParams["application_name"] = "meridian-proxy-global"
			g.conn, err = pgconn.ConnectConfig(ctx, pc)
		}
		if err != nil {
			return 0, &pgError{Severity: "ERROR", Code: codeCannotConnectNow,
				Message: fmt.Sprintf("a read in global consistency needs the primary's current WAL position, and the primary (%s) does not answer: %v", address, err),
				Hint:    readRefusedHint}
		}
		g.address = address
	}
	res, err := g.conn.Exec(ctx, commitLSNQuery).ReadAll()
	if err == nil && (len(res) != 1 || len(res[0].Rows) != 1) {
		err = fmt.Errorf("unexpected answer to %s", commitLSNQuery)
	}
	var lsn topology.LSN
	if err == nil {
		lsn, err = topology.ParseLSN(string(res[0].Rows[0][0]))
	}
	if err != nil {
		g.conn.Close(context.Background())
		g.conn = nil
		return 0, &pgError{Severity: "ERROR", Code: codeCannotConnectNow,
			Message: fmt.Sprintf("a read in global consistency needs the primary's current WAL position, and asking the primary (%s) failed: %v", address, err),
			Hint:    readRefusedHint}
	}
	return lsn, nil
}

// close releases the connection to the primary.
func (g *globalPosition) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conn != nil && !g.running {
		g.conn.Close(context.Background())
		g.conn = nil
	}
}
