package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrRunning means a live supervisor owns the lab directory.
var ErrRunning = errors.New("a lab is already running there")

// CheckFree returns ErrRunning (wrapped, with the supervisor's pid) when a live lab owns dir, and
// otherwise cleans whatever a dead one left behind (servers still running, data directories, the
// state file), so that a new lab can start there.
func CheckFree(dir string, log *slog.Logger) error {
	if st, err := ReadState(dir); err == nil && supervisorAlive(st.PID) {
		return fmt.Errorf("%w in %s (supervisor pid %d); stop it with: meridian lab down --dir %s", ErrRunning, dir, st.PID, dir)
	}
	_, err := CleanStale(dir, log)
	return err
}

// DownReport says what Down found.
type DownReport struct {
	// Running: a live supervisor owned the lab and stopped it (it removes the servers' data itself).
	Running bool
	// Leftovers is what a supervisor that died, or a lab that failed to start, had left.
	Leftovers
}

// Down stops the lab in dir: through its supervisor when it answers, else by cleaning up after a
// dead one. It returns ErrNoLab (wrapped) when there was nothing to stop or remove.
func Down(ctx context.Context, dir string, log *slog.Logger) (DownReport, error) {
	var rep DownReport
	if st, err := ReadState(dir); err == nil && supervisorAlive(st.PID) {
		rep.Running = true
		c := &Client{State: st, http: newHTTPClient()}
		if err := c.Down(ctx); err == nil {
			rep.Leftovers, err = CleanStale(dir, log) // normally nothing: the supervisor removed the data
			return rep, err
		} else {
			log.Warn("the supervisor did not stop the lab; stopping it by signal", "pid", st.PID, "err", err)
		}
		_ = syscall.Kill(st.PID, syscall.SIGTERM)
		if err := waitExit(ctx, st.PID, 30*time.Second); err != nil {
			_ = syscall.Kill(st.PID, syscall.SIGKILL)
			_ = waitExit(ctx, st.PID, 5*time.Second)
		}
	}
	left, err := CleanStale(dir, log)
	rep.Leftovers = left
	if err != nil {
		return rep, err
	}
	if !rep.Running && !left.Any() {
		return rep, fmt.Errorf("%s: %w", dir, ErrNoLab)
	}
	return rep, nil
}

// Leftovers is what CleanStale found, and stopped or removed, of a lab whose supervisor is gone.
type Leftovers struct {
	// State: lab.json was there, so the supervisor died without stopping the lab (killed, or
	// crashed). A supervisor that stops removes it.
	State bool
	// Servers still running that were stopped.
	Servers int
	// Data: region folders (the servers' data and logs, the proxies' configuration) were removed.
	Data bool
}

// Any reports whether anything was left.
func (x Leftovers) Any() bool { return x.State || x.Servers > 0 || x.Data }

// CleanStale stops servers a dead supervisor left running in dir and removes the lab's files. It
// reports what it found. It removes only what a lab creates: lab.json and the region folders (those
// holding a postgres folder); the supervisor's log stays.
func CleanStale(dir string, log *slog.Logger) (Leftovers, error) {
	var left Leftovers
	if st, err := ReadState(dir); err == nil && supervisorAlive(st.PID) {
		return left, fmt.Errorf("%w in %s (supervisor pid %d)", ErrRunning, dir, st.PID)
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return left, nil
	}
	if err != nil {
		return left, err
	}
	for _, e := range entries {
		pgdir := filepath.Join(dir, e.Name(), "postgres")
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(pgdir); err != nil {
			continue
		}
		if pid := postmasterPID(filepath.Join(pgdir, "data")); pid > 0 {
			log.Info("stopping a server left behind", "pid", pid, "dir", pgdir)
			left.Servers++
			_ = syscall.Kill(pid, syscall.SIGQUIT) // immediate shutdown: the lab is being thrown away
			if err := waitExit(context.Background(), pid, 10*time.Second); err != nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				_ = waitExit(context.Background(), pid, 5*time.Second)
			}
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return left, err
		}
		left.Data = true
	}
	if err := os.Remove(filepath.Join(dir, StateFile)); err == nil {
		left.State = true
	}
	_ = os.Remove(filepath.Join(dir, StateFile+".tmp"))
	return left, nil
}

// postmasterPID returns the pid in a data directory's postmaster.pid when that process is alive and
// is a PostgreSQL server, else 0.
func postmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 || !alive(pid) {
		return 0
	}
	if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && !bytes.Contains(cmd, []byte("postgres")) {
		return 0 // the pid was reused by something else
	}
	return pid
}

// supervisorAlive reports whether pid is a live meridian lab supervisor (not a reused pid).
func supervisorAlive(pid int) bool {
	if pid <= 0 || !alive(pid) {
		return false
	}
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return true // no /proc: trust the pid
	}
	return bytes.Contains(cmd, []byte("lab"))
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err == nil || errors.Is(err, syscall.EPERM) {
		// A zombie is not alive: it holds no ports. Its parent has not reaped it yet.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
				return false
			}
		}
		return true
	}
	return false
}

// waitExit waits until pid is gone.
func waitExit(ctx context.Context, pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for alive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still running after %v", pid, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
