package auth

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/meridiandb/meridian/internal/scram"
)

// SQLSTATEs of authentication failures (https://www.postgresql.org/docs/15/errcodes-appendix.html).
const (
	CodeInvalidAuthorization = "28000"
	CodeInvalidPassword      = "28P01"
	CodeProtocolViolation    = "08P01"
	CodeCannotConnectNow     = "57P03"
)

// Error is a failed authentication, to be sent to the client as a FATAL ErrorResponse.
type Error struct {
	Code    string // SQLSTATE
	Message string
	Hint    string
	// Failed marks a wrong password, an unknown user or a refused certificate (counted as an
	// authentication failure), as opposed to a protocol violation or an unavailable secret.
	Failed bool
}

func (e *Error) Error() string { return e.Message }

// FailedFor is what a client with a wrong password, or an unknown user, is told.
func FailedFor(user string) *Error {
	return &Error{Code: CodeInvalidPassword, Message: fmt.Sprintf("password authentication failed for user %q", user), Failed: true}
}

// Conn is the client side of an exchange: the proxy's connection to the client.
type Conn interface {
	// Send writes and flushes one authentication message.
	Send(pgproto3.BackendMessage) error
	// ReadPassword reads the client's next message, which must be a password-family message ('p'),
	// and returns its body (valid until the next read). The caller bounds its size and time.
	ReadPassword() ([]byte, error)
}

// Request is what a client connects with.
type Request struct {
	User, Database string
	Addr           netip.Addr
	TLS            *tls.ConnectionState // nil for a plaintext connection
	// Admin marks the admin console's database: trust rules do not apply to it.
	Admin bool
}

// Result is a successful authentication.
type Result struct {
	// Keys are the SCRAM keys this client proved in its own exchange (nil for other methods): they may
	// log in to servers as the user for this client's session only.
	Keys *scram.Keys
	// Method is the rule's method that admitted the client.
	Method string
}

// Authenticate runs the client's authentication per the rules. On success the caller sends
// AuthenticationOk; on failure the error is an *Error (or an I/O error of conn).
func (s *Store) Authenticate(ctx context.Context, conn Conn, req Request) (Result, error) {
	rules := s.Config()
	host := req.Addr.Unmap().String()
	r := rules.RuleFor(req.Database, req.User, req.Addr, req.Admin)
	switch {
	case r == nil:
		return Result{}, &Error{Code: CodeInvalidAuthorization,
			Message: fmt.Sprintf("no auth rule of the proxy matches host %q, user %q, database %q", host, req.User, req.Database)}
	case r.Method == Trust:
		return Result{Method: Trust}, nil
	case r.Method == Reject:
		return Result{}, &Error{Code: CodeInvalidAuthorization,
			Message: fmt.Sprintf("the proxy's auth rules reject connection for host %q, user %q, database %q", host, req.User, req.Database)}
	case r.Method == Cert:
		return Result{Method: Cert}, checkCert(req)
	}
	secret, err := s.Secret(ctx, req.User)
	if err != nil {
		return Result{}, &Error{Code: CodeCannotConnectNow, Message: "authentication is unavailable: " + err.Error()}
	}
	var keys *scram.Keys
	switch {
	case r.Method == MD5 && (isMD5Secret(secret) || secret == ""):
		// An unknown user under an md5 rule gets the md5 exchange too (and fails it), so that the
		// exchange does not tell which users exist — PostgreSQL does the same with
		// password_encryption=md5.
		err = s.exchangeMD5(conn, secret)
	default:
		keys, err = s.exchangeSCRAM(conn, req.User, secret)
	}
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) {
			return Result{}, ae
		}
		if errors.Is(err, scram.ErrAuthFailed) {
			return Result{}, FailedFor(req.User)
		}
		return Result{}, err
	}
	return Result{Keys: keys, Method: r.Method}, nil
}

// checkCert admits a client whose certificate was verified against client_tls.ca_file and whose
// subject CN is the user name (pg_hba.conf's cert method, without a user name map).
func checkCert(req Request) error {
	if req.TLS == nil || len(req.TLS.VerifiedChains) == 0 || len(req.TLS.PeerCertificates) == 0 {
		return &Error{Code: CodeInvalidAuthorization, Failed: true,
			Message: "connection requires a valid client certificate",
			Hint:    "The auth rule's method is cert: connect over TLS with a certificate signed by the proxy's client_tls.ca_file."}
	}
	if cn := req.TLS.PeerCertificates[0].Subject.CommonName; cn != req.User {
		return &Error{Code: CodeInvalidAuthorization, Failed: true,
			Message: fmt.Sprintf("certificate authentication failed for user %q", req.User),
			Hint:    "The certificate's common name must equal the user name."}
	}
	return nil
}

// exchangeSCRAM runs SCRAM-SHA-256 with the client; an unknown user (or a secret that is not a SCRAM
// verifier) gets a mock exchange that fails exactly like a wrong password.
func (s *Store) exchangeSCRAM(conn Conn, user, secret string) (*scram.Keys, error) {
	v, err := scram.ParseVerifier(secret)
	mock := err != nil
	if mock {
		v = scram.MockVerifier(s.mockSecret, user)
	}
	if err := conn.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{scram.Mechanism}}); err != nil {
		return nil, err
	}
	body, err := conn.ReadPassword()
	if err != nil {
		return nil, err
	}
	var init pgproto3.SASLInitialResponse
	if err := init.Decode(body); err != nil || init.AuthMechanism != scram.Mechanism {
		return nil, &Error{Code: CodeProtocolViolation, Message: "expected a SASLInitialResponse for SCRAM-SHA-256"}
	}
	srv := scram.NewServer(v, mock)
	first, err := srv.First(init.Data)
	if err != nil {
		return nil, &Error{Code: CodeProtocolViolation, Message: err.Error()}
	}
	if err := conn.Send(&pgproto3.AuthenticationSASLContinue{Data: first}); err != nil {
		return nil, err
	}
	if body, err = conn.ReadPassword(); err != nil {
		return nil, err
	}
	final, keys, err := srv.Final(body)
	if errors.Is(err, scram.ErrProtocol) {
		return nil, &Error{Code: CodeProtocolViolation, Message: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	if err := conn.Send(&pgproto3.AuthenticationSASLFinal{Data: final}); err != nil {
		return nil, err
	}
	return &keys, nil
}

// exchangeMD5 runs md5 password authentication against an md5 secret; with no secret (unknown user)
// it runs the same exchange against a random one, which no answer matches.
func (s *Store) exchangeMD5(conn Conn, secret string) error {
	var salt [4]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return err
	}
	known := secret != ""
	if !known {
		var r [16]byte
		_, _ = rand.Read(r[:])
		secret = "md5" + hex.EncodeToString(r[:])
	}
	if err := conn.Send(&pgproto3.AuthenticationMD5Password{Salt: salt}); err != nil {
		return err
	}
	body, err := conn.ReadPassword()
	if err != nil {
		return err
	}
	got, ok := cstring(body)
	if !ok {
		return &Error{Code: CodeProtocolViolation, Message: "malformed password message"}
	}
	sum := md5.Sum(append([]byte(secret[3:]), salt[:]...))
	want := "md5" + hex.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 || !known {
		return scram.ErrAuthFailed
	}
	return nil
}

func cstring(b []byte) (string, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), true
		}
	}
	return "", false
}
