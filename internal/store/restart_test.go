package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/topology"
)

// TestWatchesSurviveRestart: the only member stops and comes back on the same address; watchers
// reconnect by themselves and deliver what changed.
func TestWatchesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	peer, err := FreeURL()
	if err != nil {
		t.Fatal(err)
	}
	client, err := FreeURL()
	if err != nil {
		t.Fatal(err)
	}
	cfg := EmbeddedConfig{Dir: filepath.Join(dir, "etcd"), Name: "solo", PeerURL: peer, ClientURL: client, UnsafeNoFsync: true, Logger: testLogger()}
	start := func() *Embedded {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		m, err := StartEmbedded(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		return m
	}
	m := start()
	s := openStore(t, []string{client}, Options{})
	ctx := t.Context()
	rev, err := s.PutTopology(ctx, sampleTopology(1, "a"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	topo := s.WatchTopology(ctx, 0)
	nodes := s.WatchNodeStatuses(ctx)
	events := s.WatchEvents(ctx, 1)
	recv(t, topo, 5*time.Second, "initial topology")
	recv(t, nodes, 5*time.Second, "initial statuses")

	m.Close()
	start()

	if _, err := s.PutTopology(ctx, sampleTopology(2, "b"), rev, nil); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
	if u := recv(t, topo, 10*time.Second, "topology after restart"); u.Topology.Epoch != 2 {
		t.Fatalf("topology after restart: epoch %d, want 2", u.Topology.Epoch)
	}
	sess := newSession(t, s)
	if err := s.PutNodeStatus(ctx, sess, topology.NodeStatus{Name: "b", Region: "us-west-2", Up: true}); err != nil {
		t.Fatal(err)
	}
	for {
		if got := recv(t, nodes, 10*time.Second, "statuses after restart"); len(got.Items) == 1 {
			break
		}
	}
	if _, err := s.AppendEvent(ctx, topology.Event{Kind: topology.EventPrimaryPromoted, Node: "b"}); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, events, 10*time.Second, "event after restart"); ev.Seq != 1 || ev.Node != "b" {
		t.Fatalf("event after restart: %+v", ev)
	}
}
