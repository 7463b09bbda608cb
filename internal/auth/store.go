package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Options are what a Store needs besides the configuration.
type Options struct {
	// ConnString builds the connection string of the auth query's login (with the server TLS
	// settings).
	ConnString func(address, user, database, password string) string
	// ConnectTimeout bounds the auth query's login and each lookup.
	ConnectTimeout time.Duration
	// Primary returns the primary's address, where the auth query runs.
	Primary func() (string, error)
}

// Lookups of the auth query.
const (
	// maxQueryConns bounds the auth query's connections to the primary: lookups of different users
	// run in parallel up to this, the rest wait for a connection (never for a lock).
	maxQueryConns = 4
	// negativeTTL is how long a user the auth query did not find stays unknown without asking again,
	// so that a flood of logins as made-up names cannot keep the primary busy. A role created meanwhile
	// can log in at most this much later.
	negativeTTL = 5 * time.Second
	// maxNegative bounds the negative cache; when full, it is emptied.
	maxNegative = 10000
)

// Store holds the users' secrets: the auth file, and the auth query for users missing from it.
//
// Nothing holds a lock across I/O: the auth query runs on one of a few dedicated connections, one
// lookup per user at a time (concurrent logins of the same user share it), and a login whose user is in
// the file — or whose rule needs no secret — never waits for it.
type Store struct {
	opts       Options
	mockSecret []byte // for mock SCRAM verifiers of unknown users

	mu       sync.Mutex // guards the fields below; never held across I/O
	cfg      Config
	file     map[string]string // from cfg.File
	gen      uint64            // bumped when the auth query's login changes: older connections close
	idle     []queryConn       // auth query connections not in use
	open     int               // auth query connections open or being dialed
	slot     chan struct{}     // signalled when a connection is returned or a slot frees
	inflight map[string]*lookup
	negative map[string]time.Time // user → until when it is known to be unknown
	closed   bool
}

type queryConn struct {
	conn *pgconn.PgConn
	gen  uint64
}

// lookup is one auth query in flight; the logins of the same user wait for it.
type lookup struct {
	done   chan struct{}
	secret string
	err    error
}

// NewStore reads the auth file and prepares the auth query (it connects on first use).
func NewStore(cfg Config, opts Options) (*Store, error) {
	s := &Store{opts: opts, cfg: cfg, mockSecret: make([]byte, 32), slot: make(chan struct{}, 1),
		inflight: map[string]*lookup{}, negative: map[string]time.Time{}}
	if _, err := rand.Read(s.mockSecret); err != nil {
		return nil, err
	}
	if cfg.File != "" {
		users, err := ReadFile(cfg.File)
		if err != nil {
			return nil, fmt.Errorf("auth.file: %w", err)
		}
		s.file = users
	}
	return s, nil
}

// Config returns the configuration in effect (it changes on Reload).
func (s *Store) Config() *Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg := s.cfg
	return &cfg
}

// Secret returns a user's stored secret, "" for an unknown user.
func (s *Store) Secret(ctx context.Context, user string) (string, error) {
	s.mu.Lock()
	if sec, ok := s.file[user]; ok {
		s.mu.Unlock()
		return sec, nil
	}
	if s.cfg.QueryUser == "" {
		s.mu.Unlock()
		return "", nil
	}
	if until, ok := s.negative[user]; ok {
		if time.Now().Before(until) {
			s.mu.Unlock()
			return "", nil
		}
		delete(s.negative, user)
	}
	l, running := s.inflight[user]
	if !running {
		l = &lookup{done: make(chan struct{})}
		s.inflight[user] = l
	}
	cfg := s.cfg
	s.mu.Unlock()
	if !running {
		// The leader's lookup is not tied to its own ctx alone: others may be waiting for it. It is
		// bounded by ConnectTimeout per step instead.
		l.secret, l.err = s.query(context.WithoutCancel(ctx), &cfg, user)
		s.mu.Lock()
		delete(s.inflight, user)
		if l.err == nil && l.secret == "" {
			if len(s.negative) >= maxNegative {
				clear(s.negative)
			}
			s.negative[user] = time.Now().Add(negativeTTL)
		}
		s.mu.Unlock()
		close(l.done)
	}
	select {
	case <-l.done:
		return l.secret, l.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// query runs the auth query for user, on a connection of its own.
func (s *Store) query(ctx context.Context, cfg *Config, user string) (string, error) {
	for attempt := 0; attempt < 2; attempt++ {
		qc, err := s.getConn(ctx, cfg)
		if err != nil {
			return "", err
		}
		qctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
		res := qc.conn.ExecParams(qctx, cfg.Query, [][]byte{[]byte(user)}, nil, nil, nil).Read()
		cancel()
		if res.Err != nil {
			var pe *pgconn.PgError
			if errors.As(res.Err, &pe) && pe.Severity != "FATAL" && pe.Severity != "PANIC" && !qc.conn.IsClosed() {
				s.putConn(qc)
				return "", fmt.Errorf("auth query failed: %s (SQLSTATE %s)", pe.Message, pe.Code)
			}
			// The connection broke, or its backend ended while it sat idle (the FATAL error of a
			// server shut down for a failover, a terminated backend, waiting in the socket): once
			// more on a new one.
			s.dropConn(qc)
			continue
		}
		s.putConn(qc)
		if len(res.Rows) == 0 || len(res.Rows[0]) == 0 || res.Rows[0][0] == nil {
			return "", nil
		}
		return string(res.Rows[0][0]), nil
	}
	return "", errors.New("auth query failed: the primary did not answer")
}

// getConn takes an idle auth query connection, dials one if fewer than maxQueryConns are open, or
// waits for one to be returned.
func (s *Store) getConn(ctx context.Context, cfg *Config) (queryConn, error) {
	wait := time.NewTimer(s.opts.ConnectTimeout)
	defer wait.Stop()
	var stale []queryConn
	defer func() {
		for _, qc := range stale {
			qc.conn.Close(context.Background())
		}
	}()
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return queryConn{}, errors.New("auth query: the proxy is closing")
		}
		for len(s.idle) > 0 {
			qc := s.idle[len(s.idle)-1]
			s.idle = s.idle[:len(s.idle)-1]
			if qc.gen == s.gen && !qc.conn.IsClosed() {
				s.mu.Unlock()
				return qc, nil
			}
			s.open--
			stale = append(stale, qc)
		}
		if s.open < maxQueryConns {
			s.open++
			gen := s.gen
			s.mu.Unlock()
			conn, err := s.connect(ctx, cfg)
			if err != nil {
				s.freeSlot()
				return queryConn{}, err
			}
			return queryConn{conn: conn, gen: gen}, nil
		}
		s.mu.Unlock()
		select {
		case <-s.slot:
		case <-wait.C:
			return queryConn{}, errors.New("auth query: no connection to the primary became free in time")
		case <-ctx.Done():
			return queryConn{}, ctx.Err()
		}
	}
}

func (s *Store) putConn(qc queryConn) {
	s.mu.Lock()
	if qc.gen != s.gen || s.closed {
		s.mu.Unlock()
		s.dropConn(qc)
		return
	}
	s.idle = append(s.idle, qc)
	s.mu.Unlock()
	s.signal()
}

func (s *Store) dropConn(qc queryConn) {
	qc.conn.Close(context.Background())
	s.freeSlot()
}

func (s *Store) freeSlot() {
	s.mu.Lock()
	s.open--
	s.mu.Unlock()
	s.signal()
}

func (s *Store) signal() {
	select {
	case s.slot <- struct{}{}:
	default:
	}
}

func (s *Store) connect(ctx context.Context, cfg *Config) (*pgconn.PgConn, error) {
	addr, err := s.opts.Primary()
	if err != nil {
		return nil, err
	}
	pw := cfg.QueryPassword
	if cfg.QueryPasswordFile != "" {
		b, err := os.ReadFile(cfg.QueryPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("auth.query_password_file: %w", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	}
	pc, err := pgconn.ParseConfig(s.opts.ConnString(addr, cfg.QueryUser, cfg.QueryDatabase, pw))
	if err != nil {
		return nil, err
	}
	pc.RuntimeParams["application_name"] = "meridian-proxy-auth"
	cctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, pc)
	if err != nil {
		return nil, fmt.Errorf("auth query: cannot log in to the primary as %s: %w", cfg.QueryUser, err)
	}
	return conn, nil
}

// Reload applies new rules and reads the auth file again. When the auth query's login changed, its
// connections close (idle ones now, busy ones when their lookup ends). The negative cache is emptied.
func (s *Store) Reload(cfg Config) error {
	var users map[string]string
	if cfg.File != "" {
		var err error
		if users, err = ReadFile(cfg.File); err != nil {
			return fmt.Errorf("auth.file: %w", err)
		}
	}
	s.mu.Lock()
	var stale []queryConn
	if cfg.QueryUser != s.cfg.QueryUser || cfg.QueryPassword != s.cfg.QueryPassword || cfg.QueryPasswordFile != s.cfg.QueryPasswordFile ||
		cfg.QueryDatabase != s.cfg.QueryDatabase {
		s.gen++
		stale, s.idle = s.idle, nil
		s.open -= len(stale)
	}
	s.cfg, s.file = cfg, users
	clear(s.negative)
	s.mu.Unlock()
	for _, qc := range stale {
		qc.conn.Close(context.Background())
	}
	return nil
}

// Close closes the auth query's connections; lookups still running close theirs when they end.
func (s *Store) Close() {
	s.mu.Lock()
	s.closed = true
	idle := s.idle
	s.idle = nil
	s.open -= len(idle)
	s.mu.Unlock()
	for _, qc := range idle {
		qc.conn.Close(context.Background())
	}
}

// QueryConns reports the auth query's open connections (tests).
func (s *Store) QueryConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}
