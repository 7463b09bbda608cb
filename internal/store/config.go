package store

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// Defaults for the zero values of [Config].
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
)

// Config says how to reach the etcd cluster that holds the control plane's state. The YAML keys are the
// ones an agent, controller or proxy config nests under `etcd:`; [Config.Validate] names them so.
type Config struct {
	// Endpoints are the etcd client URLs (https://etcd-1.example:2379, ...); list members of every
	// region so the client can move to a live one.
	Endpoints []string `yaml:"endpoints"`
	// Cluster names the Meridian cluster: every key lives under /meridian/<cluster>/.
	Cluster string `yaml:"cluster"`
	// DialTimeout bounds the first connection (default 5s).
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// RequestTimeout bounds one request when the caller's context has no earlier deadline (default 5s).
	// Without quorum a write does not fail by itself: this is what turns "no majority" into an error.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// TLS is used when any endpoint is https://, or when CAFile is set.
	TLS TLSConfig `yaml:"tls"`
	// Username enables etcd authentication; the password comes from PasswordFile or the environment
	// variable PasswordEnv, never from the command line.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
}

// TLSConfig is the client side of TLS to etcd.
type TLSConfig struct {
	// CAFile verifies the members' certificates (PEM).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and key (PEM), for clusters with
	// --client-cert-auth.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name verified in the members' certificates (default: the endpoint host).
	ServerName string `yaml:"server_name"`
}

// ErrConfig is wrapped by every [Config.Validate] error.
var ErrConfig = errors.New("invalid etcd config")

// Validate checks the config and fills in defaults. Its errors name the key (etcd.endpoints, ...) and
// the rule; every problem is reported at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: etcd.%s: %s", ErrConfig, key, fmt.Sprintf(format, args...)))
	}
	if len(c.Endpoints) == 0 {
		bad("endpoints", "at least one etcd client URL is required, like https://etcd-1.example:2379")
	}
	secure := false
	for i, ep := range c.Endpoints {
		u, err := url.Parse(ep)
		switch {
		case err != nil:
			bad(fmt.Sprintf("endpoints[%d]", i), "%q is not a URL: %v", ep, err)
			continue
		case u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix" && u.Scheme != "unixs":
			bad(fmt.Sprintf("endpoints[%d]", i), "%q: want http://host:port or https://host:port", ep)
			continue
		case (u.Scheme == "http" || u.Scheme == "https") && u.Port() == "":
			bad(fmt.Sprintf("endpoints[%d]", i), "%q has no port (etcd's client port is usually 2379)", ep)
		}
		if u.Scheme == "https" || u.Scheme == "unixs" {
			secure = true
		}
	}
	switch {
	case c.Cluster == "":
		bad("cluster", "a cluster name is required (keys live under /meridian/<cluster>/)")
	case strings.ContainsAny(c.Cluster, "/ \t\n"):
		bad("cluster", "%q must not contain '/' or spaces", c.Cluster)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	} else if c.DialTimeout < 0 {
		bad("dial_timeout", "must be positive, got %s", c.DialTimeout)
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	} else if c.RequestTimeout < 0 {
		bad("request_timeout", "must be positive, got %s", c.RequestTimeout)
	}
	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad("tls", "cert_file and key_file go together: set both or neither")
	}
	for key, path := range map[string]string{"tls.ca_file": t.CAFile, "tls.cert_file": t.CertFile, "tls.key_file": t.KeyFile} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			bad(key, "%v", err)
		}
	}
	if !secure && (t.CertFile != "" || t.CAFile != "") {
		bad("tls", "TLS files are set but every endpoint is http://: use https:// endpoints")
	}
	if c.PasswordFile != "" && c.PasswordEnv != "" {
		bad("password_file", "set password_file or password_env, not both")
	}
	if c.Username == "" && (c.PasswordFile != "" || c.PasswordEnv != "") {
		bad("username", "a password is configured but no username")
	}
	if c.Username != "" {
		if _, err := c.password(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// password reads the password from its file or environment variable.
func (c *Config) password() (string, error) {
	switch {
	case c.PasswordFile != "":
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("%w: etcd.password_file: %w", ErrConfig, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case c.PasswordEnv != "":
		p, ok := os.LookupEnv(c.PasswordEnv)
		if !ok || p == "" {
			return "", fmt.Errorf("%w: etcd.password_env: environment variable %s is not set", ErrConfig, c.PasswordEnv)
		}
		return p, nil
	}
	return "", fmt.Errorf("%w: etcd.username: %q needs a password: set password_file or password_env", ErrConfig, c.Username)
}

// tlsConfig returns the client TLS config, or nil when no endpoint uses TLS.
func (c *Config) tlsConfig() (*tls.Config, error) {
	secure := false
	for _, ep := range c.Endpoints {
		if strings.HasPrefix(ep, "https://") || strings.HasPrefix(ep, "unixs://") {
			secure = true
		}
	}
	if !secure {
		return nil, nil
	}
	info := transport.TLSInfo{
		CertFile:      c.TLS.CertFile,
		KeyFile:       c.TLS.KeyFile,
		TrustedCAFile: c.TLS.CAFile,
		ServerName:    c.TLS.ServerName,
	}
	if info.CertFile == "" && info.TrustedCAFile == "" {
		// Server verification against the system roots only.
		return &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLS.ServerName}, nil
	}
	tc, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd.tls: %w", err)
	}
	return tc, nil
}
