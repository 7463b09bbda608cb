package classify

import "testing"

// Run with: go test -run '^$' -bench . -benchmem ./internal/classify/

const (
	benchSimple  = "SELECT id, name, price FROM products WHERE category_id = $1 ORDER BY name LIMIT 20"
	benchComplex = `WITH recent AS (
	SELECT o.id, o.customer_id, sum(i.quantity * i.price) AS total
	FROM orders o JOIN order_items i ON i.order_id = o.id
	WHERE o.created_at > now() - interval '7 days'
	GROUP BY o.id, o.customer_id
)
SELECT c.name, r.total, (SELECT count(*) FROM carts k WHERE k.customer_id = c.id) AS carts
FROM recent r JOIN customers c ON c.id = r.customer_id
WHERE r.total > $1 AND c.region = ANY($2)
ORDER BY r.total DESC
FOR UPDATE OF c SKIP LOCKED`
)

func BenchmarkClassifyCached(b *testing.B) {
	c := New(Config{})
	for _, sql := range []string{benchSimple, benchComplex} {
		c.Classify(sql)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.Classify(benchComplex)
	}
}

func BenchmarkClassifyCachedParallel(b *testing.B) {
	c := New(Config{})
	c.Classify(benchSimple)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Classify(benchSimple)
		}
	})
}

// BenchmarkClassifyUncachedSimple: a plain SELECT, answered by the fast
// path; "parser" forces the real parser on the same text for comparison.
func BenchmarkClassifyUncachedSimple(b *testing.B) {
	c := New(Config{CacheSize: -1})
	fs := c.funcs.Load()
	if _, ok := classifyFast(benchSimple, fs); !ok {
		b.Fatal("fast path does not answer the simple statement")
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Classify(benchSimple)
		}
	})
	b.Run("parser", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			classifySlow(benchSimple, fs)
		}
	})
}

func BenchmarkClassifyUncachedComplex(b *testing.B) {
	c := New(Config{CacheSize: -1})
	if r := c.Classify(benchComplex); r.Reason != "FOR UPDATE" {
		b.Fatalf("complex statement: %+v", r)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Classify(benchComplex)
	}
}
