// Command idleconns opens many idle PostgreSQL client connections to one address and holds them open,
// so that scripts/bench-proxy.sh can read a connection pooler's memory per client connection.
//
//	idleconns -addr 127.0.0.1:6432 -n 10000 -ready /tmp/x/ready
//
// It opens -n connections (at most -concurrency at a time; each one must finish the startup handshake
// and reach ReadyForQuery within -connect-timeout), prints "opened X of N ..." and writes the same line
// to the -ready file (atomically), then holds every connection idle until SIGINT or SIGTERM or until
// -hold has passed, and exits. The connections are not closed one by one: the process exits and the
// kernel closes them, which is what a crowd of vanishing clients looks like to a pooler.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6432", "host:port to connect to")
	user := flag.String("user", "postgres", "user name")
	db := flag.String("db", "postgres", "database name")
	n := flag.Int("n", 10000, "number of connections to open")
	concurrency := flag.Int("concurrency", 64, "connections being opened at the same time")
	connectTimeout := flag.Duration("connect-timeout", 15*time.Second, "time allowed for one connection's startup")
	hold := flag.Duration("hold", 10*time.Minute, "how long to hold the connections at most")
	ready := flag.String("ready", "", "file to write the result line to once every connection was tried")
	flag.Parse()

	if err := run(*addr, *user, *db, *n, *concurrency, *connectTimeout, *hold, *ready); err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(1)
	}
}

func run(addr, user, db string, n, concurrency int, connectTimeout, hold time.Duration, ready string) error {
	if n < 1 || concurrency < 1 {
		return fmt.Errorf("-n and -concurrency must be at least 1")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", host, port, user, db))
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var (
		mu       sync.Mutex
		conns    = make([]*pgconn.PgConn, 0, n)
		failed   atomic.Int64
		firstErr string
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, connectTimeout)
				c, err := pgconn.ConnectConfig(cctx, cfg)
				cancel()
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	line := fmt.Sprintf("opened %d of %d in %s (failed %d)", len(conns), n, time.Since(start).Round(time.Millisecond), failed.Load())
	if firstErr != "" {
		line += "; first error: " + firstErr
	}
	fmt.Println(line)
	if ready != "" {
		tmp := filepath.Join(filepath.Dir(ready), "."+filepath.Base(ready)+".tmp")
		if err := os.WriteFile(tmp, []byte(line+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, ready); err != nil {
			return err
		}
	}

	select {
	case <-ctx.Done():
	case <-time.After(hold):
	}
	return nil
}
