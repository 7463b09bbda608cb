package proxy

import (
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// idleWatch relays what a session's own server connection says while the session does not use it:
// NotificationResponse (LISTEN), NoticeResponse and ParameterStatus are asynchronous messages
// (https://www.postgresql.org/docs/15/protocol-flow.html#PROTOCOL-ASYNC) that a direct connection
// delivers at once, not with the client's next statement; a FATAL error (pg_terminate_backend of the
// PID the client was given, a server shutdown) ends the session at once, as it would end a direct
// connection. It runs while the session's goroutine waits for the client's next message (idle), or
// while the session runs a statement on another node (busy: then only a FATAL error or the
// connection's loss is acted on; anything else stays buffered for the next idle watch). It stops
// (halt) before that goroutine uses the connection again.
type idleWatch struct {
	c    *client
	sc   *serverConn
	busy bool
	mu   sync.Mutex // held while a message is read and relayed; guards stop
	stop bool
	done chan struct{}
}

// watched returns the session's own server connection when it is at rest and not the one in use:
// the pinned one, or in session mode the primary's connection the session was given at login (whose
// backend's PID the client knows).
func (c *client) watched() *serverConn {
	node := c.pinnedNode
	if node == "" && c.p.cfg.PoolMode == PoolSession {
		node = c.ownNode
	}
	if node == "" {
		return nil
	}
	sc := c.held[node]
	if sc == nil || sc == c.cur || sc.broken || !sc.settled() {
		return nil
	}
	return sc
}

// watchIdle starts watching the session's own connection while the client is idle; nil when there
// is nothing to watch.
func (c *client) watchIdle() *idleWatch {
	if c.cur != nil || c.rd.buffered() > 0 {
		return nil
	}
	return c.startWatch(false)
}

// watchBusy starts watching the session's own connection while the statement runs on c.cur. What
// the connection said while nobody watched (its backend terminated just before this statement) is
// looked at first, so that the statement does not run elsewhere for a session that has ended.
func (c *client) watchBusy() {
	if c.busyWatch != nil {
		return
	}
	if sc := c.watched(); sc != nil && !sc.alive() {
		w := &idleWatch{c: c, sc: sc, busy: true, done: make(chan struct{})}
		w.run() // at once: the bytes (or the end of the connection) are there
	}
	c.busyWatch = c.startWatch(true)
}

// haltBusy stops the watch started by watchBusy.
func (c *client) haltBusy() {
	c.busyWatch.halt()
	c.busyWatch = nil
}

func (c *client) startWatch(busy bool) *idleWatch {
	sc := c.watched()
	if sc == nil {
		return nil
	}
	w := &idleWatch{c: c, sc: sc, busy: busy, done: make(chan struct{})}
	go w.run()
	return w
}

func (w *idleWatch) run() {
	defer close(w.done)
	for {
		hdr, err := w.sc.rd.r.Peek(5) // consumes nothing; interrupted by halt's deadline
		w.mu.Lock()
		if w.stop || (w.busy && err == nil && hdr[0] != msgErrorResponse) {
			w.mu.Unlock()
			return
		}
		if err != nil {
			w.sc.broken = true
			w.mu.Unlock()
			w.c.terminate(&pgError{Severity: "FATAL", Code: codeConnectionFailure,
				Message: "the server connection of this session was lost; its session state (LISTEN, temporary tables, ...) is gone, reconnect"})
			return
		}
		typ, msg, err := w.sc.next()
		ok := err == nil
		switch {
		case !ok:
		case typ == msgNotification || typ == msgNotice || typ == msgParamStatus:
			_, _ = w.c.wr.Write(msg)
			ok = w.c.wr.Flush() == nil
		case typ == msgErrorResponse:
			// The backend is going away (terminated, server shut down): the client hears it now,
			// as it would directly, and its session ends.
			var e pgproto3.ErrorResponse
			pe := &pgError{Severity: "FATAL", Code: codeConnectionFailure, Message: "the server closed the connection"}
			if e.Decode(msg[5:]) == nil {
				pe.Code, pe.Message, pe.Detail, pe.Hint = e.Code, e.Message, e.Detail, e.Hint
			}
			w.sc.broken = true
			w.mu.Unlock()
			w.c.terminate(pe)
			return
		default:
			ok = false // nothing else may come from an idle server
		}
		if !ok {
			w.sc.broken = true
			w.mu.Unlock()
			w.c.terminate(&pgError{Severity: "FATAL", Code: codeConnectionFailure,
				Message: "the server connection of this session failed while idle; reconnect"})
			return
		}
		w.mu.Unlock()
	}
}

// halt stops the watch and waits for it; a message being relayed is finished first. Nothing is lost:
// bytes that arrive meanwhile stay in the connection's buffer for the session's next relay.
func (w *idleWatch) halt() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.stop = true
	_ = w.sc.conn.SetReadDeadline(time.Now())
	w.mu.Unlock()
	<-w.done
	_ = w.sc.conn.SetReadDeadline(time.Time{})
}
