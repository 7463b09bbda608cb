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
		// An UPDATE's SET value is assigned (coerced to the column's type, foldable): the statement is
		// prepared as it is.
		{sql: "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 99;",
			want: "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 99;"},
		{sql: "select 10, 10, 3000000000, 99999999999999999999, 12.50, 7", want: "select 10, 10, 3000000000, 99999999999999999999, 12.50, 7"},
		{sql: "SELECT a FROM t WHERE a = 10 OR b = 10 OR c > 3000000000 OR d < 99999999999999999999 OR e <= 12.50 OR f = 7",
			want:   "SELECT a FROM t WHERE a = $1 OR b = $1 OR c > $2         OR d < $3                   OR e <= $4    OR f = 7",
			values: []string{"10", "3000000000", "99999999999999999999", "12.50"}, types: []uint32{OIDInt4, OIDInt8, OIDNumeric, OIDNumeric}},
		{sql: "SELECT a + 10, count(*) FROM t GROUP BY a + 10 ORDER BY 1, 20 LIMIT 100",
			want: "SELECT a + 10, count(*) FROM t GROUP BY a + 10 ORDER BY 1, 20 LIMIT 100"},
		// Whole ORDER BY items are output column numbers: they stay, and do not stop the others.
		{sql: "SELECT a, b FROM t WHERE id = 12345 ORDER BY 1, 20 DESC LIMIT 100",
			want: "SELECT a, b FROM t WHERE id = $1    ORDER BY 1, 20 DESC LIMIT $2 ", values: []string{"12345", "100"}},
		{sql: "SELECT 20, b FROM t ORDER BY 20", want: "SELECT 20, b FROM t ORDER BY 20"},
		{sql: "SELECT a FROM t WHERE id = 12345 GROUP BY ALL 10", want: "SELECT a FROM t WHERE id = $1    GROUP BY ALL 10", values: []string{"12345"}},
		{sql: "SELECT * FROM t WHERE id = 12345 ORDER BY -10", want: "SELECT * FROM t WHERE id = 12345 ORDER BY -10"},
		{sql: "SELECT * FROM t WHERE id = 12345 GROUP BY (10)", want: "SELECT * FROM t WHERE id = 12345 GROUP BY (10)"},
		{sql: "SELECT DISTINCT ON (12) a, b FROM t WHERE c = 12", want: "SELECT DISTINCT ON (12) a, b FROM t WHERE c = 12"},
		// Type modifiers are part of the type name, quoted or not.
		{sql: "SELECT x::numeric(10,2), CAST(y AS varchar(20)), CAST(z AS \"varchar\"(10)), w::pg_catalog.\"numeric\"(12,3) FROM t WHERE id = 12345",
			want:   "SELECT x::numeric(10,2), CAST(y AS varchar(20)), CAST(z AS \"varchar\"(10)), w::pg_catalog.\"numeric\"(12,3) FROM t WHERE id = $1   ",
			values: []string{"12345"}},
		{sql: "SELECT 12.345::\"numeric\"(10,2) FROM t WHERE id = 12345", want: "SELECT 12.345::\"numeric\"(10,2) FROM t WHERE id = 12345"},
		{sql: "SELECT bpchar(10) 'abc' FROM t WHERE id = 12345", want: "SELECT bpchar(10) 'abc' FROM t WHERE id = 12345"},
		{sql: "SELECT CURRENT_TIMESTAMP(3), a FROM t WHERE b = 33", want: "SELECT CURRENT_TIMESTAMP(3), a FROM t WHERE b = $1", values: []string{"33"}},
		// Folding: a constant anywhere else keeps every literal.
		{sql: "SELECT CASE WHEN id = 12345 THEN 100/00 END FROM t", want: "SELECT CASE WHEN id = 12345 THEN 100/00 END FROM t"},
		{sql: "SELECT * FROM t WHERE id = 12345 AND to_char(x, '99') = y", want: "SELECT * FROM t WHERE id = 12345 AND to_char(x, '99') = y"},
		{sql: "SELECT * FROM t WHERE 12345 = id", want: "SELECT * FROM t WHERE 12345 = id"},
		{sql: "SELECT * FROM t WHERE (id) = 12345", want: "SELECT * FROM t WHERE (id) = 12345"},
		{sql: "SELECT pg_typeof(-(2147483648)), -(2147483648) * 2", want: "SELECT pg_typeof(-(2147483648)), -(2147483648) * 2"},
		{sql: "SELECT a FROM t WHERE a = -(12345)", want: "SELECT a FROM t WHERE a = -(12345)"},
		{sql: "INSERT INTO t (a, b) VALUES (10, 'x') ON CONFLICT (a) WHERE b > 55 DO UPDATE SET a = 66",
			want: "INSERT INTO t (a, b) VALUES (10, 'x') ON CONFLICT (a) WHERE b > 55 DO UPDATE SET a = 66"},
		{sql: "INSERT INTO t (a, b) VALUES (10, 'x'), (-12345, 'y') ON CONFLICT (a) WHERE b > 55 DO NOTHING RETURNING a",
			want: "INSERT INTO t (a, b) VALUES ($1, 'x'), (-$2   , 'y') ON CONFLICT (a) WHERE b > 55 DO NOTHING RETURNING a", values: []string{"10", "12345"}},
		{sql: "INSERT INTO t SELECT * FROM (VALUES (12345)) v", want: "INSERT INTO t SELECT * FROM (VALUES (12345)) v"},
		{sql: "SELECT * FROM t WHERE id IN (11, 22, 33) AND s = 'it''s 44'",
			want: "SELECT * FROM t WHERE id IN ($1, $2, $3) AND s = 'it''s 44'", values: []string{"11", "22", "33"}},
		{sql: "SELECT * FROM t WHERE id NOT IN (11, -22) AND s LIKE '%10%'",
			want: "SELECT * FROM t WHERE id NOT IN ($1, -$2) AND s LIKE '%10%'", values: []string{"11", "22"}},
		{sql: "SELECT * FROM t WHERE id IN (SELECT 12345)", want: "SELECT * FROM t WHERE id IN (SELECT 12345)"},
		{sql: "SELECT * FROM t WHERE x BETWEEN -10000 AND 20000 AND y BETWEEN SYMMETRIC 30000 AND 40000",
			want: "SELECT * FROM t WHERE x BETWEEN -$1    AND $2    AND y BETWEEN SYMMETRIC $3    AND $4   ", values: []string{"10000", "20000", "30000", "40000"}},
		{sql: "SELECT * FROM t WHERE x BETWEEN 10000 AND 20000 + 1", want: "SELECT * FROM t WHERE x BETWEEN 10000 AND 20000 + 1"},
		{sql: "SELECT * FROM t ORDER BY coalesce(a, 10) LIMIT 10", want: "SELECT * FROM t ORDER BY coalesce(a, 10) LIMIT 10"},
		{sql: "SELECT 1", want: "SELECT 1"},
		{sql: "SELECT x FROM t WHERE x = -2147483648 AND y = -2147483647 AND z = -9223372036854775808",
			want: "SELECT x FROM t WHERE x = -2147483648 AND y = -$1         AND z = -9223372036854775808", values: []string{"2147483647"}},
		{sql: "WITH w AS (DELETE FROM t WHERE a < 100 RETURNING *) SELECT count(*) FROM w",
			want: "WITH w AS (DELETE FROM t WHERE a < $1  RETURNING *) SELECT count(*) FROM w", values: []string{"100"}},
		{sql: "SELECT * FROM t WHERE t.id = 12345 AND \"Q\" <> 67890 LIMIT 10 OFFSET 20000",
			want: "SELECT * FROM t WHERE t.id = $1    AND \"Q\" <> $2    LIMIT $3 OFFSET $4   ", values: []string{"12345", "67890", "10", "20000"}},
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
		// How PostgreSQL reads a backslash in a string depends on standard_conforming_strings.
		{sql: "INSERT INTO t VALUES ('a\\', 12345, ') --')"},
		{sql: "SELECT set_config('datestyle', 'DMY', false)"},
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

func TestPreparableWithParams(t *testing.T) {
	for _, tc := range []struct {
		sql      string
		ok, rows bool
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = $1", true, true},
		{"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)", true, false},
		{"DELETE FROM t WHERE a IN ($1, $2) RETURNING a", true, true},
		{"SELECT * FROM t WHERE a = $1 LIMIT $2", true, true},
		// A generic plan would not fold these the way the unnamed statement's plan does.
		{"UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", false, false},
		{"SELECT CASE WHEN a = $1 THEN 100/0 END FROM t", false, false},
		{"SELECT * FROM t WHERE $1 = a", false, false},
		{"SELECT $1::int + 1", false, false},
		{"SELECT * FROM t WHERE a = $1 AND b = 'x\\'", false, false},
		{"CREATE TABLE t (a int)", false, false},
	} {
		rows, ok := PreparableWithParams(tc.sql)
		if ok != tc.ok || rows != tc.rows {
			t.Errorf("PreparableWithParams(%q) = rows %v, ok %v; want %v, %v", tc.sql, rows, ok, tc.rows, tc.ok)
		}
	}
}

func TestChangesCatalog(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want bool
	}{
		{"CREATE TABLE t (a int)", true},
		{"  alter domain d set default 2", true},
		{"SELECT 1; DROP TYPE rt", true},
		{"DO $$BEGIN END$$", true},
		{"CALL p()", true},
		{"SELECT 1 INTO t2", true},
		{"GRANT SELECT ON t TO u", true},
		{"SELECT E'\\n'; CREATE TABLE x ()", true},
		{"SELECT 1", false},
		{"INSERT INTO t VALUES (1)", false},
		{"BEGIN", false},
		{"SET datestyle = 'ISO, DMY'", false},
		{"SELECT created, dropped FROM t", false},
		{"SELECT E'\\n' AS doc", false},
	} {
		if got := ChangesCatalog(tc.sql); got != tc.want {
			t.Errorf("ChangesCatalog(%q) = %v, want %v", tc.sql, got, tc.want)
		}
	}
}
