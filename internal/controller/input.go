package controller

import (
	"time"

	"github.com/meridiandb/meridian/internal/topology"
)

// Input is everything a decision depends on. Decide reads it and never changes it.
type Input struct {
	// Now is the controller's clock; Decide never reads the time itself.
	Now time.Time
	// Topology is the stored topology (the loop writes the next one with CAS on its revision).
	Topology *topology.Topology
	// Nodes are the live node statuses by name; a node without one has no lease (expired or never
	// taken): its agent is dead or cut off and has fenced its PostgreSQL.
	Nodes map[string]topology.NodeStatus
	// Proxies are the live proxy statuses by name; likewise, an absent proxy has no lease and has
	// stopped sending writes.
	Proxies map[string]topology.ProxyStatus
	// Timers is the loop's memory of what it has seen ([Timers.Observe] keeps it).
	Timers Timers
	Config Config
	// Request is the pending operator request, or nil. Decide answers it in the decision that sees it:
	// with a [Refuse] action, or by acting on it; either way the loop then drops it.
	Request *Request
}

// Timers is what the loop remembers between decisions: it is not in the store, so a new leader starts
// with it empty, which only ever delays a failover (never causes one).
type Timers struct {
	// DownSince is when the loop first saw each node's status report it unhealthy: PostgreSQL down, or,
	// for the topology's primary and for a target told to promote, not a primary. Cleared when seen
	// healthy again.
	DownSince map[string]time.Time
	// LastSeen is the last status seen of each node, kept after its lease expires: the old primary's
	// last known position and when its lease was last seen.
	LastSeen map[string]topology.NodeStatus
}

// Observe returns t updated with the statuses seen at now. It is pure, like Decide.
func (t Timers) Observe(now time.Time, topo *topology.Topology, nodes map[string]topology.NodeStatus) Timers {
	next := Timers{DownSince: map[string]time.Time{}, LastSeen: map[string]topology.NodeStatus{}}
	for name, st := range t.LastSeen {
		next.LastSeen[name] = st
	}
	for name, st := range nodes {
		next.LastSeen[name] = st
		healthy := st.Up
		if topo != nil && st.Role != topology.RolePrimary {
			promoting := topo.Operation != nil && topo.Operation.Promoting && topo.Operation.To == name
			if topo.Primary == name || promoting { // must be a primary, and is not (yet)
				healthy = false
			}
		}
		if healthy {
			continue
		}
		if since, ok := t.DownSince[name]; ok {
			next.DownSince[name] = since
		} else {
			next.DownSince[name] = now
		}
	}
	return next
}

// RequestKind names an operator request.
type RequestKind string

const (
	// RequestSwitchover: move the primary to node To, or to the best node of region ToRegion.
	RequestSwitchover RequestKind = "switchover"
	// RequestFailover: fail over to node To now, even before failover_timeout; only when the primary is
	// not healthy. Force also allows a candidate beyond max_failover_lag.
	RequestFailover RequestKind = "failover"
	// RequestPauseWrites and RequestResumeWrites hold or release writes at the proxies.
	RequestPauseWrites  RequestKind = "pause_writes"
	RequestResumeWrites RequestKind = "resume_writes"
	// RequestSetRPO changes the RPO mode.
	RequestSetRPO RequestKind = "set_rpo"
)

// Request is an operator request from the API.
type Request struct {
	Kind     RequestKind
	To       string
	ToRegion string
	Force    bool
	RPO      RPO
}

// Decision is what Decide returns: the actions to run, in order, and, when the controller is waiting
// for something, what (for logs and the status API; it is not an event, so it repeats freely).
type Decision struct {
	Actions []Action
	Wait    string
}
