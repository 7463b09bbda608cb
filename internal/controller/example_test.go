package controller_test

import (
	"fmt"
	"time"

	"github.com/meridiandb/meridian/internal/controller"
	"github.com/meridiandb/meridian/internal/topology"
)

// The primary's lease expired: the decision fences (epoch 8, no primary) and nothing is promoted yet.
func ExampleDecide() {
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	topo := &topology.Topology{
		Epoch: 7, Primary: "a", State: topology.StateSteady,
		Nodes: []topology.Node{
			{Name: "a", Region: "us-east-1", Address: "10.0.0.1:5432", Role: topology.RolePrimary},
			{Name: "b", Region: "us-west-2", Address: "10.0.1.1:5432", Role: topology.RoleReplica, Upstream: "a"},
		},
	}
	lastA := topology.NodeStatus{Name: "a", Up: true, Role: topology.RolePrimary, Epoch: 7,
		WriteLSN: topology.MustParseLSN("0/5000000"), At: now.Add(-2 * time.Second)}
	dec := controller.Decide(controller.Input{
		Now:      now,
		Topology: topo,
		Nodes: map[string]topology.NodeStatus{ // a is absent: its agent's lease expired
			"b": {Name: "b", Up: true, Role: topology.RoleReplica, Epoch: 7, ReceivedLSN: topology.MustParseLSN("0/4FFF000")},
		},
		Proxies: map[string]topology.ProxyStatus{"px": {Name: "px", AppliedEpoch: 7}},
		Timers:  controller.Timers{LastSeen: map[string]topology.NodeStatus{"a": lastA}},
		Config:  controller.DefaultConfig(),
	})
	for _, a := range dec.Actions {
		fmt.Println(a)
	}
	// Output:
	// write epoch=8 primary= state=failing_over op=failover:a> from_lsn=0/5000000 a:fenced b:replica<a
	// event failover_started node=a from=a from_lsn=0/5000000 last_seen=2026-12-02T03:59:58.000Z reason=lease_expired replicas_streaming=
	// event node_fenced node=a reason=lease_expired
	// fence a
}
