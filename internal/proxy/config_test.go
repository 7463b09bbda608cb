package proxy

import (
	"regexp"
	"strings"
	"testing"
)

// goNames are the Go type names and YAML-library words that errors about a file must not show.
var goNames = regexp.MustCompile(`\b(proxy|auth|time)\.[A-Z]\w*|!!\w+|unmarshal|in type|\[\][a-z]`)

// TestConfigErrorsPointAtTheLine: every error about a configuration file names the line and the key,
// says what is wrong in the file's terms (no Go type names), and for an unknown key suggests the valid
// key it most likely meant.
func TestConfigErrorsPointAtTheLine(t *testing.T) {
	const nodes = "nodes: [{name: a, address: 'h:1', region: r}]\n"
	tests := []struct{ name, yaml, want string }{
		{"typo", "region: r\n" + nodes + "pool_sise: 5\n",
			"config: line 3: unknown key pool_sise (did you mean pool_size?)"},
		{"swapped letters", "regoin: r\n" + nodes,
			"config: line 1: unknown key regoin (did you mean region?)"},
		{"nested", "region: r\n" + nodes + "tcp_keepalive:\n  enabled: true\n  idel: 5s\n",
			"config: line 5: unknown key tcp_keepalive.idel (did you mean idle?)"},
		{"in a list item, flow style", "region: r\nnodes: [{name: a, adress: 'h:1', region: r}]\n",
			"config: line 2: unknown key nodes[0].adress (did you mean address?)"},
		{"in a list item, block style", "region: r\nnodes:\n  - name: a\n    address: 'h:1'\n    regin: r\n",
			"config: line 5: unknown key nodes[0].regin (did you mean region?)"},
		{"nothing close, few keys", "region: r\n" + nodes + "readyz: {primary: true, writes: false}\n",
			"config: line 3: unknown key readyz.writes (valid keys here: primary, reads)"},
		{"nothing close, many keys", "region: r\n" + nodes + "bogus: 1\n",
			"config: line 3: unknown key bogus (docs/proxy.md lists every key)"},
		{"duration", "region: r\npoll_interval: fast\n" + nodes,
			`config: line 2: poll_interval: want a duration such as 500ms, 1s or 10m, got "fast"`},
		{"long value", "region: r\npoll_interval: every-other-second\n" + nodes,
			`config: line 2: poll_interval: want a duration such as 500ms, 1s or 10m, got "every-other-second"`},
		{"bool", "region: r\nauto_prepare: sometimes\n" + nodes,
			`config: line 2: auto_prepare: want true or false, got "sometimes"`},
		{"number", "region: r\npool_size: many\n" + nodes,
			`config: line 2: pool_size: want a whole number, got "many"`},
		{"list for a string", "region: [a, b]\n" + nodes,
			`config: line 1: region: want a string, got a list`},
		{"mapping for a list item", "region: r\nwrite_functions: [{a: b}]\n" + nodes,
			`config: line 2: write_functions[0]: want a string, got a mapping (key: value)`},
		{"twice", "region: r\nregion: s\n" + nodes, "config: line 2: region is set twice"},
		{"invalid value", "region: r\npool_size: 0\n" + nodes,
			"config: line 2: pool_size: must be between 1 and 10000, got 0"},
		{"invalid value in a list item", "region: r\nnodes:\n  - {name: a, address: nohost, region: r}\n",
			`config: line 3: nodes[0].address: want host:port, got "nohost"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseConfig error:\n%v\nwant it to contain\n%s", err, tt.want)
			}
			if goName := goNames.FindString(err.Error()); goName != "" {
				t.Errorf("error %q speaks of Go (%q)", err, goName)
			}
		})
	}
}
