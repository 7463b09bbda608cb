package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meridiandb/meridian/internal/topology"
)

func TestTopologyCompareAndSwap(t *testing.T) {
	c := startCluster(t, 1)
	w1 := openStore(t, c.Endpoints(), Options{})
	w2 := openStore(t, c.Endpoints(), Options{})
	ctx := t.Context()

	if _, _, err := w1.GetTopology(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before bootstrap: err = %v, want ErrNotFound", err)
	}
	bad := sampleTopology(1, "a")
	bad.Nodes[1].Role = topology.RolePrimary
	if _, err := w1.PutTopology(ctx, bad, 0, nil); !errors.Is(err, topology.ErrInvalidTopology) {
		t.Fatalf("invalid topology: err = %v, want ErrInvalidTopology", err)
	}
	rev, err := w1.PutTopology(ctx, sampleTopology(1, "a"), 0, nil)
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if _, err := w2.PutTopology(ctx, sampleTopology(1, "b"), 0, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("second bootstrap: err = %v, want ErrConflict", err)
	}

	// Both writers read the same revision; the first write wins, the second gets ErrConflict.
	t1, r1, err := w1.GetTopology(ctx)
	if err != nil || r1 != rev {
		t.Fatalf("get: rev %d (want %d), %v", r1, rev, err)
	}
	if diff := cmp.Diff(sampleTopology(1, "a"), t1); diff != "" {
		t.Fatalf("topology read back differs (-want +got):\n%s", diff)
	}
	_, r2, err := w2.GetTopology(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next, err := w1.PutTopology(ctx, sampleTopology(2, "b"), r1, nil)
	if err != nil {
		t.Fatalf("first writer: %v", err)
	}
	_, err = w2.PutTopology(ctx, sampleTopology(2, "c"), r2, nil)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("second writer: err = %v, want ErrConflict", err)
	}
	got, gotRev, err := w2.GetTopology(ctx)
	if err != nil || gotRev != next || got.Primary != "b" {
		t.Fatalf("after the race: primary %q rev %d (want b, %d), %v", got.Primary, gotRev, next, err)
	}
	// Re-reading and re-deciding succeeds.
	if _, err := w2.PutTopology(ctx, sampleTopology(3, "c"), gotRev, nil); err != nil {
		t.Fatalf("second writer after re-read: %v", err)
	}
}

func TestWatchTopology(t *testing.T) {
	c := startCluster(t, 1)
	s := openStore(t, c.Endpoints(), Options{})
	ctx := t.Context()
	rev, err := s.PutTopology(ctx, sampleTopology(1, "a"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}

	wctx, stop := context.WithCancel(ctx)
	ch := s.WatchTopology(wctx, 0)
	u := recv(t, ch, 5*time.Second, "initial topology")
	if u.Topology.Epoch != 1 || u.Revision != rev {
		t.Fatalf("initial: epoch %d rev %d, want 1, %d", u.Topology.Epoch, u.Revision, rev)
	}
	// Every change, in order, even when written faster than read.
	primaries := []string{"b", "", "c", "a", "b"}
	for i, p := range primaries {
		if rev, err = s.PutTopology(ctx, sampleTopology(uint64(i+2), p), rev, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range primaries {
		u := recv(t, ch, 5*time.Second, "update")
		if u.Topology.Epoch != uint64(i+2) || u.Topology.Primary != p {
			t.Fatalf("update %d: epoch %d primary %q, want %d %q", i, u.Topology.Epoch, u.Topology.Primary, i+2, p)
		}
	}
	stop()
	for range ch { // the channel closes when the context ends
	}
	last := rev

	// While no one watches: three more changes.
	for i := range 3 {
		if rev, err = s.PutTopology(ctx, sampleTopology(uint64(10+i), "c"), rev, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A restarted watcher resuming from the last revision it handled sees each of them, in order.
	ch = s.WatchTopology(ctx, last)
	for i := range 3 {
		u := recv(t, ch, 5*time.Second, "resumed update")
		if u.Topology.Epoch != uint64(10+i) {
			t.Fatalf("resumed update %d: epoch %d, want %d", i, u.Topology.Epoch, 10+i)
		}
	}
	// A fresh watcher starts with the latest.
	if u := recv(t, s.WatchTopology(ctx, 0), 5*time.Second, "fresh watcher"); u.Topology.Epoch != 12 || u.Revision != rev {
		t.Fatalf("fresh watcher: epoch %d rev %d, want 12, %d", u.Topology.Epoch, u.Revision, rev)
	}

	// After compaction the history is gone: a watcher resuming from an old revision gets the latest.
	if rev, err = s.PutTopology(ctx, sampleTopology(13, "a"), rev, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if u := recv(t, s.WatchTopology(ctx, last), 5*time.Second, "watcher after compaction"); u.Topology.Epoch != 13 || u.Revision != rev {
		t.Fatalf("after compaction: epoch %d rev %d, want 13, %d", u.Topology.Epoch, u.Revision, rev)
	}
}
