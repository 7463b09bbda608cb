package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/topology"
)

func TestSessionConfigValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg     SessionConfig
		wantErr bool
		want    SessionConfig
	}{
		"defaults":            {cfg: SessionConfig{TTL: 3 * time.Second}, want: SessionConfig{TTL: 3 * time.Second, SafetyMargin: time.Second, RenewInterval: 666666666}},
		"explicit":            {cfg: testSessionConfig, want: testSessionConfig},
		"ttl below a second":  {cfg: SessionConfig{TTL: 500 * time.Millisecond}, wantErr: true},
		"margin beyond ttl":   {cfg: SessionConfig{TTL: 2 * time.Second, SafetyMargin: 2 * time.Second}, wantErr: true},
		"renew too slow":      {cfg: SessionConfig{TTL: 3 * time.Second, SafetyMargin: time.Second, RenewInterval: 1500 * time.Millisecond}, wantErr: true},
		"renew at the bound":  {cfg: SessionConfig{TTL: 3 * time.Second, SafetyMargin: time.Second, RenewInterval: time.Second}, want: SessionConfig{TTL: 3 * time.Second, SafetyMargin: time.Second, RenewInterval: time.Second}},
		"negative margin":     {cfg: SessionConfig{TTL: 3 * time.Second, SafetyMargin: -time.Second}, wantErr: true},
		"negative renew":      {cfg: SessionConfig{TTL: 3 * time.Second, RenewInterval: -time.Second}, wantErr: true},
		"zero is not allowed": {cfg: SessionConfig{}, wantErr: true},
	} {
		cfg := tc.cfg
		err := cfg.Validate()
		if tc.wantErr {
			if !errors.Is(err, ErrSessionConfig) {
				t.Errorf("%s: err = %v, want ErrSessionConfig", name, err)
			}
			continue
		}
		if err != nil || cfg != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", name, cfg, err, tc.want)
		}
	}
}

// TestStatusesVanishWithLease: an agent and a proxy report under one session; when the session's client
// goes away (the process died or is cut off), the session declares itself lost before the lease can
// have expired, and the statuses vanish from the store only after that.
func TestStatusesVanishWithLease(t *testing.T) {
	c := startCluster(t, 1)
	agent := openStore(t, c.Endpoints(), Options{})
	ctrl := openStore(t, c.Endpoints(), Options{})
	ctx := t.Context()
	sess := newSession(t, agent)

	nodes := ctrl.WatchNodeStatuses(ctx)
	proxies := ctrl.WatchProxyStatuses(ctx)
	if got := recv(t, nodes, 5*time.Second, "initial node statuses"); len(got.Items) != 0 {
		t.Fatalf("initial node statuses: %v", got.Items)
	}
	recv(t, proxies, 5*time.Second, "initial proxy statuses")

	ns := topology.NodeStatus{Name: "a", Region: "us-east-1", Up: true, Role: topology.RolePrimary, Epoch: 1,
		WriteLSN: topology.MustParseLSN("0/3000060"), At: time.Now().UTC().Truncate(time.Millisecond)}
	if err := agent.PutNodeStatus(ctx, sess, ns); err != nil {
		t.Fatal(err)
	}
	if err := agent.PutProxyStatus(ctx, sess, topology.ProxyStatus{Name: "p1", Region: "us-east-1", AppliedEpoch: 1}); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, nodes, 5*time.Second, "node status"); got.Items["a"].WriteLSN != ns.WriteLSN || !got.Items["a"].At.Equal(ns.At) {
		t.Fatalf("watched node status = %+v, want %+v", got.Items["a"], ns)
	}
	if got := recv(t, proxies, 5*time.Second, "proxy status"); got.Items["p1"].AppliedEpoch != 1 {
		t.Fatalf("watched proxy status = %+v", got.Items)
	}
	list, err := ctrl.NodeStatuses(ctx)
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("list = %+v, %v", list, err)
	}

	// Renewals keep it alive well past the TTL.
	time.Sleep(sess.TTL() + sess.TTL()/2)
	if !sess.Valid() || sess.Err() != nil {
		t.Fatalf("session not valid after renewals: %v (last renewal %s ago)", sess.Err(), time.Since(sess.LastRenewal()))
	}
	if got, err := ctrl.NodeStatuses(ctx); err != nil || len(got.Items) != 1 {
		t.Fatalf("status gone while renewed: %+v, %v", got, err)
	}

	// The agent's connection goes away: no more renewals.
	cut := time.Now()
	agent.Close()
	lostAt := waitClosed(t, sess.Lost(), 2*sess.TTL(), "lease-loss signal")
	validUntil := sess.ValidUntil()
	if !errors.Is(sess.Err(), ErrSessionLost) {
		t.Fatalf("Err = %v, want ErrSessionLost", sess.Err())
	}
	if sess.Valid() {
		t.Fatal("a lost session is still Valid")
	}
	if !lostAt.Before(validUntil) {
		t.Fatalf("lost at %s, not before the lease's guaranteed end %s", lostAt.Format(time.StampMilli), validUntil.Format(time.StampMilli))
	}
	if err := agent.PutNodeStatus(ctx, sess, ns); !errors.Is(err, ErrSessionLost) {
		t.Fatalf("put after loss: err = %v, want ErrSessionLost", err)
	}

	for {
		got := recv(t, nodes, 2*sess.TTL(), "node status to vanish")
		if len(got.Items) == 0 {
			break
		}
	}
	goneAt := time.Now()
	if goneAt.Before(validUntil) {
		t.Fatalf("status vanished at %s, before the lease's guaranteed end %s", goneAt.Format(time.StampMilli), validUntil.Format(time.StampMilli))
	}
	if got := recv(t, proxies, time.Second, "proxy status to vanish"); len(got.Items) != 0 {
		t.Fatalf("proxy status still there: %+v", got.Items)
	}
	t.Cleanup(func() { t.Logf("cleanup started %s after the cut", time.Since(cut)) })
	t.Logf("cut at 0, lost signal at %s, lease guaranteed until %s, status gone at %s",
		lostAt.Sub(cut).Round(time.Millisecond), validUntil.Sub(cut).Round(time.Millisecond), goneAt.Sub(cut).Round(time.Millisecond))
}

// TestSessionCloseAndRevoke: closing a session revokes its lease (statuses vanish at once); a lease
// revoked by someone else is noticed at the next renewal.
func TestSessionCloseAndRevoke(t *testing.T) {
	c := startCluster(t, 1)
	s := openStore(t, c.Endpoints(), Options{})
	ctx := t.Context()

	sess := newSession(t, s)
	if err := s.PutNodeStatus(ctx, sess, topology.NodeStatus{Name: "a", Region: "r"}); err != nil {
		t.Fatal(err)
	}
	if err := sess.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	waitClosed(t, sess.Lost(), time.Second, "Lost after Close")
	if !errors.Is(sess.Err(), ErrSessionClosed) {
		t.Fatalf("Err = %v, want ErrSessionClosed", sess.Err())
	}
	if got, err := s.NodeStatuses(ctx); err != nil || len(got.Items) != 0 {
		t.Fatalf("statuses after Close: %+v, %v", got, err)
	}

	sess = newSession(t, s)
	if _, err := s.Client().Revoke(ctx, sess.ID()); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, sess.Lost(), 2*sess.TTL(), "Lost after revoke")
	if !errors.Is(sess.Err(), ErrSessionLost) {
		t.Fatalf("Err = %v, want ErrSessionLost", sess.Err())
	}
	if err := s.PutNodeStatus(ctx, sess, topology.NodeStatus{Name: "a"}); !errors.Is(err, ErrSessionLost) {
		t.Fatalf("put on revoked session: %v", err)
	}
	if err := sess.Close(context.Background()); err != nil {
		t.Fatalf("Close of a lost session: %v", err)
	}
}
