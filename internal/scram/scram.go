// Package scram implements SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it: the verifier
// format of pg_authid.rolpassword, the server side of the exchange (to authenticate the proxy's
// clients), and the client side from keys rather than a password (to log in to the servers as a
// client with the keys its own exchange revealed, as PgBouncer does).
//
// Only the "n" and "y" channel-binding flags are accepted: SCRAM-SHA-256-PLUS is not offered.
package scram

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/text/secure/precis"
)

// Mechanism is the SASL mechanism name.
const Mechanism = "SCRAM-SHA-256"

// DefaultIterations is PostgreSQL's scram_iterations default.
const DefaultIterations = 4096

// Verifier is what a server stores for a password: never the password itself.
type Verifier struct {
	Iterations int
	Salt       []byte
	StoredKey  []byte // H(ClientKey)
	ServerKey  []byte
}

// ErrNotSCRAM means a stored secret is not a SCRAM-SHA-256 verifier (an md5 hash, say).
var ErrNotSCRAM = errors.New("not a SCRAM-SHA-256 verifier")

// ParseVerifier reads PostgreSQL's form: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>,
// base64 throughout.
func ParseVerifier(s string) (Verifier, error) {
	rest, ok := strings.CutPrefix(s, Mechanism+"$")
	if !ok {
		return Verifier{}, ErrNotSCRAM
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return Verifier{}, fmt.Errorf("%w: missing keys", ErrNotSCRAM)
	}
	iter, salt, ok1 := strings.Cut(params, ":")
	stored, server, ok2 := strings.Cut(keys, ":")
	if !ok1 || !ok2 {
		return Verifier{}, fmt.Errorf("%w: malformed", ErrNotSCRAM)
	}
	var v Verifier
	var err error
	if v.Iterations, err = strconv.Atoi(iter); err != nil || v.Iterations < 1 {
		return Verifier{}, fmt.Errorf("%w: bad iteration count %q", ErrNotSCRAM, iter)
	}
	for _, f := range []struct {
		dst *[]byte
		src string
	}{{&v.Salt, salt}, {&v.StoredKey, stored}, {&v.ServerKey, server}} {
		if *f.dst, err = base64.StdEncoding.DecodeString(f.src); err != nil {
			return Verifier{}, fmt.Errorf("%w: bad base64", ErrNotSCRAM)
		}
	}
	if len(v.StoredKey) != sha256.Size || len(v.ServerKey) != sha256.Size || len(v.Salt) == 0 {
		return Verifier{}, fmt.Errorf("%w: wrong key sizes", ErrNotSCRAM)
	}
	return v, nil
}

// String is the verifier in PostgreSQL's form.
func (v Verifier) String() string {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("%s$%d:%s$%s:%s", Mechanism, v.Iterations, b64(v.Salt), b64(v.StoredKey), b64(v.ServerKey))
}

// NewVerifier derives a verifier from a password with a fresh random 16-byte salt.
func NewVerifier(password string, iterations int) (Verifier, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return Verifier{}, err
	}
	return VerifierFor(password, salt, iterations)
}

// VerifierFor derives the verifier of a password with a given salt.
func VerifierFor(password string, salt []byte, iterations int) (Verifier, error) {
	k, err := KeysFor(password, salt, iterations)
	return k.Verifier, err
}

// KeysFor derives what a client that knows the password proves with: its client key, and the
// verifier a server would store.
func KeysFor(password string, salt []byte, iterations int) (Keys, error) {
	salted, err := pbkdf2.Key(sha256.New, prepare(password), salt, iterations, sha256.Size)
	if err != nil {
		return Keys{}, err
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	return Keys{ClientKey: clientKey, Verifier: Verifier{Iterations: iterations, Salt: salt, StoredKey: stored[:], ServerKey: mac(salted, "Server Key")}}, nil
}

// prepare normalises a password as PostgreSQL's pg_saslprep does, falling back to the raw bytes when
// the password cannot be normalised (PostgreSQL does the same).
func prepare(password string) string {
	if p, err := precis.OpaqueString.String(password); err == nil {
		return p
	}
	return password
}

func mac(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// MockVerifier is the verifier used for a user that does not exist, so that the exchange looks the
// same as for a real user with a wrong password: its salt is derived from the user name and a secret
// of the process (PostgreSQL's scram_mock_salt), so it is stable between attempts.
func MockVerifier(secret []byte, user string) Verifier {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(user))
	salt := h.Sum(nil)[:16]
	random := make([]byte, sha256.Size)
	_, _ = rand.Read(random)
	return Verifier{Iterations: DefaultIterations, Salt: salt, StoredKey: random, ServerKey: random}
}

// Keys are what a successful exchange reveals to the server: enough to log in elsewhere as the
// client to a server that stores the same verifier, without the password.
type Keys struct {
	ClientKey []byte
	Verifier  Verifier
}

// ErrAuthFailed is the outcome of a wrong password (or an unknown user).
var ErrAuthFailed = errors.New("password authentication failed")

// Server is the server side of one exchange.
type Server struct {
	v                        Verifier
	mock                     bool
	clientFirstBare, gs2     string
	serverFirst, clientNonce string
	nonce                    string
	finished                 bool
	fixedNonce               string // tests: the server's part of the nonce, instead of a random one
}

// NewServer starts an exchange against v; mock makes it fail at the end whatever the client proves.
func NewServer(v Verifier, mock bool) *Server { return &Server{v: v, mock: mock} }

// ErrProtocol is wrapped by errors about malformed client messages.
var ErrProtocol = errors.New("malformed SCRAM message")

// First takes the client-first-message and returns the server-first-message.
func (s *Server) First(clientFirst []byte) ([]byte, error) {
	msg := string(clientFirst)
	// gs2-header: cbind-flag "," [authzid] ","
	flag, rest, ok := strings.Cut(msg, ",")
	if !ok {
		return nil, fmt.Errorf("%w: no GS2 header", ErrProtocol)
	}
	switch {
	case flag == "n", flag == "y":
	case strings.HasPrefix(flag, "p="):
		return nil, fmt.Errorf("%w: channel binding was requested but SCRAM-SHA-256-PLUS was not offered", ErrProtocol)
	default:
		return nil, fmt.Errorf("%w: bad channel-binding flag %q", ErrProtocol, flag)
	}
	authzid, bare, ok := strings.Cut(rest, ",")
	if !ok || (authzid != "" && !strings.HasPrefix(authzid, "a=")) {
		return nil, fmt.Errorf("%w: bad GS2 header", ErrProtocol)
	}
	s.gs2 = msg[:len(msg)-len(bare)]
	s.clientFirstBare = bare
	// client-first-message-bare: [reserved-mext ","] username "," nonce ["," extensions]
	attrs := strings.Split(bare, ",")
	if len(attrs) < 2 || strings.HasPrefix(attrs[0], "m=") || !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") {
		return nil, fmt.Errorf("%w: want n=user,r=nonce", ErrProtocol)
	}
	s.clientNonce = attrs[1][2:]
	if s.clientNonce == "" || !printable(s.clientNonce) {
		return nil, fmt.Errorf("%w: bad client nonce", ErrProtocol)
	}
	suffix := s.fixedNonce
	if suffix == "" {
		raw := make([]byte, 18)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		suffix = base64.StdEncoding.EncodeToString(raw)
	}
	s.nonce = s.clientNonce + suffix
	s.serverFirst = fmt.Sprintf("r=%s,s=%s,i=%d", s.nonce, base64.StdEncoding.EncodeToString(s.v.Salt), s.v.Iterations)
	return []byte(s.serverFirst), nil
}

// printable reports whether a nonce uses only the characters RFC 5802 allows (printable ASCII but ',').
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e || s[i] == ',' {
			return false
		}
	}
	return true
}

// Final takes the client-final-message and returns the server-final-message and the client's keys;
// ErrAuthFailed when the proof is wrong.
func (s *Server) Final(clientFinal []byte) ([]byte, Keys, error) {
	if s.serverFirst == "" || s.finished {
		return nil, Keys{}, fmt.Errorf("%w: out of order", ErrProtocol)
	}
	s.finished = true
	msg := string(clientFinal)
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return nil, Keys{}, fmt.Errorf("%w: no proof", ErrProtocol)
	}
	withoutProof, proofB64 := msg[:i], msg[i+3:]
	attrs := strings.Split(withoutProof, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "c=") || !strings.HasPrefix(attrs[1], "r=") {
		return nil, Keys{}, fmt.Errorf("%w: want c=<binding>,r=<nonce>,p=<proof>", ErrProtocol)
	}
	cbind, err := base64.StdEncoding.DecodeString(attrs[0][2:])
	if err != nil || string(cbind) != s.gs2 {
		return nil, Keys{}, fmt.Errorf("%w: channel binding does not match the GS2 header", ErrProtocol)
	}
	if attrs[1][2:] != s.nonce {
		return nil, Keys{}, fmt.Errorf("%w: nonce does not match", ErrProtocol)
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != sha256.Size {
		return nil, Keys{}, fmt.Errorf("%w: bad proof", ErrProtocol)
	}
	authMessage := s.clientFirstBare + "," + s.serverFirst + "," + withoutProof
	clientSignature := mac(s.v.StoredKey, authMessage)
	clientKey := make([]byte, sha256.Size)
	subtle.XORBytes(clientKey, proof, clientSignature)
	stored := sha256.Sum256(clientKey)
	if s.mock || subtle.ConstantTimeCompare(stored[:], s.v.StoredKey) != 1 {
		return nil, Keys{}, ErrAuthFailed
	}
	serverSignature := mac(s.v.ServerKey, authMessage)
	return []byte("v=" + base64.StdEncoding.EncodeToString(serverSignature)), Keys{ClientKey: clientKey, Verifier: s.v}, nil
}

// Client is the client side of one exchange, proving knowledge of ClientKey (no password needed).
type Client struct {
	keys                   Keys
	clientFirstBare, nonce string
	authMessage            string
}

// NewClient starts an exchange with keys.
func NewClient(keys Keys) *Client { return &Client{keys: keys} }

// First returns the client-first-message (no channel binding, the user name left to the startup
// packet as PostgreSQL expects).
func (c *Client) First() ([]byte, error) {
	raw := make([]byte, 18)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	c.nonce = base64.StdEncoding.EncodeToString(raw)
	c.clientFirstBare = "n=,r=" + c.nonce
	return []byte("n,," + c.clientFirstBare), nil
}

// Final takes the server-first-message and returns the client-final-message. The server must use the
// verifier's salt and iteration count: otherwise it stores another verifier and the keys cannot work.
func (c *Client) Final(serverFirst []byte) ([]byte, error) {
	attrs := strings.Split(string(serverFirst), ",")
	if len(attrs) < 3 || !strings.HasPrefix(attrs[0], "r=") || !strings.HasPrefix(attrs[1], "s=") || !strings.HasPrefix(attrs[2], "i=") {
		return nil, fmt.Errorf("%w: bad server-first-message", ErrProtocol)
	}
	nonce := attrs[0][2:]
	if !strings.HasPrefix(nonce, c.nonce) || len(nonce) == len(c.nonce) {
		return nil, fmt.Errorf("%w: the server's nonce does not extend ours", ErrProtocol)
	}
	salt, err := base64.StdEncoding.DecodeString(attrs[1][2:])
	if err != nil {
		return nil, fmt.Errorf("%w: bad salt", ErrProtocol)
	}
	iter, err := strconv.Atoi(attrs[2][2:])
	if err != nil {
		return nil, fmt.Errorf("%w: bad iteration count", ErrProtocol)
	}
	if iter != c.keys.Verifier.Iterations || !bytes.Equal(salt, c.keys.Verifier.Salt) {
		return nil, ErrOtherVerifier
	}
	withoutProof := "c=biws,r=" + nonce // biws = base64("n,,")
	c.authMessage = c.clientFirstBare + "," + string(serverFirst) + "," + withoutProof
	clientSignature := mac(c.keys.Verifier.StoredKey, c.authMessage)
	proof := make([]byte, sha256.Size)
	subtle.XORBytes(proof, c.keys.ClientKey, clientSignature)
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// ErrOtherVerifier means the server stores a different verifier (another salt or iteration count)
// than the one the keys came from.
var ErrOtherVerifier = errors.New("the server stores another SCRAM verifier for this user (different salt or iteration count) than the proxy's")

// Verify checks the server-final-message: the server knew the verifier too.
func (c *Client) Verify(serverFinal []byte) error {
	want := "v=" + base64.StdEncoding.EncodeToString(mac(c.keys.Verifier.ServerKey, c.authMessage))
	if subtle.ConstantTimeCompare([]byte(want), serverFinal) != 1 {
		return errors.New("the server's SCRAM signature is wrong: it does not know the user's verifier")
	}
	return nil
}
