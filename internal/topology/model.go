package topology

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Role is what a node is, or is to be. The controller sets a node's desired role in the [Topology]; its
// agent reports the role it observes in its [NodeStatus].
type Role string

const (
	// RolePrimary accepts writes: the one node the topology's epoch names primary.
	RolePrimary Role = "primary"
	// RoleReplica streams from its upstream and serves reads.
	RoleReplica Role = "replica"
	// RoleFenced accepts no writes and follows no one: an old primary cut off, or a node set aside.
	RoleFenced Role = "fenced"
	// RoleRejoining is an old primary being rewound (its divergent WAL saved) to stream from the primary.
	RoleRejoining Role = "rejoining"
)

// Valid reports whether r is one of the roles above.
func (r Role) Valid() bool {
	switch r {
	case RolePrimary, RoleReplica, RoleFenced, RoleRejoining:
		return true
	}
	return false
}

// State is the topology's phase.
type State string

const (
	// StateSteady: a primary (or none, before bootstrap) and nothing moving.
	StateSteady State = "steady"
	// StateSwitching: a planned switchover is under way; writes are paused.
	StateSwitching State = "switching"
	// StateFailingOver: the primary was lost; writes are fenced until a new primary is published.
	StateFailingOver State = "failing_over"
)

// Valid reports whether s is one of the states above.
func (s State) Valid() bool {
	switch s {
	case StateSteady, StateSwitching, StateFailingOver:
		return true
	}
	return false
}

// Node is one PostgreSQL server as the topology describes it.
type Node struct {
	Name    string `json:"name"`
	Region  string `json:"region"`
	Address string `json:"address"` // host:port clients and replicas connect to
	// Role is the desired role the node's agent carries out.
	Role Role `json:"role"`
	// Upstream names the node a replica streams from ("" for the primary and fenced nodes).
	Upstream string `json:"upstream,omitempty"`
	// Priority breaks ties between equally advanced failover candidates: lower goes first.
	Priority int `json:"priority,omitempty"`
	// DivergedAt is set on an old primary fenced by a failover: the WAL position where the new
	// primary's history left it (the promoted node's position). Whatever WAL the node has beyond it is
	// the divergent range its agent saves for salvage before pg_rewind.
	DivergedAt LSN `json:"diverged_at,omitempty"`
}

// OperationKind names a multi-step change of primary.
type OperationKind string

const (
	// OpFailover replaces a lost primary (state failing_over).
	OpFailover OperationKind = "failover"
	// OpSwitchover moves the primary on purpose with no data loss (state switching).
	OpSwitchover OperationKind = "switchover"
)

// Operation is the multi-step change under way, stored in the topology so that any controller (a
// restarted one, a new leader) resumes it from the store alone. It is nil in the steady state.
type Operation struct {
	Kind OperationKind `json:"kind"`
	// From is the primary being replaced.
	From string `json:"from,omitempty"`
	// FromLSN is, for a failover, the old primary's last known WAL position; for a switchover, its
	// final position after its clean shutdown (0/0 until known).
	FromLSN LSN `json:"from_lsn,omitempty"`
	// To is the target: a switchover's target, the node an operator named for a failover, or the
	// candidate a failover chose.
	To string `json:"to,omitempty"`
	// ToLSN is the chosen failover candidate's position when it was chosen.
	ToLSN LSN `json:"to_lsn,omitempty"`
	// Promoting is set once the target was told to promote: from there on the operation can only go
	// forward (a switchover no longer rolls back to the old primary on timeout).
	Promoting bool `json:"promoting,omitempty"`
	// Forced lets a failover promote a candidate further behind than max_failover_lag.
	Forced bool `json:"forced,omitempty"`
	// Abandoned lists failover candidates that were told to promote and then given up (stuck). Each
	// was fenced with a new epoch, and nothing else is promoted until each has no lease or has acted
	// on that epoch, so that a late promotion cannot make a second writer.
	Abandoned []string `json:"abandoned,omitempty"`
	// Blocked is why the operation cannot go on, once reported in an event (so it is reported once).
	Blocked   string    `json:"blocked,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// Topology is the single source of truth about who is primary. Only the controller leader writes it,
// with compare-and-swap on its store revision, and every change of primary or of the write state
// (paused, fenced) increments Epoch: the epoch is the fencing token every proxy and agent acts on.
type Topology struct {
	Epoch        uint64 `json:"epoch"`
	Primary      string `json:"primary,omitempty"` // "" while fenced (failing over) or before bootstrap
	State        State  `json:"state"`
	WritesPaused bool   `json:"writes_paused,omitempty"`
	Nodes        []Node `json:"nodes"`
	// Reason says why the last change was made, for people (an event carries the details).
	Reason    string    `json:"reason,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	// WritesPausedBy says who paused writes ("operator", "rpo_max_lag", "switchover"), so that each
	// lifts only its own pause.
	WritesPausedBy string `json:"writes_paused_by,omitempty"`
	// SyncStandbys is the set the primary's synchronous_standby_names = ANY 1 (...) names in the sync
	// RPO mode (empty otherwise). A failover in that mode promotes only one of them.
	SyncStandbys []string `json:"sync_standbys,omitempty"`
	// Operation is the failover or switchover under way; nil when steady.
	Operation *Operation `json:"operation,omitempty"`
}

// Node returns the node named name.
func (t *Topology) Node(name string) (Node, bool) {
	for _, n := range t.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// WritesAllowed reports whether the topology lets the primary take writes: there is one, the state is
// steady and writes are not paused.
func (t *Topology) WritesAllowed() bool {
	return t.Primary != "" && t.State == StateSteady && !t.WritesPaused
}

// Clone returns a deep copy of t, to change without touching t.
func (t *Topology) Clone() *Topology {
	c := *t
	c.Nodes = slices.Clone(t.Nodes)
	c.SyncStandbys = slices.Clone(t.SyncStandbys)
	if t.Operation != nil {
		op := *t.Operation
		op.Abandoned = slices.Clone(op.Abandoned)
		c.Operation = &op
	}
	return &c
}

// ErrInvalidTopology is wrapped by [Topology.Validate] errors.
var ErrInvalidTopology = errors.New("invalid topology")

// Validate checks the rules every written topology keeps: unique, non-empty node names with an
// address and a region; known roles and state; the primary, when named, is a node whose desired role
// is primary, and no other node is; a replica's upstream is a node of the topology other than itself.
func (t *Topology) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidTopology, fmt.Sprintf(format, args...))
	}
	if !t.State.Valid() {
		return bad("unknown state %q", t.State)
	}
	seen := map[string]bool{}
	primaries := 0
	for _, n := range t.Nodes {
		switch {
		case n.Name == "":
			return bad("a node without a name")
		case seen[n.Name]:
			return bad("node %q listed twice", n.Name)
		case n.Address == "":
			return bad("node %q has no address", n.Name)
		case n.Region == "":
			return bad("node %q has no region", n.Name)
		case !n.Role.Valid():
			return bad("node %q has unknown role %q", n.Name, n.Role)
		}
		seen[n.Name] = true
		if n.Role == RolePrimary {
			primaries++
			if n.Name != t.Primary {
				return bad("node %q has role primary but the topology's primary is %q", n.Name, t.Primary)
			}
		}
	}
	if t.Primary != "" {
		if !seen[t.Primary] {
			return bad("primary %q is not a node of the topology", t.Primary)
		}
		if primaries != 1 {
			return bad("primary %q does not have role primary", t.Primary)
		}
	}
	for _, n := range t.Nodes {
		if n.Role == RoleReplica && n.Upstream != "" && (!seen[n.Upstream] || n.Upstream == n.Name) {
			return bad("replica %q streams from %q, which is not another node of the topology", n.Name, n.Upstream)
		}
	}
	return nil
}

// NodeStatus is what a node's agent observes and reports, under its own lease: it disappears from the
// store when the agent stops renewing it.
type NodeStatus struct {
	Name   string `json:"name"`
	Region string `json:"region"`
	// Up reports whether PostgreSQL runs and answers.
	Up bool `json:"up"`
	// Role is the observed role: primary when PostgreSQL is out of recovery, replica when in recovery
	// and streaming (or trying to), fenced when the agent has fenced it.
	Role Role `json:"role,omitempty"`
	// Epoch is the topology epoch the agent last acted on.
	Epoch            uint64 `json:"epoch"`
	Timeline         uint32 `json:"timeline,omitempty"`
	SystemIdentifier string `json:"system_identifier,omitempty"` // pg_control_system(); text, as it exceeds JSON's exact integers
	// WriteLSN is the primary's current WAL position (pg_current_wal_lsn()); 0 on a replica.
	WriteLSN LSN `json:"write_lsn,omitempty"`
	// ReceivedLSN and ReplayedLSN are a replica's (pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()).
	ReceivedLSN LSN `json:"received_lsn,omitempty"`
	ReplayedLSN LSN `json:"replayed_lsn,omitempty"`
	// Streaming reports whether a replica's WAL receiver is connected to its upstream.
	Streaming bool `json:"streaming,omitempty"`
	// Lag is how far a replica's replay is behind in time (now - pg_last_xact_replay_timestamp(),
	// 0 when caught up).
	Lag       time.Duration `json:"lag,omitempty"`
	LastError string        `json:"last_error,omitempty"`
	// ShutdownClean reports that PostgreSQL is down after a clean (fast) shutdown the agent made; its
	// WriteLSN is then the final position (the shutdown checkpoint's end, from pg_controldata).
	ShutdownClean bool      `json:"shutdown_clean,omitempty"`
	At            time.Time `json:"at"`
}

// Position is the furthest WAL position the node has: written on a primary, received on a replica.
func (s *NodeStatus) Position() LSN {
	return max(s.WriteLSN, s.ReceivedLSN, s.ReplayedLSN)
}

// ProxyStatus is what a proxy reports under its lease: the epoch it applied (the controller waits for
// every live proxy to apply a fencing epoch before it promotes anyone).
type ProxyStatus struct {
	Name         string    `json:"name"`
	Region       string    `json:"region"`
	AppliedEpoch uint64    `json:"applied_epoch"`
	WritesPaused bool      `json:"writes_paused,omitempty"`
	At           time.Time `json:"at"`
}

// EventKind names what happened.
type EventKind string

// The kinds of events the control plane records.
const (
	EventFailoverStarted     EventKind = "failover_started"
	EventFailoverRefused     EventKind = "failover_refused"
	EventPrimaryPromoted     EventKind = "primary_promoted"
	EventFailoverCompleted   EventKind = "failover_completed"
	EventSwitchoverStarted   EventKind = "switchover_started"
	EventSwitchoverCompleted EventKind = "switchover_completed"
	EventSwitchoverAborted   EventKind = "switchover_aborted"
	EventSwitchoverRefused   EventKind = "switchover_refused"
	EventFailoverBlocked     EventKind = "failover_blocked"
	EventCandidateChosen     EventKind = "candidate_chosen"
	EventNodeRejoining       EventKind = "node_rejoining"
	EventRequestRefused      EventKind = "request_refused"
	EventNodeFenced          EventKind = "node_fenced"
	EventNodeRejoined        EventKind = "node_rejoined"
	EventWALSalvaged         EventKind = "wal_salvaged"
	EventNodeRecloned        EventKind = "node_recloned"
	EventReplicaLagging      EventKind = "replica_lagging"
	EventRegionUnreachable   EventKind = "region_unreachable"
	EventWritesPaused        EventKind = "writes_paused"
	EventWritesResumed       EventKind = "writes_resumed"
	EventRPOChanged          EventKind = "rpo_changed"
	EventLeaderElected       EventKind = "leader_elected"
)

// Event is one entry of the append-only log of what the control plane decided and saw.
type Event struct {
	// Seq orders events; the store assigns it.
	Seq     uint64            `json:"seq"`
	Kind    EventKind         `json:"kind"`
	Epoch   uint64            `json:"epoch"`
	Node    string            `json:"node,omitempty"`
	Message string            `json:"message"`
	Details map[string]string `json:"details,omitempty"`
	At      time.Time         `json:"at"`
}
