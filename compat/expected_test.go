//go:build compat

package compat

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"
)

// key names one expectation: a test in a mode.
type key struct{ mode, test string }

// expectation is one line of expected-failures.txt:
//
//	<mode> <suite/package/Test>  # bug: <diagnosis>
//	<mode> <suite/package/Test>  # inherent: <why transaction pooling cannot do this>
//	<mode> <suite/package/Test>  # flaky: <diagnosis of a bug whose failure depends on timing>
//
// A bug or inherent line must fail; a flaky line may pass (it is reported when it does), because
// the bug behind it shows only with some timings (e.g. a replica's replay racing a read).
type expectation struct {
	kind, reason string
	line         int
}

// readExpected parses the expected-failures file. Every entry needs a reason of kind "bug", "flaky"
// or "inherent"; "inherent" is accepted only in transaction mode (session mode must end with none).
func readExpected(path string) (map[key]expectation, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("expected failures: %w", err)
	}
	defer f.Close()
	exp := map[key]expectation{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		entry, comment, _ := strings.Cut(line, "#")
		fields := strings.Fields(entry)
		kind, reason, ok := strings.Cut(strings.TrimSpace(comment), ":")
		kind = strings.TrimSpace(kind)
		switch {
		case len(fields) != 2:
			return nil, fmt.Errorf("%s:%d: want \"<mode> <test>  # bug|flaky|inherent: reason\", got %q", path, n, line)
		case fields[0] != modeDirect && fields[0] != modeSession && fields[0] != modeTransaction:
			return nil, fmt.Errorf("%s:%d: unknown mode %q (direct, session or transaction)", path, n, fields[0])
		case !ok || strings.TrimSpace(reason) == "" || (kind != "bug" && kind != "flaky" && kind != "inherent"):
			return nil, fmt.Errorf("%s:%d: the reason must read \"# bug: ...\", \"# flaky: ...\" or \"# inherent: ...\"", path, n)
		case kind == "inherent" && fields[0] != modeTransaction:
			return nil, fmt.Errorf("%s:%d: only transaction mode may have inherent failures", path, n)
		}
		k := key{fields[0], fields[1]}
		if prev, dup := exp[k]; dup {
			return nil, fmt.Errorf("%s:%d: duplicate of line %d", path, n, prev.line)
		}
		exp[k] = expectation{kind: kind, reason: strings.TrimSpace(reason), line: n}
	}
	return exp, sc.Err()
}

// check compares what ran (mode → suite → result) with the expectations: a failure not listed is a
// problem, and so is a listed test of a suite that ran which did not fail (fixed: delete the line),
// unless its line says flaky; those are returned as notes.
func check(exp map[key]expectation, ran map[string]map[string]suiteResult) (problems, notes []string) {
	for mode, suites := range ran {
		for _, res := range suites {
			for test, how := range res.Failed {
				if _, ok := exp[key{mode, test}]; !ok {
					problems = append(problems, fmt.Sprintf("%s %s: %s, not in expected-failures.txt", mode, test, how))
				}
			}
		}
	}
	for k, e := range exp {
		suite, _, _ := strings.Cut(k.test, "/")
		res, ok := ran[k.mode][suite]
		if !ok {
			continue // not run this time
		}
		if _, failed := res.Failed[k.test]; !failed {
			if e.kind == "flaky" {
				notes = append(notes, fmt.Sprintf("%s %s: listed as flaky (line %d), passed this time", k.mode, k.test, e.line))
				continue
			}
			problems = append(problems, fmt.Sprintf("%s %s: listed in expected-failures.txt (line %d) but did not fail: delete the line", k.mode, k.test, e.line))
		}
	}
	sort.Strings(problems)
	sort.Strings(notes)
	return problems, notes
}
