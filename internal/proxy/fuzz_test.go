package proxy

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
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

// FuzzClientMessages feeds arbitrary bytes to a logged-in client session. It must never panic or
// hang, whatever the bytes.
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
	p := fuzzProxy(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		server, peer := net.Pipe()
		c := newClient(p, server)
		c.user, c.database = "u", "d"
		go func() { _, _ = io.Copy(io.Discard, peer) }()
		go func() {
			_, _ = peer.Write(data)
			_ = peer.Close()
		}()
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = c.loop()
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("client session hung on the input")
		}
		server.Close()
	})
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
		_, _ = p.readStartup(server, server)
		server.Close()
	})
}
