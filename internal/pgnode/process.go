package pgnode

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Start writes the node's configuration for its current role and starts the postmaster, returning once
// it accepts connections (for a replica: once it has reached a consistent state and allows hot-standby
// reads). If the server exits while starting, the error is an *ExitError carrying its last log lines.
func (n *Node) Start(ctx context.Context) error {
	n.op.Lock()
	defer n.op.Unlock()
	return n.start(ctx)
}

func (n *Node) start(ctx context.Context) error {
	if n.Running() {
		return fmt.Errorf("node %s: already running", n.cfg.Name)
	}
	if err := n.writeRunConfig(); err != nil {
		return fmt.Errorf("start %s: %w", n.cfg.Name, err)
	}
	logf, err := os.OpenFile(n.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: open log: %w", n.cfg.Name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	off, _ := logf.Seek(0, io.SeekEnd)

	cmd := exec.Command(n.cfg.Bin.Path("postgres"), "-D", n.DataDir())
	cmd.Dir = n.cfg.Dir
	cmd.Env = serverEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: n.user.credential(),
		Setpgid:    true, // Kill takes down the whole server, backends included
		// If this process dies, so does the postmaster: no test or lab leaves servers behind. Go sets
		// the death signal after changing credentials, so it survives the switch to RunAs.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.cfg.Name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), logOff: off}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()

	start := time.Now()
	if err := n.waitReady(ctx, p); err != nil {
		if !errors.As(err, new(*ExitError)) {
			n.killProcess(p) // gave up waiting: do not leave a half-started server behind
		}
		return fmt.Errorf("start %s: %w", n.cfg.Name, err)
	}
	up, standby := n.Upstream()
	role := "primary"
	if standby {
		role = "standby of " + up.String()
	}
	n.log.Info("postgres started", "pid", cmd.Process.Pid, "port", n.cfg.Port, "role", role,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// serverEnv is the environment of the server programs: the caller's, minus libpq variables that would
// redirect pg_basebackup and pg_rewind, with a fixed locale for predictable messages.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LANG=C", "LC_ALL=C")
}

// waitReady polls postmaster.pid until this run of the postmaster reports "ready" (accepting
// connections) or "standby"; it needs no connection. The status line is documented in
// src/include/miscadmin.h (LOCK_FILE_LINE_PM_STATUS).
func (n *Node) waitReady(ctx context.Context, p *process) error {
	pidFile := filepath.Join(n.DataDir(), "postmaster.pid")
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(pidFile); err == nil {
			lines := strings.Split(string(b), "\n")
			if len(lines) >= 8 && strings.TrimSpace(lines[0]) == strconv.Itoa(p.cmd.Process.Pid) {
				switch strings.TrimSpace(lines[7]) {
				case "ready", "standby":
					return nil
				}
			}
		}
		select {
		case <-p.done:
			return n.exitError(p)
		case <-ctx.Done():
			return fmt.Errorf("waiting for postgres to accept connections: %w (log: %s)", ctx.Err(), n.logSince(p.logOff, 10))
		case <-tick.C:
		}
	}
}

func (n *Node) exitError(p *process) *ExitError {
	return &ExitError{Node: n.cfg.Name, Err: p.err, Log: n.logSince(p.logOff, 15)}
}

// Stop shuts the server down in the given mode and waits for the postmaster to exit. If ctx ends first
// the server is left running (call Kill to force it) and the error wraps ctx.Err().
func (n *Node) Stop(ctx context.Context, mode StopMode) error {
	n.op.Lock()
	defer n.op.Unlock()
	return n.stop(ctx, mode)
}

func (n *Node) stop(ctx context.Context, mode StopMode) error {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		n.clearProc(p)
		return nil
	default:
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(mode.signal()); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s (%s): %w", n.cfg.Name, mode, err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return fmt.Errorf("stop %s (%s): %w", n.cfg.Name, mode, ctx.Err())
	}
	n.clearProc(p)
	n.log.Info("postgres stopped", "mode", mode.String(), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// Kill sends SIGKILL to the server's whole process group (postmaster and backends), as a machine crash
// would, and waits for the postmaster to be gone. The next Start runs crash recovery.
func (n *Node) Kill() {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return
	}
	n.killProcess(p)
	n.clearProc(p)
	n.log.Info("postgres killed")
}

func (n *Node) killProcess(p *process) {
	// Negative pid: the process group created by Setpgid, so backends die with the postmaster.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	// Backends in the group may outlive the postmaster for a moment; wait until the group is empty so
	// a restart does not find shared memory still attached.
	for i := 0; i < 500 && syscall.Kill(-p.cmd.Process.Pid, 0) == nil; i++ {
		time.Sleep(2 * time.Millisecond)
	}
}

func (n *Node) clearProc(p *process) {
	n.mu.Lock()
	if n.proc == p {
		n.proc = nil
	}
	n.mu.Unlock()
}

// Exited returns a channel closed when the current postmaster exits (nil when none is running).
func (n *Node) Exited() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return nil
	}
	return n.proc.done
}

// runProgram runs a server program (initdb, pg_basebackup, ...) as the server user and returns its
// output; on failure the error includes the output's last lines.
func (n *Node) runProgram(ctx context.Context, program string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, n.cfg.Bin.Path(program), args...)
	cmd.Dir = n.cfg.Dir
	cmd.Env = serverEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.user.credential(), Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	n.log.Debug("run", "program", program, "args", redactArgs(args))
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", program, err, lastLines(out.String(), 15))
	}
	return out.Bytes(), nil
}

// redactArgs hides passwords in connection strings before they are logged.
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if k := strings.Index(a, "password="); k >= 0 {
			a = a[:k] + "password=***"
		}
		out[i] = a
	}
	return out
}

// LastLog returns up to max of the last lines of the server log.
func (n *Node) LastLog(max int) string { return n.logSince(0, max) }

// logSince returns up to max of the last lines written to postgres.log after offset off.
func (n *Node) logSince(off int64, max int) string {
	f, err := os.Open(n.LogPath())
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	defer f.Close()
	const window = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size()-off > window {
		off = st.Size() - window
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return "(server log: " + err.Error() + ")"
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > max {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return "(server log is empty)"
	}
	return strings.Join(lines, "\n")
}

func lastLines(s string, max int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	return strings.Join(lines, "\n")
}
