package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meridiandb/meridian/internal/lab"
)

// runAsMainEnv makes the test binary meridian itself (see TestMain), so that tests can run the real
// command as a separate process — with its own signals, exit status and os.Args[0] — without building
// it first.
const runAsMainEnv = "MERIDIAN_TEST_RUN_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsMainEnv) == "1" {
		main() // exits
	}
	os.Exit(m.Run())
}

// result is what a command line did: its exit status and its two outputs.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs meridian with args in this process, as main does.
func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// TestCommandLineMistakes: every mistake in a command line exits 2 and says, on stderr, what was wrong
// and what is valid, then the usage line; nothing is replaced by a default in silence. None of these
// needs a running lab: they fail before looking for one.
func TestCommandLineMistakes(t *testing.T) {
	dir := t.TempDir() // holds no lab
	for _, tc := range []struct {
		name string
		args []string
		want []string // substrings of stderr
	}{
		{name: "unknown lab command", args: []string{"lab", "statuss"},
			want: []string{`meridian lab: unknown command "statuss" (did you mean status?); the commands are down, heal, latency, load, partition, psql, read-your-writes, status, up`, "usage: meridian lab COMMAND"}},
		{name: "unknown top-level command", args: []string{"lba"},
			want: []string{`meridian: unknown command "lba" (did you mean lab?); the commands are`, "usage: meridian COMMAND"}},
		{name: "argument to a command with subcommands", args: []string{"proxy", "extra"},
			want: []string{`meridian proxy: unknown command "extra" for "meridian proxy"`, "usage: meridian proxy --config FILE [flags]"}},
		{name: "argument to a command that takes none", args: []string{"version", "extra"},
			want: []string{`meridian version: unexpected argument "extra": meridian version takes none`}},
		{name: "unknown flag", args: []string{"version", "--no-such-flag"},
			want: []string{"meridian version: unknown flag: --no-such-flag", "usage: meridian version [flags]"}},
		{name: "load for 0s", args: []string{"lab", "load", "--dir", dir, "--duration", "0s"},
			want: []string{"meridian lab load: --duration: 0s is out of range (1s to 24h)", "usage: meridian lab load [flags]"}},
		{name: "load with no clients", args: []string{"lab", "load", "--dir", dir, "--clients-per-region", "0"},
			want: []string{"--clients-per-region: 0 is out of range (1 to 500)"}},
		{name: "read-your-writes at rate 0", args: []string{"lab", "read-your-writes", "--dir", dir, "--rate", "0"},
			want: []string{"meridian lab read-your-writes: --rate: 0 is out of range"}},
		{name: "negative round trip", args: []string{"lab", "latency", "--dir", dir, "us-east-1", "us-west-2", "-5ms"},
			want: []string{"meridian lab latency: RTT -5ms: a round-trip time cannot be negative; give one from 0 to 1m, such as 90ms",
				"usage: meridian lab latency FROM TO RTT"}},
		{name: "round trip without a unit", args: []string{"lab", "latency", "--dir", dir, "us-east-1", "us-west-2", "90"},
			want: []string{`RTT "90": give a round-trip time from 0 to 1m, such as 90ms`}},
		{name: "latency with two arguments", args: []string{"lab", "latency", "--dir", dir, "us-east-1", "us-west-2"},
			want: []string{"meridian lab latency takes FROM TO RTT, got 2 arguments"}},
		{name: "negative number elsewhere", args: []string{"lab", "load", "--dir", dir, "-3"},
			want: []string{"-3 is not valid here: a value cannot be negative"}},
		{name: "psql without a region", args: []string{"lab", "psql", "--dir", dir},
			want: []string{"meridian lab psql: REGION is missing"}},
		{name: "heal with two regions", args: []string{"lab", "heal", "--dir", dir, "a", "b"},
			want: []string{"meridian lab heal takes at most one REGION, got 2 arguments"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.args...)
			if r.code != 2 {
				t.Errorf("exit status %d, want 2", r.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, r.stderr)
				}
			}
			if r.stdout != "" {
				t.Errorf("stdout: %q, want nothing", r.stdout)
			}
		})
	}
}

func TestGroupCommandAloneShowsHelp(t *testing.T) {
	r := runCLI(t, "lab")
	if r.code != 0 || !strings.Contains(r.stdout, "Available Commands:") || r.stderr != "" {
		t.Fatalf("meridian lab: exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// TestJSONErrors: a command run with --json that fails prints a JSON object on stdout (and the
// message on stderr), with a non-zero exit status.
func TestJSONErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		wantCode string
	}{
		{"status without a lab", []string{"lab", "status", "--json", "--dir", dir}, 1, "no_lab"},
		{"load without a lab", []string{"lab", "load", "--json", "--duration", "1s", "--dir", dir}, 1, "no_lab"},
		{"usage error", []string{"lab", "load", "--json", "--duration", "0s", "--dir", dir}, 2, "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.args...)
			var got jsonError
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("stdout is not a JSON object (%v):\n%s", err, r.stdout)
			}
			if r.code != tc.code || got.ExitCode != tc.code || got.Code != tc.wantCode || got.Error == "" {
				t.Errorf("exit %d, JSON %+v; want exit %d and code %q", r.code, got, tc.code, tc.wantCode)
			}
			if !strings.Contains(r.stderr, got.Error) {
				t.Errorf("stderr does not carry the error %q:\n%s", got.Error, r.stderr)
			}
		})
	}
	r := runCLI(t, "lab", "status", "--dir", dir)
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "no lab is running there (start one with: meridian lab up)") {
		t.Errorf("lab status without --json and without a lab: %+v", r)
	}
}

func TestLabDownWithoutLab(t *testing.T) {
	dir := t.TempDir()
	r := runCLI(t, "lab", "down", "--dir", dir)
	if r.code != 0 || r.stdout != "no lab in "+dir+": nothing to stop\n" {
		t.Fatalf("lab down in an empty directory: %+v", r)
	}
	// What a lab that did not stop cleanly left (a region folder) is removed, and said so.
	if err := os.MkdirAll(filepath.Join(dir, "us-east-1", "postgres"), 0o755); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, "lab", "down", "--dir", dir)
	if r.code != 0 || r.stdout != "no lab was running in "+dir+": removed the data one had left\n" {
		t.Fatalf("lab down with leftovers: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "us-east-1")); !os.IsNotExist(err) {
		t.Errorf("the leftover region folder is still there: %v", err)
	}
}

// TestScreenRedrawsInPlace: on a terminal each frame replaces the previous one only — the cursor goes
// up over the rows the last frame took (wrapped lines count for more) and clears below — so what was
// printed above it stays; the screen is never cleared.
func TestScreenRedrawsInPlace(t *testing.T) {
	var out bytes.Buffer
	out.WriteString("Lab ready. Try: ...\n")
	scr := &screen{w: &out, width: func() int { return 10 }}
	scr.draw("a\nb\n")
	scr.draw("0123456789abc\nx\n") // the first line wraps: 3 rows
	scr.draw("y\n")
	want := "Lab ready. Try: ...\n" +
		"\r\033[Ja\nb\n" +
		"\033[2A\r\033[J0123456789abc\nx\n" +
		"\033[3A\r\033[Jy\n"
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

// TestLiveTableDropsAStatusTakenWhileStopping: when Ctrl-C arrives while a status is being taken,
// its queries fail and every region looks down; that frame must not be shown.
func TestLiveTableDropsAStatusTakenWhileStopping(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	calls := 0
	status := func(context.Context) lab.Status {
		calls++
		role := "primary"
		if calls == 2 {
			cancel() // the lab stops while this status is taken
			role = "down"
		}
		return lab.Status{Regions: []lab.RegionStatus{{Name: "us-east-1", Role: role}}}
	}
	liveTable(ctx, &out, time.Millisecond, nil, nil, status)
	if calls != 2 || !strings.Contains(out.String(), "primary") || strings.Contains(out.String(), "down") {
		t.Fatalf("%d statuses taken, output:\n%s", calls, out.String())
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"bin/meridian":       "bin/meridian",
		"./meridian":         "./meridian",
		"/opt/my tools/mer":  "'/opt/my tools/mer'",
		"/tmp/it's/meridian": `'/tmp/it'\''s/meridian'`,
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
