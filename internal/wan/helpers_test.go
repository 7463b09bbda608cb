package wan

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is a TCP server on a kernel-assigned loopback port that runs
// handle for each connection. Close stops it and waits for its goroutines.
type server struct {
	ln       net.Listener
	handle   func(net.Conn)
	accepted atomic.Int64
	wg       sync.WaitGroup
	once     sync.Once

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
}

func startServer(tb testing.TB, handle func(net.Conn)) *server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	s := &server{ln: ln, handle: handle, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.serve()
	tb.Cleanup(s.Close)
	return s
}

func (s *server) Addr() string { return s.ln.Addr().String() }

func (s *server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.handle(c)
		}()
	}
}

// Close stops accepting, closes every connection and waits for the handlers.
func (s *server) Close() {
	s.once.Do(func() {
		s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// echo writes back everything it reads, then half-closes.
func echo(c net.Conn) {
	_, _ = io.Copy(c, c)
	_ = c.(*net.TCPConn).CloseWrite()
}

// sink counts the bytes it reads until EOF and reports the total and the
// instant the last byte arrived on done.
type sinkResult struct {
	n    int64
	last time.Time
}

func sink(done chan<- sinkResult) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, 256<<10)
		var res sinkResult
		for {
			n, err := c.Read(buf)
			if n > 0 {
				res.n += int64(n)
				res.last = time.Now()
			}
			if err != nil {
				break
			}
		}
		done <- res
	}
}

// newLink starts a link to target with the given delays, listening on a
// kernel-assigned loopback port, logging to the test, closed at cleanup.
func newLink(tb testing.TB, target string, latency, jitter time.Duration) *Link {
	tb.Helper()
	l, err := New(Config{
		Name:    tb.Name(),
		Listen:  "127.0.0.1:0",
		Target:  target,
		Latency: latency,
		Jitter:  jitter,
		Logger:  testLogger(tb),
	})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return l
}

func testLogger(tb testing.TB) *slog.Logger {
	if _, ok := tb.(*testing.B); ok {
		return nil
	}
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func dial(tb testing.TB, addr string) *net.TCPConn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip sends msg and reads the echo, failing the test if it does not
// come back intact within timeout; it returns the round-trip time.
func roundTrip(tb testing.TB, c net.Conn, msg []byte, timeout time.Duration) time.Duration {
	tb.Helper()
	d, err := tryRoundTrip(c, msg, timeout)
	if err != nil {
		tb.Fatalf("round trip: %v", err)
	}
	return d
}

func tryRoundTrip(c net.Conn, msg []byte, timeout time.Duration) (time.Duration, error) {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	defer c.SetDeadline(time.Time{})
	start := time.Now()
	if _, err := c.Write(msg); err != nil {
		return 0, err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	if !bytes.Equal(got, msg) {
		return elapsed, &mismatchError{got: got, want: msg}
	}
	return elapsed, nil
}

type mismatchError struct{ got, want []byte }

func (e *mismatchError) Error() string {
	i := 0
	for i < len(e.got) && e.got[i] == e.want[i] {
		i++
	}
	return fmt.Sprintf("echo of %d bytes differs from byte %d on", len(e.want), i)
}

// measureRTT does n sequential round trips of a small message and returns
// them sorted.
func measureRTT(tb testing.TB, c net.Conn, n int) []time.Duration {
	tb.Helper()
	rtts := make([]time.Duration, n)
	for i := range rtts {
		msg := []byte("ping-" + string(rune('a'+i%26)) + "-0123456789")
		rtts[i] = roundTrip(tb, c, msg, 5*time.Second)
	}
	slices.Sort(rtts)
	return rtts
}

func median(sorted []time.Duration) time.Duration {
	return sorted[len(sorted)/2]
}
