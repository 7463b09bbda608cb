package topology

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sample() *Topology {
	return &Topology{
		Epoch: 7, Primary: "a", State: StateSteady,
		Nodes: []Node{
			{Name: "a", Region: "us-east-1", Address: "10.0.0.1:5432", Role: RolePrimary},
			{Name: "b", Region: "eu-west-1", Address: "10.0.1.1:5432", Role: RoleReplica, Upstream: "a"},
			{Name: "c", Region: "ap-south-1", Address: "10.0.2.1:5432", Role: RoleFenced},
		},
		UpdatedAt: time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC),
	}
}

func TestTopologyValidate(t *testing.T) {
	if err := sample().Validate(); err != nil {
		t.Fatalf("valid topology refused: %v", err)
	}
	for name, tc := range map[string]struct {
		change func(*Topology)
		want   string
	}{
		"unknown state":        {func(t *Topology) { t.State = "moving" }, `unknown state "moving"`},
		"nameless node":        {func(t *Topology) { t.Nodes[1].Name = "" }, "without a name"},
		"duplicate node":       {func(t *Topology) { t.Nodes[2].Name = "b" }, `"b" listed twice`},
		"no address":           {func(t *Topology) { t.Nodes[1].Address = "" }, "no address"},
		"no region":            {func(t *Topology) { t.Nodes[1].Region = "" }, "no region"},
		"unknown role":         {func(t *Topology) { t.Nodes[1].Role = "leader" }, `unknown role "leader"`},
		"primary not a node":   {func(t *Topology) { t.Primary = "z"; t.Nodes[0].Role = RoleReplica }, `primary "z" is not a node`},
		"two primaries":        {func(t *Topology) { t.Nodes[1].Role = RolePrimary }, `"b" has role primary but the topology's primary is "a"`},
		"primary not primary":  {func(t *Topology) { t.Nodes[0].Role = RoleReplica }, `primary "a" does not have role primary`},
		"fenced but a primary": {func(t *Topology) { t.Primary = "" }, `"a" has role primary but the topology's primary is ""`},
		"upstream unknown":     {func(t *Topology) { t.Nodes[1].Upstream = "x" }, `streams from "x"`},
		"upstream itself":      {func(t *Topology) { t.Nodes[1].Upstream = "b" }, `streams from "b"`},
	} {
		tp := sample()
		tc.change(tp)
		err := tp.Validate()
		if !errors.Is(err, ErrInvalidTopology) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an ErrInvalidTopology saying %q", name, err, tc.want)
		}
	}
}

func TestTopologyHelpers(t *testing.T) {
	tp := sample()
	if !tp.WritesAllowed() {
		t.Error("steady topology with a primary refuses writes")
	}
	c := tp.Clone()
	c.Nodes[0].Role = RoleFenced
	c.WritesPaused = true
	if tp.Nodes[0].Role != RolePrimary || tp.WritesPaused {
		t.Error("Clone shares the node list")
	}
	if c.WritesAllowed() {
		t.Error("paused writes allowed")
	}
	c = tp.Clone()
	c.State = StateFailingOver
	if c.WritesAllowed() {
		t.Error("writes allowed while failing over")
	}
	if n, ok := tp.Node("b"); !ok || n.Upstream != "a" {
		t.Errorf("Node(b) = %+v, %v", n, ok)
	}
	if _, ok := tp.Node("z"); ok {
		t.Error("Node(z) found")
	}
}

// TestJSON: the stored form round-trips, with LSNs in PostgreSQL's X/Y text form.
func TestJSON(t *testing.T) {
	st := NodeStatus{Name: "b", Region: "eu-west-1", Up: true, Role: RoleReplica, Epoch: 7, Timeline: 2,
		SystemIdentifier: "7443000000000000001", ReceivedLSN: MustParseLSN("16/B374D848"),
		ReplayedLSN: MustParseLSN("16/B374D000"), Streaming: true, Lag: 1500 * time.Millisecond,
		At: time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"received_lsn":"16/B374D848"`) {
		t.Errorf("LSN not in text form: %s", b)
	}
	var back NodeStatus
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, st) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if back.Position() != st.ReceivedLSN {
		t.Errorf("Position %v, want the received LSN", back.Position())
	}
	tp := sample()
	b, err = json.Marshal(tp)
	if err != nil {
		t.Fatal(err)
	}
	var tb Topology
	if err := json.Unmarshal(b, &tb); err != nil || !reflect.DeepEqual(&tb, tp) {
		t.Fatalf("topology round trip: %+v, %v", tb, err)
	}
}

// TestCloneDeep: the optional parts added for the controller (operation, sync standbys) are copied too.
func TestCloneDeep(t *testing.T) {
	tp := sample()
	tp.SyncStandbys = []string{"b"}
	tp.Operation = &Operation{Kind: OpFailover, From: "a"}
	c := tp.Clone()
	c.SyncStandbys[0] = "c"
	c.Operation.To = "b"
	if tp.SyncStandbys[0] != "b" || tp.Operation.To != "" {
		t.Errorf("Clone shares sync standbys or the operation: %+v %+v", tp.SyncStandbys, tp.Operation)
	}
}
