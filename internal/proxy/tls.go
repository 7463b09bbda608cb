package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// Client-side TLS modes (client_tls.mode).
const (
	TLSDisable = "disable" // SSLRequest is answered N
	TLSAllow   = "allow"   // TLS when the client asks for it, plaintext otherwise
	TLSRequire = "require" // plaintext startups are refused
)

// Server-side TLS modes (server_tls), as libpq's sslmode.
const (
	ServerTLSDisable    = "disable"
	ServerTLSRequire    = "require"     // encrypted, the certificate not checked
	ServerTLSVerifyFull = "verify-full" // encrypted, the certificate checked against server_ca_file and the host name
)

// ClientTLSConfig is TLS between clients and the proxy.
type ClientTLSConfig struct {
	// Mode is disable, allow or require; default allow when a certificate is configured, else disable.
	Mode     string `yaml:"mode"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile, when set, makes the proxy ask for client certificates and verify those presented.
	CAFile string `yaml:"ca_file"`
	// RequireClientCert refuses clients without a valid certificate (needs ca_file).
	RequireClientCert bool `yaml:"require_client_cert"`
}

func (t *ClientTLSConfig) validate(bad func(key, format string, args ...any)) {
	if t.Mode == "" {
		t.Mode = TLSDisable
		if t.CertFile != "" {
			t.Mode = TLSAllow
		}
	}
	switch t.Mode {
	case TLSDisable:
		return
	case TLSAllow, TLSRequire:
	default:
		bad("client_tls.mode", "must be disable, allow or require, got %q", t.Mode)
		return
	}
	if t.CertFile == "" || t.KeyFile == "" {
		bad("client_tls", "mode %s needs cert_file and key_file", t.Mode)
		return
	}
	if _, err := loadClientTLS(*t); err != nil {
		bad("client_tls", "%v", err)
	}
	if t.RequireClientCert && t.CAFile == "" {
		bad("client_tls.require_client_cert", "needs ca_file to verify the certificates with")
	}
}

// clientTLSState is the loaded certificate and client CA, swapped whole on reload.
type clientTLSState struct {
	cfg       ClientTLSConfig
	cert      tls.Certificate
	clientCAs *x509.CertPool // nil: client certificates are not asked for
	loadedAt  time.Time
}

func loadClientTLS(t ClientTLSConfig) (*clientTLSState, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s and key %s: %w", t.CertFile, t.KeyFile, err)
	}
	st := &clientTLSState{cfg: t, cert: cert, loadedAt: time.Now()}
	if t.CAFile != "" {
		if st.clientCAs, err = loadCAs(t.CAFile); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func loadCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// tlsServer answers clients' SSLRequests with the current certificate.
type tlsServer struct {
	mode  string // client_tls.mode: fixed until a restart
	state atomic.Pointer[clientTLSState]
	conf  *tls.Config
}

func newTLSServer(cfg ClientTLSConfig) (*tlsServer, error) {
	s := &tlsServer{mode: cfg.Mode}
	if cfg.Mode == TLSDisable {
		return s, nil
	}
	if err := s.reload(cfg); err != nil {
		return nil, err
	}
	s.conf = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			st := s.state.Load()
			c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{st.cert}}
			if st.clientCAs != nil {
				c.ClientCAs = st.clientCAs
				c.ClientAuth = tls.VerifyClientCertIfGiven
				if st.cfg.RequireClientCert {
					c.ClientAuth = tls.RequireAndVerifyClientCert
				}
			}
			return c, nil
		},
	}
	return s, nil
}

// enabled reports whether SSLRequest is accepted.
func (s *tlsServer) enabled() bool { return s.mode != TLSDisable }

// reload reads the certificate, key and client CA files (of cfg, which may name other files); new
// connections use them, running ones keep theirs. A failed reload keeps the previous ones.
func (s *tlsServer) reload(cfg ClientTLSConfig) error {
	if s.mode == TLSDisable {
		return nil
	}
	st, err := loadClientTLS(cfg)
	if err != nil {
		return err
	}
	s.state.Store(st)
	return nil
}

// handshake upgrades conn after the proxy answered S to an SSLRequest.
func (s *tlsServer) handshake(conn net.Conn, deadline time.Time) (net.Conn, error) {
	tc := tls.Server(conn, s.conf)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// serverTLSConfig is the TLS configuration for connections to servers at address, nil when off.
func (c *Config) serverTLSConfig(address string) (*tls.Config, error) {
	switch c.ServerTLS {
	case "", ServerTLSDisable:
		return nil, nil
	case ServerTLSRequire:
		return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, nil //nolint:gosec // sslmode=require checks no certificate, by definition
	}
	host, _ := splitAddr(address)
	roots, err := loadCAs(c.ServerCAFile)
	if err != nil {
		return nil, fmt.Errorf("server_ca_file: %w", err)
	}
	return &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}

// serverConnString is a libpq connection string to a server with the configured server TLS.
func (c *Config) serverConnString(address, user, database, password string) string {
	s := connString(address, user, database, password)
	switch c.ServerTLS {
	case ServerTLSRequire:
		s += " sslmode=require"
	case ServerTLSVerifyFull:
		s += " sslmode=verify-full sslrootcert=" + quoteConn(c.ServerCAFile)
	default:
		s += " sslmode=disable"
	}
	return s
}

// startServerTLS asks a server for TLS on conn (SSLRequest) and returns the encrypted connection.
func startServerTLS(ctx context.Context, conn net.Conn, conf *tls.Config) (net.Conn, error) {
	if _, err := conn.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47}); err != nil {
		return nil, err
	}
	var answer [1]byte
	if _, err := conn.Read(answer[:]); err != nil {
		return nil, err
	}
	if answer[0] != 'S' {
		return nil, errors.New("the server does not accept TLS connections (server_tls asks for it)")
	}
	tc := tls.Client(conn, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake with the server: %w", err)
	}
	return tc, nil
}
