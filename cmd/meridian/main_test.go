package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridiandb/meridian/internal/scram"
)

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	cmd := newRootCmd(&out, &out)
	cmd.SetArgs([]string{"version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "meridian ") || !strings.Contains(out.String(), "commit ") {
		t.Fatalf("version output = %q", out.String())
	}
	out.Reset()
	cmd = newRootCmd(&out, &out)
	cmd.SetArgs([]string{"version", "--json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var info map[string]string
	if err := json.Unmarshal(out.Bytes(), &info); err != nil || info["version"] == "" || info["commit"] == "" {
		t.Fatalf("version --json = %q (%v)", out.String(), err)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	if r := runCLI(t, "version", "--no-such-flag"); r.code != 2 {
		t.Fatalf("unknown flag: %+v, want exit status 2", r)
	}
	if exitCode(nil) != 0 {
		t.Fatal("success must exit 0")
	}
}

func TestProxyConfigErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/proxy.yaml"
	if err := os.WriteFile(path, []byte("region: r\npool_mode: statement\nnodes: [{name: a, address: 'h:1', region: r}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := newRootCmd(&out, &out)
	cmd.SetArgs([]string{"proxy", "--config", path})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "pool_mode") || exitCode(err) != 1 {
		t.Fatalf("bad config: err = %v (exit %d), want an error naming pool_mode", err, exitCode(err))
	}
	cmd = newRootCmd(&out, &out)
	cmd.SetArgs([]string{"proxy"})
	if err := cmd.Execute(); exitCode(err) != 2 {
		t.Fatalf("missing --config: err = %v, want a usage error", err)
	}
}

// TestProxyPasswd: the verifier written for a password checks out against that password, an update
// replaces the user's line and keeps the others, and the file holds no password.
func TestProxyPasswd(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.txt")
	os.WriteFile(file, []byte("# users of the shop\n\"other\" \"md5d41d8cd98f00b204e9800998ecf8427e\"\n"), 0o600)
	run := func(user, password string) string {
		var out bytes.Buffer
		cmd := newRootCmd(&out, &out)
		cmd.SetIn(strings.NewReader(password + "\n"))
		cmd.SetArgs([]string{"proxy", "passwd", user, "--file", file})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("proxy passwd: %v\n%s", err, out.String())
		}
		return out.String()
	}
	run("app", "first secret")
	run("app", "second secret")
	b, _ := os.ReadFile(file)
	text := string(b)
	if strings.Contains(text, "secret") || strings.Count(text, `"app"`) != 1 || !strings.Contains(text, "# users of the shop") || !strings.Contains(text, `"other"`) {
		t.Fatalf("auth file after two updates:\n%s", text)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("auth file mode %v, want 0600", st.Mode().Perm())
	}
	var secret string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, `"app" "`) {
			secret = strings.TrimSuffix(strings.TrimPrefix(l, `"app" "`), `"`)
		}
	}
	v, err := scram.ParseVerifier(secret)
	if err != nil {
		t.Fatalf("verifier %q: %v", secret, err)
	}
	for pw, want := range map[string]bool{"second secret": true, "first secret": false} {
		got, _ := scram.VerifierFor(pw, v.Salt, v.Iterations)
		if (got.String() == v.String()) != want {
			t.Errorf("password %q matches the verifier: %v, want %v", pw, !want, want)
		}
	}
	var out bytes.Buffer
	cmd := newRootCmd(&out, &out)
	cmd.SetIn(strings.NewReader(""))
	cmd.SetArgs([]string{"proxy", "passwd", "app", "--file", file})
	if err := cmd.Execute(); err == nil {
		t.Error("proxy passwd with no password on stdin: no error")
	}
}

// TestProxyConfigUnknownKey: `meridian proxy` with a misspelt key fails (exit 1) naming the key, its
// line and the key meant.
func TestProxyConfigUnknownKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte("region: r\nnodes: [{name: a, address: 'h:1', region: r}]\npool_sise: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := newRootCmd(&out, &out)
	cmd.SetArgs([]string{"proxy", "--config", path})
	err := cmd.Execute()
	const want = "config: line 3: unknown key pool_sise (did you mean pool_size?)"
	if err == nil || err.Error() != want || exitCode(err) != 1 {
		t.Fatalf("err = %v (exit %d), want %q (exit 1)", err, exitCode(err), want)
	}
}
