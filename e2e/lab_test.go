//go:build e2e

// Package e2e drives the real meridian binary end to end. Run with `make e2e` (CI does, through
// `make test`).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/lab"
	"github.com/meridiandb/meridian/internal/pgnode"
)

// firstAddress keeps the test's lab away from a lab someone runs by hand (127.0.1.1...).
const firstAddress = "127.0.201.1"

var regions = []string{"us-east-1", "us-west-2", "eu-west-1"}

type env struct {
	t    *testing.T
	bin  string
	dir  string
	psql string
}

// run runs meridian with args and returns its stdout; it fails the test on a non-zero exit.
func (e *env) run(args ...string) string {
	e.t.Helper()
	out, err := e.try(args...)
	if err != nil {
		e.t.Fatalf("meridian %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, append(args, "--dir", e.dir)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// sql runs one statement with psql through a region's proxy.
func (e *env) sql(region, stmt string) (string, error) {
	host := regionAddr(region)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a hang is a failure, not a stall
	defer cancel()
	cmd := exec.CommandContext(ctx, e.psql, "-h", host, "-p", strconv.Itoa(lab.ProxyPort), "-U", "postgres", "-d", lab.Database,
		"-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-c", stmt)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=5", "PGAPPNAME=e2e")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func regionAddr(region string) string {
	for i, r := range regions {
		if r == region {
			return fmt.Sprintf("127.0.%d.1", 201+i)
		}
	}
	panic(region)
}

// TestLabEndToEnd: up → load → latency → partition → heal → down, with the numbers the lab exists
// to show checked as bounds that only the real system can meet.
func TestLabEndToEnd(t *testing.T) {
	bins, err := pgnode.FindBinaries()
	if err != nil {
		t.Fatal(err) // an end-to-end test never skips: `make deps` installs PostgreSQL
	}
	base, err := os.MkdirTemp("/tmp", "meridian-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(base, 0o755) // the postgres user must traverse it when the test runs as root
	t.Cleanup(func() { os.RemoveAll(base) })
	e := &env{t: t, bin: filepath.Join(base, "meridian"), dir: filepath.Join(base, "lab"), psql: bins.Path("psql")}
	build := exec.Command("go", "build", "-o", e.bin, "../cmd/meridian")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(e.dir, lab.StateFile)); err == nil {
			out, _ := e.try("lab", "down")
			t.Logf("cleanup: lab down: %s", out)
		}
	})

	// up
	start := time.Now()
	out := e.run("lab", "up", "--detach", "--first-address", firstAddress)
	t.Logf("lab up --detach: ready in %.1fs\n%s", time.Since(start).Seconds(), out)
	// A second up in the same directory must refuse, not clobber the running lab.
	if out, err := e.try("lab", "up", "--detach", "--first-address", firstAddress); err == nil || !strings.Contains(out, "already running") {
		t.Fatalf("second lab up: err %v, output:\n%s", err, out)
	}

	// load: read local, write global
	var rep lab.LoadReport
	decode(t, e.run("lab", "load", "--duration", "20s", "--clients-per-region", "4", "--json"), &rep)
	t.Logf("load:\n%s", render(rep))
	for _, r := range rep.Regions {
		if r.ReadErrors+r.WriteErrors > 0 {
			t.Errorf("%s: %d read and %d write errors, first: %s", r.Region, r.ReadErrors, r.WriteErrors, r.FirstError)
		}
		if r.Reads < 1000 || r.Writes < 20 {
			t.Errorf("%s: only %d reads and %d writes in 20s", r.Region, r.Reads, r.Writes)
		}
		if r.LocalReadShare == nil || *r.LocalReadShare < 0.95 {
			t.Errorf("%s: share of reads served by the local replica (proxy metrics) = %v, want > 95 %%", r.Region, r.LocalReadShare)
		}
		if r.Region == "us-east-1" {
			continue
		}
		rtt := r.RTTToPrimaryMs
		if r.ReadP50Ms >= 2 {
			t.Errorf("%s: read p50 %.2f ms, want under 2 ms (a local read)", r.Region, r.ReadP50Ms)
		}
		// A write crosses the WAN once: at least the round trip, and within 15 % above it.
		if r.WriteP50Ms < rtt || r.WriteP50Ms > rtt*1.15 {
			t.Errorf("%s: write p50 %.1f ms, want between the round trip to the primary (%.0f ms) and 15 %% above it", r.Region, r.WriteP50Ms, rtt)
		}
	}

	// read-your-writes: session clients read back every write (from their region's replica, after
	// waiting for it); eventual clients may not.
	var ryw lab.RYWReport
	decode(t, e.run("lab", "read-your-writes", "--duration", "8s", "--clients-per-region", "4", "--json"), &ryw)
	t.Logf("read-your-writes:\n%s", render(ryw))
	for _, r := range ryw.Rows {
		if r.Errors > 0 || r.Pairs < 100 {
			t.Errorf("read-your-writes %s %s: %d pairs, %d errors, first: %s", r.Region, r.Mode, r.Pairs, r.Errors, r.FirstError)
		}
		if r.Mode != "session" {
			continue
		}
		if r.SawWrite != 1 {
			t.Errorf("read-your-writes %s: %.1f %% of session reads saw the write just made, want 100 %%", r.Region, 100*r.SawWrite)
		}
		if r.Region == "us-east-1" {
			if r.OnReplica != nil {
				t.Errorf("read-your-writes %s: on_replica = %v, want null (the primary's region has no replica)", r.Region, *r.OnReplica)
			}
		} else if r.OnReplica == nil {
			t.Errorf("read-your-writes %s: on_replica is null in a replica's region", r.Region)
		} else if *r.OnReplica < 0.9 {
			t.Errorf("read-your-writes %s: %.1f %% of session reads served by the local replica, want ≥ 90 %%", r.Region, 100**r.OnReplica)
		}
	}

	// latency: a new round trip shows in the write latency at once
	e.run("lab", "latency", "us-east-1", "us-west-2", "150ms")
	decode(t, e.run("lab", "load", "--duration", "5s", "--clients-per-region", "2", "--json"), &rep)
	if w := regionLoad(t, rep, "us-west-2"); w.RTTToPrimaryMs != 150 || w.WriteP50Ms < 150 || w.WriteP50Ms > 150*1.15 {
		t.Errorf("after lab latency 150ms: us-west-2 RTT %v ms, write p50 %.1f ms, want 150–172.5 ms", w.RTTToPrimaryMs, w.WriteP50Ms)
	}
	e.run("lab", "latency", "us-east-1", "us-west-2", "64ms")

	// partition: us-west-2's writes fail clearly, its reads still work (stale)
	e.run("lab", "partition", "us-west-2")
	waitFor(t, 15*time.Second, "us-west-2 writes to fail while partitioned", func() bool {
		_, err := e.sql("us-west-2", "INSERT INTO orders (customer_id, product_id, quantity, region) VALUES (1, 1, 1, 'us-west-2')")
		return err != nil
	})
	// Once the proxy knows, a write fails at once and says why.
	t0 := time.Now()
	werr, err := e.sql("us-west-2", "INSERT INTO orders (customer_id, product_id, quantity, region) VALUES (1, 1, 1, 'us-west-2')")
	t.Logf("write during the partition (%v): %v: %s", time.Since(t0).Round(time.Millisecond), err, werr)
	if err == nil || !strings.Contains(werr, "does not answer this proxy (region us-west-2)") || !strings.Contains(werr, "57P03") {
		t.Errorf("write error during the partition does not say what happened:\n%s", werr)
	}
	marker := fmt.Sprintf("e2e-%d", time.Now().UnixNano())
	if out, err := e.sql("us-east-1", "UPDATE products SET name = '"+marker+"' WHERE id = 42"); err != nil {
		t.Fatalf("write in the primary's region during the partition: %v\n%s", err, out)
	}
	if out, err := e.sql("us-west-2", "SELECT name FROM products WHERE id = 42"); err != nil || out == marker {
		t.Errorf("read in the partitioned region: %q, %v; want it to work and be stale (not %q)", out, err, marker)
	}

	// heal: writes work again and the replica catches up
	e.run("lab", "heal", "us-west-2")
	waitFor(t, 30*time.Second, "us-west-2 writes to work after heal", func() bool {
		_, err := e.sql("us-west-2", "INSERT INTO orders (customer_id, product_id, quantity, region) VALUES (1, 1, 1, 'us-west-2')")
		return err == nil
	})
	waitFor(t, 30*time.Second, "us-west-2's replica to catch up after heal", func() bool {
		out, err := e.sql("us-west-2", "SELECT name FROM products WHERE id = 42")
		return err == nil && out == marker
	})
	var st lab.Status
	decode(t, e.run("lab", "status", "--json"), &st)
	for _, r := range st.Regions {
		if r.Partitioned || (r.Role == "replica" && !r.Streaming) || r.Role == "down" {
			t.Errorf("after heal: %+v", r)
		}
	}

	// down: nothing remains
	pids := serverPIDs(t, e.dir)
	if len(pids) != len(regions) {
		t.Errorf("found %d postgres servers of the lab before down, want %d", len(pids), len(regions))
	}
	e.run("lab", "down")
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("postgres pid %d still running after lab down", pid)
		}
	}
	if left := processesMentioning(t, e.dir); len(left) > 0 {
		t.Errorf("processes left after lab down: %v", left)
	}
	for i := range regions {
		addr := fmt.Sprintf("127.0.%d.1", 201+i)
		for _, port := range []int{lab.PostgresPort, lab.ProxyPort, lab.MetricsPort, lab.LinkPortBase, lab.LinkPortBase + 1, lab.LinkPortBase + 2} {
			ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
			if err != nil {
				t.Errorf("port %s:%d still taken after lab down: %v", addr, port, err)
				continue
			}
			ln.Close()
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, lab.StateFile)); err == nil {
		t.Error("lab.json left after lab down")
	}
}

// TestLabDownAfterSupervisorKilled: a lab whose supervisor was killed (SIGKILL) is cleaned by the next
// `lab down`: no server, no port, no state left.
func TestLabDownAfterSupervisorKilled(t *testing.T) {
	if _, err := pgnode.FindBinaries(); err != nil {
		t.Fatal(err)
	}
	base, err := os.MkdirTemp("/tmp", "meridian-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(base, 0o755)
	t.Cleanup(func() { os.RemoveAll(base) })
	e := &env{t: t, bin: filepath.Join(base, "meridian"), dir: filepath.Join(base, "lab")}
	if out, err := exec.Command("go", "build", "-o", e.bin, "../cmd/meridian").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	e.run("lab", "up", "--detach", "--regions", "us-east-1,us-west-2", "--first-address", "127.0.211.1")
	st, err := lab.ReadState(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	pids := serverPIDs(t, e.dir)
	if err := syscallKill(st.PID); err != nil {
		t.Fatal(err)
	}
	out := e.run("lab", "down")
	if !strings.Contains(out, "stopped") {
		t.Errorf("lab down after a killed supervisor: %s", out)
	}
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("postgres pid %d still running", pid)
		}
	}
	for _, addr := range []string{"127.0.211.1", "127.0.212.1"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(lab.PostgresPort)))
		if err != nil {
			t.Errorf("%s:%d still taken: %v", addr, lab.PostgresPort, err)
			continue
		}
		ln.Close()
	}
	// And the directory is usable again.
	e.run("lab", "up", "--detach", "--regions", "us-east-1,us-west-2", "--first-address", "127.0.211.1")
	e.run("lab", "down")
}

func regionLoad(t *testing.T, rep lab.LoadReport, region string) lab.RegionLoad {
	for _, r := range rep.Regions {
		if r.Region == region {
			return r
		}
	}
	t.Fatalf("no %s in the load report", region)
	return lab.RegionLoad{}
}

func decode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
}

func render(rep interface{ Render(io.Writer) }) string {
	var b bytes.Buffer
	rep.Render(&b)
	return b.String()
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// serverPIDs returns the postmaster pids of the lab in dir.
func serverPIDs(t *testing.T, dir string) []int {
	var pids []int
	matches, _ := filepath.Glob(filepath.Join(dir, "*", "postgres", "data", "postmaster.pid"))
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		line, _, _ := strings.Cut(string(b), "\n")
		if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// processesMentioning lists processes whose command line mentions dir.
func processesMentioning(t *testing.T, dir string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(dir)) {
			out = append(out, fmt.Sprintf("%d: %s", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return out
}

func syscallKill(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill() // SIGKILL: no chance to clean up
}

// running reports whether pid is a live process. A zombie is not: it holds no port and no file; it
// waits for its parent to reap it (here, a server whose supervisor was killed is reparented to PID 1,
// which in some sandboxes never reaps).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
