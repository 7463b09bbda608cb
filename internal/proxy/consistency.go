package proxy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Read consistency modes (SET meridian.consistency). DESIGN §4 defines four; eventual and bounded are
// built on the lag monitor. session and global need the commit position of each write (a query
// pipelined behind the commit) and are not available yet: asking for them is an error, not a silent
// downgrade.
const (
	consistencyEventual = "eventual" // any healthy replica (within max_replica_lag)
	consistencyBounded  = "bounded"  // a replica at most meridian.max_staleness behind, else wait, else the primary
)

// Outcomes of a bounded read, for meridian_proxy_consistency_reads_total.
const (
	outcomeImmediate = "replica_immediately"
	outcomeAfterWait = "replica_after_wait"
	outcomePrimary   = "primary_fallback"
)

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

// setConsistency applies SET meridian.consistency / max_staleness / max_wait.
func (c *client) setConsistency(name, value string) error {
	switch name {
	case "meridian.consistency":
		switch value {
		case "", "default":
			c.consistency = c.p.cfg.DefaultConsistency
		case consistencyEventual, consistencyBounded:
			c.consistency = value
		case "session", "global":
			return &pgError{Severity: "ERROR", Code: codeFeatureNotSupported,
				Message: fmt.Sprintf("meridian.consistency = %s is not available in this version of the proxy", value),
				Hint:    "Available values: eventual, bounded (with meridian.max_staleness)."}
		default:
			return &pgError{Severity: "ERROR", Code: codeInvalidParameter,
				Message: fmt.Sprintf("invalid value for parameter \"meridian.consistency\": %q", value),
				Hint:    "Available values: eventual, bounded."}
		}
		return nil
	case "meridian.max_staleness", "meridian.max_wait":
		d := time.Duration(-1)
		if value == "" || value == "default" {
			d = c.p.cfg.DefaultMaxStaleness
			if name == "meridian.max_wait" {
				d = c.p.cfg.ConsistencyMaxWait
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
	}
	return errUnknownSetting
}

// boundedTarget picks a replica whose sampled lag is at most bound — in this region first, then the
// nearest — waiting up to maxWait for one to catch up, else the primary. It holds no server connection
// while it waits, and waits on the lag monitor's samples, not by asking the replicas.
func (p *Proxy) boundedTarget(snap *Snapshot, bound, maxWait time.Duration) (target, error) {
	start := time.Now()
	within := func(name string) bool {
		st := p.lag.state(name)
		return st != nil && !st.Primary && st.Lag <= bound && time.Since(st.SampledAt) < p.cfg.LagSampleInterval*5+time.Second
	}
	var deadline *time.Timer // started on the first wait
	defer func() {
		if deadline != nil {
			deadline.Stop()
		}
	}()
	for {
		next := p.lag.nextSample() // taken before looking, so a sample in between is not missed
		if t, ok := p.replicaWhere(snap, within); ok {
			outcome := outcomeImmediate
			if deadline != nil {
				outcome = outcomeAfterWait
			}
			p.metrics.observeConsistency(consistencyBounded, outcome, time.Since(start))
			return t, nil
		}
		if deadline == nil {
			deadline = time.NewTimer(maxWait)
		}
		select {
		case <-next:
			snap = p.disc.Current()
			continue
		case <-deadline.C:
		case <-p.ctx.Done():
		}
		p.metrics.observeConsistency(consistencyBounded, outcomePrimary, time.Since(start))
		return p.primaryTarget(snap)
	}
}

// replicaWhere returns a healthy replica that also satisfies ok: in this region first (round robin is
// not needed for correctness here; the first is taken), then the nearest by RTT.
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
