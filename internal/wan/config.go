package wan

import (
	"fmt"
	"log/slog"
	"net"
	"time"
)

// DefaultDialTimeout bounds dialing the target when Config.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// Config describes one emulated WAN link. The zero value is not valid:
// Listen and Target are required.
type Config struct {
	// Name identifies the link in logs (key "link"), for example
	// "us-east-1>us-west-2". Optional.
	Name string

	// Listen is the TCP address the link accepts connections on, as
	// host:port. Use port 0 (for example "127.0.0.1:0") for a kernel-assigned
	// port and read it back with Link.Addr.
	Listen string

	// Target is the TCP address, as host:port, that every accepted
	// connection is forwarded to.
	Target string

	// Latency is the one-way delay added in EACH direction: a round trip
	// through the link takes 2*Latency longer than without it. To emulate a
	// published round-trip time use OneWay(rtt). Zero forwards without delay.
	Latency time.Duration

	// Jitter varies the delay of each chunk by a uniformly random amount in
	// [-Jitter, +Jitter]. The total delay is never negative and chunks are
	// never reordered. Zero means no jitter.
	Jitter time.Duration

	// Logger receives connection opens and closes (Debug), fault injection
	// and latency changes (Info), and failures to reach Target (Warn), each
	// with the key "link" set to Name. Nil discards them.
	Logger *slog.Logger

	// DialTimeout bounds dialing Target for each accepted connection. Zero
	// means DefaultDialTimeout.
	DialTimeout time.Duration
}

// OneWay returns the per-direction latency that emulates a round-trip time:
// rtt/2, because Config.Latency is applied once in each direction.
func OneWay(rtt time.Duration) time.Duration {
	return rtt / 2
}

// ConfigError reports an invalid Config field. Field is the Go name of the
// field (for example "Target"), Rule the requirement it breaks.
type ConfigError struct {
	Field string
	Rule  string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("invalid wan link config: %s: %s", e.Field, e.Rule)
}

// Validate reports the first invalid field as a *ConfigError.
func (c Config) Validate() error {
	if err := validateAddr("Listen", c.Listen, true); err != nil {
		return err
	}
	if err := validateAddr("Target", c.Target, false); err != nil {
		return err
	}
	for _, d := range []struct {
		field string
		value time.Duration
	}{
		{"Latency", c.Latency},
		{"Jitter", c.Jitter},
		{"DialTimeout", c.DialTimeout},
	} {
		if d.value < 0 {
			return &ConfigError{Field: d.field, Rule: fmt.Sprintf("must not be negative, got %v", d.value)}
		}
	}
	return nil
}

// validateAddr checks a host:port address; zeroPortOK allows port 0, which
// asks the kernel for a port and only makes sense for a listener.
func validateAddr(field, addr string, zeroPortOK bool) error {
	if addr == "" {
		return &ConfigError{Field: field, Rule: "is required (host:port)"}
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return &ConfigError{Field: field, Rule: fmt.Sprintf("must be host:port, got %q", addr)}
	}
	if port == "" || (port == "0" && !zeroPortOK) {
		return &ConfigError{Field: field, Rule: fmt.Sprintf("must name a non-zero port, got %q", addr)}
	}
	return nil
}
