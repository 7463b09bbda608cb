package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/pgtest"
)

// isolationOps is the alphabet of FuzzSessionIsolation: each input byte picks one client message (or
// a short sequence) from it; the ops cover every way a session can leave state on its server
// connection: transactions, SETs, roles, COPY in both directions, pipelines with and without Sync,
// errors at Execute and at commit, pins, protocol violations.
var isolationOps = [][]byte{
	msg('Q', cstr("SELECT 1")),
	msg('Q', cstr("BEGIN")),
	msg('Q', cstr("COMMIT")),
	msg('Q', cstr("ROLLBACK")),
	msg('Q', cstr("INSERT INTO fz VALUES (1)")),
	msg('Q', cstr("SET work_mem = '1234kB'")),
	msg('Q', cstr("SET ROLE fz_role")),
	msg('Q', cstr("SELECT set_config('search_path', 'pg_catalog', false)")),
	msg('Q', cstr("COPY fz FROM STDIN")),
	msg('d', []byte("5\n")),
	msg('c'),
	msg('f', cstr("fuzz")),
	msg('P', cstr(""), cstr("INSERT INTO fz VALUES ($1)"), []byte{0, 1, 0, 0, 0, 23}),
	msg('P', cstr("s1"), cstr("SELECT * FROM fz WHERE a = $1"), []byte{0, 1, 0, 0, 0, 23}),
	msg('B', cstr(""), cstr(""), []byte{0, 0, 0, 1, 0, 0, 0, 1, '7', 0, 0}),
	msg('B', cstr(""), cstr("s1"), []byte{0, 0, 0, 1, 0, 0, 0, 1, '1', 0, 0}),
	msg('E', cstr(""), []byte{0, 0, 0, 0}),
	msg('D', []byte{'S'}, cstr("s1")),
	msg('D', []byte{'P'}, cstr("")),
	msg('S'),
	msg('H'),
	msg('C', []byte{'S'}, cstr("s1")),
	msg('Q', cstr("LISTEN fzch")),
	msg('Q', cstr("SELECT pg_sleep(0.005)")),
	msg('Q', cstr("CREATE TEMP TABLE IF NOT EXISTS fztmp (a int)")),
	msg('Q', cstr("DECLARE fzc CURSOR WITH HOLD FOR SELECT 1")),
	msg('Q', cstr("SET SESSION AUTHORIZATION fz_role")),
	msg('Q', cstr("SELECT pg_advisory_lock(42)")),
	msg('Q', cstr("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")),
	msg('Q', cstr("SELECT 1/0")),
	msg('Q', cstr("COPY (SELECT generate_series(1, 50)) TO STDOUT")),
	msg('Q', cstr("DISCARD ALL")),
	msg('Q', cstr("RESET ALL")),
	msg('Q', cstr("SAVEPOINT sp")),
	msg('Q', cstr("SELECT * FROM fz")),
	msg('Q', cstr("PREPARE fzq AS SELECT 1")),
	msg('P', cstr(""), cstr("COMMIT"), []byte{0, 0}),
	msg('Q', cstr("INSERT INTO fzd VALUES (1); SELECT 1")),
	msg('Q', cstr("INSERT INTO fzd VALUES (1)")), // deferred unique: fails at commit
	msg('P', cstr(""), cstr("INSERT INTO fzd VALUES (1)"), []byte{0, 0}),
	msg('Q', cstr("SET DateStyle = 'German'")),
	msg('Q', cstr("RESET DateStyle")),
	msg('Q', cstr("UNLISTEN *")),
	msg('Q', cstr("BEGIN READ ONLY")),
	msg('Q', cstr("SELECT pg_advisory_xact_lock(43)")),
	{'Q', 0x7f, 0xff, 0xff, 0xff}, // a huge announced length, then nothing
	{'?', 0, 0, 0, 4},             // an unknown message type
}

// FuzzSessionIsolation drives random client message sequences against a real primary and replica
// through a proxy with one server connection per pool, so that every session reuses the connection
// the one before it left. After each sequence (ended by Terminate, an abrupt close, or a close while
// answers are still coming) a fresh client checks the invariant: it gets a clean connection on the
// primary and on the replica — the login's role, default settings, no open transaction, no
// statements, cursors, channels or advisory locks of the session before, and its own answers, not
// anyone else's.
func FuzzSessionIsolation(f *testing.F) {
	for _, seed := range [][]byte{
		{0, 19},
		{1, 4, 20},           // BEGIN, INSERT, then Flush and leave
		{12, 14, 16, 20},     // extended INSERT + Flush, no Sync
		{8, 0, 9},            // COPY FROM STDIN, then a Query instead of data
		{8, 9, 10},           // COPY done
		{40, 19},             // deferred constraint error at commit (simple)
		{41, 14, 16, 19},     // ... through the extended protocol
		{6, 7, 5},            // SET ROLE, set_config, SET
		{22},                 // LISTEN (pins)
		{26},                 // SET SESSION AUTHORIZATION
		{42, 43},             // SET DateStyle, RESET DateStyle
		{13, 17, 20, 15, 16}, // describe + flush, then bind without sync
		{30, 0},              // COPY TO STDOUT
		{47, 0},              // huge length
	} {
		f.Add(seed, uint8(0))
		f.Add(seed, uint8(1))
		f.Add(seed, uint8(2))
	}
	env := newIsolationEnv(f)
	f.Fuzz(func(t *testing.T, ops []byte, ending uint8) {
		if len(ops) > 40 {
			ops = ops[:40]
		}
		env.session(t, ops, ending%3)
		env.check(t)
	})
}

type isolationEnv struct {
	proxyAddr string
	baseline  map[string]string
	mu        sync.Mutex
}

func newIsolationEnv(tb testing.TB) *isolationEnv {
	c := pgtest.NewCluster(tb, pgtest.Options{Replicas: 1})
	for _, sql := range []string{
		"CREATE TABLE fz (a int)",
		"CREATE TABLE fzd (a int UNIQUE DEFERRABLE INITIALLY DEFERRED)",
		"INSERT INTO fzd VALUES (1)",
		"CREATE ROLE fz_role",
		"GRANT SELECT, INSERT ON fz, fzd TO fz_role",
	} {
		pgtest.Exec(tb, c.Primary, sql)
	}
	ctx := pgtest.Context(tb, time.Minute)
	if err := pgtest.WaitReplayed(ctx, c.Replicas[0], pgtest.CurrentLSN(tb, c.Primary)); err != nil {
		tb.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Region = "b"
	cfg.PoolSize = 1
	cfg.AutoPrepare = false // the transparent configuration (auto_prepare changes pg_cursors and statement_timestamp)
	cfg.QueryWaitTimeout = 30 * time.Second
	cfg.PollInterval = 100 * time.Millisecond
	cfg.Auth.Rules = []AuthRule{{Method: "trust"}}
	cfg.Nodes = []NodeConfig{
		{Name: "primary", Address: c.Primary.Endpoint().String(), Region: "a"},
		{Name: "replica", Address: c.Replicas[0].Endpoint().String(), Region: "b"},
	}
	p, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	if err := p.WaitReady(ctx); err != nil {
		tb.Fatal(err)
	}
	e := &isolationEnv{proxyAddr: p.Addr()}
	e.baseline = e.state(tb, true)
	if e.baseline == nil {
		tb.Fatal("no baseline")
	}
	if r := e.state(tb, false); fmt.Sprint(r) != fmt.Sprint(e.baseline) {
		tb.Fatalf("replica baseline %v differs from the primary's %v", r, e.baseline)
	}
	return e
}

// session logs in and sends the ops; ending 0: Terminate; 1: close at once; 2: read a little, then close.
func (e *isolationEnv) session(t *testing.T, ops []byte, ending uint8) {
	var b bytes.Buffer
	for _, op := range ops {
		b.Write(isolationOps[int(op)%len(isolationOps)])
	}
	e.sessionBytes(t, b.Bytes(), ending)
}

// sessionBytes logs in and sends data as the client's messages, then ends as session says.
func (e *isolationEnv) sessionBytes(t *testing.T, data []byte, ending uint8) {
	e.mu.Lock()
	defer e.mu.Unlock()
	conn, err := net.DialTimeout("tcp", e.proxyAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var startup []byte
	startup = binary.BigEndian.AppendUint32(startup, 0)
	startup = binary.BigEndian.AppendUint32(startup, protocolV3)
	for _, s := range []string{"user", "postgres", "database", "postgres", "application_name", "fuzz"} {
		startup = append(startup, cstr(s)...)
	}
	startup = append(startup, 0)
	binary.BigEndian.PutUint32(startup, uint32(len(startup)))
	var b bytes.Buffer
	b.Write(startup)
	b.Write(data)
	if ending == 0 {
		b.Write(msg('X'))
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(b.Bytes()); err != nil {
		return // the proxy may have closed on a protocol violation
	}
	if ending == 2 {
		// Leave while answers may still be coming (or none is due: a pipeline without Sync).
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		var buf [512]byte
		_, _ = conn.Read(buf[:])
	}
	if ending == 0 {
		_, _ = io.Copy(io.Discard, conn) // the proxy closes after Terminate (or earlier, on an error)
	}
}

// check connects afresh and compares the state of both pooled server connections with the baseline.
func (e *isolationEnv) check(t *testing.T) {
	for _, primary := range []bool{true, false} {
		if got := e.state(t, primary); fmt.Sprint(got) != fmt.Sprint(e.baseline) {
			t.Fatalf("a fresh client on the %s found another session's state:\n got %v\nwant %v",
				map[bool]string{true: "primary", false: "replica"}[primary], got, e.baseline)
		}
	}
}

// stateQuery shows what a fresh session must not inherit. now() = statement_timestamp() is true only
// when the statement started its own transaction.
const stateQuery = `SELECT current_user, session_user, current_setting('work_mem') AS work_mem,
	current_setting('search_path') AS search_path, current_setting('DateStyle') AS datestyle,
	current_setting('transaction_isolation') AS isolation, now() = statement_timestamp() AS own_txn,
	(SELECT count(*) FROM pg_prepared_statements WHERE name NOT LIKE 'mdn_%') AS statements,
	(SELECT count(*) FROM pg_cursors) AS cursors,
	(SELECT count(*) FROM pg_listening_channels()) AS channels,
	(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks,
	(SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temp_tables`

// state runs stateQuery twice (simple, then extended protocol) and returns its one row; it fails the
// test on any answer that is not exactly that.
func (e *isolationEnv) state(tb testing.TB, primary bool) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	host, port, _ := net.SplitHostPort(e.proxyAddr)
	c, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable", host, port))
	if err != nil {
		tb.Fatalf("fresh client: %v", err)
	}
	defer c.Close(context.Background())
	sql := stateQuery
	if primary {
		sql = "/* meridian:primary */ " + sql
	}
	var row map[string]string
	results, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		tb.Fatalf("fresh client, simple protocol: %v", err)
	}
	for i, res := range results {
		if res.Err != nil || i > 0 || len(res.Rows) != 1 || res.CommandTag.String() != "SELECT 1" {
			tb.Fatalf("fresh client, simple protocol: %d results, err %v, tag %q, rows %d", i+1, res.Err, res.CommandTag, len(res.Rows))
		}
		row = map[string]string{}
		for j, fd := range res.FieldDescriptions {
			row[fd.Name] = string(res.Rows[0][j])
		}
	}
	res := c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 || len(res.FieldDescriptions) != len(row) {
		tb.Fatalf("fresh client, extended protocol: err %v, rows %d", res.Err, len(res.Rows))
	}
	if c.TxStatus() != 'I' {
		tb.Fatalf("fresh client: transaction status %q after two autocommit statements", c.TxStatus())
	}
	if !strings.Contains(sql, "SELECT") || row == nil {
		tb.Fatal("no row")
	}
	return row
}
