package proxy

import (
	"encoding/binary"
)

// protoState is a server connection's protocol state as the proxy has driven it: what the server
// still owes for what was written, and the transaction status it last reported. Every write to a
// server connection goes through serverConn.send and every read through serverConn.next, which keep
// it; release consults it (see clean), so that a connection goes back to the pool only when it is
// provably idle: PgBouncer's rule, and pgconn's single status field (STYLE.md habit 9).
//
// The counting follows https://www.postgresql.org/docs/15/protocol-flow.html: every Query, Sync and
// FunctionCall is answered by exactly one ReadyForQuery, except a Sync that reaches the server while
// it is in COPY FROM STDIN started by an extended-protocol Execute (the server ignores it; relay
// accounts for that).
type protoState struct {
	owed  int  // ReadyForQuery messages the server owes for what was written
	dirty bool // written to since the ReadyForQuery that settled everything
	txn   byte // transaction status of the last ReadyForQuery: 'I', 'T' or 'E'
	// skipping: an error ended an extended-protocol batch that had no Sync (only Flush): the server
	// discards every message until the next Sync, which the next batch must account for.
	skipping bool
	// authChanged: the server reported a session_authorization or is_superuser other than at login:
	// another identity's session must never be lent to another client.
	authChanged bool
}

// send writes whole protocol messages to the server connection's buffer, counting the answers they
// ask for. Errors surface at the flush.
func (s *serverConn) send(b []byte) error {
	s.st.dirty = true
	for rest := b; len(rest) >= 5; {
		switch rest[0] {
		case msgQuery, msgSync, msgFuncCall:
			s.st.owed++
		}
		n := int(binary.BigEndian.Uint32(rest[1:5])) + 1
		if n < 5 || n > len(rest) {
			break
		}
		rest = rest[n:]
	}
	_, err := s.wr.Write(b)
	return err
}

// next reads one message from the server, keeping the protocol state.
func (s *serverConn) next() (byte, []byte, error) {
	typ, msg, err := s.rd.next()
	if err != nil {
		s.broken = true
		return typ, msg, err
	}
	switch typ {
	case msgReadyForQuery:
		if len(msg) >= 6 {
			s.st.txn = msg[5]
		}
		if s.st.owed > 0 {
			s.st.owed--
		}
		if s.st.owed == 0 {
			s.st.dirty = false
		}
	case msgParamStatus:
		s.noteParameter(msg)
	}
	return typ, msg, err
}

// noteParameter watches the ParameterStatus messages that tell the session's identity changed
// (SET SESSION AUTHORIZATION, SET ROLE to or from a superuser): such a connection is not clean.
func (s *serverConn) noteParameter(msg []byte) {
	name, rest, err := cstring(msg[5:])
	if err != nil || (name != "session_authorization" && name != "is_superuser") {
		return
	}
	value, _, err := cstring(rest)
	if err != nil {
		s.broken = true
		return
	}
	if s.reported == nil {
		s.reported = map[string]string{"session_authorization": s.params["session_authorization"],
			"is_superuser": s.params["is_superuser"]}
	}
	s.reported[name] = value
	s.st.authChanged = s.reported["session_authorization"] != s.params["session_authorization"] ||
		s.reported["is_superuser"] != s.params["is_superuser"]
}

// settled reports whether the server has answered everything written to it.
func (s *serverConn) settled() bool {
	return s.st.owed == 0 && !s.st.dirty && s.wr.Buffered() == 0
}

// clean reports whether the connection may be lent to another client as it is: not broken, every
// answer read and nothing more written, no transaction open, no unread bytes, and the login's
// identity.
func (s *serverConn) clean() bool {
	return !s.broken && s.settled() && s.st.txn == 'I' && !s.st.skipping && !s.st.authChanged && s.rd.buffered() == 0
}

// stateName describes the protocol state for logs and SHOW SERVERS.
func (s *serverConn) stateName() string {
	switch {
	case s.broken:
		return "broken"
	case s.st.owed > 0:
		return "awaiting answers"
	case s.st.dirty:
		return "mid-pipeline"
	case s.st.skipping:
		return "skipping to sync"
	case s.st.txn == 'T':
		return "in transaction"
	case s.st.txn == 'E':
		return "in failed transaction"
	case s.st.authChanged:
		return "other role"
	}
	return "idle"
}
