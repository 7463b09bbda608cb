// Command epollrelay runs internal/benchrelay, the event-loop yardstick of scripts/bench-proxy.sh: it
// relays every connection accepted on -listen to -server until SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/meridiandb/meridian/internal/benchrelay"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	server := flag.String("server", "", "PostgreSQL server to relay to (host:port)")
	flag.Parse()
	if *server == "" {
		fmt.Fprintln(os.Stderr, "epollrelay: -server is required")
		os.Exit(2)
	}
	r, err := benchrelay.Start(*listen, *server)
	if err != nil {
		fmt.Fprintln(os.Stderr, "epollrelay:", err)
		os.Exit(1)
	}
	fmt.Println("relaying", r.Addr(), "→", *server)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	r.Close()
}
