package proxy

import (
	"strings"
	"testing"
	"time"
)

// TestReplicaChoice covers the routing order: local replicas (round robin), else the nearest replica
// elsewhere by round-trip time, else the primary, else an error.
func TestReplicaChoice(t *testing.T) {
	p := &Proxy{cfg: Config{Region: "west"}}
	node := func(name, region string, up, primary bool, rtt time.Duration) NodeState {
		return NodeState{Name: name, Region: region, Up: up, Primary: primary, RTT: rtt}
	}
	tests := []struct {
		name   string
		snap   Snapshot
		want   []string // successive choices
		route  string
		errors bool
	}{
		{name: "local replicas round robin", snap: Snapshot{Primary: "p", Nodes: []NodeState{
			node("p", "east", true, true, time.Millisecond), node("w1", "west", true, false, 0), node("w2", "west", true, false, 0)}},
			want: []string{"w2", "w1", "w2"}, route: routeLocal},
		{name: "down local replica skipped", snap: Snapshot{Primary: "p", Nodes: []NodeState{
			node("p", "east", true, true, 0), node("w1", "west", false, false, 0), node("w2", "west", true, false, 0)}},
			want: []string{"w2", "w2"}, route: routeLocal},
		{name: "nearest remote replica", snap: Snapshot{Primary: "p", Nodes: []NodeState{
			node("p", "east", true, true, 0), node("eu", "eu", true, false, 70*time.Millisecond),
			node("e2", "east", true, false, 64*time.Millisecond), node("w1", "west", false, false, 0)}},
			want: []string{"e2"}, route: routeRemote},
		{name: "primary when no replica", snap: Snapshot{Primary: "p", Nodes: []NodeState{
			node("p", "east", true, true, 0), node("w1", "west", false, false, 0)}},
			want: []string{"p"}, route: routePrimary},
		{name: "a node claiming primary is not a replica", snap: Snapshot{Primary: "", Nodes: []NodeState{
			node("p", "east", true, true, 0), node("q", "west", true, true, 0)}},
			errors: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p.rr.Store(0)
			for i, want := range tt.want {
				got, err := p.replicaTarget(&tt.snap)
				if err != nil {
					t.Fatal(err)
				}
				if got.node.Name != want || got.route != tt.route {
					t.Fatalf("choice %d = %s (%s), want %s (%s)", i, got.node.Name, got.route, want, tt.route)
				}
			}
			if tt.errors {
				if _, err := p.replicaTarget(&tt.snap); err == nil {
					t.Fatal("want an error")
				}
			}
		})
	}
}

func TestParseConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown key", "region: r\nnodes: [{name: a, address: 'h:1', region: r}]\nbogus: 1\n", "bogus"},
		{"missing region", "nodes: [{name: a, address: 'h:1', region: r}]\n", "region"},
		{"bad pool mode", "region: r\npool_mode: statement\nnodes: [{name: a, address: 'h:1', region: r}]\n", "pool_mode"},
		{"bad address", "region: r\nnodes: [{name: a, address: nohost, region: r}]\n", "nodes[0].address"},
		{"duplicate node", "region: r\nnodes: [{name: a, address: 'h:1', region: r}, {name: a, address: 'h:2', region: r}]\n", "nodes[1].name"},
		{"bad duration", "region: r\npoll_interval: fast\nnodes: [{name: a, address: 'h:1', region: r}]\n", "poll_interval"},
		{"pool size", "region: r\npool_size: 0\nnodes: [{name: a, address: 'h:1', region: r}]\n", "pool_size"},
		{"no nodes", "region: r\n", "nodes"},
		{"auto_prepare threshold", "region: r\nauto_prepare_threshold: 0\nnodes: [{name: a, address: 'h:1', region: r}]\n", "auto_prepare_threshold"},
		{"auto_prepare not a bool", "region: r\nauto_prepare: sometimes\nnodes: [{name: a, address: 'h:1', region: r}]\n", "auto_prepare"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseConfig error = %v, want one naming %q", err, tt.want)
			}
		})
	}
	cfg, err := ParseConfig([]byte("region: r\nnodes: [{name: a, address: 'h:1', region: r}]\nserver_password: ${MERIDIAN_TEST_PW}\n"))
	if err != nil || cfg.PoolSize != 20 || cfg.PollInterval != time.Second || cfg.AutoPrepare || cfg.AutoPrepareThreshold != 2 {
		t.Fatalf("defaults: %+v, %v", cfg, err)
	}
}
