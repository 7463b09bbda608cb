package controller

import (
	"cmp"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/meridiandb/meridian/internal/topology"
)

// Who paused writes (Topology.WritesPausedBy).
const (
	pausedByOperator   = "operator"
	pausedByRPO        = "rpo_max_lag"
	pausedBySwitchover = "switchover"
)

// Decide returns what the controller does next. It is a pure function of its input: no I/O, no clock,
// no randomness, and the same input always gives the same decision. See the package documentation
// for the phases it moves the topology through.
func Decide(in Input) Decision {
	if in.Topology == nil {
		return Decision{Wait: "no topology in the store yet: the cluster is not bootstrapped"}
	}
	d := &decider{in: in, cur: in.Topology, next: in.Topology.Clone(), rpo: in.Config.RPO, req: in.Request}
	if d.req != nil && d.req.Kind == RequestSetRPO {
		d.setRPO()
	}
	switch d.cur.State {
	case topology.StateFailingOver:
		d.failingOver()
	case topology.StateSwitching:
		d.switching()
	default:
		d.steady()
	}
	if d.req != nil {
		d.refuse("busy", fmt.Sprintf("the controller cannot take a %s request now (topology state %s); retry when it is steady", d.req.Kind, d.cur.State))
	}
	return d.finish()
}

// decider carries one decision under construction.
type decider struct {
	in        Input
	cur, next *topology.Topology
	rpo       RPO
	req       *Request // the pending request; nil once answered
	events    []topology.Event
	acts      []Action // actions after the topology write and the events
	wait      []string
	// newToken: the next topology needs a new epoch though its primary and write state stay (a
	// candidate abandoned: the epoch it must acknowledge).
	newToken bool
}

func (d *decider) status(name string) (topology.NodeStatus, bool) {
	st, ok := d.in.Nodes[name]
	return st, ok
}

func (d *decider) waitf(format string, args ...any) {
	d.wait = append(d.wait, fmt.Sprintf(format, args...))
}

func (d *decider) event(kind topology.EventKind, node, msg string, details map[string]string) {
	d.events = append(d.events, topology.Event{Kind: kind, Node: node, Message: msg, Details: details})
}

func (d *decider) act(a Action) { d.acts = append(d.acts, a) }

// refuse answers the pending request with an error and an event.
func (d *decider) refuse(code, reason string) {
	if d.req == nil {
		return
	}
	kind := topology.EventRequestRefused
	if d.req.Kind == RequestSwitchover {
		kind = topology.EventSwitchoverRefused
	}
	d.event(kind, d.req.To, reason, map[string]string{"request": string(d.req.Kind), "code": code})
	d.act(Refuse{Code: code, Reason: reason})
	d.req = nil
}

// setRole sets a node's desired role and upstream in the next topology.
func (d *decider) setRole(name string, role topology.Role, upstream string) {
	for i := range d.next.Nodes {
		if d.next.Nodes[i].Name == name {
			d.next.Nodes[i].Role, d.next.Nodes[i].Upstream = role, upstream
		}
	}
}

func (d *decider) nodeRef(name string) *topology.Node {
	for i := range d.next.Nodes {
		if d.next.Nodes[i].Name == name {
			return &d.next.Nodes[i]
		}
	}
	return nil
}

// finish turns the next topology, events and actions into the decision: the topology is written only
// when it changed, with the epoch bumped when the primary or the write state changed.
func (d *decider) finish() Decision {
	var out Decision
	out.Wait = strings.Join(d.wait, "; ")
	probe := *d.next
	probe.UpdatedAt = d.cur.UpdatedAt
	epoch := d.cur.Epoch
	if !reflect.DeepEqual(&probe, d.cur) {
		if d.newToken || d.next.Primary != d.cur.Primary || d.next.WritesPaused != d.cur.WritesPaused || d.next.State != d.cur.State {
			d.next.Epoch = d.cur.Epoch + 1
		}
		d.next.UpdatedAt = d.in.Now
		epoch = d.next.Epoch
		out.Actions = append(out.Actions, WriteTopology{Topology: d.next})
	}
	for _, e := range d.events {
		e.Epoch, e.At = epoch, d.in.Now
		out.Actions = append(out.Actions, EmitEvent{Event: e})
	}
	out.Actions = append(out.Actions, d.acts...)
	return out
}

// setRPO answers a request to change the RPO mode; it applies in any state, from this decision on.
func (d *decider) setRPO() {
	r := d.req.RPO
	if err := r.validate(); err != nil {
		d.refuse("invalid_rpo", err.Error())
		return
	}
	details := map[string]string{"mode": string(r.Mode), "previous": string(d.rpo.Mode)}
	if r.Mode == RPOMaxLag {
		details["max_lag"] = r.MaxLag.String()
	}
	d.event(topology.EventRPOChanged, "", "RPO mode changed to "+string(r.Mode), details)
	d.act(SetRPO{RPO: r})
	d.rpo = r
	d.req = nil
}

// ---- steady ----

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

// ---- unplanned failover ----

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

// ---- planned switchover ----

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
