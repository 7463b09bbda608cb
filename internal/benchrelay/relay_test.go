//go:build linux

package benchrelay

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestRelayCopiesBothWaysAndCloses relays to a TCP echo server: what goes in comes back, for several
// clients at once, and a client that leaves takes its server connection with it.
func TestRelayCopiesBothWaysAndCloses(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	serverGone := make(chan struct{}, 8)
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(c, c) // ends when the relay closes its side
				c.Close()
				serverGone <- struct{}{}
			}()
		}
	}()
	r, err := Start("127.0.0.1:0", echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range 3 {
		c, err := net.Dial("tcp", r.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		for j := range 20 {
			msg := bytes.Repeat([]byte{byte('a' + i)}, 100+j)
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("client %d message %d: %v", i, j, err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("client %d message %d: got %q", i, j, got)
			}
		}
		c.Close()
		select {
		case <-serverGone:
		case <-time.After(5 * time.Second):
			t.Fatalf("client %d left, its server connection stayed open", i)
		}
	}
}
