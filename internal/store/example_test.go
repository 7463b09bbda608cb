package store_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/meridiandb/meridian/internal/store"
	"github.com/meridiandb/meridian/internal/topology"
)

// An agent reports its node's status under its lease and fences its PostgreSQL as soon as it cannot
// be sure the lease still holds: when Lost closes, or when a report finds the deadline passed.
func ExampleSession() {
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{Endpoints: []string{"https://etcd-1:2379"}, Cluster: "prod"}, store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	sess, err := s.NewSession(ctx, store.SessionConfig{TTL: 3 * time.Second, SafetyMargin: time.Second, RenewInterval: 500 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close(ctx)
	fence := func() { /* stop PostgreSQL taking writes */ }

	report := time.NewTicker(500 * time.Millisecond)
	defer report.Stop()
	for {
		select {
		case <-sess.Lost():
			fence() // at sess.Deadline() at the latest: SafetyMargin before the lease can expire
			return
		case <-report.C:
			if !sess.Valid() { // past the deadline, even if the renew loop has not said so yet
				fence()
				return
			}
			err := s.PutNodeStatus(ctx, sess, topology.NodeStatus{Name: "a", Region: "us-east-1", Up: true, At: time.Now()})
			if err != nil && !errors.Is(err, store.ErrUnavailable) {
				log.Print(err)
			}
		}
	}
}

// A controller acts only as leader, and every topology write carries its leadership: a deposed
// controller's write fails with ErrNotLeader, a write based on a stale read with ErrConflict.
func ExampleElection() {
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{Endpoints: []string{"https://etcd-1:2379"}, Cluster: "prod"}, store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	sess, err := s.NewSession(ctx, store.SessionConfig{TTL: 3 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close(ctx)
	el, err := s.NewElection(sess)
	if err != nil {
		log.Fatal(err)
	}
	defer el.Close()
	lead, err := el.Campaign(ctx, "controller-us-east-1")
	if err != nil {
		log.Fatal(err)
	}
	t, rev, err := s.GetTopology(ctx)
	if err != nil {
		log.Fatal(err)
	}
	next := t.Clone()
	next.Epoch++
	next.WritesPaused = true
	switch _, err := s.PutTopology(ctx, next, rev, lead); {
	case errors.Is(err, store.ErrConflict):
		// re-read and decide again
	case errors.Is(err, store.ErrNotLeader):
		// stop acting; campaign again with a new session
	case err != nil:
		log.Print(err)
	}
}
