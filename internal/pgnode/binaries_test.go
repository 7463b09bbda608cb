package pgnode

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseMajor(t *testing.T) {
	tests := []struct {
		name, in string
		want     int
		err      string
	}{
		{name: "debian", in: "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", want: 15},
		{name: "plain", in: "postgres (PostgreSQL) 17.2", want: 17},
		{name: "beta", in: "postgres (PostgreSQL) 18beta1", want: 18},
		{name: "too old", in: "postgres (PostgreSQL) 12.9", err: "too old"},
		{name: "garbage", in: "hello", err: "unrecognised"},
		{name: "no number", in: "postgres (PostgreSQL) x", err: "unrecognised"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMajor(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseMajor(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseMajor(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestDebianBinDirsHighestFirst(t *testing.T) {
	root := t.TempDir()
	for _, v := range []string{"9", "13", "15", "notaversion"} {
		if err := os.MkdirAll(filepath.Join(root, v, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got := debianBinDirs(root)
	want := []string{filepath.Join(root, "15", "bin"), filepath.Join(root, "13", "bin"), filepath.Join(root, "9", "bin")}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("debianBinDirs = %v, want %v", got, want)
	}
}

func TestFindBinariesEnvOverride(t *testing.T) {
	empty := t.TempDir()
	t.Setenv(EnvBinDir, empty)
	_, err := FindBinaries()
	if err == nil || !strings.Contains(err.Error(), EnvBinDir) || !strings.Contains(err.Error(), "initdb") {
		t.Fatalf("FindBinaries with %s=%s: err = %v, want one naming the variable and the missing program", EnvBinDir, empty, err)
	}
}

func TestNoBinariesErrorSaysHowToInstall(t *testing.T) {
	t.Setenv(EnvBinDir, "")
	t.Setenv("PATH", t.TempDir()) // no pg_config, no postgres
	b, err := FindBinaries()
	if err == nil {
		// /usr/lib/postgresql/*/bin is still searched; that is the design.
		t.Logf("found %s through /usr/lib/postgresql", b.Dir)
		if !strings.HasPrefix(b.Dir, "/usr/lib/postgresql/") {
			t.Fatalf("with an empty PATH, found binaries outside /usr/lib/postgresql: %s", b.Dir)
		}
		return
	}
	if !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "apt-get install postgresql") {
		t.Fatalf("error = %v, want ErrNoBinaries with install advice", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no name", cfg: Config{Dir: "/x"}, want: "Name is required"},
		{name: "bad name", cfg: Config{Name: "a b", Dir: "/x"}, want: "Name"},
		{name: "no dir", cfg: Config{Name: "a"}, want: "Dir is required"},
		{name: "port", cfg: Config{Name: "a", Dir: "/x", Port: 70000}, want: "Port"},
		{name: "cidr", cfg: Config{Name: "a", Dir: "/x", AllowCIDRs: []string{"10.0.0.0"}}, want: "AllowCIDRs"},
		{name: "setting", cfg: Config{Name: "a", Dir: "/x", Settings: map[string]string{"a b": "1"}}, want: "Settings"},
		{name: "ok", cfg: Config{Name: "a", Dir: "/x", AllowCIDRs: []string{"10.0.0.0/8"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want error naming %q", err, tt.want)
			}
		})
	}
}

func TestQuoting(t *testing.T) {
	if got := quoteSetting(`it's a \ test`); got != `'it''s a \\ test'` {
		t.Errorf("quoteSetting = %s", got)
	}
	if got := quoteConnValue(`pa'ss\word`); got != `'pa\'ss\\word'` {
		t.Errorf("quoteConnValue = %s", got)
	}
	if got := redactArgs([]string{"-d", "host=x password='secret' port=1"}); got[1] != "host=x password=***" {
		t.Errorf("redactArgs = %v", got)
	}
}
