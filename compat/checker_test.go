//go:build compat

package compat

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestParserTimeout feeds the parser a `go test -json` stream in which the binary timed out: the
// tests the testing package lists as running are hung, even though the panic is attributed to
// another test, and paused parallel tests that never ran are neither done nor counted.
func TestParserTimeout(t *testing.T) {
	const pkg = pgxModule + "/pgconn"
	stream := []string{
		`{"Action":"run","Package":"` + pkg + `","Test":"TestA"}`,
		`{"Action":"pass","Package":"` + pkg + `","Test":"TestA"}`,
		`{"Action":"run","Package":"` + pkg + `","Test":"TestB"}`,
		`{"Action":"run","Package":"` + pkg + `","Test":"TestB/sub"}`,
		`{"Action":"pass","Package":"` + pkg + `","Test":"TestB/sub"}`,
		`{"Action":"run","Package":"` + pkg + `","Test":"TestB/stuck"}`,
		`{"Action":"run","Package":"` + pkg + `","Test":"TestParallel"}`,
		`{"Action":"pause","Package":"` + pkg + `","Test":"TestParallel"}`,
		`{"Action":"run","Package":"` + pkg + `","Test":"TestC"}`,
		`{"Action":"fail","Package":"` + pkg + `","Test":"TestC"}`,
		`{"Action":"output","Package":"` + pkg + `","Test":"TestC","Output":"panic: test timed out after 2m30s\n"}`,
		`{"Action":"output","Package":"` + pkg + `","Test":"TestC","Output":"\trunning tests:\n"}`,
		`{"Action":"output","Package":"` + pkg + `","Test":"TestC","Output":"\t\tTestB/stuck (2m29s)\n"}`,
		`{"Action":"output","Package":"` + pkg + `","Test":"TestC","Output":"\n"}`,
		`{"Action":"output","Package":"` + pkg + `","Test":"TestC","Output":"\t\tTestNotAList (1s)\n"}`,
		`{"Action":"fail","Package":"` + pkg + `","Test":"TestB/stuck"}`,
		`{"Action":"fail","Package":"` + pkg + `","Test":"TestB"}`,
		`{"Action":"fail","Package":"` + pkg + `"}`,
	}
	p := newParser()
	for _, l := range stream {
		p.line([]byte(l))
	}
	if diff := cmp.Diff([]string{"TestB/stuck"}, p.hung(pkg)); diff != "" {
		t.Errorf("hung (-want +got):\n%s", diff)
	}
	want := map[string]outcome{"TestA": outcomePass, "TestB/sub": outcomePass, "TestC": outcomeFail}
	if diff := cmp.Diff(want, p.outcomes(pkg)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"TestA", "TestB", "TestC"}, p.topLevelDone(pkg)); diff != "" {
		t.Errorf("done (-want +got):\n%s", diff)
	}
}

// TestParserPanic: a test that panics ends its binary; it is recorded, so the package can run again.
func TestParserPanic(t *testing.T) {
	const pkg = pgxModule
	p := newParser()
	for _, l := range []string{
		`{"Action":"run","Package":"` + pkg + `","Test":"TestA"}`,
		`{"Action":"output","Package":"` + pkg + `","Test":"TestA","Output":"panic: runtime error: index out of range [1] with length 1\n"}`,
		`{"Action":"fail","Package":"` + pkg + `","Test":"TestA"}`,
		`{"Action":"run","Package":"` + pkg + `","Test":"TestNeverRan"}`,
		`{"Action":"pause","Package":"` + pkg + `","Test":"TestNeverRan"}`,
		`{"Action":"fail","Package":"` + pkg + `"}`,
	} {
		p.line([]byte(l))
	}
	if diff := cmp.Diff([]string{"TestA"}, p.crashed[pkg]); diff != "" {
		t.Errorf("crashed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"TestA"}, p.topLevelDone(pkg)); diff != "" {
		t.Errorf("done (-want +got):\n%s", diff)
	}

	// A goroutine of a finished test fails while another test runs: the finished one is the culprit,
	// the running one runs again.
	p = newParser()
	for _, l := range []string{
		`{"Action":"run","Package":"` + pkg + `","Test":"TestLeaky"}`,
		`{"Action":"pass","Package":"` + pkg + `","Test":"TestLeaky"}`,
		`{"Action":"run","Package":"` + pkg + `","Test":"TestBystander"}`,
		`{"Action":"output","Package":"` + pkg + `","Test":"TestBystander","Output":"panic: Fail in goroutine after TestLeaky has completed\n"}`,
		`{"Action":"fail","Package":"` + pkg + `","Test":"TestBystander"}`,
		`{"Action":"fail","Package":"` + pkg + `"}`,
	} {
		p.line([]byte(l))
	}
	if diff := cmp.Diff([]string{"TestLeaky"}, p.crashed[pkg]); diff != "" {
		t.Errorf("crashed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"TestLeaky"}, p.topLevelDone(pkg)); diff != "" {
		t.Errorf("done (-want +got):\n%s", diff)
	}
	if _, ok := p.outcomes(pkg)["TestBystander"]; ok {
		t.Error("the bystander has an outcome; it should run again")
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "expected-failures.txt")
	if err := os.WriteFile(file, []byte(strings.Join([]string{
		"# comment",
		"session pgx/pgx/TestBroken  # bug: still broken",
		"session pgx/pgx/TestFixed  # bug: fixed meanwhile",
		"session pgx/pgx/TestSometimes  # flaky: timing",
		"transaction pgx/pgx/TestInherent  # inherent: no backend",
		"transaction node/pg/x  # bug: node did not run this time",
	}, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	exp, err := readExpected(file)
	if err != nil {
		t.Fatal(err)
	}
	ran := map[string]map[string]suiteResult{
		modeSession:     {"pgx": {Failed: map[string]string{"pgx/pgx/TestBroken": "fail", "pgx/pgx/TestNew": "hang"}}},
		modeTransaction: {"pgx": {Failed: map[string]string{"pgx/pgx/TestInherent": "fail"}}},
	}
	problems, notes := check(exp, ran)
	if len(problems) != 2 || !strings.Contains(problems[0], "TestFixed") || !strings.Contains(problems[1], "TestNew") {
		t.Errorf("problems: %q", problems)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "TestSometimes") {
		t.Errorf("notes: %q", notes)
	}

	for _, bad := range []string{
		"session pgx/pgx/TestX  # inherent: only transaction mode may say so",
		"session pgx/pgx/TestX",
		"weird pgx/pgx/TestX  # bug: unknown mode",
		"session pgx/pgx/TestX  # maybe: unknown kind",
		"session pgx/pgx/TestX  # bug: one\nsession pgx/pgx/TestX  # bug: duplicate",
	} {
		if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readExpected(file); err == nil {
			t.Errorf("readExpected accepted %q", bad)
		}
	}
}

// TestExpectedFile checks the committed file parses.
func TestExpectedFile(t *testing.T) {
	exp, err := readExpected("expected-failures.txt")
	if err != nil {
		t.Fatal(err)
	}
	for k := range exp {
		if !slices.Contains(allModes, k.mode) {
			t.Errorf("unknown mode %q", k.mode)
		}
	}
}
