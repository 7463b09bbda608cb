package proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// startupPacket builds a StartupMessage for protocol version major.minor with the given parameters.
func startupPacket(version uint32, params ...string) []byte {
	body := binary.BigEndian.AppendUint32(nil, version)
	for _, s := range params {
		body = append(append(body, s...), 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

func frontendMsg(typ byte, body []byte) []byte {
	return append(append([]byte{typ}, binary.BigEndian.AppendUint32(nil, uint32(len(body)+4))...), body...)
}

// firstError reads what the proxy answers until it closes the connection (or 5 s pass) and returns
// the SQLSTATE and message of the first ErrorResponse, and whether the connection was closed.
func firstError(t *testing.T, c net.Conn) (code, message string, closed bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, err := io.ReadAll(c)
	closed = err == nil || errors.Is(err, syscall.ECONNRESET) // EOF, or a reset: the proxy closed with input unread
	for len(all) >= 5 {
		n := int(binary.BigEndian.Uint32(all[1:5]))
		if n < 4 || len(all) < 1+n {
			break
		}
		if all[0] == 'E' {
			var e pgproto3.ErrorResponse
			if e.Decode(all[5:1+n]) == nil {
				return e.Code, e.Message, closed
			}
		}
		all = all[1+n:]
	}
	return "", "", closed
}

// TestHostileInput: malformed, truncated and oversized messages, wrong protocol versions, startup
// packets with thousands of parameters or invalid UTF-8 — each gets a proper error and a closed
// connection, and a well-behaved client keeps working throughout.
func TestHostileInput(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	good := e.connect(t)
	login := startupPacket(3<<16, "user", "postgres", "database", "postgres")
	var thousands []string
	for i := range 2000 {
		thousands = append(thousands, fmt.Sprintf("p%d", i), "v")
	}
	cases := []struct {
		name, input string
		code, says  string
		closeWrite  bool // the client stops sending mid-message
	}{
		{name: "HTTP request", input: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", code: "08P01", says: "invalid startup packet length"},
		{name: "huge startup length", input: "\x7f\xff\xff\xff\x00\x03\x00\x00", code: "08P01", says: "invalid startup packet length"},
		{name: "startup packet too short", input: "\x00\x00\x00\x04", code: "08P01", says: "invalid startup packet length"},
		{name: "protocol 9.0", input: string(startupPacket(9<<16, "user", "postgres")), code: "08P01", says: "unsupported frontend protocol 9.0"},
		{name: "protocol 2.0", input: string(startupPacket(2<<16, "user", "postgres")), code: "08P01", says: "unsupported frontend protocol 2.0"},
		{name: "thousands of parameters", input: string(startupPacket(3<<16, thousands[:1200]...)), code: "08P01", says: "more than 256 parameters"},
		{name: "startup packet over 10000 bytes", input: string(startupPacket(3<<16, thousands...)), code: "08P01", says: "invalid startup packet length"},
		{name: "invalid UTF-8 user", input: string(startupPacket(3<<16, "user", "p\xffq", "database", "postgres")), code: "22021", says: "invalid byte sequence"},
		{name: "no user", input: string(startupPacket(3<<16, "database", "postgres")), code: "28000", says: "no PostgreSQL user name"},
		{name: "unterminated parameter", input: "\x00\x00\x00\x0e\x00\x03\x00\x00user\x00ab", code: "08P01", says: "invalid startup packet"},
		{name: "oversized message", input: string(login) + "Q\x7f\xff\xff\xff", code: "08P01", says: "too large"},
		{name: "message length under 4", input: string(login) + "Q\x00\x00\x00\x03", code: "08P01", says: ""},
		{name: "unknown message type", input: string(login) + string(frontendMsg('!', nil)), code: "08P01", says: "invalid frontend message type"},
		{name: "malformed Bind", input: string(login) + string(frontendMsg('B', []byte("xy"))) + string(frontendMsg('S', nil)), code: "08P01", says: "malformed"},
		{name: "malformed Parse", input: string(login) + string(frontendMsg('P', []byte("s\x00SELECT 1\x00\x00"))), code: "08P01", says: "malformed"},
		{name: "truncated query", input: string(login) + "Q\x00\x00\x00\x64SEL", closeWrite: true},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			c, err := net.Dial("tcp", e.proxy.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte(tc.input)); err != nil {
				t.Fatal(err)
			}
			if tc.closeWrite {
				c.(*net.TCPConn).CloseWrite()
			}
			code, msg, closed := firstError(t, c)
			if !closed {
				t.Errorf("the proxy did not close the connection")
			}
			if code != tc.code || !strings.Contains(msg, tc.says) {
				t.Errorf("answer: SQLSTATE %q %q, want %q containing %q", code, msg, tc.code, tc.says)
			}
			var one int
			if err := good.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatalf("the well-behaved client failed afterwards: %v", err)
			}
		})
	}
}

// TestClientThatStopsReading: a client that asks for a large result and never reads it holds its
// server connection only until client_write_timeout; with a pool of one connection, another client
// then gets it. Each stalled session is ended, and the proxy keeps serving.
func TestClientThatStopsReading(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) {
		c.PoolSize = 1
		c.ClientWriteTimeout = time.Second
		c.QueryWaitTimeout = 20 * time.Second
	}})
	ctx := pgtest.Context(t, time.Minute)
	stalled, err := net.Dial("tcp", e.proxy.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.(*net.TCPConn).SetReadBuffer(4096)
	query := "SELECT repeat('x', 10000) FROM generate_series(1, 100000)" // ~1 GB of rows, never read
	stalled.Write(append(startupPacket(3<<16, "user", "postgres", "database", "postgres"), frontendMsg('Q', append([]byte(query), 0))...))
	// Wait until the stalled client holds the only server connection, or the test checks nothing.
	watch := pgtest.Conn(t, e.replica)
	if err := pgtest.WaitFor(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		var n int
		err := watch.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = $1", query).Scan(&n)
		return n == 1, err
	}); err != nil {
		t.Fatalf("the stalled client's query never reached the server: %v", err)
	}
	start := time.Now()
	other, err := pgx.Connect(ctx, e.connString())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	var one int
	if err := other.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("another client while one stalls: %v", err)
	}
	waited := time.Since(start)
	t.Logf("the other client got the server connection after %v", waited.Round(time.Millisecond))
	if waited > 15*time.Second {
		t.Errorf("the other client waited %v: the stalled client kept the server connection", waited)
	}
	// The stalled session is gone: the proxy reset its socket (dropping what it could not deliver).
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, stalled)
	if err != nil && !bytes.Contains([]byte(err.Error()), []byte("reset")) {
		t.Errorf("reading what the stalled client was sent: %v, want the proxy to have closed it", err)
	}
}

// TestIdleTimeouts: client_idle_timeout ends an idle session with 57P05; idle_transaction_timeout ends
// a session idle inside a transaction with 25P03, and the transaction is rolled back.
func TestIdleTimeouts(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *proxy.Config) {
		c.ClientIdleTimeout = 700 * time.Millisecond
		c.IdleTransactionTimeout = 700 * time.Millisecond
	}})
	ctx := pgtest.Context(t, time.Minute)
	pgtest.Exec(t, e.primary, "CREATE TABLE idle_tx (x int)")
	idle := e.connect(t)
	inTx := e.connect(t)
	busy := e.connect(t)
	if _, err := inTx.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := inTx.Exec(ctx, "INSERT INTO idle_tx VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	// A session that keeps working is not idle.
	for range 8 {
		if _, err := busy.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("a busy session was cut: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for name, tc := range map[string]struct {
		conn *pgx.Conn
		code string
	}{"idle": {idle, "57P05"}, "idle in transaction": {inTx, "25P03"}} {
		_, err := tc.conn.Exec(ctx, "SELECT 1")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != tc.code {
			t.Errorf("%s session after the timeout: %v, want SQLSTATE %s", name, err, tc.code)
		}
	}
	var n int
	pgtest.QueryRow(t, e.primary, "SELECT count(*) FROM idle_tx").Scan(&n)
	if n != 0 {
		t.Errorf("the timed-out transaction's row is there (%d rows): it was not rolled back", n)
	}
}
