package controller

import (
	"time"

	"github.com/meridiandb/meridian/internal/topology"
)

// The test cluster: a (us-east-1) primary, b (us-west-2) and c (eu-west-1) replicas, two proxies.

var t0 = time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)

var (
	l3  = topology.MustParseLSN("0/3000000")
	l48 = topology.MustParseLSN("0/4800000")
	l5  = topology.MustParseLSN("0/5000000")
	l51 = topology.MustParseLSN("0/5100000")
)

func steadyTopo() *topology.Topology {
	return &topology.Topology{
		Epoch: 7, Primary: "a", State: topology.StateSteady,
		Nodes: []topology.Node{
			{Name: "a", Region: "us-east-1", Address: "10.0.0.1:5432", Role: topology.RolePrimary},
			{Name: "b", Region: "us-west-2", Address: "10.0.1.1:5432", Role: topology.RoleReplica, Upstream: "a"},
			{Name: "c", Region: "eu-west-1", Address: "10.0.2.1:5432", Role: topology.RoleReplica, Upstream: "a"},
		},
		UpdatedAt: t0.Add(-time.Hour),
	}
}

// withD adds d, a replica of a in a's region.
func withD(t *topology.Topology) *topology.Topology {
	t.Nodes = append(t.Nodes, topology.Node{Name: "d", Region: "us-east-1", Address: "10.0.0.2:5432", Role: topology.RoleReplica, Upstream: "a"})
	return t
}

// fencedTopo is the topology right after the fence of a failover from a (epoch 8).
func fencedTopo() *topology.Topology {
	t := steadyTopo()
	t.Epoch, t.Primary, t.State = 8, "", topology.StateFailingOver
	t.Nodes[0].Role = topology.RoleFenced
	t.Operation = &topology.Operation{Kind: topology.OpFailover, From: "a", FromLSN: l5, StartedAt: t0}
	t.UpdatedAt = t0
	return t
}

// promotingTopo: the failover chose b (at 0/5000000) and told it to promote.
func promotingTopo() *topology.Topology {
	t := fencedTopo()
	t.Operation.To, t.Operation.ToLSN, t.Operation.Promoting = "b", l5, true
	return t
}

// switchingTopo: a switchover from a to b started at t0 (epoch 8, writes paused).
func switchingTopo() *topology.Topology {
	t := steadyTopo()
	t.Epoch, t.State, t.WritesPaused, t.WritesPausedBy = 8, topology.StateSwitching, true, pausedBySwitchover
	t.Operation = &topology.Operation{Kind: topology.OpSwitchover, From: "a", To: "b", StartedAt: t0}
	t.UpdatedAt = t0
	return t
}

func primaryStatus(epoch uint64) topology.NodeStatus {
	return topology.NodeStatus{Name: "a", Region: "us-east-1", Up: true, Role: topology.RolePrimary, Epoch: epoch,
		Timeline: 1, WriteLSN: l5, At: t0}
}

func replicaStatus(name, region string, lsn topology.LSN) topology.NodeStatus {
	return topology.NodeStatus{Name: name, Region: region, Up: true, Role: topology.RoleReplica, Epoch: 7, Timeline: 1,
		ReceivedLSN: lsn, ReplayedLSN: lsn, Streaming: true, At: t0}
}

func healthyNodes() map[string]topology.NodeStatus {
	return map[string]topology.NodeStatus{
		"a": primaryStatus(7),
		"b": replicaStatus("b", "us-west-2", l5),
		"c": replicaStatus("c", "eu-west-1", l48),
	}
}

// failedNodes: a's lease expired; b and c lost their stream.
func failedNodes() map[string]topology.NodeStatus {
	n := healthyNodes()
	delete(n, "a")
	for _, name := range []string{"b", "c"} {
		s := n[name]
		s.Streaming = false
		n[name] = s
	}
	return n
}

func proxies(epoch uint64, paused bool) map[string]topology.ProxyStatus {
	return map[string]topology.ProxyStatus{
		"px-east": {Name: "px-east", Region: "us-east-1", AppliedEpoch: epoch, WritesPaused: paused, At: t0},
		"px-west": {Name: "px-west", Region: "us-west-2", AppliedEpoch: epoch, WritesPaused: paused, At: t0},
	}
}

func testConfig() Config {
	c := DefaultConfig()
	c.RegionPriority = []string{"us-east-1", "us-west-2", "eu-west-1"}
	return c
}

// lastSeen: the timers of a loop that saw a healthy cluster a second before t0.
func lastSeen() Timers {
	a := primaryStatus(7)
	a.At = t0.Add(-time.Second)
	return Timers{LastSeen: map[string]topology.NodeStatus{"a": a}}
}
