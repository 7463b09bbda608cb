package store

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestElectionGuardedWrites: two controllers campaign; one leads and its guarded writes commit. When
// its lease is gone (revoked here, as etcd does on expiry) the other takes over, and the deposed
// leader's guarded write fails with ErrNotLeader even though it carries the current topology revision.
func TestElectionGuardedWrites(t *testing.T) {
	c := startCluster(t, 1)
	ctx := t.Context()
	sa, sb := openStore(t, c.Endpoints(), Options{}), openStore(t, c.Endpoints(), Options{})
	sessA, sessB := newSession(t, sa), newSession(t, sb)
	ea, err := sa.NewElection(sessA)
	if err != nil {
		t.Fatal(err)
	}
	defer ea.Close()
	eb, err := sb.NewElection(sessB)
	if err != nil {
		t.Fatal(err)
	}
	defer eb.Close()

	if _, _, err := ea.Leader(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("leader before any campaign: %v, want ErrNotFound", err)
	}
	la, err := ea.Campaign(ctx, "ctrl-a")
	if err != nil {
		t.Fatal(err)
	}
	leaders := eb.Observe(ctx)
	if name := recv(t, leaders, 5*time.Second, "observed leader"); name != "ctrl-a" {
		t.Fatalf("observed leader %q, want ctrl-a", name)
	}
	type result struct {
		l   *Leadership
		err error
	}
	bWon := make(chan result, 1)
	go func() {
		l, err := eb.Campaign(ctx, "ctrl-b")
		bWon <- result{l, err}
	}()
	if name, rev, err := eb.Leader(ctx); err != nil || name != "ctrl-a" || rev != la.Rev {
		t.Fatalf("leader = %q rev %d, %v; want ctrl-a rev %d", name, rev, err, la.Rev)
	}

	rev, err := sa.PutTopology(ctx, sampleTopology(1, "a"), 0, la)
	if err != nil {
		t.Fatalf("leader's guarded bootstrap: %v", err)
	}
	if rev, err = sa.PutTopology(ctx, sampleTopology(2, "b"), rev, la); err != nil {
		t.Fatalf("leader's guarded write: %v", err)
	}
	select {
	case r := <-bWon:
		t.Fatalf("second candidate elected while the first leads: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}

	// A's lease ends (as on expiry): A learns it at its next renewal, B is elected.
	if _, err := sb.Client().Revoke(ctx, sessA.ID()); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, la.Lost(), 2*time.Second, "deposed leader's Lost")
	r := recv(t, bWon, 5*time.Second, "second candidate elected")
	if r.err != nil {
		t.Fatal(r.err)
	}
	lb := r.l
	if name := recv(t, leaders, 5*time.Second, "observed new leader"); name != "ctrl-b" {
		t.Fatalf("observed leader %q, want ctrl-b", name)
	}
	if name, _, err := ea.Leader(ctx); err != nil || name != "ctrl-b" {
		t.Fatalf("leader = %q, %v; want ctrl-b", name, err)
	}

	// The deposed leader's write fails even at the current revision: refused locally, since its
	// session knows it is lost, and by etcd in the transaction for a deposed leader that has not
	// noticed yet (its leadership paired here with a session that is still valid).
	if _, err := sa.PutTopology(ctx, sampleTopology(3, "c"), rev, la); !errors.Is(err, ErrNotLeader) || !errors.Is(err, ErrSessionLost) {
		t.Fatalf("deposed leader's write: err = %v, want ErrNotLeader with ErrSessionLost", err)
	}
	unaware := &Leadership{Name: la.Name, Key: la.Key, Rev: la.Rev, sess: sessB}
	if _, err := sa.PutTopology(ctx, sampleTopology(3, "c"), rev, unaware); !errors.Is(err, ErrNotLeader) || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("unaware deposed leader's write: err = %v, want ErrNotLeader from the transaction", err)
	}
	if rev, err = sb.PutTopology(ctx, sampleTopology(3, "a"), rev, lb); err != nil {
		t.Fatalf("new leader's write: %v", err)
	}
	// A stale revision under a valid leadership is a conflict, not a leadership problem.
	if _, err := sb.PutTopology(ctx, sampleTopology(4, "b"), rev-1, lb); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale revision: err = %v, want ErrConflict", err)
	}
	got, _, err := sa.GetTopology(ctx)
	if err != nil || got.Epoch != 3 || got.Primary != "a" {
		t.Fatalf("topology = %+v, %v; want the new leader's epoch 3", got, err)
	}

	// Resigning hands over at once.
	if err := eb.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.PutTopology(ctx, sampleTopology(4, "b"), rev, lb); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("write after resigning: err = %v, want ErrNotLeader", err)
	}
}
