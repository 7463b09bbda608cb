package controller

import (
	"slices"

	"github.com/meridiandb/meridian/internal/topology"
)

// checkDecision checks the safety properties every decision keeps, whatever its input:
//   - a written topology is valid (so at most one node has desired role primary) and its epoch is the
//     read one, or one more exactly when the primary, the state or the write pause changed;
//   - a primary that holds its lease and reports healthy is never failed over or fenced;
//   - a topology names a new primary only once that node reports running as a primary;
//   - Promote is only ever told to the target the topology (as written by this decision, or as read)
//     records with Promoting, and for a failover only once the old primary's lease has expired (or its
//     agent acknowledged the fence) and every live proxy has applied the fencing epoch; in the sync
//     mode only to a synchronous standby or the old primary itself (when chosen, unforced); for a switchover only once the old primary stopped cleanly
//     and the target replayed its final position;
//   - a change of epoch or of a node's desired role comes with at least one event.
//
// It reports through errorf (t.Errorf, or a collector) so that the random tests can print the input.
func checkDecision(errorf func(format string, args ...any), in Input, dec Decision) {
	cur := in.Topology
	if cur == nil {
		if len(dec.Actions) > 0 {
			errorf("actions without a topology: %v", dec.Actions)
		}
		return
	}
	after := cur
	events := 0
	for i, a := range dec.Actions {
		switch a := a.(type) {
		case WriteTopology:
			if i != 0 {
				errorf("WriteTopology is action %d, not the first", i)
			}
			after = a.Topology
		case EmitEvent:
			events++
		}
	}
	if after != cur {
		if err := after.Validate(); err != nil {
			errorf("written topology invalid: %v", err)
		}
		changed := after.Primary != cur.Primary || after.State != cur.State || after.WritesPaused != cur.WritesPaused
		if was, now := cur.Operation, after.Operation; was != nil && now != nil && was.Promoting && !now.Promoting && slices.Contains(now.Abandoned, was.To) {
			if _, live := in.Nodes[was.To]; live || was.Kind == topology.OpSwitchover {
				changed = true // a candidate abandoned: a new fencing token for it to acknowledge
			}
		}
		switch {
		case after.Epoch < cur.Epoch:
			errorf("epoch went down: %d -> %d", cur.Epoch, after.Epoch)
		case changed && after.Epoch != cur.Epoch+1:
			errorf("primary/state/pause changed but epoch %d -> %d", cur.Epoch, after.Epoch)
		case !changed && after.Epoch != cur.Epoch:
			errorf("epoch %d -> %d without a change of primary, state or pause", cur.Epoch, after.Epoch)
		}
		if changed && events == 0 {
			errorf("epoch changed without an event: %v", dec.Actions)
		}
		for _, n := range after.Nodes {
			if was, ok := cur.Node(n.Name); ok && was.Role != n.Role && events == 0 {
				errorf("%s's desired role changed %s -> %s without an event", n.Name, was.Role, n.Role)
			}
		}
		if after.Primary != "" && after.Primary != cur.Primary {
			if st, ok := in.Nodes[after.Primary]; !ok || !st.Up || st.Role != topology.RolePrimary {
				errorf("published %s as primary before it reported running as one (%+v)", after.Primary, st)
			}
		}
	}
	// A healthy primary holding its lease is never failed over.
	if p := cur.Primary; p != "" && cur.State == topology.StateSteady {
		if st, ok := in.Nodes[p]; ok && st.Up && st.Role == topology.RolePrimary {
			if after.Primary != p || after.State == topology.StateFailingOver {
				errorf("healthy primary %s with its lease failed over: %v", p, dec.Actions)
			}
			for _, a := range dec.Actions {
				if f, ok := a.(Fence); ok && f.Node == p {
					errorf("healthy primary %s fenced", p)
				}
			}
		}
	}
	for _, a := range dec.Actions {
		pr, ok := a.(Promote)
		if !ok {
			continue
		}
		op := after.Operation
		if op == nil || !op.Promoting || op.To != pr.Node {
			errorf("promote %s without it recorded as the promoting target (operation %+v)", pr.Node, op)
			continue
		}
		switch op.Kind {
		case topology.OpFailover:
			if st, live := in.Nodes[op.From]; live && op.From != pr.Node && !fenceAcknowledged(st, cur.Epoch) {
				errorf("promote %s while old primary %s holds its lease unfenced (%+v)", pr.Node, op.From, st)
			}
			for _, name := range op.Abandoned {
				if st, live := in.Nodes[name]; live && name != pr.Node && !fenceAcknowledged(st, cur.Epoch) {
					errorf("promote %s while abandoned candidate %s holds its lease unacknowledged (%+v)", pr.Node, name, st)
				}
			}
			for name, px := range in.Proxies {
				if px.AppliedEpoch < cur.Epoch {
					errorf("promote %s before live proxy %s applied fencing epoch %d (at %d)", pr.Node, name, cur.Epoch, px.AppliedEpoch)
				}
			}
			if after.State != topology.StateFailingOver || after.Primary != "" {
				errorf("promote %s while the topology is %s with primary %q", pr.Node, after.State, after.Primary)
			}
			chosenNow := cur.Operation == nil || !cur.Operation.Promoting
			if chosenNow && !after.Operation.Forced && pr.Node != op.From && len(cur.SyncStandbys) > 0 && !slices.Contains(cur.SyncStandbys, pr.Node) {
				errorf("sync mode: promote %s, not a synchronous standby %v", pr.Node, cur.SyncStandbys)
			}
		case topology.OpSwitchover:
			if len(op.Abandoned) > 0 {
				errorf("switchover: promote %s with abandoned targets %v", pr.Node, op.Abandoned)
			}
			old, live := in.Nodes[op.From]
			target := in.Nodes[pr.Node]
			if live && (old.Up || !old.ShutdownClean) && target.Role != topology.RolePrimary {
				errorf("switchover: promote %s before %s stopped cleanly (%+v)", pr.Node, op.From, old)
			}
			if target.Role != topology.RolePrimary && target.ReplayedLSN < op.FromLSN {
				errorf("switchover: promote %s at %s before it replayed %s", pr.Node, target.ReplayedLSN, op.FromLSN)
			}
			if !after.WritesPaused {
				errorf("switchover: promote %s with writes not paused", pr.Node)
			}
		}
	}
}
