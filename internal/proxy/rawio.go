package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// rawIO reads and writes a socket with raw system calls, waiting in Go's network poller only when the
// socket is not ready (EAGAIN).
//
// Why: a write on a loopback or LAN socket runs the receiver's whole TCP input path and wakes the
// receiving process, which on a virtual machine often takes longer than the runtime's 20 µs limit for
// a goroutine in a system call. The runtime then hands the goroutine's processor to another thread
// (waking it with a futex, often on the other CPU), and its monitor thread keeps polling every 20 µs
// because it keeps finding work. Measured with pgbench through the proxy, that doubled the context
// switches per transaction compared with PgBouncer. The sockets are non-blocking, so a raw call never
// blocks the thread: it returns EAGAIN and the goroutine parks in the poller as net.Conn would.
type rawIO struct {
	conn net.Conn
	rc   syscall.RawConn

	// The state of the call in progress, kept here (with the callbacks bound once) so that a read
	// or write allocates nothing. One Read and one Write may run at the same time, as on net.Conn.
	rbuf, wbuf     []byte
	rn, wn         int
	rerrno, werrno syscall.Errno
	readFn         func(fd uintptr) bool
	writeFn        func(fd uintptr) bool

	// stall, when set, bounds how long one Write may wait for the peer to read (client_write_timeout):
	// the deadline is armed only when the socket is full, so the common case costs nothing.
	stall   time.Duration
	stalled bool // the write deadline is armed

	in, out *atomic.Uint64 // byte counters (meridian_proxy_bytes_total), when set
}

// counted makes rw count its bytes into in and out (rw is a *rawIO, or a plain net.Conn, not counted).
func counted(rw io.ReadWriter, in, out *atomic.Uint64) io.ReadWriter {
	if r, ok := rw.(*rawIO); ok {
		r.in, r.out = in, out
	}
	return rw
}

// newRawIO returns conn's raw reader/writer, or conn itself when it has no file descriptor (a TLS
// connection, a pipe in a test).
func newRawIO(conn net.Conn) io.ReadWriter {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return conn
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return conn
	}
	r := &rawIO{conn: conn, rc: rc}
	r.readFn, r.writeFn = r.readOnce, r.writeAll
	return r
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf, r.rn, r.rerrno = p, 0, 0
	err := r.rc.Read(r.readFn)
	n, errno := r.rn, r.rerrno
	r.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, r.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	if r.in != nil {
		r.in.Add(uint64(n))
	}
	return n, nil
}

// readOnce reads what is there; false (not done) asks the poller to wait until there is something.
func (r *rawIO) readOnce(fd uintptr) bool {
	p := r.rbuf
	for {
		m, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.rn, r.rerrno = int(m), e
		return true
	}
}

func (r *rawIO) Write(p []byte) (int, error) {
	r.wbuf, r.wn, r.werrno = p, 0, 0
	err := r.rc.Write(r.writeFn)
	n, errno := r.wn, r.werrno
	r.wbuf = nil
	if r.stalled {
		r.stalled = false
		_ = r.conn.SetWriteDeadline(time.Time{})
	}
	if r.out != nil {
		r.out.Add(uint64(n))
	}
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, r.opError("write", errno)
	}
	return n, nil
}

// writeAll writes until everything is sent; false asks the poller to wait for room in the socket.
func (r *rawIO) writeAll(fd uintptr) bool {
	p := r.wbuf
	for r.wn < len(p) {
		m, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[r.wn])), uintptr(len(p)-r.wn), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			r.wn += int(m)
		case syscall.EINTR:
		case syscall.EAGAIN:
			if r.stall > 0 && !r.stalled {
				r.stalled = true
				_ = r.conn.SetWriteDeadline(time.Now().Add(r.stall))
			}
			return false
		default:
			r.werrno = e
			return true
		}
	}
	return true
}

// opError wraps a failed system call as net.Conn would.
func (r *rawIO) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.conn.LocalAddr(), Addr: r.conn.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}

// deadlineWriter bounds every Write to conn (a TLS connection, which has no raw socket to watch).
type deadlineWriter struct {
	net.Conn
	timeout time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	_ = w.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.Conn.Write(p)
}

// clientIO returns the reader/writer of a client connection, with client_write_timeout applied.
func clientIO(conn net.Conn, writeTimeout time.Duration) io.ReadWriter {
	rw := newRawIO(conn)
	if writeTimeout <= 0 {
		return rw
	}
	if r, ok := rw.(*rawIO); ok {
		r.stall = writeTimeout
		return r
	}
	return deadlineWriter{Conn: conn, timeout: writeTimeout}
}

// idleProbe looks, without waiting and without consuming anything, whether anything arrived on an
// idle server connection's socket (see serverConn.alive). It is made once per connection, with its
// callback bound, so that a look allocates nothing. Only the connection's holder uses it.
type idleProbe struct {
	rc    syscall.RawConn // nil: no socket to look at (the connection counts as quiet)
	err   error           // the socket could not be reached at all (the connection counts as not quiet)
	fn    func(fd uintptr) bool
	quiet bool // the last look found nothing to read and the socket open
	b     [1]byte
}

// newIdleProbe returns the probe of conn's socket (under TLS, of the TCP connection: TLS records are
// bytes too, and an idle TLS connection has none pending either).
func newIdleProbe(conn net.Conn) *idleProbe {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	p := &idleProbe{}
	sysc, ok := conn.(syscall.Conn)
	if !ok {
		return p
	}
	if p.rc, p.err = sysc.SyscallConn(); p.err != nil {
		p.rc = nil
	}
	p.fn = p.peek
	return p
}

// quietNow peeks at the socket with MSG_PEEK|MSG_DONTWAIT: EAGAIN means nothing to read and the
// connection open. Anything else — bytes, an EOF (0), an error such as ECONNRESET — means it is not.
func (p *idleProbe) quietNow() bool {
	if p.err != nil {
		return false
	}
	if p.rc == nil {
		return true
	}
	p.quiet = false
	err := p.rc.Read(p.fn)
	return err == nil && p.quiet
}

func (p *idleProbe) peek(fd uintptr) bool {
	for {
		_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p.b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		p.quiet = errno == syscall.EAGAIN
		return true
	}
}
