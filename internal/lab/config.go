package lab

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Conventional ports, the same in every region: each region has its own loopback address.
const (
	PostgresPort = 5432
	ProxyPort    = 6432
	MetricsPort  = 9187 // the proxy's /metrics, /healthz, /readyz
	// LinkPortBase + j is the port, on region i's address, of the WAN link from region i to the
	// server of region j (j is the region's position in Config.Regions).
	LinkPortBase = 5500
)

// Database is the database the sample data set lives in.
const Database = "shop"

// DefaultRegions are the lab's regions when none are given; the first is the primary's.
var DefaultRegions = []string{"us-east-1", "us-west-2", "eu-west-1"}

// defaultRTT are the published median round-trip times between the default regions (DESIGN §8).
var defaultRTT = map[[2]string]time.Duration{
	{"us-east-1", "us-west-2"}: 64 * time.Millisecond,
	{"us-east-1", "eu-west-1"}: 70 * time.Millisecond,
	{"us-west-2", "eu-west-1"}: 130 * time.Millisecond,
}

// FallbackRTT is the round-trip time between two regions the table does not know.
const FallbackRTT = 100 * time.Millisecond

// DefaultRTT returns the lab's round-trip time between two regions.
func DefaultRTT(a, b string) time.Duration {
	if d, ok := defaultRTT[[2]string{a, b}]; ok {
		return d
	}
	if d, ok := defaultRTT[[2]string{b, a}]; ok {
		return d
	}
	return FallbackRTT
}

// Config describes a lab.
type Config struct {
	// Dir holds everything the lab writes: lab.json, the supervisor's log, one folder per region
	// (server data and log, the proxy's configuration). Default: DefaultDir().
	Dir string
	// Regions, in order; default DefaultRegions. Names are letters, digits and dashes.
	Regions []string
	// Primary is the region of the primary (default: the first region).
	Primary string
	// FirstAddress is the loopback address of the first region; the others follow in the third octet
	// (127.0.1.1, 127.0.2.1, ...). Default 127.0.1.1.
	FirstAddress string
	// Logger receives the lab's events (default: discard).
	Logger *slog.Logger
	// Progress, if set, is told each step as it completes, with how long it took.
	Progress func(step string, took time.Duration)
}

// DefaultDir is where a lab lives when no directory is given: $XDG_STATE_HOME/meridian/lab, else
// ~/.local/state/meridian/lab; for root /var/lib/meridian/lab, because the servers then run as the
// user postgres, who cannot enter root's home directory.
func DefaultDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/meridian/lab"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "meridian", "lab")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "meridian", "lab")
	}
	return filepath.Join(os.TempDir(), "meridian-lab")
}

// withDefaults returns c with empty fields filled in.
func (c Config) withDefaults() Config {
	if c.Dir == "" {
		c.Dir = DefaultDir()
	}
	if len(c.Regions) == 0 {
		c.Regions = slices.Clone(DefaultRegions)
	}
	if c.Primary == "" {
		c.Primary = c.Regions[0]
	}
	if c.FirstAddress == "" {
		c.FirstAddress = "127.0.1.1"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate checks the configuration; errors name the setting (as its command-line flag).
func (c Config) Validate() error {
	c = c.withDefaults()
	if len(c.Regions) > 20 {
		return fmt.Errorf("--regions: at most 20 regions, got %d", len(c.Regions))
	}
	seen := map[string]bool{}
	for _, r := range c.Regions {
		if !validName(r) {
			return fmt.Errorf("--regions: %q is not a region name (letters, digits and dashes, up to 40)", r)
		}
		if seen[r] {
			return fmt.Errorf("--regions: %q is listed twice", r)
		}
		seen[r] = true
	}
	if !seen[c.Primary] {
		return fmt.Errorf("--primary: %q is not one of the regions (%s)", c.Primary, strings.Join(c.Regions, ","))
	}
	a, err := netip.ParseAddr(c.FirstAddress)
	if err != nil || !a.Is4() || !a.IsLoopback() {
		return fmt.Errorf("--first-address: %q is not an IPv4 loopback address (127.x.y.z)", c.FirstAddress)
	}
	if int(a.As4()[2])+len(c.Regions)-1 > 255 {
		return fmt.Errorf("--first-address: %s leaves no room for %d regions (the third number grows by one per region)", c.FirstAddress, len(c.Regions))
	}
	if c.Dir != "" && !filepath.IsAbs(c.Dir) {
		if _, err := filepath.Abs(c.Dir); err != nil {
			return fmt.Errorf("--dir: %w", err)
		}
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// regionAddress returns the loopback address of region i.
func regionAddress(first string, i int) string {
	b := netip.MustParseAddr(first).As4()
	b[2] += byte(i)
	return netip.AddrFrom4(b).String()
}

// nodeName is the name of region's PostgreSQL server.
func nodeName(region string) string { return region + "-a" }
