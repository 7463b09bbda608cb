package controller

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/meridiandb/meridian/internal/topology"
)

// Action is one thing the controller loop does for a decision. Actions are plain data and idempotent,
// so repeating a decision is harmless.
//
// The order inside a decision is always: [WriteTopology] (compare-and-swap on the revision the
// decision read), then [EmitEvent]s, then the rest. If the write fails (another leader moved first,
// or the store is unreachable) the loop does nothing else and decides again on fresh observations: so
// nothing is done to a node that the stored topology does not already justify. The actions addressed
// to nodes are nudges: each agent also carries out its desired role from the stored topology by itself
// (and the operation's target reads Operation.Promoting), so a nudge that fails (its agent is gone) is
// logged and the loop goes on with the next.
type Action interface {
	// String is a compact, stable form for logs and tests.
	String() string
	action()
}

// WriteTopology stores Topology with compare-and-swap on the revision Decide's input was read at.
type WriteTopology struct{ Topology *topology.Topology }

// EmitEvent appends Event to the log (and the loop sends it to webhooks). The store assigns Seq.
type EmitEvent struct{ Event topology.Event }

// Fence tells Node's agent to stop its PostgreSQL from accepting writes (fast stop, then a standby with
// no upstream). Its desired role in the topology is already fenced; this is the nudge.
type Fence struct{ Node string }

// Promote tells Node's agent to promote its standby (pg_promote()).
type Promote struct{ Node string }

// Repoint tells Node's agent to stream from Upstream (primary_conninfo and a reload, or a restart as
// a standby for a cleanly stopped old primary: no rewind is needed then).
type Repoint struct{ Node, Upstream string }

// Rejoin tells Node's agent, an old primary of an earlier epoch, to save its WAL from SalvageFrom on
// (up to about SalvageTo, its last known position) in its salvage directory, pg_rewind against
// Upstream (re-clone only if rewind is impossible) and stream from it.
type Rejoin struct {
	Node, Upstream         string
	SalvageFrom, SalvageTo topology.LSN
}

// StopPrimaryClean tells the primary's agent, once writes have drained, to shut PostgreSQL down cleanly
// (fast shutdown) and report its final position (NodeStatus.ShutdownClean and WriteLSN).
type StopPrimaryClean struct{ Node string }

// StartPrimary tells Node's agent to start its cleanly stopped PostgreSQL again as the primary (a
// switchover rolled back).
type StartPrimary struct{ Node string }

// SetSyncStandbys tells the primary's agent to set synchronous_standby_names = ANY 1 (Standbys), or to
// clear it when Standbys is empty.
type SetSyncStandbys struct {
	Node     string
	Standbys []string
}

// SetRPO stores a new RPO for the controllers (the loop passes it as Config.RPO from then on).
type SetRPO struct{ RPO RPO }

// Refuse answers the pending operator request with an error: Code is stable (for the API and tests),
// Reason says what is wrong and what to do. Nothing else in the decision comes from the request.
type Refuse struct{ Code, Reason string }

func (WriteTopology) action()    {}
func (EmitEvent) action()        {}
func (Fence) action()            {}
func (Promote) action()          {}
func (Repoint) action()          {}
func (Rejoin) action()           {}
func (StopPrimaryClean) action() {}
func (StartPrimary) action()     {}
func (SetSyncStandbys) action()  {}
func (SetRPO) action()           {}
func (Refuse) action()           {}

// String prints the decisive parts: epoch, primary, state, pause, operation and each node's role
// (with its upstream after "<").
func (a WriteTopology) String() string {
	t := a.Topology
	var b strings.Builder
	fmt.Fprintf(&b, "write epoch=%d primary=%s state=%s", t.Epoch, t.Primary, t.State)
	if t.WritesPaused {
		fmt.Fprintf(&b, " paused=%s", t.WritesPausedBy)
	}
	if len(t.SyncStandbys) > 0 {
		fmt.Fprintf(&b, " sync=%s", strings.Join(t.SyncStandbys, ","))
	}
	if op := t.Operation; op != nil {
		fmt.Fprintf(&b, " op=%s:%s>%s", op.Kind, op.From, op.To)
		if op.FromLSN.Valid() {
			fmt.Fprintf(&b, " from_lsn=%s", op.FromLSN)
		}
		if op.Promoting {
			b.WriteString(" promoting")
		}
		if op.Forced {
			b.WriteString(" forced")
		}
		if op.Blocked != "" {
			fmt.Fprintf(&b, " blocked=%q", op.Blocked)
		}
	}
	for _, n := range t.Nodes {
		fmt.Fprintf(&b, " %s:%s", n.Name, n.Role)
		if n.Upstream != "" {
			fmt.Fprintf(&b, "<%s", n.Upstream)
		}
		if n.DivergedAt.Valid() {
			fmt.Fprintf(&b, "@%s", n.DivergedAt)
		}
	}
	return b.String()
}

// String prints the kind, node and details (sorted); the message is for people and left out.
func (a EmitEvent) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "event %s", a.Event.Kind)
	if a.Event.Node != "" {
		fmt.Fprintf(&b, " node=%s", a.Event.Node)
	}
	for _, k := range slices.Sorted(maps.Keys(a.Event.Details)) {
		fmt.Fprintf(&b, " %s=%s", k, a.Event.Details[k])
	}
	return b.String()
}

func (a Fence) String() string   { return "fence " + a.Node }
func (a Promote) String() string { return "promote " + a.Node }
func (a Repoint) String() string { return fmt.Sprintf("repoint %s<%s", a.Node, a.Upstream) }
func (a Rejoin) String() string {
	return fmt.Sprintf("rejoin %s<%s salvage=%s-%s", a.Node, a.Upstream, a.SalvageFrom, a.SalvageTo)
}
func (a StopPrimaryClean) String() string { return "stop-clean " + a.Node }
func (a StartPrimary) String() string     { return "start-primary " + a.Node }
func (a SetSyncStandbys) String() string {
	return fmt.Sprintf("set-sync %s [%s]", a.Node, strings.Join(a.Standbys, ","))
}
func (a SetRPO) String() string {
	if a.RPO.Mode == RPOMaxLag {
		return fmt.Sprintf("set-rpo %s %v", a.RPO.Mode, a.RPO.MaxLag)
	}
	return "set-rpo " + string(a.RPO.Mode)
}
func (a Refuse) String() string { return "refuse " + a.Code }
