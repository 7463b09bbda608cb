package classify

import (
	"slices"
	"testing"
)

func TestParameterize(t *testing.T) {
	for _, tc := range []struct {
		sql    string
		want   string // "" means not parameterizable
		values []string
		types  []uint32
	}{
		{sql: "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
			want: "SELECT abalance FROM pgbench_accounts WHERE aid = $1   ;", values: []string{"12345"}, types: []uint32{OIDInt4}},
		{sql: "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 99;",
			want: "UPDATE pgbench_accounts SET abalance = abalance + -$1   WHERE aid = $2;", values: []string{"4321", "99"}, types: []uint32{OIDInt4, OIDInt4}},
		{sql: "select 10, 10, 3000000000, 99999999999999999999, 12.50, 7",
			want: "select $1, $1, $2        , $3                  , $4   , 7", values: []string{"10", "3000000000", "99999999999999999999", "12.50"},
			types: []uint32{OIDInt4, OIDInt8, OIDNumeric, OIDNumeric}},
		{sql: "SELECT a + 10, count(*) FROM t GROUP BY a + 10 ORDER BY 1, 20 LIMIT 100",
			want: "SELECT a + $1, count(*) FROM t GROUP BY a + $1 ORDER BY 1, 20 LIMIT $2 ", values: []string{"10", "100"}, types: []uint32{OIDInt4, OIDInt4}},
		// 20 is a whole ORDER BY item (an output column): kept there and everywhere else.
		{sql: "SELECT 20, b FROM t ORDER BY 20", want: "SELECT 20, b FROM t ORDER BY 20"},
		{sql: "SELECT DISTINCT ON (12) a, 12 FROM t", want: "SELECT DISTINCT ON (12) a, 12 FROM t"},
		{sql: "SELECT x::numeric(10,2), CAST(y AS varchar(20)), 10 FROM t",
			want: "SELECT x::numeric(10,2), CAST(y AS varchar(20)), 10 FROM t"},
		{sql: "SELECT CURRENT_TIMESTAMP(3), 33", want: "SELECT CURRENT_TIMESTAMP(3), $1", values: []string{"33"}},
		{sql: "INSERT INTO t (a, b) VALUES (10, 'x') ON CONFLICT (a) WHERE b > 55 DO UPDATE SET a = 66",
			want: "INSERT INTO t (a, b) VALUES ($1, 'x') ON CONFLICT (a) WHERE b > 55 DO UPDATE SET a = $2", values: []string{"10", "66"}},
		{sql: "SELECT * FROM t WHERE id IN (11, 22, 33) AND s = 'it''s 44'",
			want: "SELECT * FROM t WHERE id IN ($1, $2, $3) AND s = 'it''s 44'", values: []string{"11", "22", "33"}},
		{sql: "SELECT * FROM t ORDER BY coalesce(a, 10) LIMIT 10", want: "SELECT * FROM t ORDER BY coalesce(a, $1) LIMIT $1", values: []string{"10"}},
		{sql: "SELECT 1", want: "SELECT 1"},
		{sql: "SELECT -2147483648, 2147483648, -2147483647, x -9223372036854775808",
			want: "SELECT -2147483648, 2147483648, -$1        , x -9223372036854775808", values: []string{"2147483647"}},
		{sql: "WITH w AS (DELETE FROM t WHERE a < 100 RETURNING *) SELECT count(*) FROM w",
			want: "WITH w AS (DELETE FROM t WHERE a < $1  RETURNING *) SELECT count(*) FROM w", values: []string{"100"}},
		// Not for parameterizing.
		{sql: "SELECT 10 INTO newtable"},
		{sql: "SET work_mem = 100000"},
		{sql: "EXPLAIN SELECT 10"},
		{sql: "SELECT 10; SELECT 20"},
		{sql: "SELECT $1"},
		{sql: "SELECT 1e10"},
		{sql: "(SELECT 10)"},
		{sql: "SELECT (10"},
		{sql: "SELECT 10)"},
		{sql: "SELECT $$x$$"},
		{sql: ""},
		{sql: "  ;"},
	} {
		p, ok := Parameterize(tc.sql)
		if tc.want == "" {
			if ok {
				t.Errorf("Parameterize(%q) = %q, want not parameterizable", tc.sql, p.Text)
			}
			continue
		}
		if !ok {
			t.Errorf("Parameterize(%q): not parameterizable, want %q", tc.sql, tc.want)
			continue
		}
		if p.Text != tc.want || !slices.Equal(p.Values, tc.values) || (tc.types != nil && !slices.Equal(p.Types, tc.types)) {
			t.Errorf("Parameterize(%q)\n got %q %q %v\nwant %q %q %v", tc.sql, p.Text, p.Values, p.Types, tc.want, tc.values, tc.types)
		}
		if len(p.Text) != len(tc.sql) {
			t.Errorf("Parameterize(%q): length changed", tc.sql)
		}
	}
}
