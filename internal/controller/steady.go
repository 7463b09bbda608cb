package controller

import (
	"fmt"
	"slices"
	"strings"

	"github.com/meridiandb/meridian/internal/topology"
)

// The steady state: detection, operator requests, and keeping the cluster in shape (rejoin, re-point,
// stray primaries, RPO).

func (d *decider) steady() {
	p := d.cur.Primary
	if p == "" {
		d.waitf("no primary: the cluster is not bootstrapped")
		return
	}
	st, live := d.status(p)
	if !live {
		d.startFailover("lease_expired", fmt.Sprintf("the lease of primary %s's agent expired", p))
		return
	}
	if !(st.Up && st.Role == topology.RolePrimary) {
		if d.req != nil && d.req.Kind == RequestFailover {
			if n, ok := d.cur.Node(d.req.To); d.req.To != "" && (!ok || n.Role != topology.RoleReplica) {
				d.refuse("bad_candidate", fmt.Sprintf("%q is not a replica of the topology; name a replica for failover --to", d.req.To))
				return
			}
			d.startFailover("operator", fmt.Sprintf("an operator asked to fail over from unhealthy primary %s", p))
			return
		}
		since, seen := d.in.Timers.DownSince[p]
		if seen && d.in.Now.Sub(since) >= d.in.Config.FailoverTimeout {
			d.startFailover("postgres_down", fmt.Sprintf("primary %s's PostgreSQL has been down since %s, longer than failover_timeout %v", p, since.Format("15:04:05.000"), d.in.Config.FailoverTimeout))
			return
		}
		d.waitf("primary %s's agent reports PostgreSQL down (restarting?); failover after failover_timeout %v", p, d.in.Config.FailoverTimeout)
		d.refuse("primary_unhealthy", fmt.Sprintf("primary %s is not healthy (its PostgreSQL is down); wait for it to restart or use failover --to NODE", p))
		return
	}
	// A healthy primary holding its lease: never failed over.
	if d.req != nil {
		d.steadyRequest(st)
		if d.next.State != topology.StateSteady {
			return
		}
	}
	d.fenceStrayPrimaries()
	d.divergedReplicas()
	d.rejoin()
	d.repoint()
	d.rpoGuard()
	d.syncStandbys()
}

func (d *decider) steadyRequest(pst topology.NodeStatus) {
	switch d.req.Kind {
	case RequestSwitchover:
		d.startSwitchover(pst)
	case RequestFailover:
		d.refuse("primary_healthy", fmt.Sprintf("primary %s holds its lease and is healthy, so it is never failed over; use switchover --to to move it", d.cur.Primary))
	case RequestPauseWrites:
		if d.cur.WritesPaused && d.cur.WritesPausedBy == pausedByOperator {
			d.refuse("already_paused", "writes are already paused by an operator")
			return
		}
		d.next.WritesPaused, d.next.WritesPausedBy, d.next.Reason = true, pausedByOperator, "writes paused by an operator"
		d.event(topology.EventWritesPaused, "", "writes paused by an operator", map[string]string{"by": pausedByOperator})
		d.req = nil
	case RequestResumeWrites:
		switch {
		case !d.cur.WritesPaused:
			d.refuse("not_paused", "writes are not paused")
		case d.cur.WritesPausedBy == pausedByRPO:
			d.refuse("rpo_guard", "writes are held by the max_lag RPO guard until a replica in another region catches up; change the RPO mode to release them now")
		default:
			d.next.WritesPaused, d.next.WritesPausedBy, d.next.Reason = false, "", "writes resumed by an operator"
			d.event(topology.EventWritesResumed, "", "writes resumed by an operator", map[string]string{"by": pausedByOperator})
			d.req = nil
		}
	}
}

// fenceStrayPrimaries fences any node other than the primary that reports itself a primary (a
// stopped node reports what its pg_control says): running, it is a second writer (a node promoted by
// hand, a promotion that came too late); stopped without a clean shutdown, it may have diverged and
// must be rewound before it can follow anyone. Fenced, it rejoins with a salvage of its WAL.
func (d *decider) fenceStrayPrimaries() {
	for _, n := range d.next.Nodes {
		st, live := d.status(n.Name)
		if n.Name == d.next.Primary || !live || st.Role != topology.RolePrimary || n.Role == topology.RoleFenced || n.Role == topology.RoleRejoining {
			continue
		}
		reason := "stray_primary"
		switch {
		case st.Up:
		case !st.ShutdownClean:
			reason = "diverged_primary"
		default:
			continue // cleanly stopped: it starts as a standby of its upstream without a rewind
		}
		d.setRole(n.Name, topology.RoleFenced, "")
		d.event(topology.EventNodeFenced, n.Name, fmt.Sprintf("%s is a primary but the primary is %s: fenced, to rejoin", n.Name, d.next.Primary),
			map[string]string{"reason": reason, "lsn": st.Position().String()})
		d.act(Fence{Node: n.Name})
	}
}

// rejoin moves returning fenced nodes (old primaries) to rejoining, and rejoining nodes that stream
// again to replica.
func (d *decider) rejoin() {
	p := d.next.Primary
	for i := range d.next.Nodes {
		n := &d.next.Nodes[i]
		st, live := d.status(n.Name)
		if !live {
			continue
		}
		switch n.Role {
		case topology.RoleFenced:
			if st.Up && st.Role == topology.RolePrimary {
				d.waitf("fenced node %s still runs as a primary; waiting for its agent to fence it", n.Name)
				if was, _ := d.cur.Node(n.Name); was.Role == topology.RoleFenced { // else fenced just now
					d.act(Fence{Node: n.Name})
				}
				continue
			}
			to := st.Position()
			from := n.DivergedAt
			n.Role, n.Upstream = topology.RoleRejoining, p
			d.next.Reason = n.Name + " rejoins"
			d.event(topology.EventNodeRejoining, n.Name, fmt.Sprintf("%s is back: its WAL from %s on is saved for salvage, then it is rewound to stream from %s", n.Name, from, p),
				map[string]string{"upstream": p, "salvage_from": from.String(), "salvage_to": to.String()})
			d.act(Rejoin{Node: n.Name, Upstream: p, SalvageFrom: from, SalvageTo: to})
		case topology.RoleRejoining:
			if n.Upstream == p && d.followsPrimary(st) {
				n.Role, n.Upstream, n.DivergedAt = topology.RoleReplica, p, 0
				d.next.Reason = n.Name + " rejoined"
				d.event(topology.EventNodeRejoined, n.Name, fmt.Sprintf("%s streams from %s again", n.Name, p), map[string]string{"upstream": p})
			} else if n.Upstream != p {
				n.Upstream = p
				d.act(Rejoin{Node: n.Name, Upstream: p, SalvageFrom: n.DivergedAt, SalvageTo: st.Position()})
			}
		}
	}
}

// followsPrimary says whether a node's status shows it streaming from the primary: running in
// recovery, streaming, having acted on the current epoch, and on the primary's timeline when both
// report one.
func (d *decider) followsPrimary(st topology.NodeStatus) bool {
	pst := d.in.Nodes[d.next.Primary]
	sameTimeline := st.Timeline == 0 || pst.Timeline == 0 || st.Timeline == pst.Timeline
	return st.Up && st.Role == topology.RoleReplica && st.Streaming && st.Epoch >= d.cur.Epoch && sameTimeline
}

// divergedReplicas sends a replica on a later timeline than the primary's, which it cannot follow
// (its history has a promotion the primary's has not), to rejoin with a rewind.
func (d *decider) divergedReplicas() {
	pst := d.in.Nodes[d.next.Primary]
	for i := range d.next.Nodes {
		n := &d.next.Nodes[i]
		st, live := d.status(n.Name)
		if n.Role != topology.RoleReplica || !live || st.Streaming || pst.Timeline == 0 || st.Timeline <= pst.Timeline {
			continue
		}
		n.Role, n.Upstream, n.DivergedAt = topology.RoleRejoining, d.next.Primary, 0
		d.next.Reason = n.Name + " rejoins"
		d.event(topology.EventNodeRejoining, n.Name, fmt.Sprintf("%s is on timeline %d, after the primary's %d: it is rewound to follow it", n.Name, st.Timeline, pst.Timeline),
			map[string]string{"upstream": d.next.Primary, "salvage_from": "0/0", "salvage_to": st.Position().String(), "reason": "diverged_timeline"})
		d.act(Rejoin{Node: n.Name, Upstream: d.next.Primary, SalvageTo: st.Position()})
	}
}

// repoint makes every replica stream from the primary.
func (d *decider) repoint() {
	p := d.next.Primary
	for i := range d.next.Nodes {
		n := &d.next.Nodes[i]
		if n.Role == topology.RoleReplica && n.Upstream != p {
			n.Upstream = p
			d.act(Repoint{Node: n.Name, Upstream: p})
		}
	}
}

// otherRegionReplicas lists the replicas outside the primary's region, in topology order.
func (d *decider) otherRegionReplicas() []string {
	pn, _ := d.next.Node(d.next.Primary)
	var out []string
	for _, n := range d.next.Nodes {
		if n.Role == topology.RoleReplica && n.Region != pn.Region {
			out = append(out, n.Name)
		}
	}
	return out
}

// rpoGuard holds writes in the max_lag mode while every replica of another region lags more than the
// bound (or is not streaming), and releases them as soon as one is within it.
func (d *decider) rpoGuard() {
	if d.rpo.Mode != RPOMaxLag {
		if d.next.WritesPaused && d.next.WritesPausedBy == pausedByRPO {
			d.next.WritesPaused, d.next.WritesPausedBy, d.next.Reason = false, "", "RPO mode is no longer max_lag"
			d.event(topology.EventWritesResumed, "", "writes released: the RPO mode is no longer max_lag", map[string]string{"by": pausedByRPO})
		}
		return
	}
	var within []string
	for _, name := range d.otherRegionReplicas() {
		if st, ok := d.status(name); ok && st.Up && st.Streaming && st.Lag <= d.rpo.MaxLag {
			within = append(within, name)
		}
	}
	switch {
	case len(within) == 0 && !d.next.WritesPaused:
		d.next.WritesPaused, d.next.WritesPausedBy, d.next.Reason = true, pausedByRPO, "every replica in another region lags more than rpo max_lag"
		d.event(topology.EventWritesPaused, "", fmt.Sprintf("writes held: no replica in another region is streaming within max_lag %v", d.rpo.MaxLag),
			map[string]string{"by": pausedByRPO, "max_lag": d.rpo.MaxLag.String()})
	case len(within) > 0 && d.next.WritesPaused && d.next.WritesPausedBy == pausedByRPO:
		d.next.WritesPaused, d.next.WritesPausedBy, d.next.Reason = false, "", "a replica in another region is within rpo max_lag"
		d.event(topology.EventWritesResumed, "", fmt.Sprintf("writes released: %s is within max_lag %v", strings.Join(within, ", "), d.rpo.MaxLag),
			map[string]string{"by": pausedByRPO, "within": strings.Join(within, ",")})
	}
}

// syncStandbys keeps synchronous_standby_names = ANY 1 (other regions' replicas) in the sync mode, and
// empty otherwise. The set lists every such replica, live or not, so that it changes only with the
// topology, never with a blip (and never shrinks to nothing, which would silently make commits async).
func (d *decider) syncStandbys() {
	var want []string
	if d.rpo.Mode == RPOSync {
		want = d.otherRegionReplicas()
		slices.Sort(want)
	}
	if slices.Equal(want, d.next.SyncStandbys) {
		return
	}
	d.next.SyncStandbys = want
	details := map[string]string{"sync_standbys": strings.Join(want, ",")}
	msg := "synchronous standbys: ANY 1 (" + strings.Join(want, ", ") + ")"
	if d.rpo.Mode == RPOSync && len(want) == 0 {
		details["warning"] = "no_replica_in_another_region"
		msg = "sync mode without any replica in another region: commits do not wait for anyone"
	}
	d.event(topology.EventRPOChanged, d.next.Primary, msg, details)
	d.act(SetSyncStandbys{Node: d.next.Primary, Standbys: want})
}
