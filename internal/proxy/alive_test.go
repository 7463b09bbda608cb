package proxy

import (
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection (no goroutine: the kernel completes the
// handshake before Accept).
func tcpPair(t *testing.T) (local, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	local, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { local.Close() })
	peer, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	return local, peer
}

func idleServerConn(conn net.Conn) *serverConn {
	return &serverConn{conn: conn, rd: newMsgReader(newRawIO(conn), 1024, 1<<20), probe: newIdleProbe(conn),
		st: protoState{txn: 'I'}}
}

// waitNotAlive waits until what the peer did reaches the socket.
func waitNotAlive(t *testing.T, sc *serverConn) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); sc.alive(); {
		if time.Now().After(deadline) {
			t.Fatal("the socket still looks idle")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAlive: an idle connection is alive until its peer says anything or closes, or it is closed
// under its holder; a look consumes nothing and allocates nothing.
func TestAlive(t *testing.T) {
	local, peer := tcpPair(t)
	sc := idleServerConn(local)
	if !sc.alive() {
		t.Fatal("a quiet connection is not alive")
	}
	if n := testing.AllocsPerRun(100, func() { sc.alive() }); n != 0 {
		t.Errorf("alive allocates %v times", n)
	}
	if _, err := peer.Write([]byte{msgErrorResponse}); err != nil {
		t.Fatal(err)
	}
	waitNotAlive(t, sc)
	var b [1]byte
	if n, err := sc.rd.r.Read(b[:]); n != 1 || b[0] != msgErrorResponse {
		t.Fatalf("the byte the peer sent was consumed by alive: read %d %q, %v", n, b[:n], err)
	}

	local, peer = tcpPair(t)
	sc = idleServerConn(local)
	peer.Close()
	waitNotAlive(t, sc)

	local, _ = tcpPair(t)
	sc = idleServerConn(local)
	local.Close()
	if sc.alive() {
		t.Error("a connection closed under its holder is alive")
	}
}

// TestUsableLooksAfterRecentlyReleased: a connection released less than recentlyReleased ago is lent
// without looking at its socket, unless the proxy aborted it; an older one is looked at.
func TestUsableLooksAfterRecentlyReleased(t *testing.T) {
	pl := &pool{p: &Proxy{}}
	local, peer := tcpPair(t)
	sc := idleServerConn(local)
	if _, err := peer.Write([]byte{msgErrorResponse}); err != nil {
		t.Fatal(err)
	}
	waitNotAlive(t, sc)
	sc.lastUsed = time.Now()
	if !pl.usable(sc) {
		t.Error("a connection released a moment ago was looked at")
	}
	sc.lastUsed = time.Now().Add(-recentlyReleased)
	if pl.usable(sc) {
		t.Error("a connection released recentlyReleased ago with bytes waiting is usable")
	}

	local, _ = tcpPair(t)
	sc = idleServerConn(local)
	reason := "node down"
	sc.aborted.Store(&reason)
	local.Close()
	sc.lastUsed = time.Now()
	if pl.usable(sc) {
		t.Error("a connection the proxy aborted is usable")
	}
}
