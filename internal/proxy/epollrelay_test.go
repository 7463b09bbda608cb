package proxy_test

import (
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"unsafe"
)

// epollRelay is the event-loop design reduced to its least: one locked thread copying bytes between
// each client and a server connection of its own (no pooling, no parsing, no routing, no metrics),
// waiting in its own epoll and moving data with raw recvfrom/sendto, as PgBouncer's loop does minus
// everything PgBouncer and Meridian do on top. The benchmark runs it beside the proxy and PgBouncer:
// it is what an event-loop data path in Go could at best be on this machine.
type epollRelay struct {
	ln   net.Listener
	epfd int
	mu   sync.Mutex
	peer map[int32]int32 // fd → the fd its bytes go to
	done chan struct{}
	wg   sync.WaitGroup
}

func startEpollRelay(tb testing.TB, server string) *epollRelay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		tb.Fatal(err)
	}
	r := &epollRelay{ln: ln, epfd: epfd, peer: map[int32]int32{}, done: make(chan struct{})}
	r.wg.Add(2)
	go r.accept(server)
	go r.loop()
	tb.Cleanup(r.close)
	return r
}

func (r *epollRelay) addr() string { return r.ln.Addr().String() }

// detach takes a connection's socket out of Go's poller: the relay's own epoll waits on it instead.
func detach(c net.Conn) (int, error) {
	defer c.Close()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd, err = syscall.Dup(int(s)) }); err != nil {
		return -1, err
	}
	return fd, err
}

func (r *epollRelay) accept(server string) {
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
			syscall.Close(cfd)
			syscall.Close(sfd)
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

func (r *epollRelay) loop() {
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
			m, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(ev.Fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0)
			if e == syscall.EAGAIN {
				continue
			}
			to, ok := r.peer[ev.Fd]
			if e != 0 || m == 0 || !ok {
				r.drop(ev.Fd)
				continue
			}
			// Small request/response messages: the peer's socket buffer always has room.
			_, _, _ = syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(to), uintptr(unsafe.Pointer(&buf[0])), m, syscall.MSG_NOSIGNAL, 0, 0)
		}
		r.mu.Unlock()
	}
}

// drop closes a connection and its peer (r.mu held).
func (r *epollRelay) drop(fd int32) {
	for _, f := range []int32{fd, r.peer[fd]} {
		if _, ok := r.peer[f]; ok {
			delete(r.peer, f)
			_ = syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_DEL, int(f), nil)
			syscall.Close(int(f))
		}
	}
}

func (r *epollRelay) close() {
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
