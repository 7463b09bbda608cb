package controller

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/meridiandb/meridian/internal/topology"
)

// situation is one named case of the decision table. in changes the default input: the steady cluster
// (a primary, b and c replicas, epoch 7), both proxies at epoch 7, the timers of a loop that saw a
// healthy a a second ago, the test config, no request, now = t0 + 1 s.
type situation struct {
	name string
	in   func(in *Input)
	want []string // the actions, in order, in their String form
	wait string   // a part of Decision.Wait, when it matters
}

func defaultInput() Input {
	return Input{
		Now: t0.Add(time.Second), Topology: steadyTopo(), Nodes: healthyNodes(), Proxies: proxies(7, false),
		Timers: lastSeen(), Config: testConfig(),
	}
}

// node changes one node status of in.
func node(in *Input, name string, f func(s *topology.NodeStatus)) {
	s := in.Nodes[name]
	f(&s)
	in.Nodes[name] = s
}

func down(s *topology.NodeStatus) { s.Up, s.Streaming = false, false }

func stoppedClean(lsn topology.LSN) func(s *topology.NodeStatus) {
	return func(s *topology.NodeStatus) { s.Up, s.ShutdownClean, s.WriteLSN, s.Epoch = false, true, lsn, 8 }
}

func replayed(lsn topology.LSN) func(s *topology.NodeStatus) {
	return func(s *topology.NodeStatus) { s.ReceivedLSN, s.ReplayedLSN = lsn, lsn }
}

func asPrimary(s *topology.NodeStatus) {
	s.Role, s.WriteLSN, s.ReceivedLSN, s.Streaming, s.Timeline = topology.RolePrimary, s.ReceivedLSN, 0, false, 2
}

// afterFailover is the steady topology after a failover from a to b, a fenced at 0/4800000.
func afterFailover() *topology.Topology {
	t := steadyTopo()
	t.Epoch, t.Primary = 9, "b"
	t.Nodes[0].Role, t.Nodes[0].DivergedAt = topology.RoleFenced, l48
	t.Nodes[1].Role, t.Nodes[1].Upstream = topology.RolePrimary, ""
	t.Nodes[2].Upstream = "b"
	return t
}

func afterFailoverNodes() map[string]topology.NodeStatus {
	n := healthyNodes()
	b, c := n["b"], n["c"]
	asPrimary(&b)
	b.Epoch, c.Epoch = 9, 9
	n["b"], n["c"] = b, c
	delete(n, "a")
	return n
}

const fenceA = "write epoch=8 primary= state=failing_over op=failover:a> from_lsn=0/5000000 a:fenced b:replica<a c:replica<a"

var situations = []situation{
	// ---- steady, nothing to do ----
	{name: "healthy cluster", in: func(in *Input) {}, want: nil},
	{name: "new leader with empty timers sees a healthy cluster", in: func(in *Input) { in.Timers = Timers{} }, want: nil},
	{
		name: "split evidence: replicas lost the stream but the primary holds its lease and is healthy",
		in: func(in *Input) {
			node(in, "b", func(s *topology.NodeStatus) { s.Streaming = false })
			node(in, "c", func(s *topology.NodeStatus) { s.Streaming = false })
		},
		want: nil,
	},
	{name: "no topology yet", in: func(in *Input) { in.Topology = nil }, want: nil, wait: "not bootstrapped"},

	// ---- detection ----
	{
		name: "primary lease lost: fence at E+1",
		in:   func(in *Input) { in.Nodes = failedNodes() },
		want: []string{
			fenceA,
			"event failover_started node=a from=a from_lsn=0/5000000 last_seen=2026-12-02T03:59:59.000Z reason=lease_expired replicas_streaming=",
			"event node_fenced node=a reason=lease_expired",
			"fence a",
		},
	},
	{
		name: "primary lease lost while replicas still stream from it: evidence recorded, the agent has fenced itself",
		in:   func(in *Input) { delete(in.Nodes, "a") },
		want: []string{
			fenceA,
			"event failover_started node=a from=a from_lsn=0/5000000 last_seen=2026-12-02T03:59:59.000Z reason=lease_expired replicas_streaming=b,c",
			"event node_fenced node=a reason=lease_expired",
			"fence a",
		},
	},
	{
		name: "primary lease lost, seen by a new leader that never saw the primary: its position estimated from the replicas",
		in: func(in *Input) {
			in.Nodes = failedNodes()
			in.Timers = Timers{}
		},
		want: []string{
			fenceA,
			"event failover_started node=a from=a from_lsn=0/5000000 from_lsn_estimated=true reason=lease_expired replicas_streaming=",
			"event node_fenced node=a reason=lease_expired",
			"fence a",
		},
	},
	{
		name: "PostgreSQL down and restarting, within failover_timeout: wait",
		in: func(in *Input) {
			node(in, "a", down)
			in.Timers.DownSince = map[string]time.Time{"a": t0}
		},
		want: nil, wait: "failover after failover_timeout",
	},
	{
		name: "PostgreSQL down, timer not started (new leader): wait",
		in:   func(in *Input) { node(in, "a", down); in.Timers = Timers{} },
		want: nil, wait: "PostgreSQL down",
	},
	{
		name: "PostgreSQL down longer than failover_timeout: fence",
		in: func(in *Input) {
			in.Nodes = failedNodes()
			in.Nodes["a"] = primaryStatus(7)
			node(in, "a", down)
			in.Timers.DownSince = map[string]time.Time{"a": t0.Add(-5 * time.Second)}
		},
		want: []string{
			fenceA,
			"event failover_started node=a from=a from_lsn=0/5000000 last_seen=2026-12-02T04:00:00.000Z reason=postgres_down replicas_streaming=",
			"event node_fenced node=a reason=postgres_down",
			"fence a",
		},
	},
	{
		name: "primary running in recovery longer than failover_timeout: fence",
		in: func(in *Input) {
			node(in, "a", func(s *topology.NodeStatus) { s.Role = topology.RoleReplica })
			in.Timers.DownSince = map[string]time.Time{"a": t0.Add(-10 * time.Second)}
		},
		want: []string{
			fenceA,
			"event failover_started node=a from=a from_lsn=0/5000000 last_seen=2026-12-02T04:00:00.000Z reason=postgres_down replicas_streaming=b,c",
			"event node_fenced node=a reason=postgres_down",
			"fence a",
		},
	},
	{
		name: "operator failover while the primary is down within failover_timeout: fence now, candidate recorded",
		in: func(in *Input) {
			node(in, "a", down)
			in.Timers.DownSince = map[string]time.Time{"a": t0}
			in.Request = &Request{Kind: RequestFailover, To: "c"}
		},
		want: []string{
			"write epoch=8 primary= state=failing_over op=failover:a>c from_lsn=0/5000000 a:fenced b:replica<a c:replica<a",
			"event failover_started node=a from=a from_lsn=0/5000000 last_seen=2026-12-02T04:00:00.000Z reason=operator replicas_streaming=b,c requested=c",
			"event node_fenced node=a reason=operator",
			"fence a",
		},
	},
	{
		name: "operator failover with a healthy primary: refused",
		in:   func(in *Input) { in.Request = &Request{Kind: RequestFailover, To: "b", Force: true} },
		want: []string{"event request_refused node=b code=primary_healthy request=failover", "refuse primary_healthy"},
	},

	// ---- failing over: the fencing handshake ----
	{
		name: "fenced, old primary still holds its lease and has not acted on the fence: no promotion",
		in:   func(in *Input) { in.Topology = fencedTopo(); in.Proxies = proxies(8, false) },
		want: []string{"fence a"}, wait: "still holds its lease",
	},
	{
		name: "fenced, old primary's agent alive and acknowledged the fence with PostgreSQL down: promote the best",
		in: func(in *Input) {
			in.Topology = fencedTopo()
			in.Proxies = proxies(8, false)
			node(in, "a", func(s *topology.NodeStatus) { s.Up, s.Epoch = false, 8 })
		},
		want: []string{
			"write epoch=8 primary= state=failing_over op=failover:a>b from_lsn=0/5000000 promoting a:fenced b:replica<a c:replica<a",
			"event candidate_chosen node=b bytes_behind=0 candidate=b candidate_lsn=0/5000000 from_lsn=0/5000000 others=c=0/4800000",
			"promote b",
		},
	},
	{
		name: "fenced, lease expired, a live proxy has not applied the fencing epoch: no promotion",
		in: func(in *Input) {
			in.Topology, in.Nodes = fencedTopo(), failedNodes()
			in.Proxies = proxies(8, false)
			in.Proxies["px-west"] = topology.ProxyStatus{Name: "px-west", AppliedEpoch: 7}
		},
		want: nil, wait: "px-west have not applied fencing epoch 8",
	},
	{
		name: "fenced, a proxy still behind after proxy_apply_wait: reported once, still no promotion",
		in: func(in *Input) {
			in.Topology, in.Nodes = fencedTopo(), failedNodes()
			in.Proxies = proxies(8, false)
			in.Proxies["px-west"] = topology.ProxyStatus{Name: "px-west", AppliedEpoch: 7}
			in.Now = t0.Add(4 * time.Second)
		},
		want: []string{
			`write epoch=8 primary= state=failing_over op=failover:a> from_lsn=0/5000000 blocked="proxies_not_applied" a:fenced b:replica<a c:replica<a`,
			"event failover_blocked proxies=px-west reason=proxies_not_applied",
		},
	},
	{
		name: "fenced, the same block already reported: no repeat",
		in: func(in *Input) {
			in.Topology, in.Nodes = fencedTopo(), failedNodes()
			in.Topology.Operation.Blocked = "proxies_not_applied"
			in.Proxies = map[string]topology.ProxyStatus{"px-west": {Name: "px-west", AppliedEpoch: 7}}
			in.Now = t0.Add(5 * time.Second)
		},
		want: nil,
	},
	{
		name: "fenced, a proxy whose lease expired does not hold the failover",
		in: func(in *Input) {
			in.Topology, in.Nodes = fencedTopo(), failedNodes()
			in.Proxies = map[string]topology.ProxyStatus{"px-east": {Name: "px-east", AppliedEpoch: 8}}
		},
		want: []string{
			"write epoch=8 primary= state=failing_over op=failover:a>b from_lsn=0/5000000 promoting a:fenced b:replica<a c:replica<a",
			"event candidate_chosen node=b bytes_behind=0 candidate=b candidate_lsn=0/5000000 from_lsn=0/5000000 others=c=0/4800000",
			"promote b",
		},
	},

	// ---- choosing ----
	{
		name: "two replicas with different LSNs: the most advanced wins over region priority",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = fencedTopo(), failedNodes(), proxies(8, false)
			node(in, "c", replayed(l51))
		},
		want: []string{
			"write epoch=8 primary= state=failing_over op=failover:a>c from_lsn=0/5000000 promoting a:fenced b:replica<a c:replica<a",
			"event candidate_chosen node=c bytes_behind=0 candidate=c candidate_lsn=0/5100000 from_lsn=0/5000000 others=b=0/5000000",
			"promote c",
		},
	},
	{
		name: "equal LSNs: region priority breaks the tie",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = fencedTopo(), failedNodes(), proxies(8, false)
			node(in, "c", replayed(l5))
		},
		want: []string{
			"write epoch=8 primary= state=failing_over op=failover:a>b from_lsn=0/5000000 promoting a:fenced b:replica<a c:replica<a",
			"event candidate_chosen node=b bytes_behind=0 candidate=b candidate_lsn=0/5000000 from_lsn=0/5000000 others=c=0/5000000",
			"promote b",
		},
	},
	{
		name: "equal LSNs, eu-west-1 preferred by config",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = fencedTopo(), failedNodes(), proxies(8, false)
			node(in, "c", replayed(l5))
			in.Config.RegionPriority = []string{"eu-west-1"}
		},
		want: []string{
			"write epoch=8 primary= state=failing_over op=failover:a>c from_lsn=0/5000000 promoting a:fenced b:replica<a c:replica<a",
			"event candidate_chosen node=c bytes_behind=0 candidate=c candidate_lsn=0/5000000 from_lsn=0/5000000 others=b=0/5000000",
			"promote c",
		},
	},
	{
		name: "best replica too far behind: failover refused with an event, nothing promoted",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = fencedTopo(), failedNodes(), proxies(8, false)
			node(in, "b", replayed(l3))
			node(in, "c", replayed(l3))
		},
		want: []string{
			`write epoch=8 primary= state=failing_over op=failover:a> from_lsn=0/5000000 blocked="lag_exceeded" a:fenced b:replica<a c:replica<a`,
			"event failover_refused bytes_behind=33554432 candidate=b candidate_lsn=0/3000000 from_lsn=0/5000000 reason=lag_exceeded",
		},
		wait: "too far behind",
	},
	{
		name: "too far behind, operator forces: promoted with the loss accepted",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = fencedTopo(), failedNodes(), proxies(8, false)
			in.Topology.Operation.Blocked = "lag_exceeded"
			node(in, "b", replayed(l3))
			node(in, "c", replayed(l3))
			in.Request = &Request{Kind: RequestFailover, Force: true}
		},
		want: []string{
			"write epoch=8 primary= state=failing_over op=failover:a>b from_lsn=0/5000000 promoting forced a:fenced b:replica<a c:replica<a",
			"event candidate_chosen node=b bytes_behind=33554432 candidate=b candidate_lsn=0/3000000 forced=true from_lsn=0/5000000 others=c=0/3000000",
			"promote b",
		},
	},
	{
		name: "operator names a less advanced candidate during the failover",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = fencedTopo(), failedNodes(), proxies(8, false)
			in.Request = &Request{Kind: RequestFailover, To: "c"}
		},
		want: []string{
			"write epoch=8 primary= state=failing_over op=failover:a>c from_lsn=0/5000000 promoting a:fenced b:replica<a c:replica<a",
			"event candidate_chosen node=c bytes_behind=8388608 candidate=c candidate_lsn=0/4800000 from_lsn=0/5000000 others=",
			"promote c",
		},
	},
	{
		name: "no live replica: failover blocked, reported",
		in: func(in *Input) {
			in.Topology, in.Proxies = fencedTopo(), proxies(8, false)
			in.Nodes = map[string]topology.NodeStatus{}
		},
		want: []string{
			`write epoch=8 primary= state=failing_over op=failover:a> from_lsn=0/5000000 blocked="no_candidate" a:fenced b:replica<a c:replica<a`,
			"event failover_blocked reason=no_candidate",
		},
	},
	{
		name: "sync mode: only a synchronous standby is promoted, even if another replica is further",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = withD(fencedTopo()), failedNodes(), proxies(8, false)
			in.Topology.SyncStandbys = []string{"b", "c"}
			in.Nodes["d"] = replicaStatus("d", "us-east-1", l51)
			node(in, "b", replayed(l48))
			node(in, "c", replayed(l3))
		},
		want: []string{
			"write epoch=8 primary= state=failing_over sync=b,c op=failover:a>b from_lsn=0/5000000 promoting a:fenced b:replica<a c:replica<a d:replica<a",
			"event candidate_chosen node=b bytes_behind=8388608 candidate=b candidate_lsn=0/4800000 from_lsn=0/5000000 others=c=0/3000000",
			"promote b",
		},
	},

	// ---- promoting ----
	{
		name: "controller restart mid-failover: the recorded candidate is told again, nothing rewritten",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = promotingTopo(), failedNodes(), proxies(8, false)
			in.Timers = Timers{}
			node(in, "c", replayed(l51)) // a better replica now: the choice stands
		},
		want: []string{"promote b"}, wait: "waiting for b to promote",
	},
	{
		name: "candidate promoted: publish E+2, re-point the rest, record the lost WAL range",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = promotingTopo(), failedNodes(), proxies(8, false)
			in.Topology.Operation.ToLSN = l48
			node(in, "b", asPrimary)
		},
		want: []string{
			"write epoch=9 primary=b state=steady a:fenced@0/4800000 b:primary c:replica<b",
			"event primary_promoted node=b lsn=0/4800000",
			"event failover_completed node=b from=a lost_bytes=8388608 lost_from=0/4800000 lost_to=0/5000000 to=b",
			"repoint c<b",
		},
	},
	{
		name: "candidate promoted while another replica was away: that one rejoins (it may be ahead)",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = promotingTopo(), failedNodes(), proxies(8, false)
			node(in, "b", asPrimary)
			delete(in.Nodes, "c")
		},
		want: []string{
			"write epoch=9 primary=b state=steady a:fenced@0/5000000 b:primary c:rejoining<b@0/5000000",
			"event node_rejoining node=c reason=new_primary salvage_from=0/5000000 salvage_to=0/0 upstream=b",
			"event primary_promoted node=b lsn=0/5000000",
			"event failover_completed node=b from=a lost_bytes=0 lost_from=0/5000000 lost_to=0/5000000 to=b",
			"rejoin c<b salvage=0/5000000-0/0",
		},
	},
	{
		name: "candidate lost its lease while promoting: fenced, choose again",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = promotingTopo(), failedNodes(), proxies(8, false)
			delete(in.Nodes, "b")
		},
		want: []string{
			"write epoch=8 primary= state=failing_over op=failover:a> from_lsn=0/5000000 a:fenced b:fenced@0/5000000 c:replica<a",
			"event node_fenced node=b reason=candidate_lost",
		},
	},
	{
		name: "candidate alive but not promoted within failover_timeout: abandoned with a new epoch",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = promotingTopo(), failedNodes(), proxies(8, false)
			node(in, "b", down)
			in.Timers.DownSince = map[string]time.Time{"b": t0.Add(-5 * time.Second)}
		},
		want: []string{
			"write epoch=9 primary= state=failing_over op=failover:a> from_lsn=0/5000000 a:fenced b:fenced@0/5000000 c:replica<a",
			"event node_fenced node=b reason=candidate_stuck",
			"fence b",
		},
	},
	{
		name: "abandoned candidate has not acknowledged the new epoch: nothing else promoted",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = fencedTopo(), failedNodes(), proxies(9, false)
			in.Topology.Epoch, in.Topology.Operation.Abandoned = 9, []string{"b"}
			in.Topology.Nodes[1].Role, in.Topology.Nodes[1].Upstream = topology.RoleFenced, ""
		},
		want: []string{"fence b"}, wait: "abandoned candidate b",
	},
	{
		name: "abandoned candidate acknowledged: the next best is promoted",
		in: func(in *Input) {
			in.Topology, in.Nodes, in.Proxies = fencedTopo(), failedNodes(), proxies(9, false)
			in.Topology.Epoch, in.Topology.Operation.Abandoned = 9, []string{"b"}
			in.Topology.Nodes[1].Role, in.Topology.Nodes[1].Upstream = topology.RoleFenced, ""
			node(in, "b", func(s *topology.NodeStatus) { s.Epoch, s.Up = 9, false })
		},
		want: []string{
			"write epoch=9 primary= state=failing_over op=failover:a>c from_lsn=0/5000000 promoting a:fenced b:fenced c:replica<a",
			"event candidate_chosen node=c bytes_behind=8388608 candidate=c candidate_lsn=0/4800000 from_lsn=0/5000000 others=",
			"promote c",
		},
	},
	{
		name: "pause request while failing over: refused as busy",
		in: func(in *Input) {
			in.Topology, in.Proxies = fencedTopo(), proxies(8, false)
			in.Request = &Request{Kind: RequestPauseWrites}
		},
		want: []string{"event request_refused code=busy request=pause_writes", "fence a", "refuse busy"},
	},

	// ---- switchover: pre-check ----
	{
		name: "switchover to a healthy streaming replica: writes paused at E+1",
		in:   func(in *Input) { in.Request = &Request{Kind: RequestSwitchover, To: "b"} },
		want: []string{
			"write epoch=8 primary=a state=switching paused=switchover op=switchover:a>b a:primary b:replica<a c:replica<a",
			"event switchover_started node=b bytes_behind=0 from=a to=b",
			"event writes_paused by=switchover",
		},
	},
	{
		name: "switchover to a region: its most advanced replica",
		in:   func(in *Input) { in.Request = &Request{Kind: RequestSwitchover, ToRegion: "eu-west-1"} },
		want: []string{
			"write epoch=8 primary=a state=switching paused=switchover op=switchover:a>c a:primary b:replica<a c:replica<a",
			"event switchover_started node=c bytes_behind=8388608 from=a to=c",
			"event writes_paused by=switchover",
		},
	},
	{
		name: "switchover target lagging in bytes: refused, nothing changes",
		in: func(in *Input) {
			node(in, "c", replayed(l3))
			in.Request = &Request{Kind: RequestSwitchover, To: "c"}
		},
		want: []string{"event switchover_refused node=c code=target_lagging request=switchover", "refuse target_lagging"},
	},
	{
		name: "switchover target lagging in time: refused",
		in: func(in *Input) {
			node(in, "b", func(s *topology.NodeStatus) { s.Lag = 20 * time.Second })
			in.Request = &Request{Kind: RequestSwitchover, To: "b"}
		},
		want: []string{"event switchover_refused node=b code=target_lagging request=switchover", "refuse target_lagging"},
	},
	{
		name: "switchover to a dead target (no lease): refused",
		in: func(in *Input) {
			delete(in.Nodes, "b")
			in.Request = &Request{Kind: RequestSwitchover, To: "b"}
		},
		want: []string{"event switchover_refused node=b code=target_dead request=switchover", "refuse target_dead"},
	},
	{
		name: "switchover to a target whose PostgreSQL is down: refused",
		in: func(in *Input) {
			node(in, "b", down)
			in.Request = &Request{Kind: RequestSwitchover, To: "b"}
		},
		want: []string{"event switchover_refused node=b code=target_down request=switchover", "refuse target_down"},
	},
	{
		name: "switchover to a replica that is not streaming: refused",
		in: func(in *Input) {
			node(in, "b", func(s *topology.NodeStatus) { s.Streaming = false })
			in.Request = &Request{Kind: RequestSwitchover, To: "b"}
		},
		want: []string{"event switchover_refused node=b code=target_not_streaming request=switchover", "refuse target_not_streaming"},
	},
	{
		name: "switchover while an operator holds writes: refused (it would lift the pause)",
		in: func(in *Input) {
			in.Topology.WritesPaused, in.Topology.WritesPausedBy = true, pausedByOperator
			in.Request = &Request{Kind: RequestSwitchover, To: "b"}
		},
		want: []string{"event switchover_refused node=b code=writes_paused request=switchover", "refuse writes_paused"},
	},
	{
		name: "switchover while the max_lag guard holds writes: allowed (the guard decides again after)",
		in: func(in *Input) {
			in.Topology.WritesPaused, in.Topology.WritesPausedBy = true, pausedByRPO
			in.Request = &Request{Kind: RequestSwitchover, To: "b"}
		},
		want: []string{
			"write epoch=8 primary=a state=switching paused=switchover op=switchover:a>b a:primary b:replica<a c:replica<a",
			"event switchover_started node=b bytes_behind=0 from=a to=b",
			"event writes_paused by=switchover",
		},
	},
	{
		name: "switchover to the primary itself: refused",
		in:   func(in *Input) { in.Request = &Request{Kind: RequestSwitchover, To: "a"} },
		want: []string{"event switchover_refused node=a code=already_primary request=switchover", "refuse already_primary"},
	},
	{
		name: "switchover to an unknown node: refused",
		in:   func(in *Input) { in.Request = &Request{Kind: RequestSwitchover, To: "z"} },
		want: []string{"event switchover_refused node=z code=unknown_node request=switchover", "refuse unknown_node"},
	},

	// ---- switchover: steps ----
	{
		name: "switching: proxies have not yet held writes: wait",
		in:   func(in *Input) { in.Topology, in.Proxies = switchingTopo(), proxies(8, false) },
		want: nil, wait: "to hold writes",
	},
	{
		name: "switching: writes held everywhere: stop the old primary cleanly",
		in:   func(in *Input) { in.Topology, in.Proxies = switchingTopo(), proxies(8, true) },
		want: []string{"stop-clean a"},
	},
	{
		name: "switching: old primary stopped cleanly, target still replaying: record its final LSN",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(8, true)
			node(in, "a", stoppedClean(l51))
		},
		want: []string{"write epoch=8 primary=a state=switching paused=switchover op=switchover:a>b from_lsn=0/5100000 a:primary b:replica<a c:replica<a"},
		wait: "replay up to",
	},
	{
		name: "controller restart mid-switchover: same step, nothing rewritten",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(8, true)
			in.Topology.Operation.FromLSN = l51
			in.Timers = Timers{}
			node(in, "a", stoppedClean(l51))
		},
		want: nil, wait: "replay up to",
	},
	{
		name: "switching: target replayed the final LSN: promote it (point of no return recorded first)",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(8, true)
			node(in, "a", stoppedClean(l51))
			node(in, "b", replayed(l51))
		},
		want: []string{
			"write epoch=8 primary=a state=switching paused=switchover op=switchover:a>b from_lsn=0/5100000 promoting a:primary b:replica<a c:replica<a",
			"event candidate_chosen node=b candidate=b candidate_lsn=0/5100000 from_lsn=0/5100000",
			"promote b",
		},
	},
	{
		name: "switching: target promoted: publish E+2, old primary its replica without rewind, writes resumed",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(8, true)
			in.Topology.Operation.FromLSN, in.Topology.Operation.Promoting = l51, true
			node(in, "a", stoppedClean(l51))
			node(in, "b", replayed(l51))
			node(in, "b", asPrimary)
		},
		want: []string{
			"write epoch=9 primary=b state=steady a:replica<b b:primary c:replica<b",
			"event primary_promoted node=b lsn=0/5100000",
			"event switchover_completed node=b final_lsn=0/5100000 from=a to=b",
			"event writes_resumed by=switchover",
			"repoint a<b",
			"repoint c<b",
		},
	},
	{
		name: "switching: timeout before promotion: roll back, restart the old primary",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(8, true)
			node(in, "a", stoppedClean(l51))
			in.Now = t0.Add(31 * time.Second)
		},
		want: []string{
			"write epoch=9 primary=a state=steady a:primary b:replica<a c:replica<a",
			"event switchover_aborted node=a from=a reason=timeout: not done within switchover_timeout 30s to=b",
			"event writes_resumed by=switchover",
			"start-primary a",
		},
	},
	{
		name: "switching: target lost its lease before promotion: roll back, the old primary still runs",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(8, true)
			delete(in.Nodes, "b")
		},
		want: []string{
			"write epoch=9 primary=a state=steady a:primary b:replica<a c:replica<a",
			"event switchover_aborted node=a from=a reason=target b lost its lease to=b",
			"event writes_resumed by=switchover",
		},
	},
	{
		name: "switching: old primary crashed instead of a clean stop: roll back and restart it",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(8, true)
			node(in, "a", down)
		},
		want: []string{
			"write epoch=9 primary=a state=steady a:primary b:replica<a c:replica<a",
			"event switchover_aborted node=a from=a reason=the old primary a stopped without a clean shutdown to=b",
			"event writes_resumed by=switchover",
			"start-primary a",
		},
	},
	{
		name: "switching: target lost while promoting: roll back, target fenced to rejoin",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(8, true)
			in.Topology.Operation.FromLSN, in.Topology.Operation.Promoting = l51, true
			node(in, "a", stoppedClean(l51))
			delete(in.Nodes, "b")
		},
		want: []string{
			"write epoch=9 primary=a state=steady a:primary b:fenced@0/5100000 c:replica<a",
			"event switchover_aborted node=a from=a reason=target b lost its lease while promoting to=b",
			"event writes_resumed by=switchover",
			"fence b",
			"start-primary a",
		},
	},
	{
		name: "switching: target told to promote but still not a primary at switchover_timeout: abandoned with a new epoch",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(8, true)
			in.Topology.Operation.FromLSN, in.Topology.Operation.Promoting = l51, true
			node(in, "a", stoppedClean(l51))
			node(in, "b", replayed(l51))
			in.Now = t0.Add(31 * time.Second)
		},
		want: []string{
			"write epoch=9 primary=a state=switching paused=switchover op=switchover:a>b from_lsn=0/5100000 a:primary b:fenced@0/5100000 c:replica<a",
			"event node_fenced node=b reason=target_stuck",
			"fence b",
		},
	},
	{
		name: "switching: abandoned target has not acknowledged: the old primary stays down",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(9, true)
			in.Topology.Epoch, in.Topology.Operation.FromLSN, in.Topology.Operation.Abandoned = 9, l51, []string{"b"}
			in.Topology.Nodes[1].Role, in.Topology.Nodes[1].Upstream = topology.RoleFenced, ""
			node(in, "a", stoppedClean(l51))
			in.Now = t0.Add(32 * time.Second)
		},
		want: []string{"fence b"}, wait: "abandoned target b",
	},
	{
		name: "switching: abandoned target acknowledged: roll back, the old primary starts again",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(9, true)
			in.Topology.Epoch, in.Topology.Operation.FromLSN, in.Topology.Operation.Abandoned = 9, l51, []string{"b"}
			in.Topology.Nodes[1].Role, in.Topology.Nodes[1].Upstream = topology.RoleFenced, ""
			node(in, "a", stoppedClean(l51))
			node(in, "b", func(s *topology.NodeStatus) { s.Epoch, s.Up = 9, false })
			in.Now = t0.Add(32 * time.Second)
		},
		want: []string{
			"write epoch=10 primary=a state=steady a:primary b:fenced c:replica<a",
			"event switchover_aborted node=a from=a reason=target b did not promote within switchover_timeout to=b",
			"event writes_resumed by=switchover",
			"start-primary a",
		},
	},
	{
		name: "switching: the old primary's lease expired: becomes an unplanned failover",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(8, true)
			delete(in.Nodes, "a")
		},
		want: []string{
			"write epoch=9 primary= state=failing_over op=failover:a> from_lsn=0/5000000 a:fenced b:replica<a c:replica<a",
			"event switchover_aborted node=a from=a reason=the old primary lost its lease during the switchover to=b",
			"event failover_started node=a from=a from_lsn=0/5000000 last_seen=2026-12-02T03:59:59.000Z reason=lease_expired replicas_streaming=b,c",
			"event node_fenced node=a reason=lease_expired",
			"fence a",
		},
	},
	{
		name: "request while switching: refused",
		in: func(in *Input) {
			in.Topology, in.Proxies = switchingTopo(), proxies(8, true)
			in.Request = &Request{Kind: RequestPauseWrites}
		},
		want: []string{"event request_refused code=switchover_in_progress request=pause_writes", "refuse switchover_in_progress", "stop-clean a"},
	},

	// ---- rejoin and safety nets ----
	{
		name: "old primary returns: rejoining with its divergent range saved",
		in: func(in *Input) {
			in.Topology, in.Nodes = afterFailover(), afterFailoverNodes()
			in.Nodes["a"] = topology.NodeStatus{Name: "a", Region: "us-east-1", Up: false, Role: topology.RoleFenced, Epoch: 9, WriteLSN: l5, At: t0}
		},
		want: []string{
			"write epoch=9 primary=b state=steady a:rejoining<b@0/4800000 b:primary c:replica<b",
			"event node_rejoining node=a salvage_from=0/4800000 salvage_to=0/5000000 upstream=b",
			"rejoin a<b salvage=0/4800000-0/5000000",
		},
	},
	{
		name: "old primary returns still running as a primary: fence it first",
		in: func(in *Input) {
			in.Topology, in.Nodes = afterFailover(), afterFailoverNodes()
			in.Nodes["a"] = primaryStatus(7)
		},
		want: []string{"fence a"}, wait: "still runs as a primary",
	},
	{
		name: "rejoining node streams again: replica",
		in: func(in *Input) {
			in.Topology, in.Nodes = afterFailover(), afterFailoverNodes()
			in.Topology.Nodes[0].Role, in.Topology.Nodes[0].Upstream = topology.RoleRejoining, "b"
			in.Nodes["a"] = replicaStatus("a", "us-east-1", l51)
			node(in, "a", func(s *topology.NodeStatus) { s.Epoch, s.Timeline = 9, 2 })
		},
		want: []string{
			"write epoch=9 primary=b state=steady a:replica<b b:primary c:replica<b",
			"event node_rejoined node=a upstream=b",
		},
	},
	{
		name: "rejoining node streaming on another timeline (from someone else): not rejoined yet",
		in: func(in *Input) {
			in.Topology, in.Nodes = afterFailover(), afterFailoverNodes()
			in.Topology.Nodes[0].Role, in.Topology.Nodes[0].Upstream = topology.RoleRejoining, "b"
			in.Nodes["a"] = replicaStatus("a", "us-east-1", l51)
			node(in, "a", func(s *topology.NodeStatus) { s.Epoch, s.Timeline = 9, 3 })
		},
		want: nil,
	},
	{
		name: "a replica on a later timeline than the primary's cannot follow it: rejoin",
		in: func(in *Input) {
			node(in, "c", func(s *topology.NodeStatus) { s.Timeline, s.Streaming = 2, false })
		},
		want: []string{
			"write epoch=7 primary=a state=steady a:primary b:replica<a c:rejoining<a",
			"event node_rejoining node=c reason=diverged_timeline salvage_from=0/0 salvage_to=0/4800000 upstream=a",
			"rejoin c<a salvage=0/0-0/4800000",
		},
	},
	{
		name: "rejoining node still rewinding: nothing",
		in: func(in *Input) {
			in.Topology, in.Nodes = afterFailover(), afterFailoverNodes()
			in.Topology.Nodes[0].Role, in.Topology.Nodes[0].Upstream = topology.RoleRejoining, "b"
			in.Nodes["a"] = topology.NodeStatus{Name: "a", Up: false, Role: topology.RoleRejoining, Epoch: 9}
		},
		want: nil,
	},
	{
		name: "a replica runs as a second primary: fenced at once",
		in:   func(in *Input) { node(in, "c", asPrimary) },
		want: []string{
			"write epoch=7 primary=a state=steady a:primary b:replica<a c:fenced",
			"event node_fenced node=c lsn=0/4800000 reason=stray_primary",
			"fence c",
		},
	},
	{
		name: "a replica following the wrong upstream is re-pointed",
		in:   func(in *Input) { in.Topology.Nodes[2].Upstream = "b" },
		want: []string{"write epoch=7 primary=a state=steady a:primary b:replica<a c:replica<a", "repoint c<a"},
	},

	// ---- RPO ----
	{
		name: "max_lag: every other region lags: writes held at E+1",
		in: func(in *Input) {
			in.Config.RPO = RPO{Mode: RPOMaxLag, MaxLag: time.Second}
			node(in, "b", func(s *topology.NodeStatus) { s.Lag = 2 * time.Second })
			node(in, "c", func(s *topology.NodeStatus) { s.Streaming = false })
		},
		want: []string{
			"write epoch=8 primary=a state=steady paused=rpo_max_lag a:primary b:replica<a c:replica<a",
			"event writes_paused by=rpo_max_lag max_lag=1s",
		},
	},
	{
		name: "max_lag: a replica in the primary's own region does not count",
		in: func(in *Input) {
			in.Topology = withD(in.Topology)
			in.Nodes["d"] = replicaStatus("d", "us-east-1", l5)
			in.Config.RPO = RPO{Mode: RPOMaxLag, MaxLag: time.Second}
			node(in, "b", func(s *topology.NodeStatus) { s.Lag = 5 * time.Second })
			node(in, "c", func(s *topology.NodeStatus) { s.Lag = 5 * time.Second })
		},
		want: []string{
			"write epoch=8 primary=a state=steady paused=rpo_max_lag a:primary b:replica<a c:replica<a d:replica<a",
			"event writes_paused by=rpo_max_lag max_lag=1s",
		},
	},
	{
		name: "max_lag: a replica caught up: writes released",
		in: func(in *Input) {
			in.Topology.WritesPaused, in.Topology.WritesPausedBy = true, pausedByRPO
			in.Config.RPO = RPO{Mode: RPOMaxLag, MaxLag: time.Second}
			node(in, "b", func(s *topology.NodeStatus) { s.Lag = 500 * time.Millisecond })
			node(in, "c", func(s *topology.NodeStatus) { s.Lag = 5 * time.Second })
		},
		want: []string{
			"write epoch=8 primary=a state=steady a:primary b:replica<a c:replica<a",
			"event writes_resumed by=rpo_max_lag within=b",
		},
	},
	{
		name: "max_lag: operator resume while the guard holds writes: refused",
		in: func(in *Input) {
			in.Topology.WritesPaused, in.Topology.WritesPausedBy = true, pausedByRPO
			in.Config.RPO = RPO{Mode: RPOMaxLag, MaxLag: time.Second}
			node(in, "b", func(s *topology.NodeStatus) { s.Lag = 5 * time.Second })
			node(in, "c", func(s *topology.NodeStatus) { s.Lag = 5 * time.Second })
			in.Request = &Request{Kind: RequestResumeWrites}
		},
		want: []string{"event request_refused code=rpo_guard request=resume_writes", "refuse rpo_guard"},
	},
	{
		name: "sync mode: synchronous standbys are the other regions' replicas",
		in: func(in *Input) {
			in.Topology = withD(in.Topology)
			in.Nodes["d"] = replicaStatus("d", "us-east-1", l5)
			in.Config.RPO = RPO{Mode: RPOSync}
		},
		want: []string{
			"write epoch=7 primary=a state=steady sync=b,c a:primary b:replica<a c:replica<a d:replica<a",
			"event rpo_changed node=a sync_standbys=b,c",
			"set-sync a [b,c]",
		},
	},
	{
		name: "sync mode: a dead standby stays in the set (no silent downgrade to async)",
		in: func(in *Input) {
			in.Topology.SyncStandbys = []string{"b", "c"}
			in.Config.RPO = RPO{Mode: RPOSync}
			delete(in.Nodes, "b")
		},
		want: nil,
	},
	{
		name: "operator switches the RPO to sync at run time",
		in:   func(in *Input) { in.Request = &Request{Kind: RequestSetRPO, RPO: RPO{Mode: RPOSync}} },
		want: []string{
			"write epoch=7 primary=a state=steady sync=b,c a:primary b:replica<a c:replica<a",
			"event rpo_changed mode=sync previous=async",
			"event rpo_changed node=a sync_standbys=b,c",
			"set-rpo sync",
			"set-sync a [b,c]",
		},
	},
	{
		name: "back to async: synchronous standbys cleared",
		in:   func(in *Input) { in.Topology.SyncStandbys = []string{"b", "c"} },
		want: []string{
			"write epoch=7 primary=a state=steady a:primary b:replica<a c:replica<a",
			"event rpo_changed node=a sync_standbys=",
			"set-sync a []",
		},
	},
	{
		name: "invalid RPO request: refused",
		in:   func(in *Input) { in.Request = &Request{Kind: RequestSetRPO, RPO: RPO{Mode: RPOMaxLag}} },
		want: []string{"event request_refused code=invalid_rpo request=set_rpo", "refuse invalid_rpo"},
	},
	{
		name: "operator pauses writes: E+1",
		in:   func(in *Input) { in.Request = &Request{Kind: RequestPauseWrites} },
		want: []string{"write epoch=8 primary=a state=steady paused=operator a:primary b:replica<a c:replica<a", "event writes_paused by=operator"},
	},
	{
		name: "operator resumes writes: E+1",
		in: func(in *Input) {
			in.Topology.WritesPaused, in.Topology.WritesPausedBy = true, pausedByOperator
			in.Request = &Request{Kind: RequestResumeWrites}
		},
		want: []string{"write epoch=8 primary=a state=steady a:primary b:replica<a c:replica<a", "event writes_resumed by=operator"},
	},
}

func TestDecide(t *testing.T) {
	if len(situations) < 30 {
		t.Fatalf("only %d situations; issue 15 asks for at least 30", len(situations))
	}
	for _, s := range situations {
		t.Run(s.name, func(t *testing.T) {
			in := defaultInput()
			s.in(&in)
			before := snapshot(in)
			dec := Decide(in)
			var got []string
			for _, a := range dec.Actions {
				got = append(got, a.String())
			}
			if diff := cmp.Diff(s.want, got); diff != "" {
				t.Errorf("actions (-want +got):\n%s\nwait: %s", diff, dec.Wait)
			}
			if s.wait != "" && !strings.Contains(dec.Wait, s.wait) {
				t.Errorf("wait = %q, want it to mention %q", dec.Wait, s.wait)
			}
			if diff := cmp.Diff(before, snapshot(in)); diff != "" {
				t.Errorf("Decide changed its input (-before +after):\n%s", diff)
			}
			checkDecision(t.Errorf, in, dec)
		})
	}
}

// snapshot deep-copies what Decide must not change.
func snapshot(in Input) any {
	var topo *topology.Topology
	if in.Topology != nil {
		topo = in.Topology.Clone()
	}
	var req *Request
	if in.Request != nil {
		r := *in.Request
		req = &r
	}
	return struct {
		T *topology.Topology
		N map[string]topology.NodeStatus
		P map[string]topology.ProxyStatus
		D map[string]time.Time
		L map[string]topology.NodeStatus
		R *Request
	}{topo, maps.Clone(in.Nodes), maps.Clone(in.Proxies), maps.Clone(in.Timers.DownSince), maps.Clone(in.Timers.LastSeen), req}
}
