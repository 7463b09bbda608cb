package wan

import (
	"net"
	"testing"
	"time"
)

// BenchmarkThroughput measures a one-way bulk copy directly to a sink and
// through links of increasing latency, in one run, so the MB/s columns
// compare directly:
//
//	go test -run '^$' -bench Throughput ./internal/wan/
//
// Each op is a 1 MiB write; the time includes draining the link at the end.
func BenchmarkThroughput(b *testing.B) {
	for _, bc := range []struct {
		name string
		link bool
		rtt  time.Duration
	}{
		{name: "direct"},
		{name: "link_rtt=0", link: true},
		{name: "link_rtt=64ms", link: true, rtt: rtt64},
	} {
		b.Run(bc.name, func(b *testing.B) {
			done := make(chan sinkResult, 1)
			srv := startServer(b, sink(done))
			addr := srv.Addr()
			if bc.link {
				addr = newLink(b, addr, OneWay(bc.rtt), 0).Addr()
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				b.Fatal(err)
			}
			if res := <-done; res.n != int64(b.N*len(buf)) {
				b.Fatalf("sink received %d bytes, want %d", res.n, b.N*len(buf))
			}
		})
	}
}
