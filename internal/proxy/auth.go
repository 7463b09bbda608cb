package proxy

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.yaml.in/yaml/v3"

	"github.com/meridiandb/meridian/internal/scram"
)

// Client authentication methods (auth.rules[].method).
const (
	AuthSCRAM  = "scram-sha-256"
	AuthMD5    = "md5"
	AuthTrust  = "trust"
	AuthReject = "reject"
)

// AuthConfig is client authentication: ordered rules choose a method, as pg_hba.conf does, and the
// users' secrets come from an auth file of verifiers or from the primary through an auth query. The
// proxy never stores or asks for a plaintext password.
type AuthConfig struct {
	// Rules are tried in order; the first whose database, user and address match decides. Without
	// rules: trust for loopback clients (like initdb's default), SCRAM-SHA-256 for everyone else.
	Rules []AuthRule `yaml:"rules"`
	// File holds one user per line, PgBouncer's auth_file format: "user" "secret", the secret a SCRAM
	// verifier (SCRAM-SHA-256$...) or an md5 hash (md5...), as in pg_authid.rolpassword. Written by
	// `meridian proxy passwd`.
	File string `yaml:"file"`
	// QueryUser logs in to the primary to look up users missing from the file with Query
	// (passthrough: the secret stays in PostgreSQL).
	QueryUser         string `yaml:"query_user"`
	QueryPassword     string `yaml:"query_password"`      // ${VAR} expanded
	QueryPasswordFile string `yaml:"query_password_file"` // or read from a file
	QueryDatabase     string `yaml:"query_database"`      // default postgres
	// Query returns the user's secret; $1 is the user name.
	Query string `yaml:"query"`
}

// AuthRule is one line of the rules.
type AuthRule struct {
	Database nameList `yaml:"database"` // names, or empty/all for any
	User     nameList `yaml:"user"`     // names, or empty/all for any
	Address  string   `yaml:"address"`  // a CIDR prefix (10.0.0.0/8, ::1/128), or empty/all for any
	Method   string   `yaml:"method"`   // scram-sha-256, md5, trust or reject

	prefix netip.Prefix // parsed Address; zero = any
}

// nameList is a YAML scalar or sequence of names.
type nameList []string

func (n *nameList) UnmarshalYAML(v *yaml.Node) error {
	if v.Kind == yaml.ScalarNode {
		*n = nameList{v.Value}
		return nil
	}
	var s []string
	if err := v.Decode(&s); err != nil {
		return err
	}
	*n = s
	return nil
}

func (n nameList) matches(name string) bool {
	if len(n) == 0 {
		return true
	}
	for _, x := range n {
		if x == "all" || x == name {
			return true
		}
	}
	return false
}

// DefaultAuthQuery reads a login role's secret (the query user needs to read pg_authid: a superuser,
// or a SECURITY DEFINER function in its place).
const DefaultAuthQuery = "SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin AND (rolvaliduntil IS NULL OR rolvaliduntil > now())"

// defaultAuthRules apply when the configuration has none.
var defaultAuthRules = []AuthRule{
	{Address: "127.0.0.0/8", Method: AuthTrust},
	{Address: "::1/128", Method: AuthTrust},
	{Method: AuthSCRAM},
}

// validate checks the section and parses addresses; bad reports an error for a key.
func (a *AuthConfig) validate(bad func(key, format string, args ...any)) {
	if len(a.Rules) == 0 {
		a.Rules = append([]AuthRule(nil), defaultAuthRules...)
	}
	needSecrets := false
	for i := range a.Rules {
		r := &a.Rules[i]
		key := fmt.Sprintf("auth.rules[%d]", i)
		switch r.Method {
		case AuthSCRAM, AuthMD5:
			needSecrets = true
		case AuthTrust, AuthReject:
		default:
			bad(key+".method", "must be scram-sha-256, md5, trust or reject, got %q", r.Method)
		}
		r.prefix = netip.Prefix{}
		if r.Address != "" && r.Address != "all" {
			p, err := netip.ParsePrefix(r.Address)
			if err != nil {
				if ip, err2 := netip.ParseAddr(r.Address); err2 == nil {
					p = netip.PrefixFrom(ip, ip.BitLen())
				} else {
					bad(key+".address", "want a CIDR prefix such as 10.0.0.0/8 or all, got %q", r.Address)
					continue
				}
			}
			r.prefix = p.Masked()
		}
	}
	if a.QueryUser != "" && a.Query == "" {
		a.Query = DefaultAuthQuery
	}
	if a.QueryDatabase == "" {
		a.QueryDatabase = "postgres"
	}
	a.QueryPassword = os.ExpandEnv(a.QueryPassword)
	if a.QueryPassword != "" && a.QueryPasswordFile != "" {
		bad("auth.query_password_file", "set query_password or query_password_file, not both")
	}
	if a.File != "" {
		if _, err := readAuthFile(a.File); err != nil {
			bad("auth.file", "%v", err)
		}
	}
	_ = needSecrets // rules needing secrets without a source reject every such login (logged at start)
}

// method returns the rule that applies to a connection, or nil when none does.
func (a *AuthConfig) rule(database, user string, addr netip.Addr) *AuthRule {
	addr = addr.Unmap()
	for i := range a.Rules {
		r := &a.Rules[i]
		if r.Database.matches(database) && r.User.matches(user) && (!r.prefix.IsValid() || r.prefix.Contains(addr)) {
			return r
		}
	}
	return nil
}

// readAuthFile parses an auth file: "user" "secret" per line, # comments, "" escapes a quote.
func readAuthFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	users := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields, err := quotedFields(line)
		if err != nil || len(fields) < 2 {
			return nil, fmt.Errorf("%s line %d: want \"user\" \"secret\"", path, n)
		}
		if !strings.HasPrefix(fields[1], scram.Mechanism+"$") && !isMD5Secret(fields[1]) {
			return nil, fmt.Errorf("%s line %d: the secret of %q is neither a SCRAM-SHA-256 verifier nor an md5 hash (plaintext passwords are not accepted; write one with `meridian proxy passwd`)", path, n, fields[0])
		}
		users[fields[0]] = fields[1]
	}
	return users, sc.Err()
}

// quotedFields splits `"a" "b"` into a, b ("" inside quotes is a quote).
func quotedFields(s string) ([]string, error) {
	var out []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] != '"' {
			return nil, errors.New("unquoted field")
		}
		var b strings.Builder
		i := 1
		for ; i < len(s); i++ {
			if s[i] == '"' {
				if i+1 < len(s) && s[i+1] == '"' {
					b.WriteByte('"')
					i++
					continue
				}
				break
			}
			b.WriteByte(s[i])
		}
		if i >= len(s) {
			return nil, errors.New("unterminated quote")
		}
		out = append(out, b.String())
		s = s[i+1:]
	}
	return out, nil
}

// QuoteAuthField quotes a field for an auth file line.
func QuoteAuthField(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func isMD5Secret(s string) bool {
	if len(s) != 35 || !strings.HasPrefix(s, "md5") {
		return false
	}
	_, err := hex.DecodeString(s[3:])
	return err == nil
}

// authenticator holds the secrets and looks users up.
type authenticator struct {
	cfg        AuthConfig
	connString func(address, user, database, password string) string // with the server TLS settings
	connectTTL time.Duration
	primary    func() (string, error) // the primary's address, for the auth query
	mockSecret []byte

	mu    sync.Mutex
	file  map[string]string // from cfg.File
	query *pgconn.PgConn    // to the primary as cfg.QueryUser

	keys sync.Map // user → scram.Keys learnt from a client's exchange, to log in to servers as that user
}

func newAuthenticator(cfg *Config, primary func() (string, error)) (*authenticator, error) {
	a := &authenticator{cfg: cfg.Auth, connString: cfg.serverConnString, connectTTL: cfg.ServerConnectTimeout, primary: primary, mockSecret: make([]byte, 32)}
	if _, err := rand.Read(a.mockSecret); err != nil {
		return nil, err
	}
	if a.cfg.File != "" {
		users, err := readAuthFile(a.cfg.File)
		if err != nil {
			return nil, fmt.Errorf("auth.file: %w", err)
		}
		a.file = users
	}
	return a, nil
}

// secret returns a user's stored secret, "" for an unknown user.
func (a *authenticator) secret(ctx context.Context, user string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.file[user]; ok {
		return s, nil
	}
	if a.cfg.QueryUser == "" {
		return "", nil
	}
	for attempt := 0; attempt < 2; attempt++ {
		if a.query == nil || a.query.IsClosed() {
			if err := a.connectQuery(ctx); err != nil {
				return "", err
			}
		}
		qctx, cancel := context.WithTimeout(ctx, a.connectTTL)
		res := a.query.ExecParams(qctx, a.cfg.Query, [][]byte{[]byte(user)}, nil, nil, nil).Read()
		cancel()
		if res.Err != nil {
			var pe *pgconn.PgError
			if errors.As(res.Err, &pe) {
				return "", fmt.Errorf("auth query failed: %s (SQLSTATE %s)", pe.Message, pe.Code)
			}
			a.query.Close(context.Background())
			a.query = nil
			continue // the connection broke (a failover?): once more on a new one
		}
		if len(res.Rows) == 0 || len(res.Rows[0]) == 0 || res.Rows[0][0] == nil {
			return "", nil
		}
		return string(res.Rows[0][0]), nil
	}
	return "", errors.New("auth query failed: the primary did not answer")
}

func (a *authenticator) connectQuery(ctx context.Context) error {
	addr, err := a.primary()
	if err != nil {
		return err
	}
	pw := a.cfg.QueryPassword
	if a.cfg.QueryPasswordFile != "" {
		b, err := os.ReadFile(a.cfg.QueryPasswordFile)
		if err != nil {
			return fmt.Errorf("auth.query_password_file: %w", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	}
	pc, err := pgconn.ParseConfig(a.connString(addr, a.cfg.QueryUser, a.cfg.QueryDatabase, pw))
	if err != nil {
		return err
	}
	pc.RuntimeParams["application_name"] = "meridian-proxy-auth"
	cctx, cancel := context.WithTimeout(ctx, a.connectTTL)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, pc)
	if err != nil {
		return fmt.Errorf("auth query: cannot log in to the primary as %s: %w", a.cfg.QueryUser, err)
	}
	a.query = conn
	return nil
}

// rules returns the current rules (they change on reload).
func (a *authenticator) rules() *AuthConfig {
	a.mu.Lock()
	defer a.mu.Unlock()
	cfg := a.cfg
	return &cfg
}

// reload applies new rules and reads the auth file again. The auth query's login applies from its
// next connection.
func (a *authenticator) reload(cfg AuthConfig) error {
	var users map[string]string
	if cfg.File != "" {
		var err error
		if users, err = readAuthFile(cfg.File); err != nil {
			return fmt.Errorf("auth.file: %w", err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if cfg.QueryUser != a.cfg.QueryUser || cfg.QueryPassword != a.cfg.QueryPassword || cfg.QueryPasswordFile != a.cfg.QueryPasswordFile ||
		cfg.QueryDatabase != a.cfg.QueryDatabase {
		if a.query != nil {
			a.query.Close(context.Background())
			a.query = nil
		}
	}
	a.cfg, a.file = cfg, users
	return nil
}

func (a *authenticator) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.query != nil {
		a.query.Close(context.Background())
		a.query = nil
	}
}

// serverKeys returns the SCRAM keys learnt for user, if any.
func (a *authenticator) serverKeys(user string) (scram.Keys, bool) {
	if a == nil {
		return scram.Keys{}, false
	}
	k, ok := a.keys.Load(user)
	if !ok {
		return scram.Keys{}, false
	}
	return k.(scram.Keys), true
}

// errAuthFailed is what a client with a wrong password, or an unknown user, is told.
func errAuthFailed(user string) *pgError {
	return &pgError{Severity: "FATAL", Code: codeInvalidPassword, Message: fmt.Sprintf("password authentication failed for user %q", user)}
}

// authenticate runs the client's authentication per the rules. It returns nil when the client may
// proceed (AuthenticationOk is sent by login).
func (c *client) authenticate(ctx context.Context, st *startup) error {
	a := c.p.auth
	rules := a.rules()
	var addr netip.Addr
	if ta, ok := c.conn.RemoteAddr().(*net.TCPAddr); ok {
		addr, _ = netip.AddrFromSlice(ta.IP)
	}
	host := addr.Unmap().String()
	r := rules.rule(st.database, st.user, addr)
	switch {
	case r == nil:
		return &pgError{Severity: "FATAL", Code: codeInvalidAuthorization,
			Message: fmt.Sprintf("no auth rule of the proxy matches host %q, user %q, database %q", host, st.user, st.database)}
	case r.Method == AuthTrust:
		return nil
	case r.Method == AuthReject:
		return &pgError{Severity: "FATAL", Code: codeInvalidAuthorization,
			Message: fmt.Sprintf("the proxy's auth rules reject connection for host %q, user %q, database %q", host, st.user, st.database)}
	}
	secret, err := a.secret(ctx, st.user)
	if err != nil {
		c.log.Warn("cannot look up the user's secret", "err", err)
		return &pgError{Severity: "FATAL", Code: codeCannotConnectNow, Message: "authentication is unavailable: " + err.Error()}
	}
	var failed error
	if r.Method == AuthMD5 && isMD5Secret(secret) {
		failed = c.authMD5(st.user, secret)
	} else {
		failed = c.authSCRAM(st.user, secret)
	}
	if failed != nil {
		c.p.metrics.authFailures.Inc()
		var pe *pgError
		if errors.As(failed, &pe) {
			return pe
		}
		c.log.Info("client authentication failed", "user", st.user, "method", r.Method, "err", failed)
		return errAuthFailed(st.user)
	}
	return nil
}

// authSCRAM runs SCRAM-SHA-256 with the client; an unknown user (or a secret that is not a SCRAM
// verifier) gets a mock exchange that fails exactly like a wrong password.
func (c *client) authSCRAM(user, secret string) error {
	v, err := scram.ParseVerifier(secret)
	mock := err != nil
	if mock {
		v = scram.MockVerifier(c.p.auth.mockSecret, user)
	}
	if err := c.send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{scram.Mechanism}}); err != nil {
		return err
	}
	body, err := c.readPassword()
	if err != nil {
		return err
	}
	var init pgproto3.SASLInitialResponse
	if err := init.Decode(body); err != nil || init.AuthMechanism != scram.Mechanism {
		return &pgError{Severity: "FATAL", Code: codeProtocolViolation, Message: "expected a SASLInitialResponse for SCRAM-SHA-256"}
	}
	srv := scram.NewServer(v, mock)
	first, err := srv.First(init.Data)
	if err != nil {
		return &pgError{Severity: "FATAL", Code: codeProtocolViolation, Message: err.Error()}
	}
	if err := c.send(&pgproto3.AuthenticationSASLContinue{Data: first}); err != nil {
		return err
	}
	if body, err = c.readPassword(); err != nil {
		return err
	}
	final, keys, err := srv.Final(body)
	if errors.Is(err, scram.ErrProtocol) {
		return &pgError{Severity: "FATAL", Code: codeProtocolViolation, Message: err.Error()}
	}
	if err != nil {
		return err
	}
	c.p.auth.keys.Store(user, keys)
	return c.send(&pgproto3.AuthenticationSASLFinal{Data: final})
}

// authMD5 runs md5 password authentication against an md5 secret.
func (c *client) authMD5(user, secret string) error {
	var salt [4]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return err
	}
	if err := c.send(&pgproto3.AuthenticationMD5Password{Salt: salt}); err != nil {
		return err
	}
	body, err := c.readPassword()
	if err != nil {
		return err
	}
	got, _, err := cstring(body)
	if err != nil {
		return &pgError{Severity: "FATAL", Code: codeProtocolViolation, Message: "malformed password message"}
	}
	sum := md5.Sum(append([]byte(secret[3:]), salt[:]...))
	want := "md5" + hex.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return scram.ErrAuthFailed
	}
	return nil
}

// send writes one authentication message.
func (c *client) send(m pgproto3.BackendMessage) error {
	if _, err := c.wr.Write(appendMessage(c.out[:0], m)); err != nil {
		return err
	}
	return c.wr.Flush()
}

// readPassword reads the client's next message, which must be a password-family message ('p').
func (c *client) readPassword() ([]byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(startupReadTimeout))
	defer c.conn.SetReadDeadline(time.Time{})
	typ, msg, err := c.rd.next()
	if err != nil {
		return nil, err
	}
	if typ != 'p' {
		return nil, &pgError{Severity: "FATAL", Code: codeProtocolViolation, Message: fmt.Sprintf("expected a password response, got message type %q", typ)}
	}
	return msg[5:], nil
}

// SetAuthFileEntry writes user's secret into an auth file, replacing the user's line if there is one
// and keeping every other line (comments included). The file is replaced atomically, mode 0600.
func SetAuthFileEntry(path, user, secret string) error {
	var lines []string
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	default:
		lines = strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	}
	entry := QuoteAuthField(user) + " " + QuoteAuthField(secret)
	replaced := false
	for i, l := range lines {
		if f, err := quotedFields(strings.TrimSpace(l)); err == nil && len(f) >= 2 && f[0] == user {
			lines[i], replaced = entry, true
		}
	}
	if !replaced {
		lines = append(lines, entry)
	}
	tmp, err := os.CreateTemp(dirOf(path), ".auth-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i+1]
	}
	return "."
}
