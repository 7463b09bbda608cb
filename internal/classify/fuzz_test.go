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
	f.Fuzz(func(t *testing.T, sql string) {
		r := c.Classify(sql)
		if r.Route != RouteReplica && r.Route != RoutePrimary {
			t.Fatalf("Classify(%q): route %v", sql, r.Route)
		}
		if (r.Route == RoutePrimary) != (r.Reason != "") {
			t.Fatalf("Classify(%q): route %v with reason %q", sql, r.Route, r.Reason)
		}
		fast, ok := classifyFast(sql, fs)
		if !ok {
			return
		}
		if diff := cmp.Diff(classifySlow(sql, fs), fast); diff != "" {
			t.Fatalf("fast path disagrees with the parser on %q (-slow +fast):\n%s", sql, diff)
		}
	})
}
