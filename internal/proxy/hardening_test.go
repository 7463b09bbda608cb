package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// Regression tests for issue "Proxy hardening", section 1 and 2: nothing of one client reaches
// another, and session state is honoured in both pool modes. Most run with pool_size 1, so that the
// next client gets the very server connection the previous one left.

var poolModes = []proxy.PoolMode{proxy.PoolTransaction, proxy.PoolSession}

func onePool(mode proxy.PoolMode) envOptions {
	return envOptions{configure: func(c *proxy.Config) {
		c.PoolSize = 1
		c.PoolMode = mode
		c.QueryWaitTimeout = 20 * time.Second
	}}
}

// rawClient is a client that speaks the protocol message by message, as a hostile or unusual client
// would.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	fe   *pgproto3.Frontend
}

func (e *env) raw(t *testing.T) *rawClient {
	t.Helper()
	return dialRaw(t, e.proxy.Addr(), nil)
}

func dialRaw(t *testing.T, addr string, params map[string]string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	fe := pgproto3.NewFrontend(conn, conn)
	p := map[string]string{"user": "postgres", "database": "postgres"}
	for k, v := range params {
		p[k] = v
	}
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: p})
	r := &rawClient{t: t, conn: conn, fe: fe}
	r.flush()
	r.until("ReadyForQuery")
	return r
}

func (r *rawClient) send(msgs ...pgproto3.FrontendMessage) {
	r.t.Helper()
	for _, m := range msgs {
		r.fe.Send(m)
	}
	r.flush()
}

func (r *rawClient) flush() {
	r.t.Helper()
	if err := r.fe.Flush(); err != nil {
		r.t.Fatal(err)
	}
}

// until reads messages up to one of the named type (e.g. "ReadyForQuery") and returns the type names
// seen, that one included.
func (r *rawClient) until(last string) []string {
	r.t.Helper()
	var seen []string
	for {
		m, err := r.fe.Receive()
		if err != nil {
			r.t.Fatalf("after %v: %v", seen, err)
		}
		name := reflect.TypeOf(m).Elem().Name()
		if ps, ok := m.(*pgproto3.ParameterStatus); ok && strings.HasPrefix(ps.Name, "meridian.") {
			continue // the proxy's own read-your-writes token (docs/consistency.md)
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			name += "(" + e.Code + ")"
		}
		seen = append(seen, name)
		if strings.HasPrefix(name, last) {
			return seen
		}
	}
}

// direct runs a raw client straight against the primary, to know what PostgreSQL itself answers.
func (e *env) direct(t *testing.T) *rawClient {
	t.Helper()
	return dialRaw(t, e.primary.Endpoint().String(), nil)
}

// queryInt runs sql through a fresh pgx connection and returns its one int.
func (e *env) queryInt(t *testing.T, sql string) int {
	t.Helper()
	ctx := pgtest.Context(t, time.Minute)
	c := e.connect(t)
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, sql, pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// Issue item: an error at Sync (a deferred constraint checked at the implicit commit) arrives after
// CommandComplete; the proxy must still consume its own pipelined commit-position query, or every
// later answer is one statement late.
func TestCommitErrorAtSync(t *testing.T) {
	e := newEnv(t, onePool(proxy.PoolTransaction))
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE dx (f1 int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
	a := e.connect(t)
	for i, want := range []string{"", "23505", "", "23505"} {
		res := a.PgConn().ExecParams(ctx, "INSERT INTO dx VALUES (1)", nil, nil, nil, nil).Read()
		var pe *pgconn.PgError
		got := ""
		if errors.As(res.Err, &pe) {
			got = pe.Code
		} else if res.Err != nil {
			t.Fatalf("insert %d: %v", i, res.Err)
		}
		if i < 2 && got != want {
			t.Fatalf("insert %d: SQLSTATE %q, want %q", i, got, want)
		}
		var n int
		if err := a.QueryRow(ctx, fmt.Sprintf("SELECT %d", 40+i)).Scan(&n); err != nil || n != 40+i {
			t.Fatalf("after insert %d the next statement got %d (err %v), want %d: answers out of step", i, n, err, 40+i)
		}
	}
	// Simple protocol, an explicit transaction: the error at COMMIT.
	if _, err := a.Exec(ctx, "BEGIN; INSERT INTO dx VALUES (1); COMMIT", pgx.QueryExecModeSimpleProtocol); err == nil {
		t.Fatal("duplicate committed")
	}
	a.Close(ctx)
	if n := e.queryInt(t, "SELECT 7"); n != 7 {
		t.Fatalf("the next client got %d for SELECT 7", n)
	}
}

// Issue item: a client sends a new Parse of a text another session prepared before an ALTER TABLE
// changed its result type, with Describe and Flush (postgres.js does). Directly: ParseComplete and a
// description; through the proxy the error, then no answer at all to Bind/Execute/Sync.
func TestNewParseAfterAlterWithFlush(t *testing.T) {
	for _, mode := range poolModes {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, onePool(mode))
			ctx := pgtest.Context(t, time.Minute)
			pgtest.Exec(t, e.primary, "CREATE TABLE pt (a int)")
			pgtest.Exec(t, e.primary, "INSERT INTO pt VALUES (1)")
			const sql = "select * from pt where a = $1 /* meridian:primary */"
			s1 := e.connect(t)
			if _, err := s1.PgConn().Prepare(ctx, "s1", sql, nil); err != nil {
				t.Fatal(err)
			}
			if mode == proxy.PoolTransaction {
				s1.Close(ctx) // the next session gets the connection s1 prepared on
			}
			pgtest.Exec(t, e.primary, "ALTER TABLE pt ADD COLUMN b int")
			var want []string
			for _, r := range []*rawClient{e.direct(t), e.raw(t)} {
				if mode == proxy.PoolSession && len(want) > 0 {
					s1.Close(ctx)
				}
				r.send(&pgproto3.Parse{Name: "s2", Query: sql}, &pgproto3.Describe{ObjectType: 'S', Name: "s2"}, &pgproto3.Flush{})
				got := r.until("RowDescription")
				r.send(&pgproto3.Bind{PreparedStatement: "s2", Parameters: [][]byte{[]byte("1")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
				got = append(got, r.until("ReadyForQuery")...)
				if want == nil {
					want = got
					continue
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("through the proxy: %v\n         directly: %v", got, want)
				}
			}
			if n := e.queryInt(t, "SELECT 8"); n != 8 {
				t.Fatalf("the next client got %d", n)
			}
		})
	}
}

// Issue item (converse): a client's own statement that PostgreSQL keeps refusing after the ALTER must
// keep failing through the proxy too when the connection is the client's own (session mode), not be
// re-prepared behind its back.
func TestOwnStatementStaysStaleInSessionMode(t *testing.T) {
	e := newEnv(t, onePool(proxy.PoolSession))
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE ps (a int)")
	c := e.connect(t)
	if _, err := c.PgConn().Prepare(ctx, "mine", "SELECT * FROM ps /* meridian:primary */", nil); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, e.primary, "ALTER TABLE ps ADD COLUMN b int")
	for i := 0; i < 2; i++ {
		res := c.PgConn().ExecPrepared(ctx, "mine", nil, nil, nil).Read()
		var pe *pgconn.PgError
		if !errors.As(res.Err, &pe) || pe.Code != "0A000" {
			t.Fatalf("run %d of the stale statement: %v, want 0A000 as directly", i, res.Err)
		}
	}
}

// Issue item: client A sends a Query where COPY data should be, then disconnects; client B must get
// its own answers, in order.
func TestCopyProtocolViolationLeavesNothing(t *testing.T) {
	for _, mode := range poolModes {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, onePool(mode))
			pgtest.Exec(t, e.primary, "CREATE TABLE ct (a int)")
			var want []string
			for _, r := range []*rawClient{e.direct(t), e.raw(t)} {
				r.send(&pgproto3.Query{String: "COPY ct FROM STDIN"})
				r.until("CopyInResponse")
				r.send(&pgproto3.Query{String: "SELECT 1"})
				got := r.until("ErrorResponse")
				if want == nil {
					want = got
				} else if !reflect.DeepEqual(got, want) {
					t.Fatalf("through the proxy: %v, directly: %v", got, want)
				}
				r.conn.Close()
			}
			for i := 1; i <= 3; i++ {
				if n := e.queryInt(t, fmt.Sprintf("SELECT %d /* meridian:primary */", i)); n != i {
					t.Fatalf("client %d got %d", i, n)
				}
			}
		})
	}
}

// Issue item: Parse/Bind/Execute of an INSERT plus Flush, no Sync, then the client leaves: the
// implicit transaction must die with it, not be committed by the next client's statement.
func TestPipelineWithoutSyncRollsBack(t *testing.T) {
	for _, mode := range poolModes {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, onePool(mode))
			pgtest.Exec(t, e.primary, "CREATE TABLE ft (a int)")
			r := e.raw(t)
			r.send(&pgproto3.Parse{Query: "INSERT INTO ft VALUES (1)"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{})
			r.until("CommandComplete")
			r.conn.Close()
			if n := e.queryInt(t, "WITH i AS (INSERT INTO ft VALUES (2) RETURNING 1) SELECT count(*) FROM i"); n != 1 {
				t.Fatal("insert")
			}
			if n := e.queryInt(t, "SELECT count(*) FROM ft /* meridian:primary */"); n != 1 {
				t.Fatalf("%d rows after the next client's one insert: the abandoned pipeline's insert was committed", n)
			}
			if n := e.queryInt(t, "SELECT count(*) FROM ft WHERE a = 1 /* meridian:primary */"); n != 0 {
				t.Fatalf("the abandoned insert is in the table")
			}
		})
	}
}

// Issue item: a role set by one client (SET ROLE, SET SESSION AUTHORIZATION) must never carry over
// to the next client of the pooled connection.
func TestRoleNeverCarriesOver(t *testing.T) {
	for _, mode := range poolModes {
		for _, set := range []string{"SET ROLE tenant_a", "SET SESSION AUTHORIZATION tenant_a",
			"SELECT set_config('role', 'tenant_a', false)"} {
			t.Run(string(mode)+"/"+set, func(t *testing.T) {
				e := newEnv(t, onePool(mode))
				ctx := pgtest.Context(t, time.Minute)
				pgtest.Exec(t, e.primary, "CREATE ROLE tenant_a")
				pgtest.Exec(t, e.primary, "CREATE TABLE secret (a int)")
				a := e.connect(t)
				if _, err := a.Exec(ctx, set); err != nil {
					t.Fatal(err)
				}
				var who string
				if err := a.QueryRow(ctx, "SELECT current_user /* meridian:primary */").Scan(&who); err != nil || who != "tenant_a" {
					t.Fatalf("client A runs as %q (%v), want tenant_a", who, err)
				}
				a.Close(ctx)
				b := e.connect(t)
				for _, hint := range []string{"/* meridian:primary */", ""} {
					if err := b.QueryRow(ctx, "SELECT current_user "+hint).Scan(&who); err != nil || who != "postgres" {
						t.Fatalf("the next client runs as %q (%v), want postgres", who, err)
					}
				}
				if _, err := b.Exec(ctx, "SELECT * FROM secret /* meridian:primary */"); err != nil {
					t.Fatalf("the next client lost its own privileges: %v", err)
				}
			})
		}
	}
}

// Issue item: set_config(..., false) changes the session like SET: it must stay with the client that
// made it and never reach the next one.
func TestSetConfigStaysWithItsSession(t *testing.T) {
	for _, mode := range poolModes {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, onePool(mode))
			ctx := pgtest.Context(t, time.Minute)
			pgtest.Exec(t, e.primary, "CREATE TABLE sct (a int)")
			a := e.connect(t)
			if _, err := a.Exec(ctx, "SELECT set_config('search_path', 'pg_catalog', false)"); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				var sp string
				if err := a.QueryRow(ctx, "SELECT current_setting('search_path')").Scan(&sp); err != nil || sp != "pg_catalog" {
					t.Fatalf("client A's search_path is %q (%v) after its set_config", sp, err)
				}
			}
			a.Close(ctx)
			if n := e.queryInt(t, "SELECT count(*) FROM sct /* meridian:primary */"); n != 0 {
				t.Fatal("sct not empty")
			}
		})
	}
}

// Issue item: RESET, RESET ALL and DISCARD ALL return to the values the client connected with (as
// they do directly), also at the next checkout in transaction mode.
func TestResetReturnsToStartupValues(t *testing.T) {
	params := map[string]string{"DateStyle": "German, DMY", "TimeZone": "Asia/Tokyo", "application_name": "resetter",
		"IntervalStyle": "iso_8601"}
	script := []string{
		"SET DateStyle = 'SQL, MDY'", "RESET DateStyle", "SHOW DateStyle",
		"SET TimeZone TO 'UTC'", "SET TimeZone TO DEFAULT", "SHOW TimeZone",
		"SET application_name = 'other'", "SET IntervalStyle = 'postgres'", "RESET ALL",
		"SHOW application_name", "SHOW IntervalStyle", "SHOW DateStyle",
		"SET DateStyle = 'Postgres'", "DISCARD ALL", "SHOW DateStyle", "SHOW TimeZone",
		"BEGIN", "RESET DateStyle", "ROLLBACK", "SHOW DateStyle",
	}
	for _, mode := range poolModes {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, onePool(mode))
			ctx := pgtest.Context(t, time.Minute)
			run := func(connString string) []string {
				cfg, err := pgx.ParseConfig(connString)
				if err != nil {
					t.Fatal(err)
				}
				for k, v := range params {
					cfg.RuntimeParams[k] = v
				}
				c, err := pgx.ConnectConfig(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close(ctx)
				var out []string
				for _, sql := range script {
					if strings.HasPrefix(sql, "SHOW") {
						var v string
						if err := c.QueryRow(ctx, sql, pgx.QueryExecModeSimpleProtocol).Scan(&v); err != nil {
							t.Fatalf("%s: %v", sql, err)
						}
						out = append(out, sql+" = "+v)
						// Another statement in between: in transaction mode the next checkout.
						if _, err := c.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol); err != nil {
							t.Fatal(err)
						}
						continue
					}
					if _, err := c.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
						t.Fatalf("%s: %v", sql, err)
					}
				}
				// The client's view of the parameters (ParameterStatus) must end where the server's is.
				out = append(out, "status DateStyle = "+c.PgConn().ParameterStatus("DateStyle"))
				return out
			}
			ep := e.primary.Endpoint()
			want := run(fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", ep.Host, ep.Port))
			got := run(e.connString())
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("through the proxy:\n%s\ndirectly:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// Issue item: session pool mode kept no session state for reads: temporary tables were looked up on
// the replica, and a SET was missing there.
func TestSessionModeKeepsSessionState(t *testing.T) {
	e := newEnv(t, onePool(proxy.PoolSession))
	ctx := pgtest.Context(t, time.Minute)
	c := e.connect(t)
	for _, sql := range []string{"SET TIME ZONE 'Asia/Tokyo'", "SET search_path = pg_catalog, public"} {
		if _, err := c.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	var tz, sp string
	var inRecovery bool
	if err := c.QueryRow(ctx, "SELECT current_setting('TimeZone'), current_setting('search_path'), pg_is_in_recovery()").Scan(&tz, &sp, &inRecovery); err != nil {
		t.Fatal(err)
	}
	if tz != "Asia/Tokyo" || sp != "pg_catalog, public" || !inRecovery {
		t.Fatalf("a read on the replica saw TimeZone %q, search_path %q (in recovery %v): the session's SETs are lost", tz, sp, inRecovery)
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		tbl := "tt_" + strings.ReplaceAll(mode.String(), " ", "_")
		for _, sql := range []string{"CREATE TEMP TABLE " + tbl + " (a int)", "INSERT INTO " + tbl + " VALUES (1)"} {
			if _, err := c.Exec(ctx, sql, mode); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM "+tbl, mode).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%v: SELECT from the session's temporary table: %d rows, %v", mode, n, err)
		}
	}
	// pgx's own suite: a queued simple-protocol batch (hung through a session-mode proxy).
	batch := &pgx.Batch{}
	batch.Queue("SELECT 1")
	batch.Queue("SELECT 2")
	br := c.SendBatch(ctx, batch)
	for i := 1; i <= 2; i++ {
		var n int
		if err := br.QueryRow().Scan(&n); err != nil || n != i {
			t.Fatalf("batch result %d: %d, %v", i, n, err)
		}
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
}

// Issue item: a client that LISTENs and waits gets notifications at once, as directly, in both modes.
func TestListenWhileIdle(t *testing.T) {
	for _, mode := range poolModes {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.PoolMode = mode }})
			ctx := pgtest.Context(t, time.Minute)
			l := e.connect(t)
			if _, err := l.Exec(ctx, "LISTEN news"); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				payload := fmt.Sprintf("n%d", i)
				pgtest.Exec(t, e.primary, fmt.Sprintf("NOTIFY news, '%s'", payload))
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				n, err := l.WaitForNotification(wctx)
				cancel()
				if err != nil {
					t.Fatalf("notification %d not delivered to the idle listener: %v", i, err)
				}
				if n.Channel != "news" || n.Payload != payload {
					t.Fatalf("notification %+v, want news/%s", n, payload)
				}
			}
			// The listener still works normally afterwards.
			var one int
			if err := l.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("after notifications: %d, %v", one, err)
			}
		})
	}
}

// Issue item: statements the proxy prepares for itself (the commit-position query) do not show in
// the client's pg_prepared_statements, nor any extra portal in pg_cursors (auto_prepare off).
func TestProxyStatementsNotVisible(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.AutoPrepare = false; c.PoolSize = 1 }})
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE vt (a int)")
	c := e.connect(t)
	for i := 0; i < 3; i++ {
		if _, err := c.Exec(ctx, "INSERT INTO vt VALUES (1)"); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	rows, err := c.Query(ctx, "SELECT name FROM pg_prepared_statements /* meridian:primary */", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		names = append(names, n)
	}
	if len(names) != 0 {
		t.Fatalf("pg_prepared_statements shows %v", names)
	}
	var cursors int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_cursors /* meridian:primary */", pgx.QueryExecModeSimpleProtocol).Scan(&cursors); err != nil || cursors != 0 {
		t.Fatalf("pg_cursors shows %d portals (%v)", cursors, err)
	}
}

// Issue item: after pg_terminate_backend of an idle pooled backend, the next client's statement runs
// on a fresh connection instead of failing with "terminating connection due to administrator
// command" for a statement that never ran.
func TestTerminatedIdleBackendIsReplaced(t *testing.T) {
	e := newEnv(t, onePool(proxy.PoolTransaction))
	ctx := pgtest.Context(t, time.Minute)
	pid := e.queryInt(t, "SELECT pg_backend_pid() /* meridian:primary */")
	admin := pgtest.Conn(t, e.primary)
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.WaitFor(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		var n int
		err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n)
		return n == 0, err
	}); err != nil {
		t.Fatal(err)
	}
	if n := e.queryInt(t, "SELECT pg_backend_pid() /* meridian:primary */"); n == pid {
		t.Fatal("same backend pid after it was terminated")
	}
}

// Issue item: a cancel request goes only to the statement the client runs when it asks; a client
// that runs nothing cancels nothing, not the statement of the client its last connection went to.
func TestCancelOfIdleClientCancelsNothing(t *testing.T) {
	e := newEnv(t, onePool(proxy.PoolTransaction))
	ctx := pgtest.Context(t, time.Minute)
	a := e.connect(t)
	if _, err := a.Exec(ctx, "SELECT 1 /* meridian:primary */"); err != nil {
		t.Fatal(err)
	}
	b := e.connect(t)
	done := make(chan error, 1)
	go func() {
		_, err := b.Exec(ctx, "SELECT pg_sleep(0.5) /* meridian:primary */")
		done <- err
	}()
	// Wait until B's statement runs on the server connection A used before.
	admin := pgtest.Conn(t, e.primary)
	if err := pgtest.WaitFor(ctx, 5*time.Millisecond, func(ctx context.Context) (bool, error) {
		var n int
		err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(0.5)%' AND state = 'active'").Scan(&n)
		return n == 1, err
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("client A's cancel reached client B's statement: %v", err)
	}
}

// Compatibility item (pgx's TestConnCopyFromFailServerSideMidwayAbortsWithoutWaiting): the server
// speaks during COPY FROM STDIN — a notice from a trigger, an error for a bad row — and the client
// hears it at once, as directly, not only once it ends the COPY. After the error the client's further
// COPY messages are ignored (as PostgreSQL does) and the session goes on.
func TestServerSpeaksDuringCopyFrom(t *testing.T) {
	for _, mode := range poolModes {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, onePool(mode))
			pgtest.Exec(t, e.primary, `CREATE TABLE cf (a int);
				CREATE FUNCTION cf_notice() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN RAISE NOTICE 'row %', NEW.a; RETURN NEW; END $$;
				CREATE TRIGGER cf_notice BEFORE INSERT ON cf FOR EACH ROW EXECUTE FUNCTION cf_notice()`)
			var want [][]string
			for i, r := range []*rawClient{e.direct(t), e.raw(t)} {
				// A server that is never heard fails the read below (a minute's deadline would
				// do; the COPY is left open on purpose).
				_ = r.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
				r.send(&pgproto3.Query{String: "COPY cf FROM STDIN"})
				got := [][]string{r.until("CopyInResponse")}
				r.send(&pgproto3.CopyData{Data: []byte("1\n")})
				got = append(got, r.until("NoticeResponse"))
				r.send(&pgproto3.CopyData{Data: []byte("x\n")})
				got = append(got, r.until("ReadyForQuery"))
				r.send(&pgproto3.CopyData{Data: []byte("2\n")}, &pgproto3.CopyDone{}, &pgproto3.Query{String: "SELECT count(*) FROM cf /* meridian:primary */"})
				got = append(got, r.until("ReadyForQuery"))
				if i == 0 {
					want = got
				} else if !reflect.DeepEqual(got, want) {
					t.Fatalf("through the proxy: %v\ndirectly: %v", got, want)
				}
				r.conn.Close()
			}
			if n := e.queryInt(t, "SELECT 7 /* meridian:primary */"); n != 7 {
				t.Fatalf("next client got %d", n)
			}
		})
	}
}

// Compatibility item (pgx's TestFatalRxError, TestFatalTxError, TestConnCheckConn, TestConnPing,
// pool idle checks): in session mode the client's PID is the one of its own primary backend, so
// pg_backend_pid() answers it and pg_terminate_backend of it ends the session with the server's FATAL
// error — while the client is idle, and while it runs a read on the replica — as it ends a direct one.
func TestSessionModeOwnBackend(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.PoolMode = proxy.PoolSession }})
	ctx := pgtest.Context(t, time.Minute)
	admin := pgtest.Conn(t, e.primary)
	terminate := func(pid uint32) {
		t.Helper()
		var ok bool
		if err := admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("pg_terminate_backend(%d): %v, %v", pid, ok, err)
		}
	}
	wantFatal := func(err error, c *pgx.Conn) {
		t.Helper()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != "57P01" {
			t.Fatalf("got %v, want FATAL 57P01 as directly", err)
		}
		if !c.IsClosed() {
			t.Fatal("the connection is still open")
		}
	}

	c := e.connect(t)
	var pid uint32
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil || pid != c.PgConn().PID() {
		t.Fatalf("pg_backend_pid() %d (%v), BackendKeyData %d", pid, err, c.PgConn().PID())
	}
	terminate(pid)
	_, err := c.Exec(ctx, "SELECT 1") // a read: the replica would answer it
	wantFatal(err, c)

	// Busy: a read runs on the replica while its own backend is terminated.
	c = e.connect(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "SELECT pg_sleep(20) /* own-backend */")
		done <- err
	}()
	onReplica := pgtest.Conn(t, e.replica)
	if err := pgtest.WaitFor(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		var n int
		err := onReplica.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%own-backend%' AND state = 'active' AND pid <> pg_backend_pid()").Scan(&n)
		return n == 1, err
	}); err != nil {
		t.Fatal(err)
	}
	terminate(c.PgConn().PID())
	wantFatal(<-done, c) // pg_sleep(20) would have succeeded

	// The backend ends with its session: the next client never gets a PID a previous one saw.
	seen := map[uint32]bool{}
	for i := 0; i < 3; i++ {
		c := e.connect(t)
		if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		if seen[c.PgConn().PID()] {
			t.Fatalf("client %d got PID %d, which an earlier client had", i, c.PgConn().PID())
		}
		seen[c.PgConn().PID()] = true
		c.Close(ctx)
	}
}

// Compatibility items (pgx's stdlib TestConnMultiplePrepareAndDeallocate; node-postgres and
// postgres.js "prepared after ALTER"): in session mode a client's named statement is its own, as on a
// direct connection, on every server connection of the session: pg_prepared_statements shows it under
// the client's name wherever the query runs, closing it removes it, and after the session's own ALTER
// TABLE PostgreSQL keeps refusing it (0A000) on the replica and on the primary alike — it is not
// prepared again behind the client's back with the new columns.
func TestSessionModeStatementsAreTheClients(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.PoolMode = proxy.PoolSession }})
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE pn (a int)")
	c := e.connect(t)
	pc := c.PgConn()
	names := func(route string) []string {
		t.Helper()
		sql := "SELECT coalesce(string_agg(name, ',' ORDER BY name), '') FROM pg_prepared_statements /* meridian:" + route + " */"
		var s string
		if err := c.QueryRow(ctx, sql, pgx.QueryExecModeSimpleProtocol).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return strings.FieldsFunc(s, func(r rune) bool { return r == ',' })
	}
	if _, err := pc.Prepare(ctx, "mine", "SELECT * FROM pn", nil); err != nil { // a read: the replica's
		t.Fatal(err)
	}
	for _, route := range []string{"replica", "primary"} {
		if got := names(route); !reflect.DeepEqual(got, []string{"mine"}) {
			t.Fatalf("pg_prepared_statements on the %s: %v, want [mine]", route, got)
		}
	}
	if _, err := c.Exec(ctx, "ALTER TABLE pn ADD COLUMN b int"); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.WaitReplayed(ctx, e.replica, pgtest.CurrentLSN(t, e.primary)); err != nil {
		t.Fatal(err)
	}
	for _, route := range []string{"replica", "primary"} {
		if _, err := c.Exec(ctx, "SET meridian.route = "+route); err != nil {
			t.Fatal(err)
		}
		res := pc.ExecPrepared(ctx, "mine", nil, nil, nil).Read()
		var pe *pgconn.PgError
		if !errors.As(res.Err, &pe) || pe.Code != "0A000" {
			t.Fatalf("on the %s: %v, want 0A000 as directly", route, res.Err)
		}
	}
	if _, err := c.Exec(ctx, "RESET meridian.route"); err != nil {
		t.Fatal(err)
	}
	if err := pc.Deallocate(ctx, "mine"); err != nil {
		t.Fatal(err)
	}
	for _, route := range []string{"replica", "primary"} {
		if got := names(route); len(got) != 0 {
			t.Fatalf("pg_prepared_statements on the %s after Close: %v", route, got)
		}
	}

	// Prepared on the primary before the session ever read from the replica: a read of it after the
	// ALTER must not prepare it fresh on a new replica connection.
	pgtest.Exec(t, e.primary, "CREATE TABLE pn2 (a int)")
	c2 := e.connect(t)
	for _, sql := range []string{"SET meridian.route = primary", "PREPARE-PROTOCOL", "RESET meridian.route", "ALTER TABLE pn2 ADD COLUMN b int"} {
		var err error
		if sql == "PREPARE-PROTOCOL" {
			_, err = c2.PgConn().Prepare(ctx, "early", "SELECT * FROM pn2", nil)
		} else {
			_, err = c2.Exec(ctx, sql)
		}
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := pgtest.WaitReplayed(ctx, e.replica, pgtest.CurrentLSN(t, e.primary)); err != nil {
		t.Fatal(err)
	}
	// A read that opens the session's replica connection finds the statement there, as directly
	// (pg_prepared_statements of database/sql's pool in pgx's stdlib suite), and the statement,
	// prepared there only now, still answers as the client's.
	var n int
	if err := c2.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'early' /* meridian:replica */",
		pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 1 {
		t.Fatalf("pg_prepared_statements on the session's new replica connection: %d statements named early (%v), want 1", n, err)
	}
	res := c2.PgConn().ExecPrepared(ctx, "early", nil, nil, nil).Read()
	var pe *pgconn.PgError
	if !errors.As(res.Err, &pe) || pe.Code != "0A000" {
		t.Fatalf("statement prepared before the ALTER, run after it: %v, want 0A000 as directly", res.Err)
	}
}

// Compatibility item (node-postgres and postgres.js "prepared after ALTER", transaction mode): a
// client's named statement keeps the result shape it had when the client prepared it. After an ALTER
// TABLE that changes it, PostgreSQL keeps refusing the client's statement (0A000) — also when its next
// transaction lands on a server connection where the proxy prepares it afresh, or where another client
// prepared the same text after the change — while a client that prepares it after the change runs it.
func TestOwnStatementShapeInTransactionMode(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) {
		c.PoolSize = 3
		c.QueryWaitTimeout = 20 * time.Second
	}})
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE sh (a int)")
	pgtest.Exec(t, e.primary, "INSERT INTO sh VALUES (1)")
	const sql = "SELECT * FROM sh /* meridian:primary */"
	old := e.connect(t)
	if _, err := old.PgConn().Prepare(ctx, "s", sql, nil); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, e.primary, "ALTER TABLE sh ADD COLUMN b int DEFAULT 2")
	fresh := e.connect(t)
	if _, err := fresh.PgConn().Prepare(ctx, "s", sql, nil); err != nil {
		t.Fatal(err)
	}
	// After each round one more server connection is held in a transaction, so that the next round
	// lands on others: with the statement prepared before the change, after it, or not at all.
	for i := 0; i < 3; i++ {
		res := old.PgConn().ExecPrepared(ctx, "s", nil, nil, nil).Read()
		var pe *pgconn.PgError
		if !errors.As(res.Err, &pe) || pe.Code != "0A000" || pe.Routine != "RevalidateCachedQuery" {
			// (postgres.js prepares again on this routine, as directly.)
			t.Fatalf("run %d of the statement prepared before the ALTER: %v (%d columns), want 0A000 from RevalidateCachedQuery as directly", i, res.Err, len(res.FieldDescriptions))
		}
		res = fresh.PgConn().ExecPrepared(ctx, "s", nil, nil, nil).Read()
		if res.Err != nil || len(res.FieldDescriptions) != 2 {
			t.Fatalf("run %d of the statement prepared after the ALTER: %v, %d columns, want 2", i, res.Err, len(res.FieldDescriptions))
		}
		if i == 2 {
			break
		}
		tx, err := e.connect(t).Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1 /* meridian:primary */"); err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
	}
}

// A client can cancel its running query while max_client_conn turns new connections away: the cancel
// request, which needs a connection of its own, is served, not refused with "too many clients".
func TestCancelWhenFull(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.MaxClientConn = 1 }})
	ctx := pgtest.Context(t, time.Minute)
	a := e.connect(t)
	done := make(chan error, 1)
	go func() {
		_, err := a.Exec(ctx, "SELECT pg_sleep(30) /* cancel-when-full */")
		done <- err
	}()
	admin := pgtest.Conn(t, e.replica)
	if err := pgtest.WaitFor(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		var n int
		err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%cancel-when-full%' AND state = 'active' AND pid <> pg_backend_pid()").Scan(&n)
		return n == 1, err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := pgconn.Connect(ctx, e.connString()); err == nil {
		t.Fatal("a second client got in with max_client_conn 1")
	}
	if err := a.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	var pe *pgconn.PgError
	if err := <-done; !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("the running query ended with %v, want 57014 (canceled)", err)
	}
}

// An error the proxy gives for a message without running it (a statement the client never prepared,
// one prepared twice, a stale plan, an advisory lock on a replica) fails the server where it stands,
// as the error would directly: the batch's earlier INSERT rolls back with the implicit transaction,
// and in a transaction block what follows gets 25P02 and COMMIT answers ROLLBACK. Before, the server
// went on: the INSERT committed, and the client's COMMIT committed the transaction.
func TestRefusalFailsTheServerToo(t *testing.T) {
	for _, mode := range []proxy.PoolMode{proxy.PoolTransaction, proxy.PoolSession} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, envOptions{configure: func(c *proxy.Config) { c.PoolMode = mode }})
			ctx := pgtest.Context(t, time.Minute)
			pgtest.Exec(t, e.primary, "CREATE TABLE rf (a int)")
			admin := pgtest.Conn(t, e.primary)
			ep := e.primary.Endpoint()
			for _, target := range []struct{ name, url string }{
				{"direct", fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", ep.Host, ep.Port)},
				{"proxy", e.connString()},
			} {
				pc, err := pgconn.Connect(ctx, target.url)
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close(context.Background())
				if _, err := admin.Exec(ctx, "TRUNCATE rf"); err != nil {
					t.Fatal(err)
				}
				b := &pgconn.Batch{}
				b.ExecParams("INSERT INTO rf VALUES (1)", nil, nil, nil, nil)
				b.ExecPrepared("nosuch", nil, nil, nil)
				_, err = pc.ExecBatch(ctx, b).ReadAll()
				if sqlstate(err) != "26000" {
					t.Fatalf("%s: batch with an unknown statement: %v, want 26000", target.name, err)
				}
				var n int
				if err := admin.QueryRow(ctx, "SELECT count(*) FROM rf").Scan(&n); err != nil || n != 0 {
					t.Fatalf("%s: the batch's INSERT before the error: %d rows (%v), want 0 (rolled back)", target.name, n, err)
				}

				if _, err := pc.Exec(ctx, "BEGIN; INSERT INTO rf VALUES (2)").ReadAll(); err != nil {
					t.Fatal(err)
				}
				b = &pgconn.Batch{}
				b.ExecPrepared("nosuch", nil, nil, nil)
				if _, err := pc.ExecBatch(ctx, b).ReadAll(); sqlstate(err) != "26000" {
					t.Fatalf("%s: unknown statement in a transaction: %v, want 26000", target.name, err)
				}
				if _, err := pc.Exec(ctx, "SELECT 1").ReadAll(); sqlstate(err) != "25P02" {
					t.Fatalf("%s: a statement after the error: %v, want 25P02", target.name, err)
				}
				res, err := pc.Exec(ctx, "COMMIT").ReadAll()
				if err != nil || len(res) != 1 || res[0].CommandTag.String() != "ROLLBACK" {
					t.Fatalf("%s: COMMIT after the error: %v, want ROLLBACK", target.name, err)
				}
				if err := admin.QueryRow(ctx, "SELECT count(*) FROM rf").Scan(&n); err != nil || n != 0 {
					t.Fatalf("%s: the failed transaction's INSERT: %d rows (%v), want 0", target.name, n, err)
				}
			}
		})
	}
}

// A CancelRequest for a statement that waits in the proxy — for a replica to replay the session's
// write, or for a server connection of a full pool — ends it with 57014, as canceling a statement
// does on the server. Before, the cancel found no server connection to forward to and was dropped:
// the statement waited out meridian.max_wait (or query_wait_timeout) and then ran.
func TestCancelWhileWaitingInTheProxy(t *testing.T) {
	e := newEnv(t, envOptions{
		configure: func(c *proxy.Config) {
			c.PoolSize = 1
			c.QueryWaitTimeout = 40 * time.Second
		},
		replicaSettings: map[string]string{"recovery_min_apply_delay": "60s"},
	})
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE cw (a int)")
	cancelAfter := func(pc *pgconn.PgConn, sql string) error {
		t.Helper()
		done := make(chan error, 1)
		go func() {
			_, err := pc.Exec(ctx, sql).ReadAll()
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("%s answered before the cancel: %v", sql, err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := pc.CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still waiting 30 s after the cancel", sql)
			return nil
		}
	}

	t.Run("waiting for the replica", func(t *testing.T) {
		pc, err := pgconn.Connect(ctx, e.connString())
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close(context.Background())
		if _, err := pc.Exec(ctx, "SET meridian.max_wait = '50s'; INSERT INTO cw VALUES (1)").ReadAll(); err != nil {
			t.Fatal(err)
		}
		// The replica applies the INSERT a minute late: the session's read waits for it.
		if err := cancelAfter(pc, "SELECT count(*) FROM cw"); sqlstate(err) != "57014" {
			t.Fatalf("canceled read: %v, want 57014", err)
		}
		res, err := pc.Exec(ctx, "SELECT 1 /* meridian:primary */").ReadAll()
		if err != nil || string(res[0].Rows[0][0]) != "1" {
			t.Fatalf("the session after the cancel: %v", err)
		}
	})

	t.Run("waiting for a server connection", func(t *testing.T) {
		holder := e.connect(t)
		tx, err := holder.Begin(ctx) // holds the primary pool's only connection
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO cw VALUES (2)"); err != nil {
			t.Fatal(err)
		}
		pc, err := pgconn.Connect(ctx, e.connString())
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close(context.Background())
		if err := cancelAfter(pc, "INSERT INTO cw VALUES (3)"); sqlstate(err) != "57014" {
			t.Fatalf("canceled write waiting for a connection: %v, want 57014", err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := pc.Exec(ctx, "INSERT INTO cw VALUES (4)").ReadAll(); err != nil {
			t.Fatalf("the session after the cancel: %v", err)
		}
	})
}
