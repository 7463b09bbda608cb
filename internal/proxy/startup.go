package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup packet codes (src/include/libpq/pqcomm.h).
const (
	protocolV3        = 3 << 16
	cancelRequestCode = 1234<<16 | 5678
	sslRequestCode    = 1234<<16 | 5679
	gssEncRequestCode = 1234<<16 | 5680
	maxStartupPacket  = 10000 // MAX_STARTUP_PACKET_LENGTH
	maxStartupParams  = 256
)

// startup is a parsed StartupMessage.
type startup struct {
	user, database string
	params         []kv // everything else the client asked for, in order
}

type kv struct{ key, value string }

// readStartup handles SSLRequest (TLS when client_tls allows it, else N), GSSENCRequest (N),
// CancelRequest (forwarded; returns nil) and the StartupMessage. It reads without buffering, so that
// nothing sent in plaintext behind an SSLRequest is taken as if it had come encrypted. It returns the
// connection to go on with: conn, or its TLS layer.
//
// Reads end at deadline (client_login_timeout after the accept).
func (p *Proxy) readStartup(conn net.Conn, deadline time.Time) (*startup, net.Conn, error) {
	_ = conn.SetReadDeadline(deadline)
	defer conn.SetReadDeadline(time.Time{})
	encrypted := false
	for range 3 { // at most SSLRequest, GSSENCRequest, then the real thing
		var hdr [4]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return nil, conn, err
		}
		n := int(int32(binary.BigEndian.Uint32(hdr[:])))
		if n < 8 || n > maxStartupPacket {
			return nil, conn, newError(codeProtocolViolation, "invalid startup packet length %d", n)
		}
		// Read as the bytes arrive rather than allocating the announced length up front.
		body, err := io.ReadAll(io.LimitReader(conn, int64(n-4)))
		if err == nil && len(body) < n-4 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return nil, conn, err
		}
		code := binary.BigEndian.Uint32(body)
		switch {
		case code == sslRequestCode && !encrypted && p.tls.enabled():
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return nil, conn, err
			}
			tc, err := p.tls.handshake(conn, deadline)
			if err != nil {
				return nil, conn, err
			}
			conn, encrypted = tc, true
		case code == sslRequestCode || code == gssEncRequestCode:
			if encrypted {
				return nil, conn, newError(codeProtocolViolation, "encryption requested again inside TLS")
			}
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, conn, err
			}
		case code == cancelRequestCode:
			if len(body) < 12 {
				return nil, conn, newError(codeProtocolViolation, "invalid cancel request")
			}
			p.cancelRequest(binary.BigEndian.Uint32(body[4:]), body[8:])
			return nil, conn, nil
		case code>>16 == 3:
			st, err := parseStartup(body[4:])
			if err != nil {
				return nil, conn, err
			}
			if !encrypted && p.tls.mode == TLSRequire {
				return nil, conn, &pgError{Severity: "FATAL", Code: codeInvalidAuthorization,
					Message: fmt.Sprintf("the proxy requires TLS: connection for user %q, database %q was not encrypted", st.user, st.database),
					Hint:    "Connect with sslmode=require (or verify-full)."}
			}
			if minor := code & 0xffff; minor > 0 {
				// Newer clients ask for 3.x; like PostgreSQL, answer with the version we speak and
				// the _pq_ options we do not understand, then carry on with 3.0.
				var unknown []string
				for _, o := range st.params {
					if strings.HasPrefix(o.key, "_pq_.") {
						unknown = append(unknown, o.key)
					}
				}
				msg := appendMessage(nil, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown})
				if _, err := conn.Write(msg); err != nil {
					return nil, conn, err
				}
			}
			return st, conn, nil
		default:
			return nil, conn, newError(codeProtocolViolation, "unsupported frontend protocol %d.%d: the proxy speaks 3.0",
				code>>16, code&0xffff)
		}
	}
	return nil, conn, newError(codeProtocolViolation, "too many encryption requests in the startup sequence")
}

func parseStartup(b []byte) (*startup, error) {
	st := &startup{}
	for len(b) > 0 && b[0] != 0 {
		var k, v string
		var err error
		if k, b, err = cstring(b); err != nil {
			return nil, newError(codeProtocolViolation, "invalid startup packet: %v", err)
		}
		if v, b, err = cstring(b); err != nil {
			return nil, newError(codeProtocolViolation, "invalid startup packet: missing value for %q", k)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, &pgError{Severity: "FATAL", Code: "22021", Message: fmt.Sprintf("invalid byte sequence for encoding \"UTF8\" in startup parameter %q", strings.ToValidUTF8(k, "?"))}
		}
		if len(st.params) >= maxStartupParams {
			return nil, newError(codeProtocolViolation, "invalid startup packet: more than %d parameters", maxStartupParams)
		}
		switch k {
		case "user":
			st.user = v
		case "database":
			st.database = v
		case "options":
			opts, err := parseOptions(v)
			if err != nil {
				return nil, err
			}
			st.params = append(st.params, opts...)
		case "replication":
			if v != "false" && v != "0" && v != "off" && v != "no" {
				return nil, newError(codeFeatureNotSupported, "replication connections are not supported through the proxy; connect to the server directly")
			}
		default:
			if strings.HasPrefix(k, "_pq_.") {
				continue
			}
			st.params = append(st.params, kv{k, v})
		}
	}
	if st.user == "" {
		return nil, newError(codeInvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	if st.database == "" {
		st.database = st.user
	}
	return st, nil
}

// parseOptions reads the command-line style "options" startup parameter: -c name=value and
// --name=value, with backslash-escaped spaces (https://www.postgresql.org/docs/15/libpq-connect.html).
func parseOptions(s string) ([]kv, error) {
	var words []string
	var cur strings.Builder
	esc := false
	for _, r := range s {
		switch {
		case esc:
			cur.WriteRune(r)
			esc = false
		case r == '\\':
			esc = true
		case r == ' ' || r == '\t':
			if cur.Len() > 0 {
				words = append(words, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		words = append(words, cur.String())
	}
	var out []kv
	for i := 0; i < len(words); i++ {
		w := words[i]
		var setting string
		switch {
		case w == "-c" && i+1 < len(words):
			i++
			setting = words[i]
		case strings.HasPrefix(w, "-c"):
			setting = w[2:]
		case strings.HasPrefix(w, "--"):
			setting = w[2:]
		default:
			return nil, newError(codeProtocolViolation, "invalid command-line argument for server process: %s", w)
		}
		k, v, ok := strings.Cut(setting, "=")
		if !ok || k == "" {
			return nil, newError(codeProtocolViolation, "invalid options entry %q: want -c name=value", setting)
		}
		out = append(out, kv{strings.ReplaceAll(strings.ToLower(k), "-", "_"), v})
	}
	return out, nil
}

// login greets the client: it proves the user and database exist by obtaining the server's
// parameters through a pool (connecting once if needed), then sends AuthenticationOk, the
// ParameterStatus values, BackendKeyData and ReadyForQuery.
func (c *client) login(ctx context.Context, st *startup) error {
	snap := c.p.disc.Current()
	t, err := c.p.primaryTarget(snap)
	if err != nil {
		if t, err = c.p.replicaTarget(snap); err != nil {
			return err
		}
	}
	params, err := c.p.loginPool(ctx, t.node, st.user, st.database)
	if err != nil {
		var pe *pgError
		if errors.As(err, &pe) {
			pe.Severity = "FATAL"
		}
		return err
	}
	if c.p.cfg.PoolMode == PoolSession && t.node.Name == snap.Primary {
		if err := c.ownBackend(t); err != nil {
			return err
		}
	}
	out := appendMessage(c.out[:0], &pgproto3.AuthenticationOk{})
	reported := map[string]string{}
	for k, v := range params {
		reported[k] = v
	}
	for _, o := range c.startup {
		if _, ok := reported[o.key]; ok || o.key == "application_name" {
			reported[o.key] = o.value
		}
	}
	for k, v := range reported {
		out = appendMessage(out, &pgproto3.ParameterStatus{Name: k, Value: v})
	}
	out = appendMessage(out, &pgproto3.BackendKeyData{ProcessID: c.pid, SecretKey: c.secret})
	out = appendReadyForQuery(out, 'I')
	c.out = out[:0]
	if _, err := c.wr.Write(out); err != nil {
		return err
	}
	return c.wr.Flush()
}

// ownBackend gives a session-mode client its primary server connection at login, as a direct
// connection has its backend, and makes that backend's PID the one the client is given
// (BackendKeyData): pg_backend_pid() answers it, and pg_terminate_backend of it ends the session with
// the server's FATAL error, also while the session is idle or runs a read on a replica (see
// idleWatch). The backend is not lent to anyone after the session (see releaseAll): a PID the client
// saw never names another client's backend. When every connection of the pool is in use (the client
// would wait at login) or the PID is taken by another client of the proxy, the client keeps the
// proxy's random PID and gets its primary connection at its first statement that needs it.
func (c *client) ownBackend(t target) error {
	sc, err := c.checkoutWait(t, false)
	if errors.Is(err, errPoolBusy) {
		return nil
	}
	if err != nil {
		return err // sent as FATAL
	}
	c.releaseCur() // kept: session mode
	if c.p.rekey(c, sc.pid) {
		c.ownNode = t.node.Name
	}
	return nil
}

// errClientGone is returned when the client closed its connection.
var errClientGone = errors.New("client closed the connection")
