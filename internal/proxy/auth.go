package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/meridiandb/meridian/internal/auth"
	"github.com/meridiandb/meridian/internal/scram"
)

// Client authentication lives in internal/auth; these names keep the proxy's configuration API.
type (
	// AuthConfig is the auth: section of the configuration (see auth.Config).
	AuthConfig = auth.Config
	// AuthRule is one of its rules (see auth.Rule).
	AuthRule = auth.Rule
)

// Client authentication methods (auth.rules[].method).
const (
	AuthSCRAM  = auth.SCRAM
	AuthMD5    = auth.MD5
	AuthCert   = auth.Cert
	AuthTrust  = auth.Trust
	AuthReject = auth.Reject
)

// DefaultAuthQuery reads a login role's secret (see auth.DefaultQuery).
const DefaultAuthQuery = auth.DefaultQuery

// QuoteAuthField quotes a field for an auth file line.
func QuoteAuthField(s string) string { return auth.QuoteField(s) }

// SetAuthFileEntry writes user's secret into an auth file (see auth.SetFileEntry).
func SetAuthFileEntry(path, user, secret string) error { return auth.SetFileEntry(path, user, secret) }

// maxPreAuthMessage bounds every message a client sends before it is authenticated (password and
// SASL messages; the startup packet has its own, smaller bound): an unauthenticated peer must not make
// the proxy allocate max_message_size. A SCRAM message is well under 1 KiB; PostgreSQL allows 1000
// bytes for a password packet (PG_MAX_AUTH_TOKEN_LENGTH is 65535).
const maxPreAuthMessage = 64 << 10

// newAuthStore builds the proxy's secret store.
func newAuthStore(cfg *Config, primary func() (string, error)) (*auth.Store, error) {
	return auth.NewStore(cfg.Auth, auth.Options{ConnString: cfg.serverConnString, ConnectTimeout: cfg.ServerConnectTimeout, Primary: primary})
}

// authenticate runs the client's authentication per the rules. It returns the SCRAM keys the client
// proved (nil for other methods) when the client may proceed (AuthenticationOk is sent by login).
// Each read of the client ends at deadline (client_login_timeout after the accept).
func (c *client) authenticate(ctx context.Context, st *startup, deadline time.Time) (*scram.Keys, error) {
	req := auth.Request{User: st.user, Database: st.database, Admin: st.database == AdminDatabase}
	if ta, ok := c.conn.RemoteAddr().(*net.TCPAddr); ok {
		req.Addr, _ = netip.AddrFromSlice(ta.IP)
	}
	if tc, ok := c.conn.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		req.TLS = &cs
	}
	prevMax := c.rd.max
	c.rd.max = min(prevMax, maxPreAuthMessage)
	defer func() { c.rd.max = prevMax }()
	res, err := c.p.auth.Authenticate(ctx, clientAuthConn{c, deadline}, req)
	if err == nil {
		return res.Keys, nil
	}
	var ae *auth.Error
	if !errors.As(err, &ae) {
		c.log.Info("client authentication failed", "err", err)
		return nil, err
	}
	if ae.Failed {
		c.p.metrics.authFailures.Inc()
		c.log.Info("client authentication failed", "err", ae.Message)
	} else if ae.Code == auth.CodeCannotConnectNow {
		c.log.Warn("cannot look up the user's secret", "err", ae.Message)
	}
	return nil, &pgError{Severity: "FATAL", Code: ae.Code, Message: ae.Message, Hint: ae.Hint}
}

// clientAuthConn is the client's side of an authentication exchange.
type clientAuthConn struct {
	c        *client
	deadline time.Time // the end of client_login_timeout
}

// Send writes one authentication message.
func (a clientAuthConn) Send(m pgproto3.BackendMessage) error {
	c := a.c
	if _, err := c.wr.Write(appendMessage(c.out[:0], m)); err != nil {
		return err
	}
	return c.wr.Flush()
}

// ReadPassword reads the client's next message, which must be a password-family message ('p').
func (a clientAuthConn) ReadPassword() ([]byte, error) {
	c := a.c
	_ = c.conn.SetReadDeadline(a.deadline)
	defer c.conn.SetReadDeadline(time.Time{})
	typ, msg, err := c.rd.next()
	if err != nil {
		return nil, err
	}
	if typ != 'p' {
		return nil, &auth.Error{Code: auth.CodeProtocolViolation, Message: fmt.Sprintf("expected a password response, got message type %q", typ)}
	}
	return msg[5:], nil
}

// serverKeysKey carries, in the context of a server connection's dial, the SCRAM keys the client
// asking for it proved in its own login.
type serverKeysKey struct{}

// withServerKeys lets dials made for this client's requests log in with keys it proved itself.
func withServerKeys(ctx context.Context, keys *scram.Keys) context.Context {
	if keys == nil {
		return ctx
	}
	return context.WithValue(ctx, serverKeysKey{}, keys)
}

// serverKeysFrom returns the keys of the client a dial is made for, if it proved any. Keys are never
// shared between clients: a client admitted by trust or cert, or one that has not logged in yet,
// cannot make the proxy log in to a server with another client's keys.
func serverKeysFrom(ctx context.Context) *scram.Keys {
	k, _ := ctx.Value(serverKeysKey{}).(*scram.Keys)
	return k
}
