package wan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// pipe is one forwarded connection: the accepted client connection, the
// connection dialed to the target, and a direction for each way.
type pipe struct {
	link   *Link
	client net.Conn
	remote string

	// ctx ends when the pipe is aborted; its cause is the first error.
	ctx    context.Context
	cancel context.CancelCauseFunc

	wg sync.WaitGroup // the four goroutines of the two directions

	mu      sync.Mutex // guards the fields below
	target  net.Conn   // nil until dialed
	aborted bool
}

func newPipe(l *Link, client net.Conn) *pipe {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &pipe{
		link:   l,
		client: client,
		remote: client.RemoteAddr().String(),
		ctx:    ctx,
		cancel: cancel,
	}
}

// run forwards the connection until both directions are done or the pipe is
// aborted, then closes both sides. It is owned by the Link's wait group.
func (p *pipe) run() {
	l := p.link
	defer l.wg.Done()
	defer l.unregister(p)
	log := l.log.With("remote", p.remote)
	log.Debug("wan connection accepted")

	err := p.forward()
	p.closeConns()
	p.cancel(nil)

	switch {
	case err == nil, errors.Is(err, errReset), errors.Is(err, errLinkClosed):
		log.Debug("wan connection closed", "err", err)
	default:
		// The one place an I/O failure of this connection is reported.
		log.Debug("wan connection failed", "err", err)
	}
}

// forward waits out a partition, dials the target and runs both directions.
// It returns the cause of an abort, or nil after a clean double half-close.
func (p *pipe) forward() error {
	l := p.link
	if err := l.waitHealed(p.ctx); err != nil {
		return context.Cause(p.ctx)
	}
	d := net.Dialer{Timeout: l.dialTimeout}
	target, err := d.DialContext(p.ctx, "tcp", l.target)
	if err != nil {
		if p.ctx.Err() != nil {
			return context.Cause(p.ctx)
		}
		l.dialFailures.Add(1)
		err = fmt.Errorf("dial target %s: %w", l.target, err)
		l.log.Warn("wan link cannot reach target", "remote", p.remote, "err", err)
		return err
	}
	if !p.setTarget(target) {
		target.Close()
		return context.Cause(p.ctx)
	}

	dirs := []*direction{
		{p: p, src: p.client, dst: target, from: "client", to: "target", bytes: &l.bytesToTarget},
		{p: p, src: target, dst: p.client, from: "target", to: "client", bytes: &l.bytesToClient},
	}
	p.wg.Add(2 * len(dirs))
	for _, d := range dirs {
		d.q = newQueue(queueLimit)
		go d.read()
		go d.write()
	}
	p.wg.Wait()
	if p.ctx.Err() != nil {
		return context.Cause(p.ctx)
	}
	return nil
}

func (p *pipe) setTarget(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.aborted {
		return false
	}
	p.target = c
	return true
}

// abort ends the pipe with cause err (the first cause wins) and closes both
// connections, which unblocks its goroutines' reads and writes.
func (p *pipe) abort(err error) {
	p.cancel(err)
	p.mu.Lock()
	p.aborted = true
	p.mu.Unlock()
	p.closeConns()
}

func (p *pipe) closeConns() {
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	// Errors are ignored: the connection may already be closed, and the
	// error that ended the pipe has been recorded.
	_ = p.client.Close()
	if target != nil {
		_ = target.Close()
	}
}

// direction carries bytes one way: read from src, queue with a delivery
// time, write to dst when due.
type direction struct {
	p        *pipe
	src, dst net.Conn
	from, to string        // "client" or "target", for errors
	bytes    *atomic.Int64 // the Link's delivered-bytes counter for this way
	q        *queue
}

// read reads chunks from src, stamps them and queues them, until EOF (which
// it queues too) or failure.
func (d *direction) read() {
	defer d.p.wg.Done()
	l := d.p.link
	var prev time.Time
	for {
		buf := l.getBuf()
		n, err := d.src.Read(*buf)
		if n > 0 {
			c := chunk{deliverAt: l.stamp(time.Now(), prev)}
			prev = c.deliverAt
			if n < chunkSize/2 {
				// Keep small chunks small, so that the memory a queue pins
				// stays within twice its byte limit.
				c.data = append([]byte(nil), (*buf)[:n]...)
				l.bufs.Put(buf)
			} else {
				c.data, c.buf = (*buf)[:n], buf
			}
			if d.q.push(d.p.ctx, c) != nil {
				return
			}
		} else {
			l.bufs.Put(buf)
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			// The half-close travels through the link like data does.
			_ = d.q.push(d.p.ctx, chunk{eof: true, deliverAt: l.stamp(time.Now(), prev)})
			return
		}
		d.p.abort(fmt.Errorf("read from %s: %w", d.from, err))
		return
	}
}

// write delivers queued chunks to dst when they are due, and half-closes
// dst after the last one.
func (d *direction) write() {
	defer d.p.wg.Done()
	l := d.p.link
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		c, err := d.q.pop(d.p.ctx)
		if err != nil {
			return
		}
		if err := l.waitDeliver(d.p.ctx, timer, c.deliverAt); err != nil {
			return
		}
		if c.eof {
			if err := closeWrite(d.dst); err != nil {
				d.p.abort(fmt.Errorf("half-close %s: %w", d.to, err))
			}
			return
		}
		n, err := d.dst.Write(c.data)
		d.bytes.Add(int64(n))
		l.release(c)
		if err != nil {
			d.p.abort(fmt.Errorf("write to %s: %w", d.to, err))
			return
		}
	}
}

// closeWrite shuts down the writing half of c, or all of it if c cannot
// half-close.
func closeWrite(c net.Conn) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}
