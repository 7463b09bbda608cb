package wan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// rtt64 is the published us-east-1 <-> us-west-2 median round-trip time the
// lab emulates.
const rtt64 = 64 * time.Millisecond

func TestLatency(t *testing.T) {
	srv := startServer(t, echo)
	link := newLink(t, srv.Addr(), OneWay(rtt64), 0)
	c := dial(t, link.Addr())
	roundTrip(t, c, []byte("warm-up"), 5*time.Second) // excludes the dial of the target

	rtts := measureRTT(t, c, 21)
	med := median(rtts)
	t.Logf("RTT through a %v link: min %v, median %v, max %v", rtt64, rtts[0], med, rtts[len(rtts)-1])
	t.Logf("all: %v", rtts)

	if rtts[0] < rtt64-time.Millisecond {
		t.Errorf("fastest round trip %v is below %v: the link delivered early", rtts[0], rtt64)
	}
	if d := med - rtt64; d < -5*time.Millisecond || d > 5*time.Millisecond {
		t.Errorf("median round trip %v, want %v ± 5ms", med, rtt64)
	}
}

func TestBandwidthKeptUnderLatency(t *testing.T) {
	const total = 256 << 20
	done := make(chan sinkResult, 1)
	srv := startServer(t, sink(done))
	link := newLink(t, srv.Addr(), OneWay(rtt64), 0)
	c := dial(t, link.Addr())

	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	start := time.Now()
	for sent := 0; sent < total; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	var res sinkResult
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("sink did not receive everything within 60s")
	}
	if res.n != total {
		t.Fatalf("sink received %d bytes, want %d", res.n, total)
	}
	// The first byte cannot arrive before one one-way latency: that part is
	// the latency, not the bandwidth.
	elapsed := res.last.Sub(start) - OneWay(rtt64)
	mbps := float64(total) / elapsed.Seconds() / 1e6
	t.Logf("%d MiB through a %v RTT link in %v (+%v latency): %.0f MB/s",
		total>>20, rtt64, elapsed.Round(time.Millisecond), OneWay(rtt64), mbps)
	// Every chunk (at most chunkSize) is delayed by the one-way latency; delivered one after another,
	// the chunks would take at least total/chunkSize × latency. Overlapping in flight, they take about
	// the copy time plus one latency. The bound below is a twentieth of the serial time: far above
	// the copy time on a loaded machine (a test asserts no speed), far below what serial delays cost.
	serial := time.Duration(total/chunkSize) * OneWay(rtt64)
	if elapsed > serial/20 {
		t.Errorf("%v for %d chunks of at most %d bytes: per-chunk delays do not overlap (one after another they take %v)",
			elapsed, total/chunkSize, chunkSize, serial)
	}
}

func TestPartition(t *testing.T) {
	srv := startServer(t, echo)
	link := newLink(t, srv.Addr(), 5*time.Millisecond, 0)
	established := dial(t, link.Addr())
	roundTrip(t, established, []byte("before"), 5*time.Second)

	link.Partition()
	if !link.Partitioned() {
		t.Fatal("Partitioned() = false after Partition")
	}

	// Established connection: the write is accepted (queued), nothing comes back.
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	if _, err := tryRoundTrip(established, payload, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("round trip during partition: got %v, want a timeout", err)
	}

	// New connection: the kernel accepts it, but it is not forwarded.
	fresh := dial(t, link.Addr())
	if _, err := tryRoundTrip(fresh, []byte("hello"), 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("round trip on a new connection during partition: got %v, want a timeout", err)
	}
	if n := srv.accepted.Load(); n != 1 {
		t.Errorf("target accepted %d connections during the partition, want 1 (the one from before)", n)
	}

	link.Heal()
	if link.Partitioned() {
		t.Fatal("Partitioned() = true after Heal")
	}
	// What was sent during the partition arrives intact and in order.
	if err := established.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(established, got); err != nil {
		t.Fatalf("reading data sent during the partition: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("data sent during the partition came back corrupted or out of order")
	}
	if err := fresh.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, len("hello"))
	if _, err := io.ReadFull(fresh, got); err != nil || string(got) != "hello" {
		t.Fatalf("new connection after heal: got %q, %v; want \"hello\"", got, err)
	}
	roundTrip(t, established, []byte("after"), 5*time.Second)
	roundTrip(t, fresh, []byte("after"), 5*time.Second)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestReset(t *testing.T) {
	srv := startServer(t, echo)
	link := newLink(t, srv.Addr(), time.Millisecond, 0)
	old := dial(t, link.Addr())
	roundTrip(t, old, []byte("before"), 5*time.Second)

	link.Reset()

	if err := old.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := old.Read(make([]byte, 1))
	if err == nil || isTimeout(err) {
		t.Fatalf("read on a reset connection: got %d bytes, %v; want EOF or a connection error", n, err)
	}

	fresh := dial(t, link.Addr())
	roundTrip(t, fresh, []byte("after"), 5*time.Second)
	if got := link.Stats().Accepted; got != 2 {
		t.Errorf("Stats().Accepted = %d, want 2", got)
	}
}

func TestSetLatency(t *testing.T) {
	srv := startServer(t, echo)
	link := newLink(t, srv.Addr(), OneWay(20*time.Millisecond), 0)
	c := dial(t, link.Addr())
	roundTrip(t, c, []byte("warm-up"), 5*time.Second)

	for _, rtt := range []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 20 * time.Millisecond} {
		link.SetLatency(OneWay(rtt), 0)
		if lat, jit := link.Latency(); lat != OneWay(rtt) || jit != 0 {
			t.Fatalf("Latency() = %v, %v; want %v, 0", lat, jit, OneWay(rtt))
		}
		rtts := measureRTT(t, c, 5)
		med := median(rtts)
		t.Logf("configured RTT %v: measured median %v (min %v)", rtt, med, rtts[0])
		if rtts[0] < rtt-time.Millisecond || med > rtt+10*time.Millisecond {
			t.Errorf("configured RTT %v: measured min %v, median %v", rtt, rtts[0], med)
		}
	}
}

func TestJitterKeepsOrder(t *testing.T) {
	srv := startServer(t, echo)
	link := newLink(t, srv.Addr(), 3*time.Millisecond, 3*time.Millisecond)
	c := dial(t, link.Addr())

	const n = 4000
	errc := make(chan error, 1)
	go func() {
		// Many small, paced writes so that the link sees many chunks, each
		// with its own jitter draw.
		var msg [4]byte
		for i := range n {
			binary.BigEndian.PutUint32(msg[:], uint32(i))
			if _, err := c.Write(msg[:]); err != nil {
				errc <- err
				return
			}
			if i%20 == 0 {
				time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
			}
		}
		errc <- c.CloseWrite()
	}()

	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if len(got) != 4*n {
		t.Fatalf("received %d bytes, want %d", len(got), 4*n)
	}
	for i := range n {
		if v := binary.BigEndian.Uint32(got[4*i:]); v != uint32(i) {
			t.Fatalf("message %d carries %d: the stream was reordered or corrupted", i, v)
		}
	}
}

func TestHalfClose(t *testing.T) {
	// The server reads the whole request, answers, and closes; the client
	// half-closes after its request, as many protocols do.
	srv := startServer(t, func(c net.Conn) {
		req, err := io.ReadAll(c)
		if err != nil {
			return
		}
		_, _ = c.Write(append([]byte("got "), req...))
	})
	link := newLink(t, srv.Addr(), 2*time.Millisecond, 0)
	c := dial(t, link.Addr())
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != "got request" {
		t.Fatalf("got %q, want %q", got, "got request")
	}
}

func TestDialFailureClosesClient(t *testing.T) {
	// A port that nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close()

	link := newLink(t, target, 0, 0)
	c := dial(t, link.Addr())
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read: got %d bytes, %v; want EOF or a connection error", n, err)
	}
	if got := link.Stats().DialFailures; got != 1 {
		t.Errorf("Stats().DialFailures = %d, want 1", got)
	}
}

func TestCloseIdempotentNoLeaks(t *testing.T) {
	srv := startServer(t, echo)
	link, err := New(Config{Listen: "127.0.0.1:0", Target: srv.Addr(), Latency: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr := link.Addr()

	// One connection with traffic, one with bytes queued behind a partition
	// and one held before dialing: Close must end them all.
	busy := dial(t, addr)
	roundTrip(t, busy, []byte("hello"), 5*time.Second)
	link.Partition()
	if _, err := busy.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	held := dial(t, addr)
	if _, err := held.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}

	if err := link.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := link.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := link.Stats(); got.Active != 0 || got.Accepted != 2 || got.BytesToTarget != 5 || got.BytesToClient != 5 {
		t.Errorf("Stats() after Close = %+v, want Active 0, Accepted 2, 5 bytes each way", got)
	}
	for _, c := range []net.Conn{busy, held} {
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(make([]byte, 16)); err == nil || isTimeout(err) {
			t.Errorf("read after Close: got %d bytes, %v; want EOF or a connection error", n, err)
		}
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("dial after Close succeeded; the listener should be closed")
	}

	busy.Close()
	held.Close()
	srv.Close()
	goleak.VerifyNone(t)
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	_, err := New(Config{Listen: "127.0.0.1:0"})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "Target" {
		t.Fatalf("New without Target: got %v, want a *ConfigError for Target", err)
	}
}

func TestNewListenError(t *testing.T) {
	srv := startServer(t, echo)
	_, err := New(Config{Listen: srv.Addr(), Target: srv.Addr()})
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("New on a port in use: got %v, want a wrapped *net.OpError", err)
	}
}
