//go:build compat

package compat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// pgxPackages are the packages of the pgx module whose tests run, as `go test` patterns.
var pgxPackages = []string{".", "./pgconn", "./pgxpool", "./stdlib", "./pgtype"}

const pgxModule = "github.com/jackc/pgx/v5"

// testEvent is one line of `go test -json` (cmd/test2json).
type testEvent struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// outcome is the result of one test, top-level or subtest.
type outcome string

const (
	outcomePass outcome = "pass"
	outcomeFail outcome = "fail"
	outcomeSkip outcome = "skip"
	outcomeHang outcome = "hang" // still running when the package's binary timed out: a failure
)

// suiteResult is what one suite did in one mode.
type suiteResult struct {
	Pass, Fail, Skip int
	// Failed holds the failing top-level tests, as "suite/package/Test" names, with a short reason.
	Failed map[string]string
}

func (r *suiteResult) add(o outcome) {
	switch o {
	case outcomePass:
		r.Pass++
	case outcomeSkip:
		r.Skip++
	default:
		r.Fail++
	}
}

// pgxDir returns a writable copy of the pinned pgx module, downloaded through the Go module proxy.
// The module cache is read-only, and `go test` in the module writes go.sum entries. The copy is kept
// in the user's cache directory (under base) so that the build cache, which keys on the package
// directory, compiles pgx's test binaries once, not on every run.
func pgxDir(ctx context.Context, base string) (string, error) {
	dst := filepath.Join(base, "meridian-compat", "pgx@"+PgxVersion)
	done := filepath.Join(dst, ".meridian-complete")
	if _, err := os.Stat(done); err == nil {
		return dst, nil
	}
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", pgxModule+"@"+PgxVersion)
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	cmd.Dir = os.TempDir() // outside any module
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w: %s", pgxModule, PgxVersion, err, stderrOf(err))
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return "", fmt.Errorf("go mod download: %w", err)
	}
	if mod.Error != "" || mod.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: %s", pgxModule, PgxVersion, mod.Error)
	}
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	if err := copyTree(mod.Dir, dst); err != nil {
		return "", fmt.Errorf("copy pgx module: %w", err)
	}
	dl := exec.CommandContext(ctx, "go", "mod", "download")
	dl.Dir = dst
	if out, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("download pgx's dependencies: %w: %s", err, out)
	}
	return dst, os.WriteFile(done, nil, 0o644)
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

// copyTree copies a directory of regular files, making everything writable.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// pgxRun configures one run of the pgx suite.
type pgxRun struct {
	Dir      string        // the writable module copy
	Env      []string      // PGX_TEST_* settings
	Timeout  time.Duration // per package binary: a test still running then is a hang
	Deadline time.Time     // no new attempt starts after it
	Log      io.Writer     // the raw -json stream of every attempt
}

// runPgx runs the pgx packages and returns per-test outcomes keyed by "package/Test[/sub]". When a
// package's binary times out, the tests still running are hangs; when a test panics, the binary ends
// too. Either way the package runs again without those tests and without the tests it already
// finished, so one hang or panic costs one test, not the rest of the package.
func runPgx(ctx context.Context, r pgxRun) (map[string]outcome, []string, error) {
	results := map[string]outcome{}
	var notes []string
	type pkgState struct{ skip []string } // top-level tests not to run again
	pending := map[string]*pkgState{}
	for _, p := range pgxPackages {
		pending[p] = &pkgState{}
	}
	for attempt := 1; len(pending) > 0; attempt++ {
		if attempt > 1 && time.Now().After(r.Deadline) {
			for p := range pending {
				notes = append(notes, fmt.Sprintf("package %s not finished: out of time after a hang", p))
			}
			break
		}
		// Packages with the same skip list run in one `go test` invocation (-p 2).
		groups := map[string][]string{}
		for p, st := range pending {
			key := strings.Join(st.skip, "|")
			groups[key] = append(groups[key], p)
		}
		keys := make([]string, 0, len(groups))
		for k := range groups {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		next := map[string]*pkgState{}
		for _, key := range keys {
			pkgs := groups[key]
			sort.Strings(pkgs)
			args := []string{"test", "-json", "-count=1", "-p", "2", "-timeout", r.Timeout.String()}
			if key != "" {
				args = append(args, "-skip", "^("+key+")$")
			}
			args = append(args, pkgs...)
			fmt.Fprintf(r.Log, "## attempt %d: go %s\n", attempt, strings.Join(args, " "))
			cmd := exec.CommandContext(ctx, "go", args...)
			cmd.Dir = r.Dir
			cmd.Env = append(os.Environ(), r.Env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				return nil, nil, err
			}
			if err := cmd.Start(); err != nil {
				return nil, nil, fmt.Errorf("go test: %w", err)
			}
			p := newParser()
			sc := bufio.NewScanner(io.TeeReader(stdout, r.Log))
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			for sc.Scan() {
				p.line(sc.Bytes())
			}
			werr := cmd.Wait()
			if ctx.Err() != nil {
				return nil, nil, fmt.Errorf("pgx suite: %w", ctx.Err())
			}
			if werr != nil && p.events == 0 {
				return nil, nil, fmt.Errorf("go test %s: %w: %s", strings.Join(pkgs, " "), werr, stderr.String())
			}
			for _, pkg := range pkgs {
				path := importPath(pkg)
				hung := p.hung(path)
				crashed := p.crashed[path]
				for name, o := range p.outcomes(path) {
					results[shortPkg(path)+"/"+name] = o
				}
				for _, c := range crashed {
					results[shortPkg(path)+"/"+c] = outcomeFail
					notes = append(notes, fmt.Sprintf("%s/%s panicked, ending its package's binary; package %s runs again without it", shortPkg(path), c, pkg))
				}
				if len(hung) == 0 && len(crashed) == 0 {
					if !p.finished[path] {
						notes = append(notes, fmt.Sprintf("package %s: no result (build failure?): %s", pkg, p.pkgOutput[path]))
						results[shortPkg(path)+"/(package)"] = outcomeFail
					}
					continue
				}
				st := &pkgState{skip: append([]string(nil), pending[pkg].skip...)}
				for _, h := range hung {
					results[shortPkg(path)+"/"+h] = outcomeHang
					notes = append(notes, fmt.Sprintf("%s/%s hung (still running after %s); package %s runs again without it", shortPkg(path), h, r.Timeout, pkg))
				}
				st.skip = append(st.skip, p.topLevelDone(path)...)
				for _, h := range append(hung, crashed...) {
					st.skip = append(st.skip, regexp.QuoteMeta(strings.SplitN(h, "/", 2)[0]))
				}
				sort.Strings(st.skip)
				next[pkg] = st
			}
		}
		pending = next
	}
	return results, notes, nil
}

func importPath(pkg string) string {
	if pkg == "." {
		return pgxModule
	}
	return pgxModule + "/" + strings.TrimPrefix(pkg, "./")
}

func shortPkg(path string) string {
	if path == pgxModule {
		return "pgx"
	}
	return strings.TrimPrefix(path, pgxModule+"/")
}

// parser collects the events of one `go test -json` run.
type parser struct {
	events    int
	state     map[string]map[string]outcome // package → test → outcome ("" while running or paused)
	order     map[string][]string           // package → tests in the order they started
	finished  map[string]bool               // package → its binary reported pass/fail
	pkgOutput map[string]string             // package-level output (build errors)
	timeout   map[string]string             // package → the timeout panic and the list after it
	crashed   map[string][]string           // package → tests that panicked (and so ended the binary)
	innocent  map[string][]string           // package → tests running when another test's goroutine panicked
}

func newParser() *parser {
	return &parser{
		state: map[string]map[string]outcome{}, order: map[string][]string{}, finished: map[string]bool{},
		pkgOutput: map[string]string{}, timeout: map[string]string{}, crashed: map[string][]string{},
		innocent: map[string][]string{},
	}
}

func (p *parser) line(b []byte) {
	var e testEvent
	if json.Unmarshal(b, &e) != nil || e.Package == "" {
		return
	}
	p.events++
	// The timeout panic is attributed to whichever test printed last; collect it by package.
	if e.Action == "output" {
		if t, ok := p.timeout[e.Package]; ok {
			if len(t) < 64<<10 {
				p.timeout[e.Package] = t + e.Output
			}
		} else if strings.HasPrefix(e.Output, "panic: test timed out after") {
			p.timeout[e.Package] = e.Output
		}
	}
	if e.Test == "" {
		switch e.Action {
		case "pass", "fail", "skip":
			p.finished[e.Package] = true
		case "output":
			if len(p.pkgOutput[e.Package]) < 64<<10 {
				p.pkgOutput[e.Package] += e.Output
			}
		}
		return
	}
	tests := p.state[e.Package]
	if tests == nil {
		tests = map[string]outcome{}
		p.state[e.Package] = tests
	}
	switch e.Action {
	case "run":
		if _, ok := tests[e.Test]; !ok {
			p.order[e.Package] = append(p.order[e.Package], e.Test)
		}
		tests[e.Test] = ""
	case "pass", "fail", "skip":
		tests[e.Test] = outcome(e.Action)
	case "output":
		// A panic in a test (not the timeout's) ends the binary. test2json attributes it to the
		// running test, except "Fail in goroutine after TestX has completed", which names the culprit:
		// then the running test is innocent and runs again.
		if !strings.HasPrefix(e.Output, "panic: ") || strings.HasPrefix(e.Output, "panic: test timed out") {
			break
		}
		culprit := e.Test
		if m := failAfter.FindStringSubmatch(e.Output); m != nil {
			culprit = m[1]
			p.innocent[e.Package] = append(p.innocent[e.Package], e.Test)
		}
		if !slices.Contains(p.crashed[e.Package], culprit) {
			p.crashed[e.Package] = append(p.crashed[e.Package], culprit)
		}
	}
}

// failAfter matches the testing package's panic when a test's goroutine fails after the test ended.
var failAfter = regexp.MustCompile(`^panic: Fail in goroutine after (\S+) has completed`)

// timeoutRunning matches the test list the testing package prints when a binary times out:
// "panic: test timed out after 2m0s\n\trunning tests:\n\t\tTestX/sub (2m0s)\n".
var timeoutRunning = regexp.MustCompile(`(?m)^\t\t(Test\S*) \([0-9.hms]+\)$`)

// hung returns the tests (as printed: deepest names) still running when path's binary timed out.
func (p *parser) hung(path string) []string {
	out, ok := p.timeout[path]
	if !ok {
		return nil
	}
	if i := strings.Index(out, "\n\n"); i >= 0 { // the list ends at the first blank line
		out = out[:i]
	}
	var names []string
	for _, m := range timeoutRunning.FindAllStringSubmatch(out, -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		names = []string{"(timeout: running tests unknown)"}
	}
	return names
}

// outcomes returns the finished tests of path. Tests still running at a timeout (and their parents)
// are left to hung(): test2json may report them as failed when the binary dies.
func (p *parser) outcomes(path string) map[string]outcome {
	res := map[string]outcome{}
	hung := map[string]bool{}
	for _, h := range p.hung(path) {
		parts := strings.Split(h, "/")
		for i := range parts {
			hung[strings.Join(parts[:i+1], "/")] = true
		}
	}
	for t, o := range p.state[path] {
		if o == "" || hung[t] || p.isInnocent(path, t) {
			continue
		}
		res[t] = o
	}
	return res
}

// isInnocent reports whether t (or its top-level test) was only a bystander of another test's panic.
func (p *parser) isInnocent(path, t string) bool {
	top, _, _ := strings.Cut(t, "/")
	for _, i := range p.innocent[path] {
		if it, _, _ := strings.Cut(i, "/"); it == top {
			return true
		}
	}
	return false
}

// topLevelDone returns the top-level tests of path that finished (as -skip regexp alternatives).
func (p *parser) topLevelDone(path string) []string {
	var done []string
	for _, t := range p.order[path] {
		if !strings.Contains(t, "/") && p.state[path][t] != "" && !p.isInnocent(path, t) {
			done = append(done, regexp.QuoteMeta(t))
		}
	}
	return done
}

// summarize turns per-test outcomes into counts and the failing top-level tests of suite.
func summarize(suite string, results map[string]outcome) suiteResult {
	r := suiteResult{Failed: map[string]string{}}
	for name, o := range results {
		r.add(o)
		if o == outcomeFail || o == outcomeHang {
			// pkg/TestX/sub → suite/pkg/TestX
			parts := strings.SplitN(name, "/", 3)
			top := suite + "/" + parts[0]
			if len(parts) > 1 {
				top += "/" + parts[1]
			}
			if o == outcomeHang || r.Failed[top] == "" {
				r.Failed[top] = string(o)
			}
		}
	}
	return r
}
