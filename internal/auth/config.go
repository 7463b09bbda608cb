package auth

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meridiandb/meridian/internal/scram"
)

// Client authentication methods (auth.rules[].method), named as in pg_hba.conf.
const (
	SCRAM  = "scram-sha-256"
	MD5    = "md5"
	Trust  = "trust"
	Reject = "reject"
	// Cert accepts a client whose TLS certificate the proxy verified (client_tls.ca_file) and whose
	// subject CN equals the user name, as pg_hba.conf's cert method does.
	Cert = "cert"
)

// Config is client authentication: ordered rules choose a method, as pg_hba.conf does, and the users'
// secrets come from an auth file of verifiers or from the primary through an auth query. The proxy
// never stores or asks for a plaintext password.
type Config struct {
	// Rules are tried in order; the first whose database, user and address match decides. Without
	// rules: SCRAM-SHA-256 for everyone, from every address (DefaultRules). Trust rules never apply
	// to the admin console's database (see Request.Admin).
	Rules []Rule `yaml:"rules"`
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

// Rule is one line of the rules.
type Rule struct {
	Database NameList `yaml:"database"` // names, or empty/all for any
	User     NameList `yaml:"user"`     // names, or empty/all for any
	Address  string   `yaml:"address"`  // a CIDR prefix (10.0.0.0/8, ::1/128), or empty/all for any
	Method   string   `yaml:"method"`   // scram-sha-256, md5, cert, trust or reject

	prefix netip.Prefix // parsed Address; zero = any
}

// NameList is a YAML scalar or sequence of names.
type NameList []string

// UnmarshalYAML accepts a single name or a list.
func (n *NameList) UnmarshalYAML(v *yaml.Node) error {
	if v.Kind == yaml.ScalarNode {
		*n = NameList{v.Value}
		return nil
	}
	var s []string
	if err := v.Decode(&s); err != nil {
		return err
	}
	*n = s
	return nil
}

func (n NameList) matches(name string) bool {
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

// DefaultQuery reads a login role's secret (the query user needs to read pg_authid: a superuser, or a
// SECURITY DEFINER function in its place).
const DefaultQuery = "SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin AND (rolvaliduntil IS NULL OR rolvaliduntil > now())"

// DefaultRules apply when the configuration has none: SCRAM-SHA-256 for everyone, from everywhere.
// There is no trust default (PgBouncer has none either): a local process, a sidecar or a port-forward
// is not a reason to believe a claimed user name.
func DefaultRules() []Rule { return []Rule{{Method: SCRAM}} }

// Validate fills in defaults, checks the section and parses addresses; bad reports an error for a
// key (named as in the YAML file, auth.rules[2].method).
func (a *Config) Validate(bad func(key, format string, args ...any)) {
	if len(a.Rules) == 0 {
		a.Rules = DefaultRules()
	}
	// Validate parses addresses into the rules: work on a copy, since a running proxy may be reading
	// the slice the caller's configuration shares (a reload validates the same configuration again).
	a.Rules = slices.Clone(a.Rules)
	for i := range a.Rules {
		r := &a.Rules[i]
		key := fmt.Sprintf("auth.rules[%d]", i)
		switch r.Method {
		case SCRAM, MD5, Trust, Reject, Cert:
		default:
			bad(key+".method", "must be scram-sha-256, md5, cert, trust or reject, got %q", r.Method)
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
		a.Query = DefaultQuery
	}
	if a.QueryDatabase == "" {
		a.QueryDatabase = "postgres"
	}
	a.QueryPassword = os.ExpandEnv(a.QueryPassword)
	if a.QueryPassword != "" && a.QueryPasswordFile != "" {
		bad("auth.query_password_file", "set query_password or query_password_file, not both")
	}
	if a.File != "" {
		if _, err := ReadFile(a.File); err != nil {
			bad("auth.file", "%v", err)
		}
	}
}

// RuleFor returns the rule that applies to a connection, or nil when none does. With admin set (the
// admin console's database) trust rules are skipped: the console can KILL and SHUT DOWN, so it always
// takes a password or a certificate.
func (a *Config) RuleFor(database, user string, addr netip.Addr, admin bool) *Rule {
	addr = addr.Unmap()
	for i := range a.Rules {
		r := &a.Rules[i]
		if admin && r.Method == Trust {
			continue
		}
		if r.Database.matches(database) && r.User.matches(user) && (!r.prefix.IsValid() || r.prefix.Contains(addr)) {
			return r
		}
	}
	return nil
}

// ReadFile parses an auth file: "user" "secret" per line, # comments, "" escapes a quote.
func ReadFile(path string) (map[string]string, error) {
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

// QuoteField quotes a field for an auth file line.
func QuoteField(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func isMD5Secret(s string) bool {
	if len(s) != 35 || !strings.HasPrefix(s, "md5") {
		return false
	}
	_, err := hex.DecodeString(s[3:])
	return err == nil
}

// SetFileEntry writes user's secret into an auth file, replacing the user's line if there is one and
// keeping every other line (comments included). The file is replaced atomically, mode 0600.
func SetFileEntry(path, user, secret string) error {
	var lines []string
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	default:
		lines = strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	}
	entry := QuoteField(user) + " " + QuoteField(secret)
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
