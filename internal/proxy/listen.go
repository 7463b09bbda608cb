package proxy

import (
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// idleWatch relays what a pinned session's server connection says while the client is idle:
// NotificationResponse (LISTEN), NoticeResponse and ParameterStatus are asynchronous messages
// (https://www.postgresql.org/docs/15/protocol-flow.html#PROTOCOL-ASYNC) that a direct connection
// delivers at once, not with the client's next statement. It runs while the session's goroutine waits
// for the client's next message, and stops (halt) before that goroutine uses the connection again.
type idleWatch struct {
	c    *client
	sc   *serverConn
	mu   sync.Mutex // held while a message is read and relayed; guards stop
	stop bool
	done chan struct{}
}

// watchIdle starts watching the pinned connection, when there is one at rest; nil otherwise.
func (c *client) watchIdle() *idleWatch {
	if c.pinnedNode == "" || c.cur != nil || c.rd.buffered() > 0 {
		return nil
	}
	sc := c.held[c.pinnedNode]
	if sc == nil || sc.broken || !sc.settled() {
		return nil
	}
	w := &idleWatch{c: c, sc: sc, done: make(chan struct{})}
	go w.run()
	return w
}

func (w *idleWatch) run() {
	defer close(w.done)
	for {
		_, err := w.sc.rd.r.Peek(1) // consumes nothing; interrupted by halt's deadline
		w.mu.Lock()
		if w.stop {
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
