package wan

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestConfigValidate(t *testing.T) {
	valid := Config{Listen: "127.0.0.1:0", Target: "127.0.0.1:5432"}
	tests := []struct {
		name      string
		edit      func(*Config)
		wantField string // "" means valid
	}{
		{name: "minimal", edit: func(*Config) {}},
		{name: "all fields", edit: func(c *Config) {
			c.Name, c.Latency, c.Jitter, c.DialTimeout = "a>b", 32*time.Millisecond, time.Millisecond, time.Second
		}},
		{name: "fixed listen port", edit: func(c *Config) { c.Listen = "127.0.0.1:15432" }},
		{name: "listen on all addresses", edit: func(c *Config) { c.Listen = ":0" }},
		{name: "ipv6 target", edit: func(c *Config) { c.Target = "[::1]:5432" }},
		{name: "missing listen", edit: func(c *Config) { c.Listen = "" }, wantField: "Listen"},
		{name: "listen without port", edit: func(c *Config) { c.Listen = "127.0.0.1" }, wantField: "Listen"},
		{name: "listen empty port", edit: func(c *Config) { c.Listen = "127.0.0.1:" }, wantField: "Listen"},
		{name: "missing target", edit: func(c *Config) { c.Target = "" }, wantField: "Target"},
		{name: "target without port", edit: func(c *Config) { c.Target = "db.example" }, wantField: "Target"},
		{name: "target port zero", edit: func(c *Config) { c.Target = "127.0.0.1:0" }, wantField: "Target"},
		{name: "negative latency", edit: func(c *Config) { c.Latency = -time.Millisecond }, wantField: "Latency"},
		{name: "negative jitter", edit: func(c *Config) { c.Jitter = -time.Millisecond }, wantField: "Jitter"},
		{name: "negative dial timeout", edit: func(c *Config) { c.DialTimeout = -time.Second }, wantField: "DialTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.edit(&cfg)
			err := cfg.Validate()
			var gotField string
			if err != nil {
				var ce *ConfigError
				if !errors.As(err, &ce) {
					t.Fatalf("Validate() = %v, want a *ConfigError", err)
				}
				gotField = ce.Field
			}
			if diff := cmp.Diff(tt.wantField, gotField); diff != "" {
				t.Errorf("Validate() = %v; invalid field (-want +got):\n%s", err, diff)
			}
		})
	}
}

func TestOneWay(t *testing.T) {
	if got := OneWay(64 * time.Millisecond); got != 32*time.Millisecond {
		t.Errorf("OneWay(64ms) = %v, want 32ms", got)
	}
}
