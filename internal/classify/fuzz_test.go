package classify

import (
	"strings"
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
// positions), puts each value back where it came from, never changes how a text that parses is
// parsed and routed, and never accepts a backslash (standard_conforming_strings); it also runs
// PreparableWithParams and ChangesCatalog on the text.
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
	// issue 13: texts whose meaning a parameter would change.
	for _, sql := range []string{
		"INSERT INTO t VALUES ('a\\', 12345, ') --')",
		"SELECT pg_typeof(-(2147483648)), -(2147483648) * 2",
		"SELECT 12.345::\"numeric\"(10,2), CAST(x AS \"varchar\"(10)), bpchar(10) 'abc' FROM t WHERE id = 12345",
		"SELECT * FROM t WHERE id = 12345 ORDER BY -10",
		"SELECT a FROM t WHERE id = 12345 GROUP BY ALL 10",
		"SELECT CASE WHEN id < 0 AND 10 = 12345 THEN 1/0 ELSE id END FROM t WHERE id = 12",
		"SELECT * FROM t WHERE x BETWEEN -10000 AND 20000 AND y NOT IN (11, -22) AND s LIKE '%10%' LIMIT 10 OFFSET 20",
		"INSERT INTO t (a, b) VALUES (10, 'x'), (-12345, 'y') ON CONFLICT (a) WHERE b > 55 DO NOTHING RETURNING a",
		"UPDATE t SET a = 12345 WHERE b = 67890",
	} {
		f.Add(sql)
	}
	c := New(Config{WriteFunctions: testWriteFunctions, CacheSize: -1})
	f.Fuzz(func(t *testing.T, sql string) {
		_ = ChangesCatalog(sql)
		if _, ok := PreparableWithParams(sql); ok && strings.Contains(sql, "\\") {
			t.Fatalf("PreparableWithParams(%q): a backslash in the text", sql)
		}
		p, ok := Parameterize(sql)
		if !ok {
			return
		}
		if strings.Contains(sql, "\\") {
			t.Fatalf("Parameterize(%q): a backslash in the text", sql)
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
