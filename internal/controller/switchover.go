package controller

import (
	"fmt"
	"strings"

	"github.com/meridiandb/meridian/internal/topology"
)

// Planned switchover: pre-check, drain, clean stop, catch-up, promote, publish; or roll back.

// startSwitchover answers a switchover request with a healthy primary: the pre-check (target live,
// running, streaming, within max_switchover_lag), then epoch E+1 with writes paused, state switching.
func (d *decider) startSwitchover(pst topology.NodeStatus) {
	p := d.cur.Primary
	if d.cur.WritesPaused && d.cur.WritesPausedBy == pausedByOperator {
		// The switchover resumes writes at its end; it must not lift an operator's pause by the way.
		d.refuse("writes_paused", "writes are paused by an operator; resume them first (a switchover pauses and resumes writes itself)")
		return
	}
	target, ok := d.switchoverTarget()
	if !ok {
		return
	}
	d.req.To = target
	tst, live := d.status(target)
	switch {
	case !live:
		d.refuse("target_dead", fmt.Sprintf("%s has no lease: its agent is down or cut off from etcd; pick another target", target))
		return
	case !tst.Up:
		d.refuse("target_down", fmt.Sprintf("%s's PostgreSQL is down; pick another target or wait for it", target))
		return
	case tst.Role != topology.RoleReplica:
		d.refuse("target_not_replica", fmt.Sprintf("%s reports role %q, not a replica", target, tst.Role))
		return
	case !tst.Streaming:
		d.refuse("target_not_streaming", fmt.Sprintf("%s is not streaming from %s; wait for it to reconnect", target, p))
		return
	}
	behind := max(0, pst.Position().Sub(tst.ReplayedLSN))
	if why, over := d.in.Config.MaxSwitchoverLag.exceeded(behind, tst.Lag); over {
		d.refuse("target_lagging", fmt.Sprintf("%s is lagging (%s); wait for it to catch up or pick another target", target, why))
		return
	}
	d.next.State, d.next.WritesPaused, d.next.WritesPausedBy = topology.StateSwitching, true, pausedBySwitchover
	d.next.Operation = &topology.Operation{Kind: topology.OpSwitchover, From: p, To: target, StartedAt: d.in.Now}
	d.next.Reason = "switchover from " + p + " to " + target
	d.event(topology.EventSwitchoverStarted, target, fmt.Sprintf("switchover from %s to %s: writes paused while %s drains and stops", p, target, p),
		map[string]string{"from": p, "to": target, "bytes_behind": fmt.Sprint(behind)})
	d.event(topology.EventWritesPaused, "", "writes paused for the switchover", map[string]string{"by": pausedBySwitchover})
	d.req = nil
}

// switchoverTarget resolves the requested node or region (its most advanced replica).
func (d *decider) switchoverTarget() (string, bool) {
	r := d.req
	if r.To != "" {
		n, ok := d.cur.Node(r.To)
		switch {
		case !ok:
			d.refuse("unknown_node", fmt.Sprintf("no node %q in the topology", r.To))
			return "", false
		case n.Name == d.cur.Primary:
			d.refuse("already_primary", fmt.Sprintf("%s is already the primary", n.Name))
			return "", false
		case n.Role != topology.RoleReplica:
			d.refuse("target_not_replica", fmt.Sprintf("%s is %s, not a replica", n.Name, n.Role))
			return "", false
		}
		return n.Name, true
	}
	if r.ToRegion == "" {
		d.refuse("no_target", "name a target node or region")
		return "", false
	}
	best, bestPos, found := "", topology.LSN(0), false
	for _, n := range d.cur.Nodes {
		if n.Region != r.ToRegion || n.Role != topology.RoleReplica {
			continue
		}
		st, live := d.status(n.Name)
		healthy := live && st.Up && st.Streaming
		if !found || (healthy && st.Position() > bestPos) {
			best, found = n.Name, true
			if healthy {
				bestPos = st.Position()
			}
		}
	}
	if !found {
		if pn, _ := d.cur.Node(d.cur.Primary); pn.Region == r.ToRegion {
			d.refuse("already_primary", fmt.Sprintf("the primary %s is already in %s", pn.Name, r.ToRegion))
		} else {
			d.refuse("no_replica_in_region", fmt.Sprintf("no replica in region %q", r.ToRegion))
		}
		return "", false
	}
	return best, true
}

func (d *decider) switching() {
	op := d.next.Operation
	if op == nil || op.Kind != topology.OpSwitchover {
		d.rollback("no switchover recorded in the topology", false)
		return
	}
	if d.req != nil {
		d.refuse("switchover_in_progress", fmt.Sprintf("a switchover from %s to %s is under way", op.From, op.To))
	}
	if op.Promoting {
		d.switchoverPromoting(op)
		return
	}
	pst, plive := d.status(op.From)
	tst, tlive := d.status(op.To)
	switch {
	case !plive:
		d.abortToFailover(op, "the old primary lost its lease during the switchover")
		return
	case len(op.Abandoned) > 0:
		// The target was given up after it was told to promote: the old primary starts again only
		// once the target cannot promote any more (no lease, or it acted on the abandoning epoch).
		for _, name := range op.Abandoned {
			if st, live := d.status(name); live && !fenceAcknowledged(st, d.cur.Epoch) {
				d.waitf("abandoned target %s still holds its lease and has not acknowledged epoch %d", name, d.cur.Epoch)
				d.act(Fence{Node: name})
				return
			}
		}
		d.rollback("target "+op.To+" did not promote within switchover_timeout", !pst.Up)
		return
	case d.in.Now.Sub(op.StartedAt) >= d.in.Config.SwitchoverTimeout:
		d.rollback(fmt.Sprintf("timeout: not done within switchover_timeout %v", d.in.Config.SwitchoverTimeout), !pst.Up)
		return
	case !tlive:
		d.rollback("target "+op.To+" lost its lease", !pst.Up)
		return
	case !tst.Up:
		d.rollback("target "+op.To+"'s PostgreSQL is down", !pst.Up)
		return
	}
	if pst.Up {
		if pending := d.proxiesBehind(d.cur.Epoch, true); len(pending) > 0 {
			d.waitf("waiting for proxies %s to hold writes (epoch %d)", strings.Join(pending, ", "), d.cur.Epoch)
			return
		}
		d.waitf("waiting for %s to drain and shut down cleanly", op.From)
		d.act(StopPrimaryClean{Node: op.From})
		return
	}
	if !pst.ShutdownClean {
		d.rollback("the old primary "+op.From+" stopped without a clean shutdown", true)
		return
	}
	final := pst.WriteLSN
	op.FromLSN = final
	if tst.ReplayedLSN < final {
		d.waitf("waiting for %s to replay up to %s's final position %s (at %s)", op.To, op.From, final, tst.ReplayedLSN)
		return
	}
	op.Promoting = true
	d.next.Reason = "switchover: promoting " + op.To
	d.event(topology.EventCandidateChosen, op.To, fmt.Sprintf("%s replayed all of %s's WAL (%s): promoting it", op.To, op.From, final),
		map[string]string{"candidate": op.To, "candidate_lsn": tst.ReplayedLSN.String(), "from_lsn": final.String()})
	d.act(Promote{Node: op.To})
}

func (d *decider) switchoverPromoting(op *topology.Operation) {
	tst, tlive := d.status(op.To)
	switch {
	case tlive && tst.Up && tst.Role == topology.RolePrimary:
		d.publishSwitchover(op)
	case !tlive:
		if _, plive := d.status(op.From); plive {
			d.rollback("target "+op.To+" lost its lease while promoting", true)
		} else {
			d.abortToFailover(op, "both the old primary and the target lost their leases")
		}
	case d.in.Now.Sub(op.StartedAt) >= d.in.Config.SwitchoverTimeout:
		// Past the point of no return and out of time: fence the target with a new epoch it must
		// acknowledge; the rollback to the old primary waits for that (see switching).
		d.setRole(op.To, topology.RoleFenced, "")
		if n := d.nodeRef(op.To); n != nil {
			n.DivergedAt = op.FromLSN
		}
		op.Abandoned = append(op.Abandoned, op.To)
		op.Promoting = false
		d.newToken = true
		d.next.Reason = "switchover: target " + op.To + " abandoned"
		d.event(topology.EventNodeFenced, op.To, fmt.Sprintf("target %s did not promote within switchover_timeout %v: fenced; %s starts again once it acknowledges", op.To, d.in.Config.SwitchoverTimeout, op.From),
			map[string]string{"reason": "target_stuck"})
		d.act(Fence{Node: op.To})
	default:
		d.waitf("waiting for %s to promote", op.To)
		if pst, plive := d.status(op.From); plive && (pst.Up || !pst.ShutdownClean) {
			// The old primary is not cleanly stopped any more (its agent should never do this): no
			// nudge; if the target promoted anyway, the stray-primary fence takes over after publish.
			d.waitf("old primary %s is no longer cleanly stopped", op.From)
			return
		}
		if tst.ReplayedLSN < op.FromLSN {
			d.waitf("%s reports replay at %s, behind the final position %s it had reached", op.To, tst.ReplayedLSN, op.FromLSN)
			return
		}
		d.act(Promote{Node: op.To})
	}
}

func (d *decider) publishSwitchover(op *topology.Operation) {
	t, p := op.To, op.From
	d.next.Primary, d.next.State, d.next.Operation = t, topology.StateSteady, nil
	d.next.WritesPaused, d.next.WritesPausedBy = false, ""
	d.next.Reason = "switchover from " + p + " to " + t
	d.setRole(t, topology.RolePrimary, "")
	d.setRole(p, topology.RoleReplica, t)
	d.act(Repoint{Node: p, Upstream: t}) // restarts as t's standby: it stopped cleanly at what t replayed, no rewind
	for _, n := range d.next.Nodes {
		if n.Role == topology.RoleReplica && n.Name != p && n.Upstream != t {
			d.setRole(n.Name, topology.RoleReplica, t)
			d.act(Repoint{Node: n.Name, Upstream: t})
		}
	}
	d.event(topology.EventPrimaryPromoted, t, t+" is the primary", map[string]string{"lsn": op.FromLSN.String()})
	d.event(topology.EventSwitchoverCompleted, t, fmt.Sprintf("switchover from %s to %s complete with no data loss", p, t),
		map[string]string{"from": p, "to": t, "final_lsn": op.FromLSN.String()})
	d.event(topology.EventWritesResumed, "", "writes resumed on "+t, map[string]string{"by": pausedBySwitchover})
	d.syncStandbys()
}

// rollback ends a switchover with the old primary still the primary and writes resumed; restart says
// the old primary was stopped and must be started again. A target told to promote is fenced (it may
// have left the old primary's timeline) and rejoins later.
func (d *decider) rollback(reason string, restart bool) {
	op := d.next.Operation
	p := d.cur.Primary
	d.next.State, d.next.Operation = topology.StateSteady, nil
	if d.next.WritesPausedBy == pausedBySwitchover {
		d.next.WritesPaused, d.next.WritesPausedBy = false, ""
	}
	d.next.Reason = "switchover aborted: " + reason
	details := map[string]string{"reason": reason, "from": p}
	if op != nil {
		details["to"] = op.To
		if op.Promoting {
			d.setRole(op.To, topology.RoleFenced, "")
			if n := d.nodeRef(op.To); n != nil {
				n.DivergedAt = op.FromLSN
			}
			d.act(Fence{Node: op.To})
		}
	}
	d.event(topology.EventSwitchoverAborted, p, "switchover aborted, "+p+" stays the primary: "+reason, details)
	if !d.next.WritesPaused {
		d.event(topology.EventWritesResumed, "", "writes resumed on "+p, map[string]string{"by": pausedBySwitchover})
	}
	if restart {
		d.act(StartPrimary{Node: p})
	}
}

// abortToFailover turns a switchover whose old primary was lost into an unplanned failover.
func (d *decider) abortToFailover(op *topology.Operation, reason string) {
	p := op.From
	d.event(topology.EventSwitchoverAborted, p, "switchover aborted: "+reason, map[string]string{"reason": reason, "from": p, "to": op.To})
	d.next.WritesPaused, d.next.WritesPausedBy = false, ""
	d.next.Operation = nil
	fromLSN, abandoned := op.FromLSN, op.Abandoned
	d.startFailover("lease_expired", reason)
	if fromLSN.Valid() {
		d.next.Operation.FromLSN = fromLSN
	}
	d.next.Operation.Abandoned = abandoned // still to acknowledge before any promotion
}
