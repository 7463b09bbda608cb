package controller

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/topology"
)

// randomInput draws an input anywhere in the state space, including unlikely combinations (a fenced
// node running as a primary, a target stopped while promoting, proxies ahead of the store): the safety
// properties must hold for every input, not only for those a well-behaved cluster produces.
func randomInput(r *rand.Rand) Input {
	names := []string{"a", "b", "c", "d"}
	regions := []string{"us-east-1", "us-west-2", "eu-west-1", "us-east-1"}
	lsn := func() topology.LSN { return topology.LSN(0x4000000 + r.Int64N(5)*0x800000) }
	chance := func(n int) bool { return r.IntN(n) == 0 }
	epoch := uint64(5 + r.IntN(4))

	topo := &topology.Topology{Epoch: epoch, State: topology.StateSteady, UpdatedAt: t0.Add(-time.Minute)}
	for i, n := range names {
		topo.Nodes = append(topo.Nodes, topology.Node{Name: n, Region: regions[i], Address: n + ":5432", Role: topology.RoleReplica})
	}
	pi := r.IntN(len(names))
	primary := names[pi]
	target := names[(pi+1+r.IntN(len(names)-1))%len(names)]
	op := &topology.Operation{From: primary, FromLSN: lsn(), StartedAt: t0.Add(-time.Duration(r.IntN(40)) * time.Second)}
	switch r.IntN(4) {
	case 0, 1: // steady
		topo.Primary = primary
		topo.Nodes[pi].Role = topology.RolePrimary
		if chance(4) {
			topo.WritesPaused, topo.WritesPausedBy = true, []string{pausedByOperator, pausedByRPO}[r.IntN(2)]
		}
	case 2: // failing over
		topo.State, topo.Operation = topology.StateFailingOver, op
		op.Kind = topology.OpFailover
		topo.Nodes[pi].Role = topology.RoleFenced
		if chance(2) {
			op.To, op.ToLSN, op.Promoting, op.Forced = target, lsn(), chance(2), chance(3)
		}
		if chance(3) {
			op.Blocked = "no_candidate"
		}
		if chance(3) {
			op.Abandoned = []string{names[(pi+1+r.IntN(len(names)-1))%len(names)]}
		}
	case 3: // switching
		topo.Primary, topo.State, topo.Operation = primary, topology.StateSwitching, op
		topo.WritesPaused, topo.WritesPausedBy = true, pausedBySwitchover
		topo.Nodes[pi].Role = topology.RolePrimary
		op.Kind, op.To, op.Promoting = topology.OpSwitchover, target, chance(3)
		if chance(2) {
			op.FromLSN = 0
		}
		if !op.Promoting && chance(4) {
			op.Abandoned = []string{target}
		}
	}
	for i := range topo.Nodes {
		n := &topo.Nodes[i]
		if n.Role == topology.RoleReplica && n.Name != op.To && chance(5) {
			n.Role = []topology.Role{topology.RoleFenced, topology.RoleRejoining}[r.IntN(2)]
			n.DivergedAt = lsn()
		}
		if n.Role == topology.RoleReplica || n.Role == topology.RoleRejoining {
			n.Upstream = primary
			if chance(6) {
				n.Upstream = ""
			}
		}
	}
	if chance(3) {
		topo.SyncStandbys = []string{"b", "c"}
	}

	nodes := map[string]topology.NodeStatus{}
	for i, n := range names {
		if chance(4) {
			continue // no lease
		}
		st := topology.NodeStatus{Name: n, Region: regions[i], Up: !chance(4), Epoch: epoch - uint64(r.IntN(2)), At: t0}
		st.Role = []topology.Role{topology.RolePrimary, topology.RoleReplica, topology.RoleReplica, topology.RoleFenced}[r.IntN(4)]
		if n == primary && chance(2) {
			st.Role = topology.RolePrimary
		}
		if st.Role == topology.RolePrimary {
			st.WriteLSN = lsn()
		} else {
			st.ReceivedLSN = lsn()
			st.ReplayedLSN = st.ReceivedLSN - topology.LSN(r.Int64N(2)*0x100000)
			st.Streaming = st.Up && !chance(4)
		}
		if !st.Up && chance(2) {
			st.ShutdownClean, st.WriteLSN = true, lsn()
		}
		st.Lag = time.Duration(r.IntN(4)) * time.Second
		nodes[n] = st
	}
	proxies := map[string]topology.ProxyStatus{}
	for _, p := range []string{"px-1", "px-2"} {
		if !chance(4) {
			proxies[p] = topology.ProxyStatus{Name: p, AppliedEpoch: epoch - uint64(r.IntN(2)), WritesPaused: chance(2)}
		}
	}
	timers := Timers{DownSince: map[string]time.Time{}, LastSeen: map[string]topology.NodeStatus{}}
	for _, n := range names {
		if chance(2) {
			timers.DownSince[n] = t0.Add(-time.Duration(r.IntN(10)) * time.Second)
		}
		timers.LastSeen[n] = topology.NodeStatus{Name: n, WriteLSN: lsn(), At: t0.Add(-time.Second)}
	}
	cfg := testConfig()
	cfg.RPO = []RPO{{Mode: RPOAsync}, {Mode: RPOSync}, {Mode: RPOMaxLag, MaxLag: time.Second}}[r.IntN(3)]
	var req *Request
	switch r.IntN(8) {
	case 0:
		req = &Request{Kind: RequestSwitchover, To: names[r.IntN(len(names))]}
	case 1:
		req = &Request{Kind: RequestSwitchover, ToRegion: regions[r.IntN(len(regions))]}
	case 2:
		req = &Request{Kind: RequestFailover, To: names[r.IntN(len(names))], Force: chance(2)}
	case 3:
		req = &Request{Kind: []RequestKind{RequestPauseWrites, RequestResumeWrites}[r.IntN(2)]}
	case 4:
		req = &Request{Kind: RequestSetRPO, RPO: RPO{Mode: RPOSync}}
	}
	return Input{
		Now: t0.Add(time.Duration(r.IntN(40)) * time.Second), Topology: topo, Nodes: nodes, Proxies: proxies,
		Timers: timers, Config: cfg, Request: req,
	}
}

// TestDecideProperties runs the safety checks of checkDecision over many random inputs, and checks that
// Decide is deterministic and leaves its input alone.
func TestDecideProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 2026))
	n := 10000
	if testing.Short() {
		n = 2000
	}
	seen := map[string]int{}
	for i := range n {
		in := randomInput(r)
		before := snapshot(in)
		dec := Decide(in)
		if !reflect.DeepEqual(before, snapshot(in)) {
			t.Fatalf("input %d: Decide changed its input", i)
		}
		if again := Decide(in); !reflect.DeepEqual(dec, again) {
			t.Fatalf("input %d: Decide is not deterministic:\n%v\n%v", i, dec.Actions, again.Actions)
		}
		var errs []string
		checkDecision(func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }, in, dec)
		if len(errs) > 0 {
			t.Fatalf("input %d: %s\ntopology %+v op %+v\nnodes %+v\nproxies %+v\nrequest %+v\nactions %v",
				i, strings.Join(errs, "\n"), in.Topology, in.Topology.Operation, in.Nodes, in.Proxies, in.Request, dec.Actions)
		}
		for _, a := range dec.Actions {
			s := a.String()
			if i := slices.Index([]byte(s), ' '); i > 0 {
				s = s[:i]
			}
			seen[s]++
		}
	}
	// The generator must reach the interesting decisions, or the properties check nothing.
	for _, kind := range []string{"write", "event", "fence", "promote", "repoint", "rejoin", "stop-clean", "start-primary", "set-sync", "refuse"} {
		if seen[kind] == 0 {
			t.Errorf("no %s action in %d random inputs: the generator misses part of the state space", kind, n)
		}
	}
	t.Logf("actions over %d random inputs: %v", n, seen)
}
