package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/topology"
)

// TestQuorumLoss: in a 3-member cluster, a client attached to one member whose two peers stop (its
// region cut off) can no longer write: writes fail with ErrUnavailable within the request timeout,
// and its session's lease-loss signal fires before the lease's guaranteed end. This is what an agent's
// self-fencing builds on.
func TestQuorumLoss(t *testing.T) {
	c := startCluster(t, 3)
	ctx := t.Context()
	isolated := openStore(t, c.Endpoints()[:1], Options{})
	sess := newSession(t, isolated)
	if err := isolated.PutNodeStatus(ctx, sess, topology.NodeStatus{Name: "a", Region: "us-east-1", Up: true}); err != nil {
		t.Fatal(err)
	}
	rev, err := isolated.PutTopology(ctx, sampleTopology(1, "a"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Let a renewal or two go through on the full cluster.
	time.Sleep(testSessionConfig.RenewInterval * 2)
	if !sess.Valid() {
		t.Fatalf("session not valid before the cut: %v", sess.Err())
	}

	lostc := make(chan time.Time, 1) // when the signal fires, while the test checks writes
	go func() {
		<-sess.Lost()
		lostc <- time.Now()
	}()
	start := time.Now()
	// One after the other: stopping both at once can make a leader's hand-over on shutdown wait for
	// a peer that is going away too.
	c.Members[1].Close()
	c.Members[2].Close()
	cut := time.Now()
	t.Logf("stopping two members took %s", cut.Sub(start).Round(time.Millisecond))
	t.Cleanup(func() { t.Logf("cleanup starts %s after the cut", time.Since(cut).Round(time.Millisecond)) })

	// Writes need a majority: they fail at once, whether or not the member still believes it leads.
	wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = isolated.PutTopology(wctx, sampleTopology(2, "b"), rev, nil)
	if !errors.Is(err, ErrUnavailable) || !IsUnavailable(err) {
		t.Fatalf("write without quorum: err = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("write without quorum took %s to fail", took)
	}
	writeFailed := time.Since(start)
	wctx2, cancel2 := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel2()
	if _, err := isolated.AppendEvent(wctx2, topology.Event{Kind: topology.EventRegionUnreachable}); !IsUnavailable(err) {
		t.Fatalf("event without quorum: err = %v, want ErrUnavailable", err)
	}
	// The member may stay leader until etcd's check-quorum makes it step down (an election timeout,
	// 1 s), renewing the lease until then; the signal follows within TTL-margin of the last renewal.
	lostAt := recv(t, lostc, 2*sess.TTL(), "lease-loss signal on the isolated client")
	validUntil := sess.ValidUntil()
	if !errors.Is(sess.Err(), ErrSessionLost) {
		t.Fatalf("Err = %v, want ErrSessionLost", sess.Err())
	}
	if !lostAt.Before(validUntil) {
		t.Fatalf("lost at %s, not before the lease's guaranteed end %s", lostAt.Format(time.StampMilli), validUntil.Format(time.StampMilli))
	}

	t.Logf("cut at 0, lost signal at %s, lease guaranteed until %s; write failed after %s: %v",
		lostAt.Sub(cut).Round(time.Millisecond), validUntil.Sub(cut).Round(time.Millisecond), writeFailed.Round(time.Millisecond), err)
}
