package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridiandb/meridian/internal/auth"
	"github.com/meridiandb/meridian/internal/scram"
)

// fuzzProxy is a proxy whose nodes are unreachable and whose discovery never ran: every statement
// that needs a server gets an error, so the fuzzers exercise parsing, batching and error paths.
func fuzzProxy(tb testing.TB) *Proxy {
	cfg := DefaultConfig()
	cfg.Region = "r"
	cfg.Nodes = []NodeConfig{{Name: "n", Address: "127.0.0.1:1", Region: "r"}}
	p, err := New(cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func msg(typ byte, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	out := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)+4))
	return append(out, b...)
}

func cstr(s string) []byte { return append([]byte(s), 0) }

// FuzzClientMessages feeds arbitrary bytes to a logged-in client session of a proxy in front of real
// servers (a primary and a replica, one server connection per pool). It must never panic or hang,
// whatever the bytes, and afterwards a fresh client must find clean server connections (see
// FuzzSessionIsolation, which builds its sequences from whole messages).
func FuzzClientMessages(f *testing.F) {
	f.Add(msg('Q', cstr("SELECT 1")))
	f.Add(msg('Q', cstr("BEGIN")))
	f.Add(append(msg('Q', cstr("BEGIN")), msg('Q', cstr("COMMIT"))...))
	f.Add(bytes.Join([][]byte{
		msg('P', cstr("s1"), cstr("SELECT $1"), []byte{0, 1, 0, 0, 0, 23}),
		msg('D', []byte{'S'}, cstr("s1")),
		msg('S'),
	}, nil))
	f.Add(bytes.Join([][]byte{
		msg('B', cstr(""), cstr("s1"), []byte{0, 0, 0, 0, 0, 0}),
		msg('E', cstr(""), []byte{0, 0, 0, 0}),
		msg('C', []byte{'S'}, cstr("s1")),
		msg('H'),
		msg('S'),
	}, nil))
	f.Add(msg('Q', cstr("SET meridian.route = primary")))
	f.Add(msg('Q', cstr("SHOW meridian.route")))
	f.Add(msg('Q', cstr("DEALLOCATE ALL")))
	f.Add(msg('d', []byte("x")))
	f.Add(msg('F', []byte{0, 0, 0, 1}))
	f.Add([]byte{'Q', 0, 0, 0, 3})
	f.Add([]byte{'Q', 0x7f, 0xff, 0xff, 0xff})
	f.Add(msg('X'))
	env := newIsolationEnv(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		env.sessionBytes(t, data, 1)
		env.check(t)
	})
}

// onPipe runs a client session of p over a pipe whose other end sends data then closes (what the
// proxy sends back is read and dropped); the session must end within 30 seconds.
func onPipe(t *testing.T, p *Proxy, data []byte, session func(c *client)) {
	server, peer := net.Pipe()
	c := newClient(p, server)
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	go func() {
		_, _ = peer.Write(data)
		_ = peer.Close()
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		session(c)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the session hung on the input")
	}
	server.Close()
}

// FuzzStartup feeds arbitrary bytes as a startup sequence.
func FuzzStartup(f *testing.F) {
	startup := func(params ...string) []byte {
		var body []byte
		body = binary.BigEndian.AppendUint32(body, protocolV3)
		for _, s := range params {
			body = append(body, cstr(s)...)
		}
		body = append(body, 0)
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
	}
	f.Add(startup("user", "u", "database", "d"))
	f.Add(startup("user", "u", "options", "-c search_path=a,b --work-mem=8MB"))
	f.Add(append([]byte{0, 0, 0, 8, 4, 210, 22, 47}, startup("user", "u")...))
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2})
	f.Add(startup("user", "u", "replication", "true"))
	f.Add([]byte{0, 0, 0, 4})
	p := fuzzProxy(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		server, peer := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, peer) }()
		go func() {
			_, _ = peer.Write(data)
			_ = peer.Close()
		}()
		_, _, _ = p.readStartup(server, time.Now().Add(5*time.Second))
		server.Close()
	})
}

// FuzzAuthExchange feeds arbitrary bytes as a client's side of password authentication (SCRAM for
// "u", md5 for "m", the mock exchange for an unknown user; the first byte picks). It must end with
// success or an error, never a panic or a hang.
func FuzzAuthExchange(f *testing.F) {
	f.Add([]byte{0}, msg('p', cstr("SCRAM-SHA-256"), []byte{0, 0, 0, 20}, []byte("n,,n=u,r=abcdefghijkl")))
	f.Add([]byte{0}, bytes.Join([][]byte{
		msg('p', cstr("SCRAM-SHA-256"), []byte{0, 0, 0, 20}, []byte("n,,n=u,r=abcdefghijkl")),
		msg('p', []byte("c=biws,r=abcdefghijkl,p=AAAA")),
	}, nil))
	f.Add([]byte{1}, msg('p', cstr("md5"+strings.Repeat("0", 32))))
	f.Add([]byte{2}, msg('p', cstr("SCRAM-SHA-256"), []byte{0xff, 0xff, 0xff, 0xff}))
	f.Add([]byte{0}, msg('Q', cstr("SELECT 1")))
	dir := f.TempDir()
	file := filepath.Join(dir, "users.txt")
	v, err := scram.NewVerifier("pw", scram.DefaultIterations)
	if err != nil {
		f.Fatal(err)
	}
	os.WriteFile(file, []byte(`"u" "`+v.String()+`"`+"\n"+`"m" "md5`+strings.Repeat("a", 32)+`"`+"\n"), 0o600)
	cfg := DefaultConfig()
	cfg.Region = "r"
	cfg.Nodes = []NodeConfig{{Name: "n", Address: "127.0.0.1:1", Region: "r"}}
	cfg.Auth = AuthConfig{File: file, Rules: []AuthRule{{User: auth.NameList{"m"}, Method: AuthMD5}, {Method: AuthSCRAM}}}
	p, err := New(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	users := []string{"u", "m", "ghost"}
	f.Fuzz(func(t *testing.T, who, data []byte) {
		user := users[0]
		if len(who) > 0 {
			user = users[int(who[0])%len(users)]
		}
		onPipe(t, p, data, func(c *client) {
			_, _ = c.authenticate(context.Background(), &startup{user: user, database: "d"}, time.Now().Add(5*time.Second))
		})
	})
}
