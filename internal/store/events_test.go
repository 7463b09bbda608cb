package store

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/topology"
)

// TestEventsConcurrentAppends: writers on separate connections append at once; every event gets its own
// seq, the seqs are 1..n without gaps, and a follower sees them all in order, then the new ones.
func TestEventsConcurrentAppends(t *testing.T) {
	c := startCluster(t, 1)
	ctx := t.Context()
	const writers, each = 4, 20
	stores := make([]*Store, writers)
	for i := range stores {
		stores[i] = openStore(t, c.Endpoints(), Options{})
	}
	follow := stores[0].WatchEvents(ctx, 1)

	seqs := make([][]uint64, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				ev, err := stores[w].AppendEvent(ctx, topology.Event{Kind: topology.EventReplicaLagging, Node: fmt.Sprintf("w%d", w), Message: fmt.Sprint(i)})
				if err != nil {
					errs[w] = err
					return
				}
				if n := len(seqs[w]); n > 0 && ev.Seq <= seqs[w][n-1] {
					errs[w] = fmt.Errorf("seq went from %d to %d", seqs[w][n-1], ev.Seq)
					return
				}
				seqs[w] = append(seqs[w], ev.Seq)
			}
		})
	}
	wg.Wait()
	var all []uint64
	for w := range writers {
		if errs[w] != nil {
			t.Fatalf("writer %d: %v", w, errs[w])
		}
		all = append(all, seqs[w]...)
	}
	slices.Sort(all)
	for i, s := range all {
		if s != uint64(i+1) {
			t.Fatalf("seqs are not 1..%d without gaps or duplicates: position %d holds %d", writers*each, i, s)
		}
	}

	list, err := stores[1].ListEvents(ctx, 1, 0)
	if err != nil || len(list) != writers*each {
		t.Fatalf("list: %d events, %v", len(list), err)
	}
	for i, ev := range list {
		if ev.Seq != uint64(i+1) || ev.At.IsZero() {
			t.Fatalf("list[%d]: seq %d at %s", i, ev.Seq, ev.At)
		}
	}
	if page, err := stores[1].ListEvents(ctx, 31, 5); err != nil || len(page) != 5 || page[0].Seq != 31 || page[4].Seq != 35 {
		t.Fatalf("page from 31: %+v, %v", page, err)
	}

	for i := range writers * each {
		if ev := recv(t, follow, 5*time.Second, "followed event"); ev.Seq != uint64(i+1) {
			t.Fatalf("follower got seq %d, want %d", ev.Seq, i+1)
		}
	}
	// The follower keeps following; a late follower from seq 79 catches up and follows too.
	late := stores[2].WatchEvents(ctx, 79)
	if _, err := stores[3].AppendEvent(ctx, topology.Event{Kind: topology.EventLeaderElected, Message: "new"}); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, follow, 5*time.Second, "new event"); ev.Seq != writers*each+1 || ev.Kind != topology.EventLeaderElected {
		t.Fatalf("follower: %+v", ev)
	}
	for _, want := range []uint64{79, 80, 81} {
		if ev := recv(t, late, 5*time.Second, "late follower"); ev.Seq != want {
			t.Fatalf("late follower got %d, want %d", ev.Seq, want)
		}
	}
}

func TestEventRetention(t *testing.T) {
	c := startCluster(t, 1)
	s := openStore(t, c.Endpoints(), Options{EventRetention: 10})
	ctx := t.Context()
	for i := range 25 {
		if _, err := s.AppendEvent(ctx, topology.Event{Kind: topology.EventWritesPaused, Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.ListEvents(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, ev := range list {
		got = append(got, ev.Seq)
	}
	if want := []uint64{16, 17, 18, 19, 20, 21, 22, 23, 24, 25}; !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
}
