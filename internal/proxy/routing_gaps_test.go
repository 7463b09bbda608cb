package proxy_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/pgtest"
)

// Routing gaps of issue 13 §4, each against a real primary and a replica that applies commits
// applyDelay late (so that a read wrongly sent to the replica misses a write deterministically).

// simple runs sql with the simple protocol.
func simple(ctx context.Context, conn *pgx.Conn, sql string) error {
	_, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	return err
}

// onReplica runs SELECT pg_is_in_recovery() (simple protocol) and says whether a replica answered.
func onReplica(ctx context.Context, conn *pgx.Conn, sql string) (bool, error) {
	var r bool
	err := conn.QueryRow(ctx, sql, pgx.QueryExecModeSimpleProtocol).Scan(&r)
	return r, err
}

func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// TestReadYourWritesAfterCopy: in session mode a read right after COPY ... FROM STDIN sees the copied
// rows (nothing can be pipelined behind a COPY; the next read waits for the primary's position). Both
// the next simple and extended read.
func TestReadYourWritesAfterCopy(t *testing.T) {
	e := newLaggingEnv(t, 2*time.Second)
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE rg_copy (id int)")
	if err := pgtest.WaitReplayed(ctx, e.replica, pgtest.CurrentLSN(t, e.primary)); err != nil {
		t.Fatal(err)
	}
	conn := e.connect(t)
	for round, n := range []int{3, 5} {
		if _, err := conn.PgConn().CopyFrom(ctx, strings.NewReader(strings.Repeat("1\n", n)), "COPY rg_copy FROM STDIN"); err != nil {
			t.Fatal(err)
		}
		want := 3
		if round == 1 {
			want = 8
		}
		var got int
		var replica bool
		q := "SELECT count(*), pg_is_in_recovery() FROM rg_copy"
		var err error
		if round == 0 {
			err = conn.QueryRow(ctx, q, pgx.QueryExecModeSimpleProtocol).Scan(&got, &replica)
		} else {
			err = conn.QueryRow(ctx, q).Scan(&got, &replica)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("round %d: read after COPY FROM STDIN saw %d rows (replica: %v), want %d", round, got, replica, want)
		}
		t.Logf("round %d: %d rows, served by the replica: %v", round, got, replica)
	}
	if lsn := conn.PgConn().ParameterStatus("meridian.commit_lsn"); lsn == "" {
		t.Error("no meridian.commit_lsn reported after the COPY")
	}
}

// TestSessionCharacteristicsRouting: transaction characteristics set for the session, at startup or
// per transaction decide where its statements may run, as directly: a hot standby refuses
// serializable transactions, and READ WRITE overrides default_transaction_read_only.
func TestSessionCharacteristicsRouting(t *testing.T) {
	e := newLaggingEnv(t, 2*time.Second)
	ctx := pgtest.Context(t, 2*time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE rg_sc (id int)")
	if err := pgtest.WaitReplayed(ctx, e.replica, pgtest.CurrentLSN(t, e.primary)); err != nil {
		t.Fatal(err)
	}
	const isReplica = "SELECT pg_is_in_recovery()"
	// serializable checks a session whose default isolation is serializable. replicaRR: a REPEATABLE
	// READ READ ONLY transaction may use the replica. (Not with the setting as a startup parameter:
	// the proxy replays startup values with set_config(), a query a standby refuses to run in the
	// session's serializable default; the SET statement form replays fine.)
	serializable := func(t *testing.T, conn *pgx.Conn, replicaRR bool) {
		t.Helper()
		if r, err := onReplica(ctx, conn, isReplica); err != nil || r {
			t.Fatalf("simple read: replica %v, err %v; want the primary (a standby refuses serializable)", r, err)
		}
		var r bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery() AND $1::int = 1", 1).Scan(&r); err != nil || r {
			t.Fatalf("extended read: replica %v, err %v; want the primary", r, err)
		}
		for _, sql := range []string{"BEGIN READ ONLY", "SELECT count(*) FROM rg_sc", "COMMIT"} {
			if err := simple(ctx, conn, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		if !replicaRR {
			return
		}
		// An explicit isolation level other than serializable makes a read-only transaction a
		// replica's again.
		for _, sql := range []string{"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"} {
			if err := simple(ctx, conn, sql); err != nil {
				t.Fatal(err)
			}
		}
		if r, err := onReplica(ctx, conn, isReplica); err != nil || !r {
			t.Fatalf("repeatable read read only transaction: replica %v, err %v; want the replica", r, err)
		}
		if err := simple(ctx, conn, "COMMIT"); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("SET default_transaction_isolation", func(t *testing.T) {
		conn := e.connect(t)
		if err := simple(ctx, conn, "SET default_transaction_isolation = 'serializable'"); err != nil {
			t.Fatal(err)
		}
		serializable(t, conn, true)
		if err := simple(ctx, conn, "RESET default_transaction_isolation"); err != nil {
			t.Fatal(err)
		}
		if r, err := onReplica(ctx, conn, isReplica); err != nil || !r {
			t.Fatalf("after RESET: replica %v, err %v; want the replica", r, err)
		}
	})
	t.Run("SET SESSION CHARACTERISTICS", func(t *testing.T) {
		conn := e.connect(t)
		if err := simple(ctx, conn, "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"); err != nil {
			t.Fatal(err)
		}
		serializable(t, conn, true)
	})
	t.Run("startup options", func(t *testing.T) {
		conn := e.connect(t, "options='-c default_transaction_isolation=serializable'")
		serializable(t, conn, false)
		if err := simple(ctx, conn, "RESET ALL"); err != nil {
			t.Fatal(err)
		}
		serializable(t, conn, false) // RESET returns to the value the session started with
	})
	t.Run("read write under default_transaction_read_only", func(t *testing.T) {
		conn := e.connect(t)
		if err := simple(ctx, conn, "SET default_transaction_read_only = on"); err != nil {
			t.Fatal(err)
		}
		for _, script := range [][]string{
			{"BEGIN READ WRITE", "INSERT INTO rg_sc VALUES (1)", "COMMIT"},
			{"BEGIN", "SET TRANSACTION READ WRITE", "INSERT INTO rg_sc VALUES (2)", "COMMIT"},
			{"START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE", "INSERT INTO rg_sc VALUES (3)", "COMMIT"},
		} {
			for _, sql := range script {
				if err := simple(ctx, conn, sql); err != nil {
					t.Fatalf("%s: %v", strings.Join(script, "; "), err)
				}
			}
		}
		// A plain BEGIN is read only, as directly: the replica may serve it.
		if err := simple(ctx, conn, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		if r, err := onReplica(ctx, conn, isReplica); err != nil || !r {
			t.Fatalf("read-only by default: replica %v, err %v; want the replica", r, err)
		}
		if err := simple(ctx, conn, "INSERT INTO rg_sc VALUES (4)"); sqlstate(err) != "25006" {
			t.Fatalf("insert in a read-only transaction: %v, want 25006 as directly", err)
		}
		if err := simple(ctx, conn, "ROLLBACK"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("SET TRANSACTION after BEGIN", func(t *testing.T) {
		conn := e.connect(t)
		for _, sql := range []string{"BEGIN", "SET TRANSACTION READ ONLY", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"} {
			if err := simple(ctx, conn, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		var iso string
		if err := conn.QueryRow(ctx, "SHOW transaction_isolation", pgx.QueryExecModeSimpleProtocol).Scan(&iso); err != nil || iso != "serializable" {
			t.Fatalf("SHOW transaction_isolation = %q, %v", iso, err)
		}
		if err := simple(ctx, conn, "SELECT count(*) FROM rg_sc"); err != nil {
			t.Fatal(err)
		}
		if err := simple(ctx, conn, "COMMIT"); err != nil {
			t.Fatal(err)
		}
		// SET TRANSACTION READ ONLY alone keeps the transaction on the replica.
		for _, sql := range []string{"BEGIN", "SET TRANSACTION READ ONLY"} {
			if err := simple(ctx, conn, sql); err != nil {
				t.Fatal(err)
			}
		}
		if r, err := onReplica(ctx, conn, isReplica); err != nil || !r {
			t.Fatalf("BEGIN; SET TRANSACTION READ ONLY: replica %v, err %v; want the replica", r, err)
		}
		if err := simple(ctx, conn, "COMMIT"); err != nil {
			t.Fatal(err)
		}
		if err := simple(ctx, conn, "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE"); err != nil {
			t.Fatal(err)
		}
		if r, err := onReplica(ctx, conn, isReplica); err != nil || r {
			t.Fatalf("serializable read only deferrable: replica %v, err %v; want the primary", r, err)
		}
		if err := simple(ctx, conn, "COMMIT"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPrimaryOnlyInReadOnlyTransactions: advisory locks, transaction ids and LISTEN inside BEGIN READ
// ONLY work as directly when they are the transaction's first statement (the transaction then runs
// on the primary); an advisory lock later in a transaction already on the replica is refused rather
// than taken where it excludes no one.
func TestPrimaryOnlyInReadOnlyTransactions(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	direct := pgtest.Conn(t, e.primary)
	tryLock := func(key int) bool {
		t.Helper()
		var ok bool
		if err := direct.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", key).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	t.Run("simple protocol", func(t *testing.T) {
		conn := e.connect(t)
		for _, sql := range []string{"BEGIN READ ONLY", "SELECT pg_advisory_xact_lock(4242)"} {
			if err := simple(ctx, conn, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		if tryLock(4242) {
			t.Fatal("the advisory lock taken through the proxy does not exclude a session on the primary")
		}
		if err := simple(ctx, conn, "SELECT txid_current()"); err != nil {
			t.Fatal(err)
		}
		if err := simple(ctx, conn, "COMMIT"); err != nil {
			t.Fatal(err)
		}
		if !tryLock(4242) {
			t.Fatal("lock still held after COMMIT")
		}
	})
	t.Run("extended protocol", func(t *testing.T) {
		conn := e.connect(t)
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", 4343); err != nil {
			t.Fatal(err)
		}
		if tryLock(4343) {
			t.Fatal("the advisory lock taken through the proxy does not exclude a session on the primary")
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("txid_current first", func(t *testing.T) {
		conn := e.connect(t)
		for _, sql := range []string{"BEGIN READ ONLY", "SELECT txid_current()", "SELECT 1", "COMMIT"} {
			if err := simple(ctx, conn, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
	})
	t.Run("LISTEN first", func(t *testing.T) {
		conn := e.connect(t)
		for _, sql := range []string{"BEGIN READ ONLY", "LISTEN rg_chan", "COMMIT"} {
			if err := simple(ctx, conn, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
	})
	t.Run("advisory lock after a read is refused", func(t *testing.T) {
		conn := e.connect(t)
		for _, sql := range []string{"BEGIN READ ONLY", "SELECT 1"} {
			if err := simple(ctx, conn, sql); err != nil {
				t.Fatal(err)
			}
		}
		err := simple(ctx, conn, "SELECT pg_advisory_xact_lock(4444)")
		if sqlstate(err) != "25006" {
			t.Fatalf("advisory lock in a transaction on the replica: %v, want 25006", err)
		}
		if err := simple(ctx, conn, "ROLLBACK"); err != nil {
			t.Fatal(err)
		}
		// The refusal fails the transaction as an error does directly: what follows is refused
		// (25P02) and COMMIT answers ROLLBACK — in both protocols.
		for _, extended := range []bool{false, true} {
			if err := simple(ctx, conn, "BEGIN READ ONLY"); err != nil {
				t.Fatal(err)
			}
			run := func(sql string) *pgconn.Result {
				if extended {
					return conn.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read()
				}
				res, err := conn.PgConn().Exec(ctx, sql).ReadAll()
				if err != nil {
					return &pgconn.Result{Err: err}
				}
				return res[0]
			}
			if r := run("SELECT 1"); r.Err != nil {
				t.Fatal(r.Err)
			}
			if r := run("SELECT pg_advisory_xact_lock(4444)"); sqlstate(r.Err) != "25006" {
				t.Fatalf("extended %v: advisory lock on the replica: %v, want 25006", extended, r.Err)
			}
			if r := run("SELECT 1"); sqlstate(r.Err) != "25P02" {
				t.Fatalf("extended %v: a statement after the refusal: %v, want 25P02 as directly", extended, r.Err)
			}
			if r := run("COMMIT"); r.Err != nil || r.CommandTag.String() != "ROLLBACK" {
				t.Fatalf("extended %v: COMMIT after the refusal: %q, %v; want ROLLBACK as directly", extended, r.CommandTag, r.Err)
			}
		}
		if r, err := onReplica(ctx, conn, "SELECT pg_is_in_recovery()"); err != nil || !r {
			t.Fatalf("after ROLLBACK: replica %v, err %v", r, err)
		}
		// The hint on BEGIN takes the whole transaction to the primary.
		for _, sql := range []string{"BEGIN READ ONLY /* meridian:primary */", "SELECT 1", "SELECT pg_advisory_xact_lock(4444)", "COMMIT"} {
			if err := simple(ctx, conn, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
	})
}

// TestBackendSignalling: pg_backend_pid() runs where pg_cancel_backend() and pg_terminate_backend()
// run — the primary — so that "cancel my other query" finds the backend.
func TestBackendSignalling(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t)
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()", pgx.QueryExecModeSimpleProtocol).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	var n int
	pgtest.QueryRow(t, e.primary, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n)
	if n != 1 {
		t.Fatalf("pg_backend_pid() through the proxy = %d, not a backend of the primary", pid)
	}

	// Cancel a query of another connection by its pid, through the proxy.
	if err := simple(ctx, conn, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "SELECT pg_sleep(60)")
		done <- err
	}()
	direct := pgtest.Conn(t, e.primary)
	if err := pgtest.WaitFor(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		var active bool
		err := direct.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%')", pid).Scan(&active)
		return active, err
	}); err != nil {
		t.Fatal(err)
	}
	other := e.connect(t)
	var ok bool
	if err := other.QueryRow(ctx, "SELECT pg_cancel_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_cancel_backend through the proxy = %v, %v", ok, err)
	}
	if err := <-done; sqlstate(err) != "57014" {
		t.Fatalf("the cancelled query ended with %v, want 57014", err)
	}
	if err := simple(ctx, conn, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
}

// TestVolatileFunctionsPerDatabase: a volatile function created through the proxy is routed to the
// primary from the creating client's next statement on, in any database, not only the monitor's; so
// are views over volatile or writing functions.
func TestVolatileFunctionsPerDatabase(t *testing.T) {
	e := newLaggingEnv(t, 2*time.Second)
	ctx := pgtest.Context(t, 2*time.Minute)
	pgtest.Exec(t, e.primary, "CREATE DATABASE rg_other")
	if err := pgtest.WaitReplayed(ctx, e.replica, pgtest.CurrentLSN(t, e.primary)); err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{"postgres", "rg_other"} {
		t.Run(db, func(t *testing.T) {
			conn := e.connect(t, "dbname="+db)
			other := e.connect(t, "dbname="+db)
			for _, sql := range []string{
				"CREATE TABLE rg_f (a int)",
				"CREATE SEQUENCE rg_seq",
				// Read the function list of this database before the DDL, so that the refresh is
				// what makes the difference.
				"SELECT count(*) FROM rg_f",
				"CREATE FUNCTION rg_touch() RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO rg_f VALUES (1) RETURNING a'",
			} {
				if err := simple(ctx, conn, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			if err := simple(ctx, conn, "SELECT rg_touch()"); err != nil {
				t.Fatalf("volatile function right after CREATE FUNCTION: %v", err)
			}
			var a int
			if err := other.QueryRow(ctx, "SELECT rg_touch()").Scan(&a); err != nil {
				t.Fatalf("another client, extended protocol: %v", err)
			}
			for _, sql := range []string{
				"CREATE OR REPLACE FUNCTION rg_touch2(x int) RETURNS int LANGUAGE plpgsql AS $$BEGIN INSERT INTO rg_f VALUES (x); RETURN x; END$$",
				"SELECT rg_touch2(2)",
				"CREATE VIEW rg_v_seq AS SELECT nextval('rg_seq') AS n",
				"SELECT * FROM rg_v_seq",
				"CREATE VIEW rg_v_fn AS SELECT rg_touch() AS a",
				"SELECT a FROM public.rg_v_fn",
				"CREATE VIEW rg_v_nested AS SELECT * FROM rg_v_fn",
				"SELECT * FROM rg_v_nested",
			} {
				if err := simple(ctx, conn, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			// Plain reads stay on the replica.
			if err := pgtest.WaitReplayed(ctx, e.replica, pgtest.CurrentLSN(t, e.primary)); err != nil {
				t.Fatal(err)
			}
			if r, err := onReplica(ctx, conn, "SELECT pg_is_in_recovery() FROM (SELECT count(*) FROM rg_f) s"); err != nil || !r {
				t.Fatalf("plain read: replica %v, err %v", r, err)
			}
		})
	}
}

// TestSessionConsistencyIsPerConnection: read-your-writes in session mode follows one client
// connection. A read on another connection (a driver pool's) may miss the write; the
// meridian.commit_lsn token set as meridian.min_lsn on the other connection makes it see it.
func TestSessionConsistencyIsPerConnection(t *testing.T) {
	e := newLaggingEnv(t, 2*time.Second)
	ctx := pgtest.Context(t, time.Minute)
	writer, reader := e.connect(t), e.connect(t)
	if _, err := writer.Exec(ctx, "INSERT INTO ryw VALUES ($1, $2)", 1, "one"); err != nil {
		t.Fatal(err)
	}
	got, _, err := readRow(ctx, reader, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got != "" {
		t.Logf("the other connection saw the write without a token (the replica was quick)")
	}
	if _, err := writer.Exec(ctx, "INSERT INTO ryw VALUES ($1, $2)", 2, "two"); err != nil {
		t.Fatal(err)
	}
	token := writer.PgConn().ParameterStatus("meridian.commit_lsn")
	if _, err := reader.Exec(ctx, "SET meridian.min_lsn = '"+token+"'"); err != nil {
		t.Fatal(err)
	}
	got, replica, err := readRow(ctx, reader, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got != "two" {
		t.Fatalf("with the token the other connection read %q, want %q", got, "two")
	}
	t.Logf("with the token: seen, served by the replica: %v", replica)
}

// TestVolatilityLookupIsCached: routing reads a database's function list from memory — not once per
// statement — and reads it again right after DDL that changes it. The servers log every statement;
// the list query is the one naming pg_rewrite.
func TestVolatilityLookupIsCached(t *testing.T) {
	e := newEnv(t, envOptions{logStatements: true})
	ctx := pgtest.Context(t, time.Minute)
	loads := func() int {
		t.Helper()
		b, err := os.ReadFile(filepath.Clean(e.primary.LogPath()))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "FROM pg_catalog.pg_rewrite r")
	}
	conn := e.connect(t)
	if err := simple(ctx, conn, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	before, start := loads(), time.Now()
	const statements = 200
	for i := range statements {
		var n int
		if err := conn.QueryRow(ctx, "SELECT $1::int", i).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	// The discovery poll re-reads the list every tenth poll (100 ms here).
	during, polls := loads()-before, int(time.Since(start)/(10*e.cfg.PollInterval))+1
	if during > polls {
		t.Fatalf("%d list queries during %d statements (%d periodic refreshes expected at most)", during, statements, polls)
	}
	before = loads()
	if err := simple(ctx, conn, "CREATE FUNCTION rg_cached() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1'"); err != nil {
		t.Fatal(err)
	}
	if err := simple(ctx, conn, "SELECT rg_cached()"); err != nil {
		t.Fatal(err)
	}
	if loads() == before {
		t.Fatal("the list was not read again after CREATE FUNCTION")
	}
	t.Logf("%d list queries during %d statements", during, statements)
}
