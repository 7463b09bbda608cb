package proxy_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/benchrelay"
	"github.com/meridiandb/meridian/internal/pgnode"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// BenchmarkPgbenchSelectOnly runs pgbench -S against the replica through the proxy (replica in the
// proxy's region), through PgBouncer (transaction mode, when installed) and through the benchrelay
// yardstick (an event loop reduced to copying bytes), in BENCH_ROUNDS rounds of rotating order, then
// directly; it reports median TPS, CPU per transaction and per-round ratios (-v prints every round).
// Use -cpuprofile to see where the proxy spends its time: pgbench runs in a separate process.
//
//	BENCH_ROUNDS=10 BENCH_SECONDS=5 go test -run '^$' -bench PgbenchSelectOnly -benchtime 1x -v ./internal/proxy/
func BenchmarkPgbenchSelectOnly(b *testing.B) {
	c := pgtest.NewCluster(b, pgtest.Options{Replicas: 1, Settings: map[string]string{"max_connections": "200"}})
	cfg := proxy.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Region = "local"
	cfg.Auth.Rules = []proxy.AuthRule{{Address: "127.0.0.1/32", Method: proxy.AuthTrust}} // as PgBouncer's auth_type = trust below
	cfg.Nodes = []proxy.NodeConfig{
		{Name: "primary", Address: c.Primary.Endpoint().String(), Region: "local"},
		{Name: "replica", Address: c.Replicas[0].Endpoint().String(), Region: "local"},
	}
	p, err := proxy.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	if err := p.WaitReady(pgtest.Context(b, time.Minute)); err != nil {
		b.Fatal(err)
	}
	bin := pgtest.Binaries(b)
	host, port, _ := net.SplitHostPort(p.Addr())
	run := func(h string, port string, args ...string) float64 {
		cmd := exec.Command(bin.Path("pgbench"), append([]string{"-h", h, "-p", port, "-U", "postgres"}, append(args, "postgres")...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("pgbench: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`tps = ([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			return 0
		}
		tps, _ := strconv.ParseFloat(string(m[1]), 64)
		return tps
	}
	prim := c.Primary.Endpoint()
	run(prim.Host, strconv.Itoa(prim.Port), "-i", "-q", "-s", "5")
	if err := pgtest.WaitReplayed(pgtest.Context(b, time.Minute), c.Replicas[0], pgtest.CurrentLSN(b, c.Primary)); err != nil {
		b.Fatal(err)
	}
	mode := envOr("BENCH_MODE", "simple")
	clients := envOr("BENCH_CLIENTS", "16")
	dur := envOr("BENCH_SECONDS", "8")
	args := []string{"-S", "-n", "-M", mode, "-c", clients, "-j", "2", "-T", dur}
	rep := c.Replicas[0].Endpoint()
	bouncerPort, bouncerPID := startPgBouncer(b, c.Base, rep.Port)
	relay, err := benchrelay.Start("127.0.0.1:0", rep.String())
	if err != nil {
		b.Fatal(err)
	}
	defer relay.Close()
	_, relayPort, _ := net.SplitHostPort(relay.Addr())
	type contender struct {
		name, host, port string
		pid              int // for CPU time: 0 is this process
		tps, cpu         []float64
	}
	all := []*contender{
		{name: "proxy", host: host, port: port},
		{name: "epoll-relay", host: "127.0.0.1", port: relayPort},
	}
	if bouncerPort != "" {
		all = append(all, &contender{name: "pgbouncer", host: "127.0.0.1", port: bouncerPort, pid: bouncerPID})
	}
	rounds, _ := strconv.Atoi(envOr("BENCH_ROUNDS", "1"))
	secs, _ := strconv.ParseFloat(dur, 64)
	b.ResetTimer()
	for range b.N {
		// Each round runs every contender once, in an order rotated from round to round, so that
		// a slow drift of this shared machine weighs on all alike; medians over rounds are reported.
		var ratios, relayRatios []float64
		for r := range max(rounds, 1) {
			for i := range all {
				ct := all[(i+r)%len(all)]
				cpuOf := selfCPU
				pid := ct.pid
				if pid != 0 {
					cpuOf = func() cpuTime { return procCPU(pid) }
				} else {
					pid = os.Getpid()
				}
				stop := straceIfAsked(b, pid, fmt.Sprintf("%s-%d", ct.name, r+1))
				cpu0 := cpuOf()
				tps := run(ct.host, ct.port, args...)
				used := cpuOf().sub(cpu0)
				stop()
				ct.tps = append(ct.tps, tps)
				ct.cpu = append(ct.cpu, float64(used.total().Microseconds())/(tps*secs))
			}
			line := fmt.Sprintf("round %d:", r+1)
			for _, ct := range all {
				line += fmt.Sprintf(" %s %.0f TPS (%.1f µs CPU/txn)", ct.name, ct.tps[r], ct.cpu[r])
			}
			if len(all) == 3 {
				ratios = append(ratios, all[0].tps[r]/all[2].tps[r])
				relayRatios = append(relayRatios, all[1].tps[r]/all[2].tps[r])
				line += fmt.Sprintf("; proxy/pgbouncer %.3f, epoll-relay/pgbouncer %.3f", ratios[r], relayRatios[r])
			}
			b.Log(line)
		}
		b.ReportMetric(run(rep.Host, strconv.Itoa(rep.Port), args...), "direct-tps")
		for _, ct := range all {
			b.ReportMetric(median(ct.tps), ct.name+"-tps")
			b.ReportMetric(median(ct.cpu), ct.name+"-cpu-µs/txn")
		}
		if len(ratios) > 0 {
			b.ReportMetric(median(ratios), "proxy/pgbouncer")
			b.ReportMetric(median(relayRatios), "epoll-relay/pgbouncer")
		}
	}
}

// median returns the middle value of v (the mean of the two middle ones for an even count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// startPgBouncer runs PgBouncer (transaction mode, pool 20) in front of the replica when it is
// installed (make bench-proxy installs it), for a same-run comparison.
func startPgBouncer(b *testing.B, base string, port int) (string, int) {
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		b.Log("pgbouncer not installed: no comparison")
		return "", 0
	}
	dir := filepath.Join(base, "pgbouncer")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	lport, _ := pgnode.FreePort("127.0.0.1")
	ini := fmt.Sprintf("[databases]\n* = host=127.0.0.1 port=%d\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\n"+
		"unix_socket_dir =\nauth_type = trust\nauth_file = %s/users.txt\npool_mode = transaction\ndefault_pool_size = 20\n"+
		"max_client_conn = 1000\nlog_connections = 0\nlog_disconnections = 0\n", port, lport, dir)
	os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644)
	os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"postgres" ""`+"\n"), 0o644)
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			b.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	err = pgtest.WaitFor(pgtest.Context(b, 10*time.Second), 20*time.Millisecond, func(context.Context) (bool, error) {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", lport))
		if err == nil {
			conn.Close()
		}
		return err == nil, nil
	})
	if err != nil {
		b.Fatal("pgbouncer did not start")
	}
	return strconv.Itoa(lport), cmd.Process.Pid
}

// straceIfAsked counts the system calls of pid while a run lasts when BENCH_STRACE names a folder, or
// its context switches and CPU migrations with perf stat when BENCH_PERF does, or records a profile with
// call graphs (perf record; build the test binary with go test -c so perf finds its symbols) when
// BENCH_PERF_RECORD does, or records every process on the machine when BENCH_PERF_ALL does.
func straceIfAsked(b *testing.B, pid int, name string) func() {
	dir := os.Getenv("BENCH_STRACE")
	var cmd *exec.Cmd
	switch {
	case dir != "":
		cmd = exec.Command("strace", "-c", "-f", "-p", strconv.Itoa(pid), "-o", filepath.Join(dir, name+".strace"))
	case os.Getenv("BENCH_PERF") != "":
		cmd = exec.Command("perf", "stat", "--no-inherit", "-e", "task-clock,context-switches,cpu-migrations,page-faults,"+
			"syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,"+
			"syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_futex,syscalls:sys_enter_nanosleep", "-p", strconv.Itoa(pid),
			"-o", filepath.Join(os.Getenv("BENCH_PERF"), name+".perf"))
	case os.Getenv("BENCH_PERF_ALL") != "":
		// Every process on the machine (pgbench, PostgreSQL, the pooler): compare with perf report --sort comm.
		cmd = exec.Command("perf", "record", "-a", "-o", filepath.Join(os.Getenv("BENCH_PERF_ALL"), name+".data"))
	case os.Getenv("BENCH_PERF_RECORD") != "":
		cmd = exec.Command("perf", "record", "-g", "--no-inherit", "-p", strconv.Itoa(pid), "-o", filepath.Join(os.Getenv("BENCH_PERF_RECORD"), name+".data"))
	default:
		return func() {}
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // attach to every thread
	return func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}
}

// cpuTime is a process's CPU time in user space and in the kernel.
type cpuTime struct{ user, sys time.Duration }

func (c cpuTime) sub(o cpuTime) cpuTime { return cpuTime{c.user - o.user, c.sys - o.sys} }
func (c cpuTime) total() time.Duration  { return c.user + c.sys }

func selfCPU() cpuTime {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return cpuTime{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

// procCPU reads a process's user and system CPU time from /proc (clock ticks of 10 ms).
func procCPU(pid int) cpuTime {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTime{}
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return cpuTime{time.Duration(ut) * 10 * time.Millisecond, time.Duration(st) * 10 * time.Millisecond}
}

func envOr(k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}
