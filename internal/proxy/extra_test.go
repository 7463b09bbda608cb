package proxy_test

import (
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
