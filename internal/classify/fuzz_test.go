package classify

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzClassify checks that classification never panics, that results are
// well-formed, and that the fast path agrees with the real parser whenever
// it answers. Crashers are kept in testdata/fuzz/FuzzClassify.
//
//	go test -run '^$' -fuzz FuzzClassify -fuzztime 60s ./internal/classify/
func FuzzClassify(f *testing.F) {
	for _, tc := range classifyCases {
		f.Add(tc.sql)
	}
	for _, sql := range fastCorpus {
		f.Add(sql)
	}
	c := New(Config{WriteFunctions: testWriteFunctions, CacheSize: 1000})
	fs := c.funcs.Load()
	// A database's set with views: relation names may need the primary too.
	fsv := c.Functions([]string{"app.touch"}, []string{"v", "app.t", "items"}).fs
	f.Fuzz(func(t *testing.T, sql string) {
		r := c.Classify(sql)
		if r.Route != RouteReplica && r.Route != RoutePrimary {
			t.Fatalf("Classify(%q): route %v", sql, r.Route)
		}
		if (r.Route == RoutePrimary) != (r.Reason != "") {
			t.Fatalf("Classify(%q): route %v with reason %q", sql, r.Route, r.Reason)
		}
		for _, set := range []*funcSet{fs, fsv} {
			fast, ok := classifyFast(sql, set)
			if !ok {
				continue
			}
			if diff := cmp.Diff(classifySlow(sql, set), fast); diff != "" {
				t.Fatalf("fast path disagrees with the parser on %q (-slow +fast):\n%s", sql, diff)
			}
		}
	})
}

// FuzzParameterize checks that parameterizing never panics, keeps the text's length (error
// positions), puts each value back where it came from, and never changes how a text that parses is
// parsed and routed.
//
//	go test -run '^$' -fuzz FuzzParameterize -fuzztime 60s ./internal/classify/
func FuzzParameterize(f *testing.F) {
	for _, tc := range classifyCases {
		f.Add(tc.sql)
	}
	for _, sql := range fastCorpus {
		f.Add(sql)
	}
	f.Add("SELECT a + 10, count(*) FROM t GROUP BY a + 10 ORDER BY 1, 20 LIMIT 100")
	f.Add("INSERT INTO t (a, b) VALUES (10, 'x') ON CONFLICT (a) WHERE b > 55 DO UPDATE SET a = 66")
	c := New(Config{WriteFunctions: testWriteFunctions, CacheSize: -1})
	f.Fuzz(func(t *testing.T, sql string) {
		p, ok := Parameterize(sql)
		if !ok {
			return
		}
		if len(p.Text) != len(sql) || len(p.Values) != len(p.Types) {
			t.Fatalf("Parameterize(%q) = %q with %d values, %d types", sql, p.Text, len(p.Values), len(p.Types))
		}
		// Each placeholder stands where a literal with its value stood.
		for i := 0; i < len(p.Text); i++ {
			if p.Text[i] != sql[i] && p.Text[i] == '$' {
				j := i + 1
				for j < len(p.Text) && isDigit(p.Text[j]) {
					j++
				}
				n := 0
				for _, d := range p.Text[i+1 : j] {
					n = n*10 + int(d-'0')
				}
				if n < 1 || n > len(p.Values) || !hasPrefixAt(sql, i, p.Values[n-1]) {
					t.Fatalf("Parameterize(%q) = %q: $%d at %d does not stand for its value", sql, p.Text, n, i)
				}
			}
		}
		orig, norm := c.Classify(sql), c.Classify(p.Text)
		if orig.Statements == 0 {
			return // the proxy sends texts that do not parse as they are
		}
		if orig.Route != norm.Route || orig.Statements != norm.Statements || orig.Txn != norm.Txn || orig.Pin != norm.Pin {
			t.Fatalf("Parameterize(%q) = %q changes the classification: %+v → %+v", sql, p.Text, orig, norm)
		}
	})
}

func hasPrefixAt(s string, i int, prefix string) bool {
	return i+len(prefix) <= len(s) && s[i:i+len(prefix)] == prefix
}
