package scram

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// TestRFC7677 runs the example exchange of RFC 7677 §3 (user "user", password "pencil") through the
// server side, and checks the proof it accepts and the signature it answers with.
func TestRFC7677(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	v, err := VerifierFor("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(v, false)
	s.fixedNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	first, err := s.First([]byte("n,,n=user,r=rOprNGfwEbeRWgbNEkqO"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"; string(first) != want {
		t.Fatalf("server-first = %s, want %s", first, want)
	}
	final, keys, err := s.Final([]byte("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
	if err != nil {
		t.Fatal(err)
	}
	if want := "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="; string(final) != want {
		t.Fatalf("server-final = %s, want %s", final, want)
	}
	if len(keys.ClientKey) != 32 {
		t.Fatalf("client key of %d bytes", len(keys.ClientKey))
	}
}

func TestVerifierRoundTrip(t *testing.T) {
	v, err := NewVerifier("secret", DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseVerifier(v.String())
	if err != nil || p.String() != v.String() {
		t.Fatalf("ParseVerifier(%s) = %s, %v", v, p, err)
	}
	for _, bad := range []string{"md5abcdef", "SCRAM-SHA-256$x:AAAA$AAAA:AAAA", "SCRAM-SHA-256$4096:AAAA$AAAA", "SCRAM-SHA-256$4096:AAAA$AAAA:AAAA", ""} {
		if _, err := ParseVerifier(bad); !errors.Is(err, ErrNotSCRAM) {
			t.Errorf("ParseVerifier(%q): %v, want ErrNotSCRAM", bad, err)
		}
	}
}

// exchange runs a whole exchange: a client that knows password against a server storing v.
func exchange(t *testing.T, v Verifier, mock bool, password string) (Keys, error) {
	t.Helper()
	clientKeys, err := KeysFor(password, v.Salt, v.Iterations)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(clientKeys)
	s := NewServer(v, mock)
	cf, err := c.First()
	if err != nil {
		t.Fatal(err)
	}
	sf, err := s.First(cf)
	if err != nil {
		t.Fatal(err)
	}
	cfin, err := c.Final(sf)
	if err != nil {
		t.Fatal(err)
	}
	sfin, keys, err := s.Final(cfin)
	if err != nil {
		return Keys{}, err
	}
	if err := c.Verify(sfin); err != nil {
		t.Fatalf("client rejects the server's signature: %v", err)
	}
	return keys, nil
}

func TestExchange(t *testing.T) {
	v, err := NewVerifier("right", DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := exchange(t, v, false, "right")
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	// The keys the server learnt log in again, to a server with the same verifier.
	c := NewClient(keys)
	s := NewServer(v, false)
	cf, _ := c.First()
	sf, _ := s.First(cf)
	cfin, err := c.Final(sf)
	if err != nil {
		t.Fatal(err)
	}
	sfin, _, err := s.Final(cfin)
	if err != nil || c.Verify(sfin) != nil {
		t.Fatalf("logging in with the recovered keys: %v", err)
	}
	if _, err := exchange(t, v, false, "wrong"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong password: %v, want ErrAuthFailed", err)
	}
	if _, err := exchange(t, v, true, "right"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("mock exchange: %v, want ErrAuthFailed", err)
	}
	// Keys from one verifier do not fit a server storing another one.
	other, _ := NewVerifier("right", DefaultIterations)
	c = NewClient(keys)
	s = NewServer(other, false)
	cf, _ = c.First()
	sf, _ = s.First(cf)
	if _, err := c.Final(sf); !errors.Is(err, ErrOtherVerifier) {
		t.Fatalf("keys against another verifier: %v, want ErrOtherVerifier", err)
	}
}

func TestMalformedClientMessages(t *testing.T) {
	v, _ := NewVerifier("x", DefaultIterations)
	for _, first := range []string{"", "n", "x,,n=u,r=abc", "p=tls-server-end-point,,n=u,r=abc", "n,,r=abc", "n,,n=u", "n,,n=u,r=", "n,,m=ext,n=u,r=abc", "n,b,n=u,r=abc", "n,,n=u,r=a,b"} {
		if _, err := NewServer(v, false).First([]byte(first)); err == nil && first != "n,,n=u,r=a,b" {
			t.Errorf("First(%q): no error", first)
		}
	}
	s := NewServer(v, false)
	if _, _, err := s.Final([]byte("c=biws,r=x,p=AAAA")); !errors.Is(err, ErrProtocol) {
		t.Errorf("Final before First: %v", err)
	}
	if _, err := s.First([]byte("n,,n=u,r=abc")); err != nil {
		t.Fatal(err)
	}
	for _, final := range []string{"c=biws,r=abc", "c=eSws,r=" + s.nonce + ",p=AAAA", "c=biws,r=other,p=AAAA", "c=biws,r=" + s.nonce + ",p=!!"} {
		s2 := *s
		if _, _, err := s2.Final([]byte(final)); !errors.Is(err, ErrProtocol) {
			t.Errorf("Final(%q): %v, want ErrProtocol", final, err)
		}
	}
	if !strings.HasPrefix(s.nonce, "abc") {
		t.Errorf("server nonce %q does not extend the client's", s.nonce)
	}
}

// FuzzServer feeds arbitrary client messages to the server side: errors, never a panic, and never
// success without the password.
func FuzzServer(f *testing.F) {
	f.Add([]byte("n,,n=user,r=rOprNGfwEbeRWgbNEkqO"), []byte("c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
	f.Add([]byte("y,a=x,n=,r=abc,ext=1"), []byte("c=eSxhPXgs,r=abc,p="))
	f.Add([]byte("p=tls-server-end-point,,n=,r=abc"), []byte(""))
	v, err := NewVerifier("pencil", DefaultIterations)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, first, final []byte) {
		s := NewServer(v, false)
		if _, err := s.First(first); err != nil {
			return
		}
		if _, _, err := s.Final(final); err == nil {
			t.Fatalf("accepted a client-final-message built without the password: %q", final)
		}
	})
}
