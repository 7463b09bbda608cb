//go:build linux

// Package benchrelay is a yardstick for the proxy benchmarks: the event-loop design reduced to its
// least. One locked thread copies bytes between each client and a server connection of its own (no
// pooling, no parsing, no routing, no metrics), waiting in its own epoll and moving data with raw
// recvfrom/sendto, as PgBouncer's loop does minus everything PgBouncer and Meridian do on top. Run
// beside the proxy and PgBouncer, it shows what an event-loop data path in Go could at best be on
// the machine at hand. It is not a proxy anyone should use.
package benchrelay

import (
	"net"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// Relay forwards every connection accepted on its listener to server.
type Relay struct {
	ln   net.Listener
	epfd int
	mu   sync.Mutex
	peer map[int32]int32 // fd → the fd its bytes go to
	done chan struct{}
	wg   sync.WaitGroup
}

// Start listens on listen (host:port, port 0 for any) and relays to server.
func Start(listen, server string) (*Relay, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		ln.Close()
		return nil, err
	}
	r := &Relay{ln: ln, epfd: epfd, peer: map[int32]int32{}, done: make(chan struct{})}
	r.wg.Add(2)
	go r.accept(server)
	go r.loop()
	return r, nil
}

// Addr is the address the relay listens on.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// detach takes a connection's socket out of Go's poller: the relay's own epoll waits on it instead.
func detach(c net.Conn) (int, error) {
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, syscall.EINVAL
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if cerr := rc.Control(func(s uintptr) { fd, err = syscall.Dup(int(s)) }); cerr != nil {
		return -1, cerr
	}
	return fd, err
}

func (r *Relay) accept(server string) {
	defer r.wg.Done()
	for {
		cc, err := r.ln.Accept()
		if err != nil {
			return
		}
		sc, err := net.Dial("tcp", server)
		if err != nil {
			cc.Close()
			continue
		}
		cfd, err1 := detach(cc)
		sfd, err2 := detach(sc)
		if err1 != nil || err2 != nil {
			for _, fd := range []int{cfd, sfd} {
				if fd >= 0 {
					syscall.Close(fd)
				}
			}
			continue
		}
		r.mu.Lock()
		r.peer[int32(cfd)], r.peer[int32(sfd)] = int32(sfd), int32(cfd)
		r.mu.Unlock()
		for _, fd := range []int{cfd, sfd} {
			_ = syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)})
		}
	}
}

func (r *Relay) loop() {
	defer r.wg.Done()
	runtime.LockOSThread()
	events := make([]syscall.EpollEvent, 128)
	buf := make([]byte, 64<<10)
	for {
		select {
		case <-r.done:
			return
		default:
		}
		n, err := syscall.EpollWait(r.epfd, events, 100)
		if err != nil {
			continue
		}
		r.mu.Lock()
		for _, ev := range events[:n] {
			to, ok := r.peer[ev.Fd]
			if !ok {
				continue // closed earlier in this batch
			}
			m, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(ev.Fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0)
			if e == syscall.EAGAIN {
				continue
			}
			if e != 0 || m == 0 {
				r.drop(ev.Fd)
				continue
			}
			// Request/response traffic of a benchmark: the peer's socket buffer has room.
			_, _, _ = syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(to), uintptr(unsafe.Pointer(&buf[0])), m, syscall.MSG_NOSIGNAL, 0, 0)
		}
		r.mu.Unlock()
	}
}

// drop closes a connection and its peer (r.mu held).
func (r *Relay) drop(fd int32) {
	for _, f := range []int32{fd, r.peer[fd]} {
		if _, ok := r.peer[f]; ok {
			delete(r.peer, f)
			_ = syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_DEL, int(f), nil)
			syscall.Close(int(f))
		}
	}
}

// Close stops the relay and closes every connection.
func (r *Relay) Close() {
	r.ln.Close()
	close(r.done)
	r.wg.Wait()
	r.mu.Lock()
	for fd := range r.peer {
		r.drop(fd)
	}
	r.mu.Unlock()
	syscall.Close(r.epfd)
}
