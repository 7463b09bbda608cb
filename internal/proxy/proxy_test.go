package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

func TestReadsLocalWritesPrimary(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t)
	var inRecovery bool
	var node string
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), current_setting('cluster_name')").Scan(&inRecovery, &node); err != nil {
		t.Fatal(err)
	}
	if !inRecovery || node != "west" {
		t.Fatalf("a read ran on %s (in recovery: %v), want the local replica west", node, inRecovery)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kv (k int PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "INSERT INTO kv VALUES (1, 'a') RETURNING current_setting('cluster_name')").Scan(&node); err != nil {
		t.Fatal(err)
	}
	if node != "primary" {
		t.Fatalf("a write ran on %s, want the primary", node)
	}
	// Both protocols, same answers as a direct connection.
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeDescribeExec} {
		var v string
		if err := conn.QueryRow(ctx, "SELECT v FROM kv WHERE k = $1 /* meridian:primary */", mode, 1).Scan(&v); err != nil || v != "a" {
			t.Fatalf("mode %v: v=%q err=%v", mode, v, err)
		}
	}
}

func TestStatementRouting(t *testing.T) {
	e := newEnv(t, envOptions{logStatements: true})
	ctx := pgtest.Context(t, 2*time.Minute)
	setup := e.connect(t)
	for _, sql := range []string{
		"CREATE TABLE items (id int PRIMARY KEY, name text)",
		"INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 10) g",
		"CREATE SEQUENCE seq",
		"CREATE FUNCTION add_item(i int) RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO items VALUES (i, ''x'') RETURNING id'",
	} {
		if _, err := setup.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
	}
	if err := pgtest.WaitReplayed(ctx, e.replica, pgtest.CurrentLSN(t, e.primary)); err != nil {
		t.Fatal(err)
	}
	if err := e.proxy.SyncDiscovery(ctx); err != nil { // learns add_item is VOLATILE
		t.Fatal(err)
	}
	const P, R = "primary", "west"
	tests := []struct {
		name, sql, want string
	}{
		{"select", "SELECT * FROM items", R},
		{"select lower case", "select id from items where id = 1", R},
		{"select literal for update", "SELECT 'for update' FROM items", R},
		{"values", "VALUES (1), (2)", R},
		{"table", "TABLE items", R},
		{"show", "SHOW search_path", R},
		{"explain select", "EXPLAIN SELECT * FROM items", R},
		{"join", "SELECT a.id FROM items a JOIN items b USING (id)", R},
		{"cte read", "WITH x AS (SELECT id FROM items) SELECT * FROM x", R},
		{"aggregate", "SELECT count(*), max(name) FROM items", R},
		{"now", "SELECT now(), random()", R},
		{"copy to", "COPY items TO STDOUT", R},
		{"copy query to", "COPY (SELECT 1) TO STDOUT", R},
		{"multi-statement transaction", "BEGIN READ ONLY; SELECT 1; COMMIT", P}, // conservative: transaction control in a multi-statement text
		{"two reads", "SELECT 1; SELECT 2", R},
		{"replica hint", "SELECT 1 /* meridian:replica */", R},
		{"insert", "INSERT INTO items VALUES (100, 'x')", P},
		{"update", "UPDATE items SET name = 'y' WHERE id = 100", P},
		{"delete", "DELETE FROM items WHERE id = 100", P},
		{"merge", "MERGE INTO items t USING (SELECT 101 AS id) s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'm')", P},
		{"upsert", "INSERT INTO items VALUES (1, 'z') ON CONFLICT (id) DO NOTHING", P},
		{"for update", "SELECT * FROM items WHERE id = 1 FOR UPDATE", P},
		{"for share", "SELECT * FROM items FOR SHARE", P},
		{"for no key update", "select * from items for no key update", P},
		{"for update in subquery", "SELECT * FROM (SELECT * FROM items FOR UPDATE) s", P},
		{"writing cte", "WITH d AS (DELETE FROM items WHERE id = 101 RETURNING *) SELECT * FROM d", P},
		{"nextval", "SELECT nextval('seq')", P},
		{"setval", "SELECT setval('seq', 10)", P},
		{"volatile user function", "SELECT add_item(200)", P},
		{"select into", "SELECT * INTO items_copy FROM items", P},
		{"create table", "CREATE TABLE t2 (a int)", P},
		{"alter table", "ALTER TABLE t2 ADD COLUMN b int", P},
		{"create index", "CREATE INDEX ON t2 (a)", P},
		{"drop table", "DROP TABLE t2", P},
		{"truncate", "TRUNCATE items_copy", P},
		{"grant", "GRANT SELECT ON items TO PUBLIC", P},
		{"comment", "COMMENT ON TABLE items IS 'things'", P},
		{"vacuum", "VACUUM items", P},
		{"analyze", "ANALYZE items", P},
		{"lock", "BEGIN; LOCK TABLE items IN SHARE MODE; COMMIT", P},
		{"xact advisory lock", "SELECT pg_advisory_xact_lock(42)", P},
		{"copy from", "COPY items FROM STDIN", P},
		{"explicit transaction", "BEGIN; SELECT 1; COMMIT", P},
		{"mixed multi statement", "SELECT 1; DELETE FROM items WHERE id = -1", P},
		{"primary hint", "SELECT 1 /* meridian:primary */", P},
		{"explain analyze write", "EXPLAIN ANALYZE DELETE FROM items WHERE id = -1", P},
		{"do block", "DO $$ BEGIN PERFORM 1; END $$", P},
		{"notify", "NOTIFY chan", P},
		{"txid", "SELECT txid_current()", P},
		{"current wal lsn", "SELECT pg_current_wal_lsn()", P},
		{"set", "SET work_mem = '8MB'", P},
		{"call-less refresh", "CREATE MATERIALIZED VIEW mv AS SELECT 1 AS a", P},
	}
	conn := e.connect(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marker := fmt.Sprintf("mdn-case-%d-%d", i, time.Now().UnixNano())
			sql := tt.sql + " /* " + marker + " */"
			if strings.Contains(tt.sql, "COPY items FROM STDIN") {
				_, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("300\tc\n"), sql)
				if err != nil {
					t.Fatal(err)
				}
			} else if strings.Contains(tt.sql, "TO STDOUT") {
				if _, err := conn.PgConn().CopyTo(ctx, io.Discard, sql); err != nil {
					t.Fatal(err)
				}
			} else if _, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			got := e.served(t, marker)
			if len(got) != 1 || got[0] != tt.want {
				t.Fatalf("%q ran on %v, want only %s", tt.sql, got, tt.want)
			}
		})
	}
}

func TestExplicitTransactions(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t)
	node := func(tx pgx.Tx) string {
		t.Helper()
		var n string
		if err := tx.QueryRow(ctx, "SELECT current_setting('cluster_name')").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, tc := range []struct {
		name string
		opts pgx.TxOptions
		want string
	}{
		{"read write", pgx.TxOptions{}, "primary"},
		{"read only", pgx.TxOptions{AccessMode: pgx.ReadOnly}, "west"},
		{"repeatable read read only", pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, "west"},
		// A hot standby cannot run SERIALIZABLE transactions at all.
		{"serializable read only", pgx.TxOptions{IsoLevel: pgx.Serializable, AccessMode: pgx.ReadOnly}, "primary"},
	} {
		tx, err := conn.BeginTx(ctx, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := node(tx); got != tc.want {
			t.Errorf("%s transaction ran on %s, want %s", tc.name, got, tc.want)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// BEGIN; SET TRANSACTION READ ONLY → replica (psql style, simple protocol).
	var n string
	results, err := conn.PgConn().Exec(ctx, "BEGIN").ReadAll()
	if err != nil || len(results) != 1 {
		t.Fatal(err)
	}
	if _, err := conn.PgConn().Exec(ctx, "SET TRANSACTION READ ONLY").ReadAll(); err != nil {
		t.Fatal(err)
	}
	res, err := conn.PgConn().Exec(ctx, "SELECT current_setting('cluster_name')").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	n = string(res[0].Rows[0][0])
	if _, err := conn.PgConn().Exec(ctx, "COMMIT").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if n != "west" {
		t.Errorf("BEGIN; SET TRANSACTION READ ONLY ran on %s, want west", n)
	}
	// A session with default_transaction_read_only sends transactions to the replica.
	ro := e.connect(t, "options='-c default_transaction_read_only=on'")
	tx, err := ro.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := node(tx); got != "west" {
		t.Errorf("default_transaction_read_only session's transaction ran on %s, want west", got)
	}
	tx.Rollback(ctx)
	// Writes inside a transaction commit once.
	if _, err := conn.Exec(ctx, "CREATE TABLE acct (id int PRIMARY KEY, bal int)"); err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO acct VALUES (1, 100), (2, 0)"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE acct SET bal = bal + 10 WHERE id = 2")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var sum int
	if err := conn.QueryRow(ctx, "SELECT sum(bal) FROM acct /* meridian:primary */").Scan(&sum); err != nil || sum != 110 {
		t.Fatalf("sum = %d, %v", sum, err)
	}
}

func TestCopyBothDirections(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t)
	if _, err := conn.Exec(ctx, "CREATE TABLE c (id int, name text)"); err != nil {
		t.Fatal(err)
	}
	// pgx describes the table with a read, which goes to the replica: let it catch up (read-your-writes
	// across the split is the read-consistency work).
	if err := pgtest.WaitReplayed(ctx, e.replica, pgtest.CurrentLSN(t, e.primary)); err != nil {
		t.Fatal(err)
	}
	rows := make([][]any, 5000)
	for i := range rows {
		rows[i] = []any{i, fmt.Sprintf("row %d", i)}
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"c"}, []string{"id", "name"}, pgx.CopyFromRows(rows))
	if err != nil || n != 5000 {
		t.Fatalf("CopyFrom = %d, %v", n, err)
	}
	var buf strings.Builder
	tag, err := conn.PgConn().CopyTo(ctx, &buf, "COPY (SELECT * FROM c ORDER BY id) TO STDOUT /* meridian:primary */")
	if err != nil || tag.RowsAffected() != 5000 || !strings.HasPrefix(buf.String(), "0\trow 0\n") {
		t.Fatalf("CopyTo: %v rows, err %v, start %q", tag.RowsAffected(), err, buf.String()[:min(20, buf.Len())])
	}
	// A failing COPY leaves the connection usable.
	_, err = conn.PgConn().CopyFrom(ctx, strings.NewReader("not-a-number\tx\n"), "COPY c FROM STDIN")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "22P02" {
		t.Fatalf("bad COPY data: err = %v, want 22P02", err)
	}
	var count int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM c /* meridian:primary */").Scan(&count); err != nil || count != 5000 {
		t.Fatalf("count = %d, %v", count, err)
	}
}

func TestCancelReachesTheServer(t *testing.T) {
	e := newEnv(t, envOptions{})
	conn := e.connect(t)
	for _, sql := range []string{"SELECT pg_sleep(30)", "SELECT pg_sleep(30) /* meridian:primary */"} {
		start := time.Now()
		done := make(chan struct{})
		node := e.replica
		if strings.Contains(sql, "primary") {
			node = e.primary
		}
		watch := pgtest.Conn(t, node)
		go func() {
			defer close(done)
			// Cancel once the statement runs on its server (a cancel that arrives before it
			// would cancel nothing, and the test would wait 30 s).
			ctx := pgtest.Context(t, time.Minute)
			if err := pgtest.WaitFor(ctx, 5*time.Millisecond, func(ctx context.Context) (bool, error) {
				var n int
				err := watch.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = $1", sql).Scan(&n)
				return n == 1, err
			}); err != nil {
				t.Errorf("the statement never ran: %v", err)
				return
			}
			if err := conn.PgConn().CancelRequest(context.Background()); err != nil {
				t.Errorf("cancel request: %v", err)
			}
		}()
		_, err := conn.Exec(context.Background(), sql)
		<-done
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			t.Fatalf("%s: err = %v, want 57014 (query_canceled)", sql, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("%s: cancel took %v", sql, d)
		}
	}
	// The connection is still usable after the cancel.
	var one int
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatal(err)
	}
}

func TestPreparedStatementsMoveBetweenServerConnections(t *testing.T) {
	// pool_size 1 and several clients: each statement lands on whatever connection is free, and
	// reads and writes alternate between nodes, so prepared statements must be re-prepared.
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.PoolSize = 2 }})
	ctx := pgtest.Context(t, 2*time.Minute)
	setup := e.connect(t)
	if _, err := setup.Exec(ctx, "CREATE TABLE ps (id int PRIMARY KEY, v int)"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 6 {
		wg.Go(func() {
			conn, err := pgx.Connect(ctx, e.connString())
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			for i := range 40 {
				id := w*1000 + i
				if _, err := conn.Exec(ctx, "INSERT INTO ps VALUES ($1, $2)", id, i); err != nil {
					errs <- fmt.Errorf("insert: %w", err)
					return
				}
				var v int
				if err := conn.QueryRow(ctx, "SELECT v FROM ps WHERE id = $1 /* meridian:primary */", id).Scan(&v); err != nil || v != i {
					errs <- fmt.Errorf("select %d: v=%d err=%v", id, v, err)
					return
				}
				var n int
				if err := conn.QueryRow(ctx, "SELECT count(*) FROM ps WHERE id >= $1", 0).Scan(&n); err != nil {
					errs <- fmt.Errorf("replica select: %w", err)
					return
				}
			}
			// Deallocation through the protocol and SQL.
			if _, err := conn.Prepare(ctx, "mine", "SELECT $1::int + 1"); err != nil {
				errs <- err
				return
			}
			var two int
			if err := conn.QueryRow(ctx, "mine", 1).Scan(&two); err != nil || two != 2 {
				errs <- fmt.Errorf("named statement: %d %v", two, err)
				return
			}
			if err := conn.Deallocate(ctx, "mine"); err != nil {
				errs <- err
				return
			}
			if _, err := conn.Exec(ctx, "mine", 1); err == nil {
				errs <- errors.New("a deallocated statement still ran")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var n int
	if err := setup.QueryRow(ctx, "SELECT count(*) FROM ps /* meridian:primary */").Scan(&n); err != nil || n != 240 {
		t.Fatalf("rows = %d, %v", n, err)
	}
}

func TestSessionStateFollowsTheClient(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.PoolSize = 1 }})
	ctx := pgtest.Context(t, time.Minute)
	a, b := e.connect(t), e.connect(t)
	if _, err := a.Exec(ctx, "SET application_name = 'client-a'"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "SET statement_timeout = '12s'"); err != nil {
		t.Fatal(err)
	}
	for range 3 { // the two clients share one server connection per node
		var an, at, bn, bt string
		if err := a.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('statement_timeout')").Scan(&an, &at); err != nil {
			t.Fatal(err)
		}
		if err := b.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('statement_timeout')").Scan(&bn, &bt); err != nil {
			t.Fatal(err)
		}
		if an != "client-a" || at != "12s" || bn == "client-a" || bt != "0" {
			t.Fatalf("a sees (%s, %s), b sees (%s, %s): session state leaked or was lost", an, at, bn, bt)
		}
	}
	// A SET inside a rolled-back transaction does not stick.
	tx, _ := a.Begin(ctx)
	tx.Exec(ctx, "SET statement_timeout = '99s'")
	tx.Rollback(ctx)
	var at string
	if err := a.QueryRow(ctx, "SHOW statement_timeout").Scan(&at); err != nil || at != "12s" {
		t.Fatalf("after rollback statement_timeout = %s, %v", at, err)
	}
	if _, err := a.Exec(ctx, "RESET ALL"); err != nil {
		t.Fatal(err)
	}
	if err := a.QueryRow(ctx, "SHOW statement_timeout").Scan(&at); err != nil || at != "0" {
		t.Fatalf("after RESET ALL statement_timeout = %s, %v", at, err)
	}
	// SET meridian.route is the proxy's own.
	if _, err := b.Exec(ctx, "SET meridian.route = primary"); err != nil {
		t.Fatal(err)
	}
	var node, mode string
	if err := b.QueryRow(ctx, "SELECT current_setting('cluster_name')").Scan(&node); err != nil || node != "primary" {
		t.Fatalf("with meridian.route=primary a read ran on %s (%v)", node, err)
	}
	if err := b.QueryRow(ctx, "SHOW meridian.route", pgx.QueryExecModeSimpleProtocol).Scan(&mode); err != nil || mode != "primary" {
		t.Fatalf("SHOW meridian.route = %q, %v", mode, err)
	}
	if _, err := b.Exec(ctx, "SET meridian.route = sideways"); err == nil {
		t.Fatal("an invalid meridian.route was accepted")
	}
}

func TestPinnedFeaturesKeepWorking(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.PoolSize = 3 }})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t)
	others := []*pgx.Conn{e.connect(t), e.connect(t)}
	steps := []string{
		"CREATE TEMP TABLE scratch (a int)",
		"INSERT INTO scratch VALUES (1)",
		"PREPARE q AS SELECT count(*) FROM scratch",
		"DECLARE cur CURSOR WITH HOLD FOR SELECT a FROM scratch",
		"SELECT pg_advisory_lock(7)",
	}
	for _, sql := range steps {
		if _, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		// Others run in between and would take the connection if the client were not pinned.
		for _, o := range others {
			if _, err := o.Exec(ctx, "SELECT 1 /* meridian:primary */"); err != nil {
				t.Fatal(err)
			}
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "EXECUTE q", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 1 {
		t.Fatalf("EXECUTE q = %d, %v", n, err)
	}
	if err := conn.QueryRow(ctx, "FETCH 1 FROM cur", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 1 {
		t.Fatalf("FETCH from the hold cursor = %d, %v", n, err)
	}
	body := httpGet(t, "http://"+e.proxy.HTTPAddr()+"/metrics")
	if !strings.Contains(body, `meridian_proxy_pins_total{reason="temp-table"} 1`) {
		t.Errorf("metrics do not count the pin:\n%s", grepLines(body, "pins"))
	}
}

func TestServerDeathMidTransaction(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t)
	if _, err := conn.Exec(ctx, "CREATE TABLE d (a int)"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := tx.QueryRow(ctx, "INSERT INTO d VALUES (1) RETURNING pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	admin := pgtest.Conn(t, e.primary)
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "INSERT INTO d VALUES (2)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !strings.HasPrefix(pe.Code, "08") && !strings.HasPrefix(pe.Code, "57") {
		t.Fatalf("statement on a killed server connection: err = %v, want an 08xxx or 57P01 error", err)
	}
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("COMMIT of a transaction whose server died reported success")
	}
	// The next transaction works on the same client connection.
	if _, err := conn.Exec(ctx, "INSERT INTO d VALUES (3)"); err != nil {
		t.Fatalf("next statement: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM d /* meridian:primary */").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows = %d, %v (only the row after the failure may exist)", n, err)
	}
}

func TestNodeFailures(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t)
	if _, err := conn.Exec(ctx, "CREATE TABLE f (a int)"); err != nil {
		t.Fatal(err)
	}
	// The local replica dies: reads move to the primary within a poll interval.
	e.replica.Kill()
	// No read may fail meanwhile: one sent to the dead replica before discovery noticed runs on the
	// primary (nothing of it reached the replica).
	err := pgtest.WaitFor(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		var node string
		err := conn.QueryRow(ctx, "SELECT current_setting('cluster_name')").Scan(&node)
		return err == nil && node == "primary", err
	})
	if err != nil {
		t.Fatalf("reads did not move off the dead replica: %v", err)
	}
	if err := e.replica.Start(ctx); err != nil {
		t.Fatal(err)
	}
	err = pgtest.WaitFor(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		var node string
		err := conn.QueryRow(ctx, "SELECT current_setting('cluster_name')").Scan(&node)
		return err == nil && node == "west", err
	})
	if err != nil {
		t.Fatalf("reads did not return to the replica: %v", err)
	}
	// The primary dies: writes fail with a clear error, reads continue.
	e.primary.Kill()
	err = pgtest.WaitFor(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		_, err := conn.Exec(ctx, "INSERT INTO f VALUES (1)")
		var pe *pgconn.PgError
		switch {
		case errors.As(err, &pe) && pe.Code == "57P03":
			return true, nil
		case errors.As(err, &pe) && pe.Code == "08006":
			return false, nil // the dead primary's connection, until discovery notices
		}
		return false, fmt.Errorf("a write with the primary dead: %v, want 08006 then 57P03", err)
	})
	if err != nil {
		t.Fatalf("writes did not fail with 57P03 after the primary died: %v", err)
	}
	_, err = conn.Exec(ctx, "INSERT INTO f VALUES (1)")
	if !strings.Contains(err.Error(), "the primary primary (region us-east-1) does not answer this proxy") {
		t.Errorf("write error does not say what is wrong: %v", err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT count(*) + 1 FROM f").Scan(&one); err != nil {
		t.Fatalf("reads stopped with the primary down: %v", err)
	}
	if code := httpStatus(t, "http://"+e.proxy.HTTPAddr()+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d with no primary, want 503", code)
	}
}

func TestPoolExhaustionAndClientLimit(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) {
		c.PoolSize = 1
		c.QueryWaitTimeout = 300 * time.Millisecond
		c.MaxClientConn = 3
	}})
	ctx := pgtest.Context(t, time.Minute)
	a, b := e.connect(t), e.connect(t)
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	_, err = b.Exec(ctx, "SELECT 1 /* meridian:primary */")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "53300" {
		t.Fatalf("with the pool busy: err = %v, want 53300", err)
	}
	tx.Rollback(ctx)
	if _, err := b.Exec(ctx, "SELECT 1 /* meridian:primary */"); err != nil {
		t.Fatalf("after the pool freed up: %v", err)
	}
	_ = e.connect(t)
	_, err = pgx.Connect(ctx, e.connString())
	if !errors.As(err, &pe) || pe.Code != "53300" {
		t.Fatalf("client over max_client_conn: err = %v, want 53300", err)
	}
}

func TestPgxPoolConcurrentMixedLoad(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, 2*time.Minute)
	pool, err := pgxpool.New(ctx, e.connString("pool_max_conns=50"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "CREATE TABLE load (worker int, i int, PRIMARY KEY (worker, i))"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for w := range 50 {
		wg.Go(func() {
			for i := range 20 {
				if _, err := pool.Exec(ctx, "INSERT INTO load VALUES ($1, $2)", w, i); err != nil {
					errs <- err
					return
				}
				var n int
				if err := pool.QueryRow(ctx, "SELECT count(*) FROM load WHERE worker = $1 /* meridian:primary */", w).Scan(&n); err != nil || n != i+1 {
					errs <- fmt.Errorf("worker %d read %d rows after %d inserts (%v)", w, n, i+1, err)
					return
				}
				if err := pool.QueryRow(ctx, "SELECT count(*) FROM load WHERE worker = $1", w).Scan(&n); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestSessionPoolMode(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) {
		c.PoolMode = proxy.PoolSession
		c.PoolSize = 1
	}})
	ctx := pgtest.Context(t, time.Minute)
	a := e.connect(t)
	var pidA int
	if err := a.QueryRow(ctx, "SELECT pg_backend_pid() /* meridian:primary */").Scan(&pidA); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{"SET work_mem = '7MB'", "CREATE TEMP TABLE mine (a int)", "INSERT INTO mine VALUES (1)"} {
		if _, err := a.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var wm string
	var n, pid int
	if err := a.QueryRow(ctx, "SELECT current_setting('work_mem'), (SELECT count(*) FROM mine), pg_backend_pid() /* meridian:primary */").Scan(&wm, &n, &pid); err != nil {
		t.Fatal(err)
	}
	if wm != "7MB" || n != 1 || pid != pidA {
		t.Fatalf("session mode lost the session: work_mem=%s rows=%d pid %d→%d", wm, n, pidA, pid)
	}
	if uint32(pidA) != a.PgConn().PID() {
		t.Fatalf("BackendKeyData PID %d, pg_backend_pid() %d: in session mode they are the same", a.PgConn().PID(), pidA)
	}
	a.Close(ctx)
	// The primary backend whose PID client A saw ends with A's session (docs/proxy.md): with
	// pool_size 1 the next client gets a new one, and nothing of A's session.
	b := e.connect(t)
	var temp *string
	if err := b.QueryRow(ctx, "SELECT current_setting('work_mem'), to_regclass('mine')::text, pg_backend_pid() /* meridian:primary */").Scan(&wm, &temp, &pid); err != nil {
		t.Fatal(err)
	}
	if pid == pidA {
		t.Fatalf("the next client got backend %d, whose PID client A saw", pid)
	}
	if wm == "7MB" || temp != nil {
		t.Fatalf("session state leaked to the next client: work_mem=%s temp table=%v", wm, temp)
	}
	// Replica connections are still pooled between sessions (pool_size 1: C gets B's), reset with
	// DISCARD ALL.
	for _, sql := range []string{"SET work_mem = '9MB'", "SELECT count(*) FROM pg_class"} {
		if _, err := b.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	b.Close(ctx)
	c := e.connect(t)
	if err := c.QueryRow(ctx, "SELECT current_setting('work_mem') FROM pg_class LIMIT 1").Scan(&wm); err != nil {
		t.Fatal(err)
	}
	if wm == "9MB" {
		t.Fatal("session state leaked to the next client on the replica connection")
	}
}
