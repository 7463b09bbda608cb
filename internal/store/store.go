package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors a caller decides on with errors.Is.
var (
	// ErrNotFound: the key does not exist (no topology yet: bootstrap with PutTopology(ctx, t, 0, ...)).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the topology's revision moved since it was read; read it again and re-decide.
	ErrConflict = errors.New("topology changed since it was read")
	// ErrNotLeader: a write guarded by a [Leadership] found that leadership gone (the leader key was
	// deleted or replaced): the caller is no longer leader and must stop acting.
	ErrNotLeader = errors.New("no longer the controller leader")
	// ErrUnavailable: etcd did not answer in time or has no leader (no quorum reachable). The write
	// may or may not have been applied.
	ErrUnavailable = errors.New("etcd unavailable")
	// ErrSessionLost: the session's lease is gone or could not be renewed in time (see [Session]).
	ErrSessionLost = errors.New("etcd session lost")
)

// Store is the control plane's state in etcd for one Meridian cluster. It is safe for concurrent use.
// Close it when done; the sessions, watches and elections made from it stop working then.
type Store struct {
	cli       *clientv3.Client
	cfg       Config
	log       *slog.Logger
	prefix    string // /meridian/<cluster>/
	retention int64

	closeOnce sync.Once
	closeErr  error
}

// DefaultEventRetention is how many events the store keeps when Options.EventRetention is 0.
const DefaultEventRetention = 10000

// Options are the store's behaviour beyond the connection.
type Options struct {
	// Logger receives the store's and the etcd client's warnings; nil discards them.
	Logger *slog.Logger
	// EventRetention is how many of the newest events are kept (default DefaultEventRetention).
	EventRetention int
}

// Open connects to etcd. It validates cfg (see [Config.Validate]) and checks that the cluster answers
// within cfg.DialTimeout, so a wrong endpoint or credential fails here with a clear error.
func Open(ctx context.Context, cfg Config, opt Options) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	cc := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		// Notice a dead connection within a few seconds, so the client moves to another member.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		TLS:                  tc,
		Logger:               zapLogger(opt.Logger),
		Context:              context.WithoutCancel(ctx),
	}
	if cfg.Username != "" {
		cc.Username = cfg.Username
		if cc.Password, err = cfg.password(); err != nil {
			return nil, err
		}
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", cfg.Endpoints, err)
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		cli:       cli,
		cfg:       cfg,
		log:       log.With("cluster", cfg.Cluster),
		prefix:    "/meridian/" + cfg.Cluster + "/",
		retention: int64(opt.EventRetention),
	}
	if s.retention <= 0 {
		s.retention = DefaultEventRetention
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(cctx, s.key(keyTopology), clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, s.wrap(fmt.Sprintf("connect to etcd %v", cfg.Endpoints), err)
	}
	return s, nil
}

// Close closes the etcd connection; it is idempotent. Shut down in this order: cancel the watches'
// contexts, resign and close elections, close sessions (which revokes their leases, so statuses vanish
// at once), then close the store. Sessions still open when the store closes stop renewing: their Lost
// channels close at their deadlines and their leases expire after the TTL. Watches end.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// Client returns the underlying etcd client, for what this package does not offer.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix of the cluster: /meridian/<cluster>/.
func (s *Store) Prefix() string { return s.prefix }

// The keys under the cluster's prefix (see the package documentation).
const (
	keyTopology   = "topology"
	prefixNodes   = "nodes/"
	prefixProxies = "proxies/"
	prefixEvents  = "events/"
	keyEventSeq   = "event-seq"
	prefixLeader  = "leader/"
)

func (s *Store) key(k string) string { return s.prefix + k }

// reqCtx bounds one request by the configured RequestTimeout unless ctx ends sooner.
func (s *Store) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= s.cfg.RequestTimeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

// wrap adds context to an etcd error and marks the ones that mean "etcd did not answer" with
// ErrUnavailable.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// IsUnavailable reports whether err means etcd did not answer in time or had no leader.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) || unavailable(err) }

func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		switch ee.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return true
		}
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}
