package controller

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/meridiandb/meridian/internal/topology"
)

// Unplanned failover: fence, the two-phase handshake, choose, promote, publish.

// startFailover fences: epoch E+1 with no primary, the old primary's desired role fenced.
func (d *decider) startFailover(reason, msg string) {
	p := d.cur.Primary
	last, live := d.status(p)
	if !live {
		last = d.in.Timers.LastSeen[p]
	}
	op := &topology.Operation{Kind: topology.OpFailover, From: p, FromLSN: last.Position(), StartedAt: d.in.Now}
	estimated := false
	if !op.FromLSN.Valid() {
		// No status of the old primary was ever seen (a new leader whose timers are empty): the
		// furthest position any node reports is a lower bound of what it had written, so that the
		// max_failover_lag check and the lost range still mean something (an underestimate).
		for _, st := range d.in.Nodes {
			op.FromLSN = max(op.FromLSN, st.Position())
		}
		estimated = true
	}
	if d.req != nil && d.req.Kind == RequestFailover {
		if n, ok := d.cur.Node(d.req.To); d.req.To != "" && (!ok || n.Role != topology.RoleReplica) {
			d.refuse("bad_candidate", fmt.Sprintf("%q is not a replica of the topology; name a replica for failover --to", d.req.To))
		} else {
			// The lease expired anyway; the operator's candidate and force apply to this failover.
			op.To, op.Forced = d.req.To, d.req.Force
			d.req = nil
		}
	}
	d.next.Primary, d.next.State, d.next.Operation = "", topology.StateFailingOver, op
	d.next.Reason = "failover from " + p + ": " + reason
	d.setRole(p, topology.RoleFenced, "")
	var streaming []string
	for _, n := range d.cur.Nodes {
		if st, ok := d.status(n.Name); ok && n.Name != p && st.Streaming {
			streaming = append(streaming, n.Name)
		}
	}
	details := map[string]string{
		"reason":             reason,
		"from":               p,
		"from_lsn":           op.FromLSN.String(),
		"replicas_streaming": strings.Join(streaming, ","), // evidence: replicas still receiving from it
	}
	if !last.At.IsZero() {
		details["last_seen"] = last.At.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	if op.To != "" {
		details["requested"] = op.To
	}
	if estimated {
		details["from_lsn_estimated"] = "true"
	}
	d.event(topology.EventFailoverStarted, p, msg, details)
	d.event(topology.EventNodeFenced, p, p+" fenced: no writes until it rejoins", map[string]string{"reason": reason})
	d.act(Fence{Node: p})
}

func (d *decider) failingOver() {
	op := d.next.Operation
	if op == nil || op.Kind != topology.OpFailover {
		// A topology written without its operation: adopt it, resuming from the roles.
		op = &topology.Operation{Kind: topology.OpFailover, StartedAt: d.cur.UpdatedAt}
		for _, n := range d.cur.Nodes {
			if n.Role == topology.RoleFenced {
				op.From = n.Name
				break
			}
		}
		d.next.Operation = op
	}
	if d.req != nil && d.req.Kind == RequestFailover {
		if op.Promoting {
			d.refuse("failover_in_progress", fmt.Sprintf("a failover is already promoting %s", op.To))
		} else if d.req.To == "" {
			op.Forced, op.Blocked = d.req.Force, "" // no node named: force (or not) the best candidate
			d.req = nil
		} else if n, ok := d.cur.Node(d.req.To); !ok || n.Role != topology.RoleReplica {
			d.refuse("bad_candidate", fmt.Sprintf("%q is not a replica of the topology; name a replica for failover --to", d.req.To))
		} else {
			op.To, op.Forced, op.Blocked = d.req.To, d.req.Force, ""
			d.req = nil
		}
	}
	// The two-phase handshake, checked again in every decision up to the publication (not only
	// before the choice): nothing is promoted or published while the old primary could still write.
	epoch := d.cur.Epoch
	if op.From != "" && !(op.Promoting && op.To == op.From) { // (the old primary back and chosen competes with no one)
		if st, live := d.status(op.From); live && !fenceAcknowledged(st, epoch) {
			d.waitf("old primary %s still holds its lease and has not acknowledged the fence of epoch %d; its lease expires within %v", op.From, epoch, d.in.Config.LeaseTTL)
			d.act(Fence{Node: op.From})
			return
		}
	}
	for _, name := range op.Abandoned {
		if st, live := d.status(name); live && name != op.To && !fenceAcknowledged(st, epoch) {
			d.waitf("abandoned candidate %s still holds its lease and has not acknowledged epoch %d", name, epoch)
			d.act(Fence{Node: name})
			return
		}
	}
	if pending := d.proxiesBehind(epoch, false); len(pending) > 0 {
		d.waitf("proxies %s have not applied fencing epoch %d", strings.Join(pending, ", "), epoch)
		if d.in.Now.Sub(op.StartedAt) >= d.in.Config.ProxyApplyWait {
			d.block(op, topology.EventFailoverBlocked, "proxies_not_applied", map[string]string{"proxies": strings.Join(pending, ",")},
				fmt.Sprintf("live proxies %s have not applied epoch %d after proxy_apply_wait %v; promotion waits for them or for their leases to expire", strings.Join(pending, ", "), epoch, d.in.Config.ProxyApplyWait))
		}
		return
	}
	if op.Promoting {
		d.failoverPromoting(op)
		return
	}
	d.choose(op)
}

// fenceAcknowledged: the old primary's agent, still holding its lease, has acted on the fencing epoch
// and its PostgreSQL is down or no longer a primary. That is as good as an expired lease: an agent that
// has acted on an epoch never goes back to an earlier one.
func fenceAcknowledged(st topology.NodeStatus, epoch uint64) bool {
	return st.Epoch >= epoch && (!st.Up || st.Role != topology.RolePrimary)
}

// proxiesBehind lists the live proxies that have not applied epoch (and, with paused, do not hold
// writes yet), by name.
func (d *decider) proxiesBehind(epoch uint64, paused bool) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(d.in.Proxies)) {
		p := d.in.Proxies[name]
		if p.AppliedEpoch < epoch || (paused && !p.WritesPaused) {
			out = append(out, name)
		}
	}
	return out
}

// block records why the failover cannot go on; the event is emitted once per reason.
func (d *decider) block(op *topology.Operation, kind topology.EventKind, reason string, details map[string]string, msg string) {
	d.waitf("%s", msg)
	if op.Blocked == reason {
		return
	}
	op.Blocked = reason
	details["reason"] = reason
	d.event(kind, op.To, msg, details)
}

type candidate struct {
	node topology.Node
	st   topology.NodeStatus
}

// candidates ranks the failover candidates: live replicas running in recovery (in the sync mode, only
// the synchronous standbys, unless forced), by received position, then region priority, node priority
// and name. With fenced set, it ranks the fenced nodes running as standbys instead (the fallback when
// no replica is left): in the sync mode only the old primary itself, which has every commit it
// acknowledged, unless forced.
func (d *decider) candidates(op *topology.Operation, fenced bool) []candidate {
	var out []candidate
	for _, n := range d.cur.Nodes {
		st, live := d.status(n.Name)
		if !live || !st.Up || st.Role != topology.RoleReplica {
			continue
		}
		sync := len(d.cur.SyncStandbys) > 0 && !op.Forced
		switch {
		case !fenced && (n.Name == op.From || n.Role != topology.RoleReplica):
			continue
		case !fenced && sync && !slices.Contains(d.cur.SyncStandbys, n.Name):
			continue
		case fenced && n.Role != topology.RoleFenced:
			continue
		case fenced && sync && n.Name != op.From:
			continue
		}
		out = append(out, candidate{n, st})
	}
	slices.SortFunc(out, func(a, b candidate) int {
		return cmp.Or(
			b.st.Position().Compare(a.st.Position()),
			cmp.Compare(d.regionRank(a.node.Region), d.regionRank(b.node.Region)),
			cmp.Compare(a.node.Priority, b.node.Priority),
			cmp.Compare(a.node.Name, b.node.Name))
	})
	return out
}

func (d *decider) regionRank(region string) int {
	if i := slices.Index(d.in.Config.RegionPriority, region); i >= 0 {
		return i
	}
	return len(d.in.Config.RegionPriority)
}

func (d *decider) choose(op *topology.Operation) {
	cands := d.candidates(op, false)
	fallback := false
	if n, _ := d.cur.Node(op.To); len(cands) == 0 || n.Role == topology.RoleFenced {
		cands, fallback = d.candidates(op, true), true
	}
	if op.To != "" {
		i := slices.IndexFunc(cands, func(c candidate) bool { return c.node.Name == op.To })
		if i < 0 {
			d.block(op, topology.EventFailoverBlocked, "requested_candidate_unavailable", map[string]string{"candidate": op.To},
				fmt.Sprintf("requested candidate %s is not a live, running replica%s", op.To, d.syncNote()))
			return
		}
		cands = cands[i : i+1]
	}
	if len(cands) == 0 {
		d.block(op, topology.EventFailoverBlocked, "no_candidate", map[string]string{},
			"no live, running replica to promote"+d.syncNote())
		return
	}
	c := cands[0]
	behind := max(0, op.FromLSN.Sub(c.st.Position()))
	details := map[string]string{
		"candidate": c.node.Name, "candidate_lsn": c.st.Position().String(), "from_lsn": op.FromLSN.String(),
		"bytes_behind": fmt.Sprint(behind),
	}
	if why, over := d.in.Config.MaxFailoverLag.exceeded(behind, c.st.Lag); over {
		if !op.Forced {
			d.block(op, topology.EventFailoverRefused, "lag_exceeded", details,
				fmt.Sprintf("best candidate %s is too far behind (%s): not promoted; fail over with --force to accept the loss", c.node.Name, why))
			return
		}
		details["forced"] = "true"
	}
	var others []string
	for _, o := range cands[1:] {
		others = append(others, o.node.Name+"="+o.st.Position().String())
	}
	details["others"] = strings.Join(others, ",")
	if fallback {
		// No replica is left: a fenced node (the old primary back, or a lost candidate) is promoted;
		// every other node rejoins it with a rewind, as their histories may differ.
		details["fallback"] = "fenced"
	}
	op.To, op.ToLSN, op.Promoting, op.Blocked = c.node.Name, c.st.Position(), true, ""
	d.next.Reason = "failover: promoting " + c.node.Name
	d.event(topology.EventCandidateChosen, c.node.Name, fmt.Sprintf("promoting %s, the most advanced replica (%s)", c.node.Name, c.st.Position()), details)
	d.act(Promote{Node: c.node.Name})
}

func (d *decider) syncNote() string {
	if len(d.cur.SyncStandbys) > 0 {
		return " among the synchronous standbys " + strings.Join(d.cur.SyncStandbys, ", ")
	}
	return ""
}

func (d *decider) failoverPromoting(op *topology.Operation) {
	c := op.To
	st, live := d.status(c)
	switch {
	case !live:
		// Its agent lost its lease and so fenced it; it may have promoted already, so it rejoins
		// later like an old primary. Choose again.
		d.setRole(c, topology.RoleFenced, "")
		if n := d.nodeRef(c); n != nil {
			n.DivergedAt = op.ToLSN
		}
		op.To, op.ToLSN, op.Promoting, op.Forced = "", 0, false, false
		d.next.Reason = "failover: candidate " + c + " lost"
		d.event(topology.EventNodeFenced, c, fmt.Sprintf("candidate %s lost its lease while promoting: fenced; choosing again", c), map[string]string{"reason": "candidate_lost"})
		d.waitf("candidate %s lost; choosing again", c)
	case st.Up && st.Role == topology.RolePrimary:
		d.publishFailover(op)
	default:
		if since, seen := d.in.Timers.DownSince[c]; seen && d.in.Now.Sub(since) >= d.in.Config.FailoverTimeout {
			// Told to promote, alive, but not a primary for failover_timeout: give it up with a new
			// epoch it must acknowledge before anyone else is promoted (it could still promote late).
			d.setRole(c, topology.RoleFenced, "")
			if n := d.nodeRef(c); n != nil {
				n.DivergedAt = op.ToLSN
			}
			if !slices.Contains(op.Abandoned, c) {
				op.Abandoned = append(op.Abandoned, c)
			}
			op.To, op.ToLSN, op.Promoting, op.Forced = "", 0, false, false
			d.newToken = true
			d.next.Reason = "failover: candidate " + c + " abandoned"
			d.event(topology.EventNodeFenced, c, fmt.Sprintf("candidate %s did not promote within failover_timeout %v: fenced; choosing again once it acknowledges", c, d.in.Config.FailoverTimeout),
				map[string]string{"reason": "candidate_stuck"})
			d.act(Fence{Node: c})
			return
		}
		d.waitf("waiting for %s to promote", c)
		d.act(Promote{Node: c})
	}
}

// publishFailover publishes epoch E+2 with the promoted node and records the possibly lost WAL range.
func (d *decider) publishFailover(op *topology.Operation) {
	c := op.To
	d.next.Primary, d.next.State, d.next.Operation = c, topology.StateSteady, nil
	d.next.Reason = "failover from " + op.From + " to " + c
	fallback := false
	if n := d.nodeRef(c); n != nil {
		fallback = n.Role != topology.RoleReplica
		n.DivergedAt = 0
	}
	d.setRole(c, topology.RolePrimary, "")
	if n := d.nodeRef(op.From); n != nil && n.Role == topology.RoleFenced {
		n.DivergedAt = op.ToLSN
	}
	for i := range d.next.Nodes {
		n := &d.next.Nodes[i]
		st, live := d.status(n.Name)
		switch {
		case n.Role == topology.RoleReplica && (fallback || !live || st.Position() > op.ToLSN):
			// A replica that may not be on the new primary's history: the new primary came from the
			// fenced nodes, or the replica was not there to be compared when the candidate was chosen,
			// or it is ahead of it. It rejoins (a rewind that finds no divergence changes nothing).
			n.Role, n.Upstream, n.DivergedAt = topology.RoleRejoining, c, op.ToLSN
			if fallback {
				n.DivergedAt = 0 // unknown: the agent's pg_rewind finds it
			}
			d.event(topology.EventNodeRejoining, n.Name, fmt.Sprintf("%s may not be on %s's history: it is rewound to follow it", n.Name, c),
				map[string]string{"upstream": c, "salvage_from": n.DivergedAt.String(), "salvage_to": st.Position().String(), "reason": "new_primary"})
			d.act(Rejoin{Node: n.Name, Upstream: c, SalvageFrom: n.DivergedAt, SalvageTo: st.Position()})
		case n.Role == topology.RoleReplica && n.Upstream != c:
			n.Upstream = c
			d.act(Repoint{Node: n.Name, Upstream: c})
		case n.Role == topology.RoleRejoining && n.Upstream != c:
			n.Upstream = c
			d.act(Rejoin{Node: n.Name, Upstream: c, SalvageFrom: n.DivergedAt, SalvageTo: st.Position()})
		}
	}
	lost := max(0, op.FromLSN.Sub(op.ToLSN))
	d.event(topology.EventPrimaryPromoted, c, c+" is the primary", map[string]string{"lsn": op.ToLSN.String()})
	details := map[string]string{
		"from": op.From, "to": c, "lost_from": op.ToLSN.String(), "lost_to": op.FromLSN.String(), "lost_bytes": fmt.Sprint(lost),
	}
	if op.Forced {
		details["forced"] = "true"
	}
	d.event(topology.EventFailoverCompleted, c, fmt.Sprintf("failover from %s to %s complete; WAL %s-%s (%d bytes) of %s may be lost (salvaged when it rejoins)", op.From, c, op.ToLSN, op.FromLSN, lost, op.From), details)
	d.syncStandbys()
}
