//go:build compat

package compat

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/pgtest"
)

// nodeCase is one line of smoke.mjs's output.
type nodeCase struct {
	Name   string `json:"name"` // driver/case, e.g. pg/listen-idle
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// runNodeMode runs compat/node/smoke.mjs: every case directly against the primary and against
// target (the primary again in direct mode, else the proxy), compared by the script.
func runNodeMode(t *testing.T, mode, target string, c *pgtest.Cluster, out string) suiteResult {
	t.Helper()
	url := func(hostport string) string {
		return "postgres://postgres@" + hostport + "/" + database + "?sslmode=disable"
	}
	var observers []string
	for _, ep := range nodeEndpoints(c) {
		observers = append(observers, url(ep.String()))
	}
	cmd := exec.CommandContext(ctxDone(t, 5*time.Minute), "node", "smoke.mjs")
	cmd.Dir = "node"
	cmd.Env = append(os.Environ(),
		"COMPAT_MODE="+mode,
		"COMPAT_DIRECT_URL="+url(c.Primary.Endpoint().String()),
		"COMPAT_TARGET_URL="+url(target),
		"COMPAT_OBSERVER_URLS="+strings.Join(observers, ","),
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if werr := os.WriteFile(filepath.Join(out, mode+"-node.jsonl"), append(stdout, stderr.Bytes()...), 0o644); werr != nil {
		t.Error(werr)
	}
	res := suiteResult{Failed: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		var nc nodeCase
		if json.Unmarshal(sc.Bytes(), &nc) != nil || nc.Name == "" {
			continue
		}
		switch nc.Status {
		case "pass":
			res.Pass++
		case "skip":
			res.Skip++
		default:
			res.Fail++
			res.Failed["node/"+nc.Name] = clip(nc.Detail, 300)
			t.Logf("%s node/%s: %s", mode, nc.Name, clip(nc.Detail, 2000))
		}
	}
	if err != nil {
		res.Fail++
		res.Failed["node/(script)"] = fmt.Sprintf("%v: %s", err, lastLines(stderr.String(), 20))
		t.Logf("%s node: smoke.mjs: %v\n%s", mode, err, lastLines(stderr.String(), 20))
	}
	return res
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// clip shortens s to about n bytes for the log; the whole answer is in the per-mode file.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
