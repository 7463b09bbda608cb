package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// EmbeddedConfig describes one etcd member run inside this process: for tests, the lab (one member per
// emulated region, so quorum behaves as in production) and single-machine use. Production points
// [Config.Endpoints] at an external etcd cluster instead.
type EmbeddedConfig struct {
	// Dir is the member's data directory (created if missing).
	Dir string
	// Name is the member's name, unique in the cluster.
	Name string
	// PeerURL and ClientURL are where the member listens and what it advertises
	// (http://127.0.0.1:2380, https://10.0.0.1:2379, ...). [FreeURL] picks free local ports.
	PeerURL, ClientURL string
	// InitialCluster lists every member as name=peerURL, comma-separated; default Name=PeerURL (a
	// cluster of one).
	InitialCluster string
	// Join adds the member to an existing cluster (initial-cluster-state existing) instead of forming
	// a new one.
	Join bool
	// ClientTLS and PeerTLS enable TLS on the client and peer URLs (which must then be https://).
	ClientTLS, PeerTLS *EmbeddedTLS
	// UnsafeNoFsync skips fsync: for tests and throwaway labs only, never for data you keep.
	UnsafeNoFsync bool
	// BcryptCost is the cost of hashing the passwords of etcd's users (0: etcd's default, 10). Tests
	// lower it: every password login pays it, many times over under the race detector.
	BcryptCost uint
	// Logger receives etcd's warnings and errors; nil discards them.
	Logger *slog.Logger
}

// EmbeddedTLS is a member's certificate and the CA it trusts.
type EmbeddedTLS struct {
	CertFile, KeyFile, CAFile string
	// ClientCertAuth requires peers (or clients) to present a certificate signed by CAFile.
	ClientCertAuth bool
}

func (t *EmbeddedTLS) info() transport.TLSInfo {
	if t == nil {
		return transport.TLSInfo{}
	}
	return transport.TLSInfo{CertFile: t.CertFile, KeyFile: t.KeyFile, TrustedCAFile: t.CAFile, ClientCertAuth: t.ClientCertAuth}
}

// Embedded is a running embedded etcd member.
type Embedded struct {
	cfg       EmbeddedConfig
	e         *embed.Etcd
	closeOnce sync.Once
}

// StartEmbedded starts a member and waits until it has joined a cluster with a leader, ctx ends, or
// the member fails. The members of a new multi-member cluster must be started concurrently, since none
// is ready before a majority runs (see [StartCluster]).
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Dir == "" || cfg.Name == "" || cfg.PeerURL == "" || cfg.ClientURL == "" {
		return nil, errors.New("start embedded etcd: dir, name, peer URL and client URL are required")
	}
	pu, err := url.Parse(cfg.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd %s: peer URL: %w", cfg.Name, err)
	}
	cu, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd %s: client URL: %w", cfg.Name, err)
	}
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.WalDir = filepath.Join(cfg.Dir, "wal")
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	ec.InitialCluster = cfg.InitialCluster
	if ec.InitialCluster == "" {
		ec.InitialCluster = cfg.Name + "=" + cfg.PeerURL
	}
	ec.InitialClusterToken = "meridian"
	if cfg.Join {
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	ec.ClientTLSInfo = cfg.ClientTLS.info()
	ec.PeerTLSInfo = cfg.PeerTLS.info()
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	if cfg.BcryptCost > 0 {
		ec.BcryptCost = cfg.BcryptCost
	}
	ec.EnableGRPCGateway = false
	// Agents report twice a second: keep an hour of history for watchers to resume from, no more.
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "1h"
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapLogger(cfg.Logger))
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd %s: %w", cfg.Name, err)
	}
	m := &Embedded{cfg: cfg, e: e}
	select {
	case <-e.Server.ReadyNotify():
		return m, nil
	case err := <-e.Err():
		m.Close()
		return nil, fmt.Errorf("start embedded etcd %s: %w", cfg.Name, err)
	case <-ctx.Done():
		m.Close()
		return nil, fmt.Errorf("start embedded etcd %s: not ready: %w", cfg.Name, context.Cause(ctx))
	}
}

// Name returns the member's name.
func (m *Embedded) Name() string { return m.cfg.Name }

// ClientURL returns the URL clients connect to.
func (m *Embedded) ClientURL() string { return m.cfg.ClientURL }

// PeerURL returns the URL other members connect to.
func (m *Embedded) PeerURL() string { return m.cfg.PeerURL }

// Err delivers a fatal error of the running member.
func (m *Embedded) Err() <-chan error { return m.e.Err() }

// Close stops the member: it stops accepting clients and peers, then stops the server (etcd's own
// order, see embed.Etcd.Close). Idempotent.
func (m *Embedded) Close() { m.closeOnce.Do(m.e.Close) }

// FreeURL returns http://127.0.0.1:<port> with a port the kernel just reported free.
func FreeURL() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return "http://" + l.Addr().String(), nil
}

// Cluster is a set of embedded members forming one etcd cluster on this machine.
type Cluster struct {
	Members []*Embedded
}

// ClusterConfig describes a cluster of embedded members on free local ports.
type ClusterConfig struct {
	// Dir holds one data directory per member (Dir/<name>).
	Dir string
	// Names are the members' names; at least one.
	Names         []string
	UnsafeNoFsync bool
	Logger        *slog.Logger
}

// StartCluster starts the members concurrently on free local ports and waits until all are ready.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if len(cfg.Names) == 0 {
		return nil, errors.New("start etcd cluster: no member names")
	}
	cfgs := make([]EmbeddedConfig, len(cfg.Names))
	var initial []string
	for i, name := range cfg.Names {
		peer, err := FreeURL()
		if err != nil {
			return nil, err
		}
		client, err := FreeURL()
		if err != nil {
			return nil, err
		}
		cfgs[i] = EmbeddedConfig{Dir: filepath.Join(cfg.Dir, name), Name: name, PeerURL: peer, ClientURL: client,
			UnsafeNoFsync: cfg.UnsafeNoFsync, Logger: cfg.Logger}
		initial = append(initial, name+"="+peer)
	}
	c := &Cluster{Members: make([]*Embedded, len(cfgs))}
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i := range cfgs {
		cfgs[i].InitialCluster = strings.Join(initial, ",")
		wg.Go(func() { c.Members[i], errs[i] = StartEmbedded(ctx, cfgs[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Endpoints returns the members' client URLs.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, 0, len(c.Members))
	for _, m := range c.Members {
		if m != nil {
			eps = append(eps, m.ClientURL())
		}
	}
	return eps
}

// Close stops every member, concurrently. Idempotent.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, m := range c.Members {
		if m != nil {
			wg.Go(m.Close)
		}
	}
	wg.Wait()
}
