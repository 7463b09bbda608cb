package controller

import (
	"errors"
	"fmt"
	"time"
)

// RPOMode is how much acknowledged data a failover may lose.
type RPOMode string

const (
	// RPOAsync: replicas stream asynchronously; a failover may lose what they had not received.
	RPOAsync RPOMode = "async"
	// RPOMaxLag: as async, but writes are paused while every replica in another region lags more
	// than RPO.MaxLag, and resumed as soon as one catches up.
	RPOMaxLag RPOMode = "max_lag"
	// RPOSync: synchronous_standby_names = ANY 1 (...) over the other regions' replicas; a failover
	// promotes only one of them, so no acknowledged commit is lost.
	RPOSync RPOMode = "sync"
)

// RPO is the recovery point objective in force.
type RPO struct {
	Mode RPOMode
	// MaxLag is the bound of the max_lag mode.
	MaxLag time.Duration
}

// LagBound bounds how far behind a node may be; a zero field is no bound.
type LagBound struct {
	Bytes int64         // WAL bytes behind the (old) primary's position
	Time  time.Duration // replay lag in time, as the node's agent reports it
}

// exceeded says whether bytes behind and time lag break the bound, and which way.
func (b LagBound) exceeded(bytes int64, lag time.Duration) (string, bool) {
	if b.Bytes > 0 && bytes > b.Bytes {
		return fmt.Sprintf("%d bytes behind, bound %d", bytes, b.Bytes), true
	}
	if b.Time > 0 && lag > b.Time {
		return fmt.Sprintf("replay lag %v, bound %v", lag, b.Time), true
	}
	return "", false
}

// Config is the controller's decision configuration.
type Config struct {
	// LeaseTTL is the agents' and proxies' lease time to live. Decide does not time leases itself (an
	// expired lease is an absent status) but names it in what it waits for.
	LeaseTTL time.Duration
	// FailoverTimeout is how long a primary whose agent holds its lease may report PostgreSQL down
	// (restarting) before it is failed over.
	FailoverTimeout time.Duration
	// MaxFailoverLag: an unforced failover refuses a candidate further behind than this.
	MaxFailoverLag LagBound
	// MaxSwitchoverLag: a switchover refuses a target further behind than this.
	MaxSwitchoverLag LagBound
	// ProxyApplyWait is how long a failover waits for live proxies to apply the fencing epoch before it
	// reports them as blocking it (it still waits: promoting earlier could make two writers).
	ProxyApplyWait time.Duration
	// SwitchoverTimeout bounds a switchover from its start to the target's promotion; past it the
	// switchover is rolled back.
	SwitchoverTimeout time.Duration
	// RPO is the recovery point objective.
	RPO RPO
	// RegionPriority lists regions in order of preference for a new primary when candidates are
	// equally advanced; unlisted regions come after, then Node.Priority, then the name.
	RegionPriority []string
}

// DefaultConfig returns the WAN-sized defaults of issue 15 (lease TTL 3 s).
func DefaultConfig() Config {
	return Config{
		LeaseTTL:          3 * time.Second,
		FailoverTimeout:   5 * time.Second,
		MaxFailoverLag:    LagBound{Bytes: 16 << 20},
		MaxSwitchoverLag:  LagBound{Bytes: 16 << 20, Time: 10 * time.Second},
		ProxyApplyWait:    3 * time.Second,
		SwitchoverTimeout: 30 * time.Second,
		RPO:               RPO{Mode: RPOAsync},
	}
}

// ErrInvalidConfig is wrapped by [Config.Validate] errors.
var ErrInvalidConfig = errors.New("invalid controller config")

// Validate checks the configuration; its errors name the key and the rule.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.LeaseTTL <= 0:
		return bad("lease_ttl must be positive, got %v", c.LeaseTTL)
	case c.FailoverTimeout <= 0:
		return bad("failover_timeout must be positive, got %v", c.FailoverTimeout)
	case c.SwitchoverTimeout <= 0:
		return bad("switchover_timeout must be positive, got %v", c.SwitchoverTimeout)
	case c.ProxyApplyWait < 0:
		return bad("proxy_apply_wait must not be negative, got %v", c.ProxyApplyWait)
	case c.MaxFailoverLag.Bytes < 0 || c.MaxFailoverLag.Time < 0:
		return bad("max_failover_lag must not be negative")
	case c.MaxSwitchoverLag.Bytes < 0 || c.MaxSwitchoverLag.Time < 0:
		return bad("max_switchover_lag must not be negative")
	}
	return c.RPO.validate()
}

func (r RPO) validate() error {
	switch r.Mode {
	case RPOAsync, RPOSync:
		return nil
	case RPOMaxLag:
		if r.MaxLag <= 0 {
			return fmt.Errorf("%w: rpo.max_lag must be positive in the max_lag mode, got %v", ErrInvalidConfig, r.MaxLag)
		}
		return nil
	}
	return fmt.Errorf("%w: rpo.mode must be async, max_lag or sync, got %q", ErrInvalidConfig, r.Mode)
}
