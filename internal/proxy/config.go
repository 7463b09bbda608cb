package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// PoolMode says how long a client keeps a server connection.
type PoolMode string

const (
	// PoolTransaction lends a server connection from the first statement of a transaction (or a
	// single statement) to the ReadyForQuery that ends it; session state is replayed per checkout.
	PoolTransaction PoolMode = "transaction"
	// PoolSession keeps the client's server connections (one per node it used) for its whole session.
	PoolSession PoolMode = "session"
)

// NodeConfig is one PostgreSQL server of the cluster, in any region. Its role is discovered.
type NodeConfig struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
	Region  string `yaml:"region"`
}

// Config is the proxy's configuration: defaults, then the YAML file, then Validate.
type Config struct {
	// Listen is the address clients connect to.
	Listen string `yaml:"listen"`
	// Region is the proxy's own region: replicas there are "local" and serve reads first.
	Region string `yaml:"region"`
	// PoolMode is transaction (default) or session.
	PoolMode PoolMode `yaml:"pool_mode"`
	// PoolSize is the maximum number of server connections per (node, user, database).
	PoolSize int `yaml:"pool_size"`
	// MaxClientConn is the maximum number of client connections; more are refused with 53300.
	MaxClientConn int `yaml:"max_client_conn"`
	// HTTPListen serves /metrics, /healthz and /readyz; empty disables it.
	HTTPListen string `yaml:"http_listen"`
	// Nodes are every server of the cluster; roles are discovered by polling.
	Nodes []NodeConfig `yaml:"nodes"`

	// PollInterval is how often each node's role and replay position are checked (default 1s).
	PollInterval time.Duration `yaml:"poll_interval"`
	// QueryWaitTimeout bounds how long a client waits for a free server connection (default 10s).
	QueryWaitTimeout time.Duration `yaml:"query_wait_timeout"`
	// ServerConnectTimeout bounds dialing and authenticating a server connection (default 5s).
	ServerConnectTimeout time.Duration `yaml:"server_connect_timeout"`
	// ServerIdleTimeout closes server connections idle for longer (default 10m; 0 keeps them).
	ServerIdleTimeout time.Duration `yaml:"server_idle_timeout"`
	// ServerLifetime closes server connections older than this when they are next idle (default 1h).
	ServerLifetime time.Duration `yaml:"server_lifetime"`
	// ServerPassword is used to log in to the servers as the client's user when they require a
	// password (client authentication arrives with the proxy-operations work). ${VAR} is expanded.
	ServerPassword     string `yaml:"server_password"`
	ServerPasswordFile string `yaml:"server_password_file"` // or read it from this file
	// Monitor is the login the proxy uses to poll the nodes.
	MonitorUser         string `yaml:"monitor_user"`
	MonitorPassword     string `yaml:"monitor_password"`
	MonitorPasswordFile string `yaml:"monitor_password_file"` // or read it from this file
	MonitorDatabase     string `yaml:"monitor_database"`
	// WriteFunctions are extra functions whose calls must run on the primary (name or schema.name).
	WriteFunctions []string `yaml:"write_functions"`
	// AutoPrepare runs simple queries that hold one plannable statement as prepared statements, with
	// some numeric literals as parameters, once the same text (literals aside) has been seen
	// AutoPrepareThreshold times (default false, 2). Off by default: it changes what the server
	// sees (pg_stat_activity, log_statement) and, within the limits docs/proxy.md lists, when
	// PostgreSQL decides things (see autoprep.go).
	AutoPrepare          bool `yaml:"auto_prepare"`
	AutoPrepareThreshold int  `yaml:"auto_prepare_threshold"`
	// MaxMessageSize bounds one protocol message from a client or server (default 256 MiB).
	MaxMessageSize int `yaml:"max_message_size"`
	// LagSampleInterval is how often each node's WAL position is sampled to measure replica lag
	// (default 100ms).
	LagSampleInterval time.Duration `yaml:"lag_sample_interval"`
	// MaxReplicaLag takes a replica out of read routing while its sampled lag exceeds it (default 30s;
	// 0 disables the check).
	MaxReplicaLag time.Duration `yaml:"max_replica_lag"`
	// DefaultConsistency is a session's read consistency until it sets meridian.consistency:
	// session (default), eventual, bounded or global.
	DefaultConsistency string `yaml:"default_consistency"`
	// DefaultMaxStaleness is meridian.max_staleness until a session sets it (default 1s).
	DefaultMaxStaleness time.Duration `yaml:"default_max_staleness"`
	// ConsistencyMaxWait bounds how long a read waits for a replica to catch up before it goes to the
	// primary (default 1s; sessions may change it with meridian.max_wait).
	ConsistencyMaxWait time.Duration `yaml:"consistency_max_wait"`
	// ConsistencyOverrides set other defaults for some users or databases: the first entry whose
	// user and database match (an empty one matches any) applies.
	ConsistencyOverrides []ConsistencyOverride `yaml:"consistency_overrides"`
	// Auth is client authentication (rules, auth file, auth query).
	Auth AuthConfig `yaml:"auth"`
	// ClientLoginTimeout bounds the time from accepting a connection to the client being logged in
	// (startup packet, TLS handshake, authentication): a socket that stays silent, or trickles, is
	// closed after it (default 15s; PgBouncer's client_login_timeout is 60s).
	ClientLoginTimeout time.Duration `yaml:"client_login_timeout"`
	// ClientIdleTimeout closes client connections idle (outside a transaction) for longer (0: never).
	ClientIdleTimeout time.Duration `yaml:"client_idle_timeout"`
	// IdleTransactionTimeout closes client connections idle inside a transaction for longer, rolling
	// the transaction back (0: never).
	IdleTransactionTimeout time.Duration `yaml:"idle_transaction_timeout"`
	// ClientWriteTimeout disconnects a client that has not read what the proxy sends it for this long,
	// freeing the server connection it holds (default 60s; 0: never).
	ClientWriteTimeout time.Duration `yaml:"client_write_timeout"`
	// TCPKeepalive configures keepalive probes on client and server sockets.
	TCPKeepalive TCPKeepalive `yaml:"tcp_keepalive"`
	// Pprof serves Go's profiler under /debug/pprof/ on http_listen (default off).
	Pprof bool `yaml:"pprof"`
	// Readyz says what /readyz requires (default both): a known primary, and a node for reads. A
	// proxy cut off from the primary can keep serving reads if primary is false.
	Readyz ReadyzConfig `yaml:"readyz"`
	// AdminUsers may connect to the admin console (database "meridian"), authenticated by the rules.
	AdminUsers []string `yaml:"admin_users"`
	// ShutdownTimeout is how long SIGTERM (or SHUTDOWN) lets running transactions finish (default 30s).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// ClientTLS is TLS between clients and the proxy.
	ClientTLS ClientTLSConfig `yaml:"client_tls"`
	// ServerTLS is TLS to the servers: disable (default), require or verify-full (with ServerCAFile).
	ServerTLS    string `yaml:"server_tls"`
	ServerCAFile string `yaml:"server_ca_file"`
}

// ConsistencyOverride is a per-user or per-database default for the read consistency settings.
type ConsistencyOverride struct {
	User         string         `yaml:"user"`
	Database     string         `yaml:"database"`
	Consistency  string         `yaml:"consistency"`   // empty: default_consistency
	MaxStaleness *time.Duration `yaml:"max_staleness"` // nil: default_max_staleness
	MaxWait      *time.Duration `yaml:"max_wait"`      // nil: consistency_max_wait
}

// ReadyzConfig is what /readyz requires.
type ReadyzConfig struct {
	Primary bool `yaml:"primary"`
	Reads   bool `yaml:"reads"`
}

// TCPKeepalive is the keepalive configuration of client and server sockets.
type TCPKeepalive struct {
	Enabled  bool          `yaml:"enabled"`
	Idle     time.Duration `yaml:"idle"`     // idle time before the first probe
	Interval time.Duration `yaml:"interval"` // between probes
	Count    int           `yaml:"count"`    // unanswered probes before the connection is dropped
}

// apply sets the keepalive options on a TCP connection.
func (k TCPKeepalive) apply(conn net.Conn) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: k.Enabled, Idle: k.Idle, Interval: k.Interval, Count: k.Count})
}

// SessionDefaults are a session's read consistency settings before it changes them.
type SessionDefaults struct {
	Consistency  string
	MaxStaleness time.Duration
	MaxWait      time.Duration
}

// SessionDefaults returns the consistency defaults of a (user, database) session.
func (c *Config) SessionDefaults(user, database string) SessionDefaults {
	d := SessionDefaults{Consistency: c.DefaultConsistency, MaxStaleness: c.DefaultMaxStaleness, MaxWait: c.ConsistencyMaxWait}
	for _, o := range c.ConsistencyOverrides {
		if (o.User != "" && o.User != user) || (o.Database != "" && o.Database != database) {
			continue
		}
		if o.Consistency != "" {
			d.Consistency = o.Consistency
		}
		if o.MaxStaleness != nil {
			d.MaxStaleness = *o.MaxStaleness
		}
		if o.MaxWait != nil {
			d.MaxWait = *o.MaxWait
		}
		break
	}
	return d
}

// DefaultConfig returns the configuration before the file is applied.
func DefaultConfig() Config {
	return Config{
		Listen:               "127.0.0.1:6432",
		PoolMode:             PoolTransaction,
		PoolSize:             20,
		MaxClientConn:        10000,
		PollInterval:         time.Second,
		QueryWaitTimeout:     10 * time.Second,
		ServerConnectTimeout: 5 * time.Second,
		ServerIdleTimeout:    10 * time.Minute,
		ServerLifetime:       time.Hour,
		MonitorUser:          "postgres",
		MonitorDatabase:      "postgres",
		MaxMessageSize:       256 << 20,
		AutoPrepare:          false,
		AutoPrepareThreshold: 2,
		LagSampleInterval:    100 * time.Millisecond,
		MaxReplicaLag:        30 * time.Second,
		DefaultConsistency:   "session",
		DefaultMaxStaleness:  time.Second,
		ConsistencyMaxWait:   time.Second,
		ShutdownTimeout:      30 * time.Second,
		ClientWriteTimeout:   time.Minute,
		ClientLoginTimeout:   15 * time.Second,
		Readyz:               ReadyzConfig{Primary: true, Reads: true},
		TCPKeepalive:         TCPKeepalive{Enabled: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 4},
	}
}

// LoadConfig reads a YAML file over the defaults and validates it. Unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig parses YAML over the defaults and validates the result.
func ParseConfig(b []byte) (Config, error) {
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) { // an empty file means all defaults
		return Config{}, explainYAMLError(b, err)
	}
	cfg.ServerPassword = os.ExpandEnv(cfg.ServerPassword)
	cfg.MonitorPassword = os.ExpandEnv(cfg.MonitorPassword)
	for _, f := range []struct {
		key, file string
		dst       *string
	}{{"server_password_file", cfg.ServerPasswordFile, &cfg.ServerPassword}, {"monitor_password_file", cfg.MonitorPasswordFile, &cfg.MonitorPassword}} {
		if f.file == "" {
			continue
		}
		if *f.dst != "" {
			return Config{}, fmt.Errorf("config: %s: set the password or the file, not both", f.key)
		}
		b, err := os.ReadFile(f.file)
		if err != nil {
			return Config{}, fmt.Errorf("config: %s: %w", f.key, err)
		}
		*f.dst = strings.TrimRight(string(b), "\r\n")
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, withLines(b, err)
	}
	return cfg, nil
}

// Validate checks the configuration; every error names the key and the rule.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "want host:port, got %q", c.Listen)
	}
	if c.HTTPListen != "" {
		if _, _, err := net.SplitHostPort(c.HTTPListen); err != nil {
			bad("http_listen", "want host:port, got %q", c.HTTPListen)
		}
	}
	if c.Region == "" {
		bad("region", "is required (the proxy's own region; its replicas serve reads first)")
	}
	switch c.PoolMode {
	case PoolTransaction, PoolSession:
	default:
		bad("pool_mode", "must be transaction or session, got %q", c.PoolMode)
	}
	if c.AutoPrepareThreshold < 1 {
		bad("auto_prepare_threshold", "must be at least 1, got %d", c.AutoPrepareThreshold)
	}
	if c.LagSampleInterval < 10*time.Millisecond || c.LagSampleInterval > time.Minute {
		bad("lag_sample_interval", "must be between 10ms and 1m, got %v", c.LagSampleInterval)
	}
	if !validConsistency(c.DefaultConsistency) {
		bad("default_consistency", "must be eventual, bounded, session or global, got %q", c.DefaultConsistency)
	}
	waitBound := func(key string, d time.Duration) {
		if d < 0 || d > time.Hour {
			bad(key, "must be between 0 and 1h, got %v", d)
		}
	}
	waitBound("default_max_staleness", c.DefaultMaxStaleness)
	waitBound("consistency_max_wait", c.ConsistencyMaxWait)
	for i, o := range c.ConsistencyOverrides {
		key := fmt.Sprintf("consistency_overrides[%d]", i)
		if o.User == "" && o.Database == "" {
			bad(key, "needs a user, a database or both (default_consistency covers everyone)")
		}
		if o.Consistency != "" && !validConsistency(o.Consistency) {
			bad(key+".consistency", "must be eventual, bounded, session or global, got %q", o.Consistency)
		}
		if o.MaxStaleness != nil {
			waitBound(key+".max_staleness", *o.MaxStaleness)
		}
		if o.MaxWait != nil {
			waitBound(key+".max_wait", *o.MaxWait)
		}
	}
	if c.MaxReplicaLag < 0 {
		bad("max_replica_lag", "must not be negative (0 disables the check), got %v", c.MaxReplicaLag)
	}
	if c.PoolSize < 1 || c.PoolSize > 10000 {
		bad("pool_size", "must be between 1 and 10000, got %d", c.PoolSize)
	}
	if c.MaxClientConn < 1 {
		bad("max_client_conn", "must be at least 1, got %d", c.MaxClientConn)
	}
	if len(c.Nodes) == 0 {
		bad("nodes", "at least one node is required")
	}
	names := map[string]bool{}
	for i, n := range c.Nodes {
		key := fmt.Sprintf("nodes[%d]", i)
		if n.Name == "" {
			bad(key+".name", "is required")
		} else if names[n.Name] {
			bad(key+".name", "%q is used twice", n.Name)
		}
		names[n.Name] = true
		if _, port, err := net.SplitHostPort(n.Address); err != nil || port == "" {
			bad(key+".address", "want host:port, got %q", n.Address)
		}
		if n.Region == "" {
			bad(key+".region", "is required")
		}
	}
	for key, d := range map[string]time.Duration{
		"poll_interval": c.PollInterval, "query_wait_timeout": c.QueryWaitTimeout,
		"server_connect_timeout": c.ServerConnectTimeout,
	} {
		if d <= 0 {
			bad(key, "must be a positive duration such as 1s, got %v", d)
		}
	}
	for key, d := range map[string]time.Duration{"server_idle_timeout": c.ServerIdleTimeout, "server_lifetime": c.ServerLifetime} {
		if d < 0 {
			bad(key, "must not be negative, got %v", d)
		}
	}
	if c.MonitorUser == "" {
		bad("monitor_user", "is required")
	}
	if c.ClientLoginTimeout <= 0 {
		bad("client_login_timeout", "must be positive: an unauthenticated connection must not stay open forever, got %v", c.ClientLoginTimeout)
	}
	for key, d := range map[string]time.Duration{"shutdown_timeout": c.ShutdownTimeout, "client_idle_timeout": c.ClientIdleTimeout,
		"idle_transaction_timeout": c.IdleTransactionTimeout, "client_write_timeout": c.ClientWriteTimeout} {
		if d < 0 {
			bad(key, "must not be negative (0 disables it), got %v", d)
		}
	}
	if c.TCPKeepalive.Enabled && (c.TCPKeepalive.Idle < time.Second || c.TCPKeepalive.Interval < time.Second || c.TCPKeepalive.Count < 1) {
		bad("tcp_keepalive", "idle and interval must be at least 1s and count at least 1, got %+v", c.TCPKeepalive)
	}
	c.Auth.Validate(bad)
	c.ClientTLS.validate(bad)
	switch c.ServerTLS {
	case "", ServerTLSDisable, ServerTLSRequire:
	case ServerTLSVerifyFull:
		if _, err := loadCAs(c.ServerCAFile); err != nil {
			bad("server_ca_file", "server_tls verify-full needs a CA file: %v", err)
		}
	default:
		bad("server_tls", "must be disable, require or verify-full, got %q", c.ServerTLS)
	}
	if c.MaxMessageSize < 1<<16 || c.MaxMessageSize > 1<<30 {
		bad("max_message_size", "must be between 64 KiB and 1 GiB, got %d", c.MaxMessageSize)
	}
	return errors.Join(errs...)
}

// configEntry is one top-level key for SHOW CONFIG.
type configEntry struct{ key, value, def, reloadable, pending string }

// reloadableKeys apply on SIGHUP and RELOAD; every other key needs a restart.
var reloadableKeys = map[string]bool{"auth": true, "client_tls": true, "pool_size": true, "nodes": true,
	"max_client_conn": true, "query_wait_timeout": true, "client_idle_timeout": true, "idle_transaction_timeout": true,
	"client_write_timeout": true}

// secretKeys are shown masked.
var secretKeys = map[string]bool{"server_password": true, "monitor_password": true}

// entries lists the configuration's top-level keys with the values in effect (c, the configuration
// the proxy started with, for keys that need a restart; latest, the last one loaded, for the others),
// the defaults, and the loaded values still waiting for a restart. Secrets are masked.
func (c *Config) entries(latest, def Config) []configEntry {
	flat := func(cfg Config) map[string]string {
		cfg.Auth.QueryPassword = mask(cfg.Auth.QueryPassword)
		var m map[string]any
		b, _ := yaml.Marshal(cfg)
		_ = yaml.Unmarshal(b, &m)
		out := map[string]string{}
		for k, v := range m {
			if secretKeys[k] {
				if s, _ := v.(string); s != "" {
					v = "********"
				}
			}
			out[k] = compactYAML(v)
		}
		return out
	}
	running, loaded, d := flat(*c), flat(latest), flat(def)
	keys := make([]string, 0, len(running))
	for k := range running {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	entries := make([]configEntry, 0, len(keys))
	for _, k := range keys {
		e := configEntry{key: k, value: running[k], def: d[k], reloadable: "no (restart)"}
		switch {
		case reloadableKeys[k]:
			e.value, e.reloadable = loaded[k], "yes (SIGHUP, RELOAD)"
		case loaded[k] != running[k]:
			e.pending = loaded[k] // changed in the file: applies at the next start
		}
		entries = append(entries, e)
	}
	return entries
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "********"
}

// compactYAML renders a value on one line (flow style).
func compactYAML(v any) string {
	switch v.(type) {
	case nil:
		return ""
	case string, int, bool, float64:
		return fmt.Sprint(v)
	}
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	setFlow(&n)
	b, err := yaml.Marshal(&n)
	if err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSpace(string(b))
}

func setFlow(n *yaml.Node) {
	n.Style |= yaml.FlowStyle
	for _, c := range n.Content {
		setFlow(c)
	}
}
