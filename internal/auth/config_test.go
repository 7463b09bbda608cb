package auth

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func validated(t *testing.T, cfg Config) *Config {
	t.Helper()
	var errs []string
	cfg.Validate(func(key, format string, args ...any) { errs = append(errs, key+": "+fmt.Sprintf(format, args...)) })
	if len(errs) > 0 {
		t.Fatalf("validate: %v", errs)
	}
	return &cfg
}

// TestRuleFor: the first matching rule decides; the defaults ask everyone for SCRAM, loopback
// included; trust rules are skipped for the admin console.
func TestRuleFor(t *testing.T) {
	lo, remote := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.1.2.3")
	custom := validated(t, Config{Rules: []Rule{
		{User: NameList{"blocked"}, Method: Reject},
		{Address: "127.0.0.0/8", Method: Trust},
		{Database: NameList{"reports"}, Address: "10.0.0.0/8", Method: MD5},
		{User: NameList{"svc"}, Method: Cert},
		{Address: "10.0.0.0/8", Method: SCRAM},
	}})
	defaults := validated(t, Config{})
	for _, tc := range []struct {
		name     string
		cfg      *Config
		db, user string
		addr     netip.Addr
		admin    bool
		want     string // "" = no rule
	}{
		{"default, loopback", defaults, "app", "app", lo, false, SCRAM},
		{"default, remote", defaults, "app", "app", remote, false, SCRAM},
		{"default, admin", defaults, "meridian", "postgres", lo, true, SCRAM},
		{"reject first", custom, "app", "blocked", lo, false, Reject},
		{"loopback trust", custom, "app", "app", lo, false, Trust},
		{"admin skips trust", custom, "meridian", "app", lo, true, ""},
		{"admin skips trust, next rule", custom, "meridian", "svc", lo, true, Cert},
		{"database rule", custom, "reports", "app", remote, false, MD5},
		{"cert by user", custom, "app", "svc", remote, false, Cert},
		{"remote scram", custom, "app", "app", remote, false, SCRAM},
		{"no rule", custom, "app", "app", netip.MustParseAddr("192.168.1.1"), false, ""},
		{"IPv4-mapped", custom, "app", "app", netip.MustParseAddr("::ffff:127.0.0.1"), false, Trust},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if r := tc.cfg.RuleFor(tc.db, tc.user, tc.addr, tc.admin); r != nil {
				got = r.Method
			}
			if got != tc.want {
				t.Errorf("method %q, want %q", got, tc.want)
			}
		})
	}
}

// TestValidateNamesKeys: errors name the key.
func TestValidateNamesKeys(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.txt")
	os.WriteFile(plain, []byte(`"app" "app-secret"`+"\n"), 0o600)
	cfg := Config{Rules: []Rule{{Method: "password"}, {Address: "10.0.0.0/33", Method: Trust}}, File: plain, QueryPassword: "x", QueryPasswordFile: "y"}
	var errs []string
	cfg.Validate(func(key, format string, args ...any) { errs = append(errs, key+": "+fmt.Sprintf(format, args...)) })
	all := strings.Join(errs, "\n")
	for _, want := range []string{"auth.rules[0].method", "auth.rules[1].address", "auth.file", "plaintext passwords are not accepted", "auth.query_password_file"} {
		if !strings.Contains(all, want) {
			t.Errorf("no %q in\n%s", want, all)
		}
	}
}

// TestFileEntries: SetFileEntry replaces a user's line, keeps the others, and quotes.
func TestFileEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.txt")
	os.WriteFile(path, []byte("# comment\n\"a\" \"md5"+strings.Repeat("0", 32)+"\"\n"), 0o600)
	secret := "md5" + strings.Repeat("1", 32)
	for _, u := range []string{`we"ird`, "a"} {
		if err := SetFileEntry(path, u, secret); err != nil {
			t.Fatal(err)
		}
	}
	users, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users["a"] != secret || users[`we"ird`] != secret {
		t.Errorf("users %v", users)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "# comment\n") {
		t.Errorf("comment lost:\n%s", b)
	}
}
