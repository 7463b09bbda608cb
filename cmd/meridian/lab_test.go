package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"

	"github.com/meridiandb/meridian/internal/lab"
	"github.com/meridiandb/meridian/internal/pgtest"
)

// labFirstAddress keeps this test's lab away from one run by hand (127.0.1.1), the end-to-end test's
// (127.0.201.1, 127.0.211.1) and bench-consistency's (127.0.231.1).
const labFirstAddress = "127.0.221.1"

// TestLabCLI runs `bin/meridian lab up` in the foreground on a terminal, as a user does, and the other
// lab commands against it, checking what each prints and its exit status; then Ctrl-C.
func TestLabCLI(t *testing.T) {
	pgtest.Binaries(t) // skips without PostgreSQL, fails under CI=true
	// Named like pgtest's directories, so that check-leaks finds whatever the test would leave.
	base, err := os.MkdirTemp("", pgtest.DirPrefix+"lab-cli-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(base, 0o755) // the postgres user must traverse it when the test runs as root
	t.Cleanup(func() { os.RemoveAll(base) })
	dir := filepath.Join(base, "lab")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(base, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(exe, filepath.Join(base, "bin", "meridian")); err != nil {
		t.Fatal(err)
	}
	// meridian runs a command as a separate process, invoked as bin/meridian from base.
	meridian := func(args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(base, "bin", "meridian"), args...)
		cmd.Args[0] = "bin/meridian"
		cmd.Dir = base
		cmd.Env = append(os.Environ(), runAsMainEnv+"=1", "PGCONNECT_TIMEOUT=5")
		return cmd
	}

	ptm, pts, err := openPTY()
	if err != nil {
		t.Fatalf("a terminal for lab up: %v", err)
	}
	defer ptm.Close()
	up := meridian("lab", "--dir", dir, "up", "--regions", "us-east-1,us-west-2", "--first-address", labFirstAddress)
	up.Stdout, up.Stderr = pts, pts
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	var screenOut syncBuffer
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(&screenOut, ptm); close(copied) }() // ends with EIO when up exits
	var upErr error                                                // set when exited is closed
	exited := make(chan struct{})
	go func() { upErr = up.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = up.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				_ = up.Process.Kill()
				<-exited
			}
		}
		if r := runCLI(t, "lab", "down", "--dir", dir); r.code != 0 {
			t.Logf("cleanup: lab down: %+v", r)
		}
	})
	waitOutput := func(what string, limit time.Duration) {
		t.Helper()
		deadline := time.After(limit)
		for !strings.Contains(screenOut.String(), what) {
			select {
			case <-exited:
				t.Fatalf("lab up exited (%v) before printing %q:\n%s", upErr, what, screenOut.String())
			case <-deadline:
				t.Fatalf("lab up did not print %q within %v:\n%s", what, limit, screenOut.String())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	waitOutput("Ctrl-C here stops the lab", 3*time.Minute)

	t.Run("hint names the binary as invoked", func(t *testing.T) {
		for _, want := range []string{
			"bin/meridian lab --dir " + dir + " psql us-west-2",
			"bin/meridian lab --dir " + dir + " load --duration 20s",
			"bin/meridian lab --dir " + dir + " psql us-west-2 -d meridian -c 'SHOW POOLS'",
		} {
			if !strings.Contains(screenOut.String(), want) {
				t.Errorf("lab up does not suggest %q:\n%s", want, screenOut.String())
			}
		}
	})

	t.Run("psql takes psql's arguments after the region", func(t *testing.T) {
		for _, args := range [][]string{
			{"-X", "-A", "-t", "-c", "SELECT 41 + 1"},
			{"--", "-X", "-A", "-t", "-c", "SELECT 41 + 1"},
		} {
			out, err := meridian(append([]string{"lab", "--dir", dir, "psql", "us-west-2"}, args...)...).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "42" {
				t.Errorf("lab psql us-west-2 %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	})

	t.Run("admin console", func(t *testing.T) {
		out, err := meridian("lab", "--dir", dir, "psql", "us-west-2", "-X", "-A", "-d", "meridian", "-c", "SHOW CONFIG").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "admin_users") {
			t.Errorf("lab psql us-west-2 -d meridian -c 'SHOW CONFIG': %v\n%s", err, out)
		}
	})

	t.Run("unknown region", func(t *testing.T) {
		want := `unknown region "mars-1"; the lab's regions are us-east-1, us-west-2`
		for _, args := range [][]string{
			{"psql", "mars-1"},
			{"partition", "mars-1"},
			{"heal", "mars-1"},
			{"latency", "us-east-1", "mars-1", "90ms"},
		} {
			r := runCLI(t, append([]string{"lab", "--dir", dir}, args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "usage: meridian lab "+args[0]) {
				t.Errorf("lab %s: exit %d, stderr:\n%s", strings.Join(args, " "), r.code, r.stderr)
			}
		}
		r := runCLI(t, "lab", "--dir", dir, "latency", "us-east-1", "us-east-1", "90ms")
		if r.code != 2 || !strings.Contains(r.stderr, "FROM and TO are both us-east-1") {
			t.Errorf("latency inside a region: %+v", r)
		}
	})

	t.Run("read-your-writes in the primary's region", func(t *testing.T) {
		r := runCLI(t, "lab", "--dir", dir, "read-your-writes", "--duration", "1s", "--clients-per-region", "2")
		if r.code != 0 {
			t.Fatalf("read-your-writes: %+v", r)
		}
		for _, line := range strings.Split(r.stdout, "\n") {
			fields := strings.Fields(line)
			if len(fields) < 2 || strings.HasSuffix(fields[0], ":") || (fields[1] != "session" && fields[1] != "eventual") {
				continue // not a row of the table
			}
			primary := strings.HasPrefix(strings.TrimSpace(line), "us-east-1")
			if primary != strings.Contains(line, "no replica here") {
				t.Errorf("read on a replica in %s:\n%s", fields[0], line)
			}
		}
		t.Logf("lab read-your-writes:\n%s", r.stdout)
		r = runCLI(t, "lab", "--dir", dir, "read-your-writes", "--duration", "1s", "--clients-per-region", "2", "--json")
		var rep lab.RYWReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 0 {
			t.Fatalf("read-your-writes --json: %v, %+v", err, r)
		}
		for _, row := range rep.Rows {
			if (row.Region == "us-east-1") != (row.OnReplica == nil) {
				t.Errorf("%s %s: on_replica %v, want null exactly in the primary's region", row.Region, row.Mode, row.OnReplica)
			}
		}
	})

	t.Run("status of a partitioned replica", func(t *testing.T) {
		if r := runCLI(t, "lab", "--dir", dir, "partition", "us-west-2"); r.code != 0 {
			t.Fatalf("partition: %+v", r)
		}
		// A write the replica cannot receive.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, "postgres://postgres@"+labFirstAddress+":6432/"+lab.Database+"?sslmode=disable")
		if err != nil {
			t.Fatal(err)
		}
		_, err = conn.Exec(ctx, "INSERT INTO orders (customer_id, product_id, quantity, region) VALUES (1, 1, 1, 'us-east-1')")
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r := runCLI(t, "lab", "--dir", dir, "status", "--json")
		var st lab.Status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 {
			t.Fatalf("status --json: %v, %+v", err, r)
		}
		west := st.Regions[1]
		if !west.Partitioned || west.ReplayLagMs != nil || west.LagBytes == 0 {
			t.Errorf("partitioned replica: partitioned %v, replay_lag_ms %v, lag_bytes %d; want a null (unknown) lag and bytes behind",
				west.Partitioned, west.ReplayLagMs, west.LagBytes)
		}
		r = runCLI(t, "lab", "--dir", dir, "status")
		line := regexp.MustCompile(`(?m)^us-west-2 .*$`).FindString(r.stdout)
		t.Logf("lab status during the partition:\n%s", r.stdout)
		if !strings.Contains(line, "unknown, growing (cut off ") || regexp.MustCompile(`\(partitioned\)\s+0 ms`).MatchString(line) {
			t.Errorf("status line of the partitioned replica: %q\n%s", line, r.stdout)
		}
		if r := runCLI(t, "lab", "--dir", dir, "heal"); r.code != 0 {
			t.Fatalf("heal: %+v", r)
		}
		// The replica reconnects through the healed link and catches up (the end-to-end test allows 30 s).
		healed, cancelHealed := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancelHealed()
		err = pgtest.WaitFor(healed, 200*time.Millisecond, func(context.Context) (bool, error) {
			r := runCLI(t, "lab", "--dir", dir, "status", "--json")
			var st lab.Status
			err := json.Unmarshal([]byte(r.stdout), &st)
			return err == nil && st.Regions[1].ReplayLagMs != nil && st.Regions[1].LagBytes == 0 && !st.Regions[1].Partitioned, nil
		})
		if err != nil {
			t.Errorf("after heal, the replica's lag is not known again: %v", err)
		}
	})

	t.Run("the live table keeps what is above it", func(t *testing.T) {
		waitOutput("\033[J", 10*time.Second)
		before, _, _ := strings.Cut(screenOut.String(), "\033[J")
		if !strings.Contains(before, "Ctrl-C here stops the lab") {
			t.Errorf("the first frame did not come after the hint:\n%q", before)
		}
		// A second frame moves up over the first instead of clearing the screen.
		waitOutput("A\r\033[J", 10*time.Second)
		if strings.Contains(screenOut.String(), "\033[2J") || strings.Contains(screenOut.String(), "\033[H") {
			t.Error("the live table clears the screen, wiping the hint")
		}
	})

	// Ctrl-C: the lab stops, its data goes, and the next `lab down` finds nothing.
	if err := up.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if upErr != nil {
			t.Errorf("lab up after Ctrl-C: %v", upErr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("lab up did not stop within 60 s of Ctrl-C")
	}
	select {
	case <-copied:
	case <-time.After(10 * time.Second):
		t.Error("the terminal stays open after lab up exited: something it started holds it")
	}
	out := screenOut.String()
	if !strings.Contains(out, "Lab stopped; its servers' data is removed") {
		t.Errorf("lab up did not say it stopped:\n%s", out)
	}
	// The frame shown last, before "Stopping the lab", has no region down.
	if i := strings.LastIndex(out, "\033[J"); i >= 0 {
		last, _, _ := strings.Cut(out[i:], "Stopping the lab")
		if regexp.MustCompile(`(?m)^us-\S+\s+\S+\s+\S+\s+down`).MatchString(strings.ReplaceAll(last, "\r", "")) {
			t.Errorf("the last frame shows a region down:\n%s", last)
		}
	}
	for _, f := range []string{"us-east-1", "us-west-2", lab.StateFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s is still in the lab's directory after Ctrl-C (%v)", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "supervisor.log")); err != nil {
		t.Errorf("the supervisor's log is gone: %v", err)
	}
	if left := processesMentioning(dir); len(left) > 0 {
		t.Errorf("processes left after Ctrl-C: %v", left)
	}
	if r := runCLI(t, "lab", "--dir", dir, "down"); r.code != 0 || r.stdout != "no lab in "+dir+": nothing to stop\n" {
		t.Errorf("lab down after Ctrl-C: %+v", r)
	}
}

// syncBuffer is a bytes.Buffer that one goroutine writes and others read.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// openPTY opens a pseudo-terminal (see pty(7)) 200 columns wide: lab up sees a real terminal.
func openPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	ioctl := func(f *os.File, req uintptr, arg unsafe.Pointer) error {
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), req, uintptr(arg)); e != 0 {
			return e
		}
		return nil
	}
	var unlock int32
	var n uint32
	if err := ioctl(master, syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock the pty: %w", err)
	}
	if err := ioctl(master, syscall.TIOCGPTN, unsafe.Pointer(&n)); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	ws := struct{ rows, cols, x, y uint16 }{rows: 60, cols: 200}
	if err := ioctl(slave, syscall.TIOCSWINSZ, unsafe.Pointer(&ws)); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, fmt.Errorf("pty size: %w", err)
	}
	return master, slave, nil
}

// processesMentioning lists the processes whose command line mentions dir.
func processesMentioning(dir string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || e.Name() == fmt.Sprint(os.Getpid()) {
			continue
		}
		if bytes.Contains(b, []byte(dir)) {
			out = append(out, e.Name()+": "+string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return out
}
