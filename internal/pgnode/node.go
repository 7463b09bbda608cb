package pgnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Endpoint is a TCP address a server listens on or a replica streams from (possibly through a WAN
// link in the lab).
type Endpoint struct {
	Host string
	Port int
}

// String returns host:port.
func (e Endpoint) String() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// Config describes one PostgreSQL server. Only Name and Dir are required.
type Config struct {
	// Name identifies the node; it is the cluster_name and the application_name the node uses when it
	// streams from an upstream (so the primary's pg_stat_replication names it).
	Name string
	// Dir is the node's own directory: the data directory is Dir/data, the server log Dir/postgres.log.
	// Its parent must be traversable by RunAs.
	Dir string
	// Host is the listen address and the address clients use (default 127.0.0.1).
	Host string
	// Port is the TCP port; 0 picks a free kernel-assigned port when the Node is created.
	Port int
	// Bin is the folder of server programs; the zero value means FindBinaries().
	Bin Binaries
	// RunAs is the operating-system user the server programs run as when the caller is root
	// (default "postgres"). Ignored when the caller is not root.
	RunAs string
	// Superuser is the database superuser created by Init and used by Meridian for control, replication
	// and pg_rewind (default "postgres").
	Superuser string
	// Password, if set, is the superuser's password and TCP connections must authenticate with
	// SCRAM-SHA-256; if empty, connections from AllowCIDRs are trusted (fit for loopback labs and tests).
	Password string
	// AllowCIDRs are the client networks pg_hba.conf admits, for normal and replication connections
	// (default loopback: 127.0.0.0/8 and ::1/128).
	AllowCIDRs []string
	// Settings are extra server settings (e.g. "recovery_min_apply_delay": "300ms"); they override
	// Meridian's defaults.
	Settings map[string]string
	// Logger receives the node's lifecycle events (default: discard).
	Logger *slog.Logger
}

// Validate checks the configuration; its errors name the field.
func (c *Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("pgnode config: Name is required")
	case strings.ContainsAny(c.Name, " '\"\\=\n"):
		return fmt.Errorf("pgnode config: Name %q must not contain spaces, quotes, backslashes or '='", c.Name)
	case c.Dir == "":
		return errors.New("pgnode config: Dir is required")
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("pgnode config: Port %d is out of range 0-65535", c.Port)
	}
	for _, cidr := range c.AllowCIDRs {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			return fmt.Errorf("pgnode config: AllowCIDRs entry %q: %w", cidr, err)
		}
	}
	for k := range c.Settings {
		if k == "" || strings.ContainsAny(k, " ='\n") {
			return fmt.Errorf("pgnode config: Settings key %q is not a setting name", k)
		}
	}
	return nil
}

// Node is one PostgreSQL server controlled by this process. Its methods are safe for concurrent use,
// but lifecycle operations (Init, Clone, Start, Stop, Promote, Demote, Rewind) are serialized.
type Node struct {
	cfg  Config
	user *osUser
	log  *slog.Logger

	op sync.Mutex // serializes lifecycle operations

	mu       sync.Mutex // guards the fields below
	upstream *Endpoint  // nil: runs as primary; else the server it streams from
	proc     *process   // the running postmaster, nil when stopped
}

// process is one run of the postmaster.
type process struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed when the postmaster has exited
	err    error         // exit status, valid after done is closed
	logOff int64         // size of postgres.log when this run started
}

// New prepares a Node; it touches nothing on disk. With Port 0 it picks a free port now.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Superuser == "" {
		cfg.Superuser = "postgres"
	}
	if len(cfg.AllowCIDRs) == 0 {
		cfg.AllowCIDRs = []string{"127.0.0.0/8", "::1/128"}
	}
	if cfg.Bin.Dir == "" {
		b, err := FindBinaries()
		if err != nil {
			return nil, err
		}
		cfg.Bin = b
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Settings = maps.Clone(cfg.Settings)
	abs, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgnode config: Dir: %w", err)
	}
	cfg.Dir = abs
	u, err := lookupRunAs(cfg.RunAs)
	if err != nil {
		return nil, err
	}
	if cfg.Port == 0 {
		p, err := FreePort(cfg.Host)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", cfg.Name, err)
		}
		cfg.Port = p
	}
	return &Node{cfg: cfg, user: u, log: cfg.Logger.With("node", cfg.Name)}, nil
}

// FreePort asks the kernel for a free TCP port on host.
func FreePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Endpoint returns the address the server listens on.
func (n *Node) Endpoint() Endpoint { return Endpoint{Host: n.cfg.Host, Port: n.cfg.Port} }

// DataDir returns the data directory.
func (n *Node) DataDir() string { return filepath.Join(n.cfg.Dir, "data") }

// LogPath returns the server log file.
func (n *Node) LogPath() string { return filepath.Join(n.cfg.Dir, "postgres.log") }

// Superuser returns the database superuser name.
func (n *Node) Superuser() string { return n.cfg.Superuser }

// ConnString returns a libpq/pgx connection string for the superuser to the given database
// ("postgres" when empty).
func (n *Node) ConnString(database string) string {
	if database == "" {
		database = "postgres"
	}
	return n.conninfo(n.Endpoint(), "dbname="+quoteConnValue(database))
}

// conninfo builds a keyword/value connection string to ep as the superuser.
func (n *Node) conninfo(ep Endpoint, extra ...string) string {
	parts := []string{
		"host=" + quoteConnValue(ep.Host),
		"port=" + strconv.Itoa(ep.Port),
		"user=" + quoteConnValue(n.cfg.Superuser),
		"connect_timeout=5",
	}
	if n.cfg.Password != "" {
		parts = append(parts, "password="+quoteConnValue(n.cfg.Password))
	}
	return strings.Join(append(parts, extra...), " ")
}

// quoteConnValue quotes a value for a keyword/value connection string
// (https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING).
func quoteConnValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// Upstream returns the server this node streams from, or false when it is configured as a primary.
func (n *Node) Upstream() (Endpoint, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.upstream == nil {
		return Endpoint{}, false
	}
	return *n.upstream, true
}

func (n *Node) setUpstream(ep *Endpoint) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ep == nil {
		n.upstream = nil
		return
	}
	e := *ep
	n.upstream = &e
}

// Running reports whether this process has a live postmaster for the node.
func (n *Node) Running() bool {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Init creates a new, replication-ready primary with initdb: wal_level=replica, WAL senders,
// wal_keep_size, hot_standby_feedback, wal_log_hints (so pg_rewind works) and a pg_hba.conf that admits
// replication. It does not start the server.
func (n *Node) Init(ctx context.Context) error {
	n.op.Lock()
	defer n.op.Unlock()
	if err := n.prepareDir(); err != nil {
		return err
	}
	args := []string{"-D", n.DataDir(), "-U", n.cfg.Superuser, "--encoding=UTF8", "--locale=C", "--no-sync",
		"--auth-local=trust", "--auth-host=" + n.authMethod()}
	if n.cfg.Password != "" {
		pw := filepath.Join(n.cfg.Dir, ".pwfile")
		if err := n.user.writeOwned(pw, []byte(n.cfg.Password+"\n")); err != nil {
			return fmt.Errorf("init %s: %w", n.cfg.Name, err)
		}
		defer os.Remove(pw)
		args = append(args, "--pwfile="+pw)
	}
	start := time.Now()
	if _, err := n.runProgram(ctx, "initdb", args...); err != nil {
		return fmt.Errorf("init %s: %w", n.cfg.Name, err)
	}
	if err := n.writeBaseConfig(); err != nil {
		return fmt.Errorf("init %s: %w", n.cfg.Name, err)
	}
	n.setUpstream(nil)
	n.log.Info("initialized primary", "data_dir", n.DataDir(), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// Clone creates this node as a streaming replica of source with pg_basebackup (WAL streamed during the
// copy, fast checkpoint). It does not start the server.
func (n *Node) Clone(ctx context.Context, source Endpoint) error {
	n.op.Lock()
	defer n.op.Unlock()
	if err := n.prepareDir(); err != nil {
		return err
	}
	start := time.Now()
	_, err := n.runProgram(ctx, "pg_basebackup", "-D", n.DataDir(), "-d", n.conninfo(source),
		"-X", "stream", "-c", "fast", "--no-sync", "-w")
	if err != nil {
		return fmt.Errorf("clone %s from %s: %w", n.cfg.Name, source, err)
	}
	// pg_basebackup copied the source's pg_hba.conf and postgresql.conf; rewrite ours.
	if err := n.writeBaseConfig(); err != nil {
		return fmt.Errorf("clone %s: %w", n.cfg.Name, err)
	}
	n.setUpstream(&source)
	n.log.Info("cloned replica", "upstream", source.String(), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// prepareDir creates the node directory (owned by the server user) and refuses to overwrite data.
func (n *Node) prepareDir() error {
	if err := n.user.checkTraversable(filepath.Dir(n.cfg.Dir)); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(n.DataDir(), "PG_VERSION")); err == nil {
		return fmt.Errorf("node %s: %s already holds a PostgreSQL data directory", n.cfg.Name, n.DataDir())
	}
	if err := n.user.mkdirOwned(n.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("node %s: create %s: %w", n.cfg.Name, n.cfg.Dir, err)
	}
	return nil
}

func (n *Node) authMethod() string {
	if n.cfg.Password != "" {
		return "scram-sha-256"
	}
	return "trust"
}

// StopMode is a PostgreSQL shutdown mode (https://www.postgresql.org/docs/15/server-shutdown.html).
type StopMode int

const (
	// Smart waits for all clients to disconnect (SIGTERM).
	Smart StopMode = iota
	// Fast rolls back open transactions and disconnects clients, then shuts down cleanly with a
	// checkpoint that standbys receive before the server exits (SIGINT).
	Fast
	// Immediate quits without a checkpoint; the next start runs crash recovery (SIGQUIT).
	Immediate
)

// String names the mode as pg_ctl does.
func (m StopMode) String() string {
	switch m {
	case Smart:
		return "smart"
	case Fast:
		return "fast"
	case Immediate:
		return "immediate"
	}
	return "StopMode(" + strconv.Itoa(int(m)) + ")"
}

func (m StopMode) signal() syscall.Signal {
	switch m {
	case Smart:
		return syscall.SIGTERM
	case Immediate:
		return syscall.SIGQUIT
	}
	return syscall.SIGINT
}

// ErrNotRunning is returned by operations that need a running server when there is none.
var ErrNotRunning = errors.New("postgres is not running")

// ExitError reports that the postmaster exited when it should not have; Log holds the last lines of
// the server log, which say why.
type ExitError struct {
	Node string
	Err  error  // the process exit status
	Log  string // last lines of postgres.log from this run
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("node %s: postgres exited (%v): %s", e.Node, e.Err, e.Log)
}

func (e *ExitError) Unwrap() error { return e.Err }
