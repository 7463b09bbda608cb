package proxy_test

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/pgtest"
)

// TestPipelinedSyncs sends several extended-protocol batches, each with its own Sync, before reading
// any result; each is routed on its own and the results come back in order.
func TestPipelinedSyncs(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t)
	if _, err := conn.Exec(ctx, "CREATE TABLE pipe (a int)"); err != nil {
		t.Fatal(err)
	}
	p := conn.PgConn().StartPipeline(ctx)
	p.SendQueryParams("INSERT INTO pipe VALUES ($1) RETURNING current_setting('cluster_name')", [][]byte{[]byte("1")}, nil, nil, nil)
	p.SendQueryParams("SELECT current_setting('cluster_name')", nil, nil, nil, nil)
	p.SendQueryParams("SELECT $1::int + 1 /* meridian:primary */", [][]byte{[]byte("41")}, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	p.SendQueryParams("SELECT current_setting('cluster_name')", nil, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		r, err := p.GetResults()
		if err != nil {
			t.Fatal(err)
		}
		if r == nil {
			break
		}
		switch r := r.(type) {
		case *pgconn.ResultReader:
			res := r.Read()
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			got = append(got, string(res.Rows[0][0]))
		case *pgconn.PipelineSync:
			got = append(got, "sync")
		}
		if len(got) == 6 {
			break
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// The first batch writes, so it runs entirely on the primary; the second is a lone read.
	want := []string{"primary", "primary", "42", "sync", "west", "sync"}
	if len(got) != len(want) {
		t.Fatalf("pipeline results %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pipeline results %v, want %v", got, want)
		}
	}
}

// TestParameterStatusReachesTheClient checks that a SET of a reported parameter is announced.
func TestParameterStatusReachesTheClient(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	conn := e.connect(t, "application_name=first")
	if got := conn.PgConn().ParameterStatus("application_name"); got != "first" {
		t.Fatalf("application_name at login = %q", got)
	}
	if _, err := conn.Exec(ctx, "SET application_name = 'second'"); err != nil {
		t.Fatal(err)
	}
	if got := conn.PgConn().ParameterStatus("application_name"); got != "second" {
		t.Fatalf("application_name after SET = %q", got)
	}
	if got := conn.PgConn().ParameterStatus("server_version"); got == "" {
		t.Fatal("server_version was not reported at login")
	}
}

// TestHostileClientsDoNotAffectOthers sends malformed, truncated and oversized input on several
// connections while a well-behaved client keeps working.
func TestHostileClientsDoNotAffectOthers(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := pgtest.Context(t, time.Minute)
	good := e.connect(t)
	startup := func() []byte {
		body := binary.BigEndian.AppendUint32(nil, 196608)
		for _, s := range []string{"user", "postgres", "database", "postgres", ""} {
			body = append(append(body, s...), 0)
		}
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
	}
	inputs := map[string][]byte{
		"garbage":                []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"huge startup length":    {0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0},
		"wrong protocol version": {0, 0, 0, 8, 0, 9, 0, 0},
		"oversized message":      append(startup(), 'Q', 0x7f, 0xff, 0xff, 0xff),
		"unknown message type":   append(startup(), '!', 0, 0, 0, 4),
		"truncated query":        append(startup(), 'Q', 0, 0, 0, 100, 'S', 'E'),
		"bad bind":               append(startup(), 'B', 0, 0, 0, 6, 'x', 'y', 'S', 0, 0, 0, 4),
	}
	for name, in := range inputs {
		c, err := net.Dial("tcp", e.proxy.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(in); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "truncated query" {
			c.(*net.TCPConn).CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, _ := c.Read(buf)
		c.Close()
		t.Logf("%s: proxy answered %q", name, buf[:min(n, 80)])
		var one int
		if err := good.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			t.Fatalf("after %s the well-behaved client failed: %v", name, err)
		}
	}
	// The oversized message got a protocol-violation error, not silence.
	c, err := net.Dial("tcp", e.proxy.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(inputs["oversized message"])
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	all := make([]byte, 0, 8192)
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		all = append(all, buf[:n]...)
		if err != nil {
			break
		}
	}
	if !strings.Contains(string(all), "08P01") || !strings.Contains(string(all), "too large") {
		t.Fatalf("oversized message answer: %q", all)
	}
}
