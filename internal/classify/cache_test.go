package classify

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCacheHit(t *testing.T) {
	c := New(Config{})
	const sql = "SELECT * FROM (SELECT 1) s"
	first := c.Classify(sql)
	if n := c.cache.len(); n != 1 {
		t.Fatalf("cache holds %d entries, want 1", n)
	}
	// Replace the entry: a hit must serve it instead of classifying again.
	marked := first
	marked.Reason = "from cache"
	c.cache.put(sql, c.funcs.Load().gen, marked)
	if got := c.Classify(sql); got.Reason != "from cache" {
		t.Fatalf("second Classify did not come from the cache: %+v", got)
	}
	if n := c.cache.len(); n != 1 {
		t.Fatalf("cache holds %d entries, want 1", n)
	}
}

// TestFastPathAnswersAreNotCached: texts with inline literals are each unique; caching the fast
// path's cheap answers would only evict the parser's expensive ones.
func TestFastPathAnswersAreNotCached(t *testing.T) {
	c := New(Config{})
	for i := range 100 {
		if got := c.Classify(fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d", i)); got.Route != RouteReplica {
			t.Fatalf("route = %v", got.Route)
		}
	}
	if n := c.cache.len(); n != 0 {
		t.Fatalf("the cache holds %d fast-path answers, want none", n)
	}
}

func TestCacheBounded(t *testing.T) {
	for _, size := range []int{1, 10, 64, 100, 1000, 5000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := New(Config{CacheSize: size})
			for i := range 3 * size {
				c.Classify(fmt.Sprintf("SELECT * FROM (SELECT %d) s", i)) // parser answers are cached
				if n := c.cache.len(); n > size {
					t.Fatalf("after %d texts the cache holds %d > %d", i+1, n, size)
				}
			}
			if n := c.cache.len(); n != size {
				t.Errorf("full cache holds %d, want %d", n, size)
			}
		})
	}
}

// TestCacheKeepsHotEntries: CLOCK evicts entries not used since the hand
// last passed, so a statement used all the time stays.
func TestCacheKeepsHotEntries(t *testing.T) {
	c := New(Config{CacheSize: 256})
	const hot = "SELECT hot FROM (SELECT 1 AS hot) t"
	gen := c.funcs.Load().gen
	c.Classify(hot)
	for i := range 10000 {
		c.Classify(fmt.Sprintf("SELECT * FROM (SELECT %d) s", i))
		if _, ok := c.cache.get(hot, gen); !ok {
			t.Fatalf("hot entry evicted after %d cold texts", i+1)
		}
	}
}

func TestCacheInvalidatedBySetWriteFunctions(t *testing.T) {
	c := New(Config{})
	const sql = "SELECT refresh_totals(1)"
	if got := c.Classify(sql); got.Route != RouteReplica {
		t.Fatalf("before SetWriteFunctions: %+v", got)
	}
	c.SetWriteFunctions([]string{"app.refresh_totals"})
	if n := c.cache.len(); n != 0 {
		t.Errorf("cache holds %d entries after SetWriteFunctions", n)
	}
	want := primary("volatile function refresh_totals()")
	if diff := cmp.Diff(want, c.Classify(sql)); diff != "" {
		t.Errorf("after SetWriteFunctions (-want +got):\n%s", diff)
	}
	// Replacing the list drops the old names but keeps Config's.
	c = New(Config{WriteFunctions: []string{"keep_me"}})
	c.SetWriteFunctions([]string{"gone"})
	c.SetWriteFunctions([]string{"other"})
	for sql, route := range map[string]Route{
		"SELECT gone()":    RouteReplica,
		"SELECT other()":   RoutePrimary,
		"SELECT keep_me()": RoutePrimary,
	} {
		if got := c.Classify(sql); got.Route != route {
			t.Errorf("%s: route %v, want %v", sql, got.Route, route)
		}
	}
}

// TestCacheStaleGeneration: a result computed with an old function list
// and stored after SetWriteFunctions must not be served.
func TestCacheStaleGeneration(t *testing.T) {
	c := New(Config{})
	const sql = "SELECT f()"
	oldGen := c.funcs.Load().gen
	c.SetWriteFunctions([]string{"f"})
	c.cache.put(sql, oldGen, read(1)) // a Classify that raced with SetWriteFunctions
	if got := c.Classify(sql); got.Route != RoutePrimary {
		t.Fatalf("stale cache entry served: %+v", got)
	}
}

func TestCacheDisabledAndLongTexts(t *testing.T) {
	c := New(Config{CacheSize: -1})
	if c.cache != nil {
		t.Fatal("negative CacheSize did not disable the cache")
	}
	if got := c.Classify("INSERT INTO t VALUES (1)"); got.Route != RoutePrimary {
		t.Fatalf("without cache: %+v", got)
	}

	c = New(Config{})
	long := "SELECT 1" + strings.Repeat(" ", maxCachedLen)
	if got := c.Classify(long); got.Route != RouteReplica {
		t.Fatalf("long text: %+v", got)
	}
	if n := c.cache.len(); n != 0 {
		t.Errorf("a text over maxCachedLen was cached (%d entries)", n)
	}
}

// TestConcurrentClassify exercises the cache and SetWriteFunctions from
// many goroutines (run with -race).
func TestConcurrentClassify(t *testing.T) {
	c := New(Config{CacheSize: 200})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				sql := fmt.Sprintf("SELECT f%d(%d)", i%20, (i*g)%300)
				r := c.Classify(sql)
				if r.Route != RouteReplica && r.Route != RoutePrimary {
					t.Errorf("%s: route %v", sql, r.Route)
					return
				}
				if g == 0 && i%50 == 0 {
					c.SetWriteFunctions([]string{fmt.Sprintf("f%d", i%20)})
				}
			}
		})
	}
	wg.Wait()
	if n := c.cache.len(); n > 200 {
		t.Errorf("cache holds %d > 200", n)
	}
	// After the last SetWriteFunctions, results follow the final list.
	c.SetWriteFunctions([]string{"f3"})
	if got := c.Classify("SELECT f3(1)"); got.Route != RoutePrimary {
		t.Errorf("after concurrent use: %+v", got)
	}
	if got := c.Classify("SELECT f4(1)"); got.Route != RouteReplica {
		t.Errorf("after concurrent use: %+v", got)
	}
}

// TestNoAllocs: a cache hit and a fast-path answer do not allocate.
func TestNoAllocs(t *testing.T) {
	c := New(Config{})
	c.Classify(benchComplex)
	if n := testing.AllocsPerRun(100, func() { c.Classify(benchComplex) }); n != 0 {
		t.Errorf("cache hit: %v allocations", n)
	}
	fs := c.funcs.Load()
	if n := testing.AllocsPerRun(100, func() { classifyFast(benchSimple, fs) }); n != 0 {
		t.Errorf("fast path: %v allocations", n)
	}
}

// TestMemo: a memo answers as ClassifyIn does, for the same text and function set only; a new
// function list (SetWriteFunctions, another database's Functions) classifies again.
func TestMemo(t *testing.T) {
	c := New(Config{})
	var m Memo
	const sql = "SELECT refresh_totals(1)"
	check := func(fn *Functions, text string, want Route) {
		t.Helper()
		got := c.ClassifyMemo(&m, fn, text)
		if diff := cmp.Diff(c.ClassifyIn(fn, text), got); diff != "" {
			t.Fatalf("%s: memo differs from ClassifyIn (-want +got):\n%s", text, diff)
		}
		if got.Route != want {
			t.Fatalf("%s: route %v, want %v", text, got.Route, want)
		}
	}
	check(nil, sql, RouteReplica)
	check(nil, sql, RouteReplica) // from the memo
	check(nil, "INSERT INTO t VALUES (1)", RoutePrimary)
	c.SetWriteFunctions([]string{"refresh_totals"})
	check(nil, sql, RoutePrimary)
	db := c.Functions(nil, nil) // a database's set: Config.WriteFunctions and the built-in list only
	check(db, sql, RouteReplica)
	check(c.Functions([]string{"app.refresh_totals"}, nil), sql, RoutePrimary)
	check(db, sql, RouteReplica)

	// The memo answers without classifying: a marked result is served for its text and set only.
	m.res.Reason = "from memo"
	if got := c.ClassifyMemo(&m, db, sql); got.Reason != "from memo" {
		t.Errorf("the same text and set were classified again: %+v", got)
	}
	if got := c.ClassifyMemo(&m, nil, sql); got.Reason == "from memo" {
		t.Errorf("another function set was served the memo: %+v", got)
	}
	if n := testing.AllocsPerRun(100, func() { c.ClassifyMemo(&m, nil, sql) }); n != 0 {
		t.Errorf("memo hit: %v allocations", n)
	}

	// A text over maxCachedLen is remembered (its batch classifies it once) until ForgetLong.
	long := "SELECT 1" + strings.Repeat(" ", maxCachedLen)
	check(nil, long, RouteReplica)
	m.res.Reason = "from memo"
	if got := c.ClassifyMemo(&m, nil, long); got.Reason != "from memo" {
		t.Errorf("a long text was classified again within its batch: %+v", got)
	}
	m.ForgetLong()
	if m.sql != "" {
		t.Error("ForgetLong kept a text over maxCachedLen")
	}
	check(db, sql, RouteReplica)
	m.ForgetLong()
	if m.sql != sql {
		t.Error("ForgetLong forgot a short text")
	}
}
