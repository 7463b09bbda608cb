package pgtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const childEnv = "MERIDIAN_PGTEST_CHILD"

// TestHelperProcess is not a test of its own (the os/exec idiom): TestServersDieWithTheTestProcess runs
// it in a child process, which builds a cluster, prints its directory and then panics or waits to be
// killed.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		t.Skip("helper for TestServersDieWithTheTestProcess; runs only in its child process")
	}
	c := NewCluster(t, Options{Replicas: 1})
	fmt.Printf("BASE %s\n", c.Base)
	// Wait until the parent has counted our servers, then fail the way we were told to.
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	switch mode {
	case "panic":
		panic("deliberate panic with servers running")
	case "hang":
		time.Sleep(time.Hour) // the parent SIGKILLs us, as `go test -timeout` or a CI cancel would
	}
}

// TestServersDieWithTheTestProcess proves the harness's promise that no postgres outlives the test
// binary: once when a test panics (t.Cleanup runs), once when the binary is SIGKILLed (no Go code runs;
// the kernel's parent-death signal must do it).
func TestServersDieWithTheTestProcess(t *testing.T) {
	Binaries(t)
	for _, mode := range []string{"panic", "hang"} {
		t.Run(mode, func(t *testing.T) {
			ctx := Context(t, 2*time.Minute)
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), childEnv+"="+mode)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			defer func() {
				if t.Failed() {
					t.Logf("child's stderr:\n%s", stderr.String())
				}
			}()
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var base string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if b, ok := strings.CutPrefix(sc.Text(), "BASE "); ok {
					base = b
					break
				}
			}
			if base == "" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatal("child never reported its cluster directory")
			}
			if n := len(serversUnder(base)); n < 2 {
				t.Fatalf("child reported %s but only %d servers run there; the check below would prove nothing", base, n)
			}
			io.WriteString(in, "go\n")
			if mode == "hang" {
				cmd.Process.Signal(syscall.SIGKILL)
			}
			go func() { _, _ = io.Copy(io.Discard, out) }()
			_ = cmd.Wait()
			defer os.RemoveAll(base) // a SIGKILLed child leaves its directory; its servers must be gone
			err = WaitFor(ctx, 20*time.Millisecond, func(context.Context) (bool, error) {
				return len(serversUnder(base)) == 0, nil
			})
			if err != nil {
				t.Fatalf("postgres processes outlived the test binary: %v", serversUnder(base))
			}
		})
	}
}

// serversUnder lists live (non-zombie) processes whose command line mentions dir.
func serversUnder(dir string) []string {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var found []string
	for _, p := range procs {
		cmdline, err := os.ReadFile(p + "/cmdline")
		if err != nil || !strings.Contains(string(cmdline), dir) {
			continue
		}
		if stat, err := os.ReadFile(p + "/stat"); err == nil && strings.Contains(string(stat), ") Z ") {
			continue
		}
		found = append(found, filepath.Base(p)+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return found
}
