package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := Config{Endpoints: []string{"http://127.0.0.1:2379"}, Cluster: "prod"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	if ok.DialTimeout != DefaultDialTimeout || ok.RequestTimeout != DefaultRequestTimeout {
		t.Fatalf("defaults not filled in: %+v", ok)
	}
	t.Setenv("MERIDIAN_TEST_ETCD_PW", "secret")
	withPW := Config{Endpoints: []string{"https://etcd:2379"}, Cluster: "prod", Username: "meridian", PasswordEnv: "MERIDIAN_TEST_ETCD_PW"}
	if err := withPW.Validate(); err != nil {
		t.Fatalf("password from the environment refused: %v", err)
	}
	if p, err := withPW.password(); p != "secret" || err != nil {
		t.Fatalf("password = %q, %v", p, err)
	}
	withFile := Config{Endpoints: []string{"https://etcd:2379"}, Cluster: "prod", Username: "meridian", PasswordFile: pw}
	if p, err := withFile.password(); p != "secret" || err != nil {
		t.Fatalf("password from file = %q, %v (the trailing newline must go)", p, err)
	}

	for name, tc := range map[string]struct {
		cfg  Config
		want []string
	}{
		"empty":               {Config{}, []string{"etcd.endpoints: at least one", "etcd.cluster: a cluster name is required"}},
		"not a URL":           {Config{Endpoints: []string{"etcd-1:2379"}, Cluster: "c"}, []string{"etcd.endpoints[0]"}},
		"no port":             {Config{Endpoints: []string{"http://etcd-1"}, Cluster: "c"}, []string{"etcd.endpoints[0]", "no port"}},
		"slash in cluster":    {Config{Endpoints: []string{"http://a:1"}, Cluster: "a/b"}, []string{"etcd.cluster", "'/'"}},
		"negative timeouts":   {Config{Endpoints: []string{"http://a:1"}, Cluster: "c", DialTimeout: -1, RequestTimeout: -1}, []string{"etcd.dial_timeout", "etcd.request_timeout"}},
		"cert without key":    {Config{Endpoints: []string{"https://a:1"}, Cluster: "c", TLS: TLSConfig{CertFile: pw}}, []string{"etcd.tls: cert_file and key_file go together"}},
		"missing CA file":     {Config{Endpoints: []string{"https://a:1"}, Cluster: "c", TLS: TLSConfig{CAFile: filepath.Join(dir, "nope")}}, []string{"etcd.tls.ca_file", "no such file"}},
		"TLS files over http": {Config{Endpoints: []string{"http://a:1"}, Cluster: "c", TLS: TLSConfig{CAFile: pw}}, []string{"use https:// endpoints"}},
		"user without password": {Config{Endpoints: []string{"https://a:1"}, Cluster: "c", Username: "u"},
			[]string{"etcd.username", "set password_file or password_env"}},
		"password without user": {Config{Endpoints: []string{"https://a:1"}, Cluster: "c", PasswordFile: pw}, []string{"etcd.username: a password is configured"}},
		"both password sources": {Config{Endpoints: []string{"https://a:1"}, Cluster: "c", Username: "u", PasswordFile: pw, PasswordEnv: "X"},
			[]string{"etcd.password_file: set password_file or password_env, not both"}},
		"unset variable": {Config{Endpoints: []string{"https://a:1"}, Cluster: "c", Username: "u", PasswordEnv: "MERIDIAN_TEST_UNSET_VARIABLE"},
			[]string{"etcd.password_env: environment variable MERIDIAN_TEST_UNSET_VARIABLE is not set"}},
		"unreadable password file": {Config{Endpoints: []string{"https://a:1"}, Cluster: "c", Username: "u", PasswordFile: filepath.Join(dir, "nope")},
			[]string{"etcd.password_file"}},
	} {
		cfg := tc.cfg
		err := cfg.Validate()
		if !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", name, err, w)
			}
		}
	}
}

func TestOpenUnreachable(t *testing.T) {
	url, err := FreeURL() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Open(t.Context(), Config{Endpoints: []string{url}, Cluster: "c", DialTimeout: 500 * time.Millisecond}, Options{})
	if !IsUnavailable(err) || !strings.Contains(err.Error(), url) {
		t.Fatalf("open %s: err = %v, want ErrUnavailable naming the endpoint", url, err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("open took %s with a 500ms dial timeout", took)
	}
}

// TestTLSAndAuth runs a member that requires TLS client certificates and password authentication,
// and connects to it as production does: CA, client certificate and key, user and password file.
func TestTLSAndAuth(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	peer, err := FreeURL()
	if err != nil {
		t.Fatal(err)
	}
	client, err := FreeURL()
	if err != nil {
		t.Fatal(err)
	}
	client = "https://" + strings.TrimPrefix(client, "http://")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	m, err := StartEmbedded(ctx, EmbeddedConfig{Dir: filepath.Join(dir, "etcd"), Name: "solo", PeerURL: peer, ClientURL: client,
		ClientTLS:     &EmbeddedTLS{CertFile: pki.serverCert, KeyFile: pki.serverKey, CAFile: pki.ca, ClientCertAuth: true},
		UnsafeNoFsync: true, BcryptCost: 4, Logger: testLogger()}) // bcrypt.MinCost: logins stay fast under -race
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)

	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Endpoints: []string{m.ClientURL()}, Cluster: "tls", DialTimeout: 10 * time.Second,
		TLS: TLSConfig{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}}
	s, err := Open(ctx, cfg, Options{Logger: testLogger()})
	if err != nil {
		t.Fatalf("open with TLS: %v", err)
	}
	// Turn authentication on, as an operator would.
	cli := s.Client()
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "s3cret"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("enable auth: %v", err)
		}
	}
	s.Close()

	// A client without a certificate is refused.
	noCert := cfg
	noCert.TLS.CertFile, noCert.TLS.KeyFile = "", ""
	if s, err := Open(ctx, noCert, Options{}); err == nil {
		s.Close()
		t.Fatal("open without a client certificate succeeded")
	}
	// A wrong password is refused.
	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := cfg
	bad.Username, bad.PasswordFile = "root", wrong
	if s, err := Open(ctx, bad, Options{}); err == nil {
		s.Close()
		t.Fatal("open with a wrong password succeeded")
	}
	// Certificate and password: the store works.
	good := cfg
	good.Username, good.PasswordFile = "root", pwFile
	s, err = Open(ctx, good, Options{Logger: testLogger()})
	if err != nil {
		t.Fatalf("open with TLS and password: %v", err)
	}
	defer s.Close()
	if _, err := s.PutTopology(ctx, sampleTopology(1, "a"), 0, nil); err != nil {
		t.Fatal(err)
	}
	if got, _, err := s.GetTopology(ctx); err != nil || got.Primary != "a" {
		t.Fatalf("get = %+v, %v", got, err)
	}
}

type testPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

// newTestPKI writes a CA, a server certificate for 127.0.0.1 and localhost, and a client certificate,
// all PEM, into dir.
func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meridian test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (cert, key string) {
		k := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(cn+".crt", "CERTIFICATE", der), write(cn+".key", "EC PRIVATE KEY", kder)
	}
	p := testPKI{ca: write("ca.crt", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf(2, "etcd", x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf(3, "meridian", x509.ExtKeyUsageClientAuth)
	return p
}
