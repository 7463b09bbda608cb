// Package buildinfo reports which Meridian this binary is: the version and commit stamped in by the
// Makefile's -ldflags, with the Go toolchain's embedded VCS data as a fallback.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at link time: go build -ldflags "-X .../buildinfo.version=v0.1.0 -X .../buildinfo.commit=abc123".
// They are package variables only because the linker can set nothing else; nothing writes them at run time.
var (
	version = "dev"
	commit  = ""
)

// Info identifies a build.
type Info struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Go      string `json:"go"`
}

// Get returns the build's identity.
func Get() Info {
	info := Info{Version: version, Commit: commit, Go: runtime.Version()}
	if info.Commit == "" {
		info.Commit = "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					info.Commit = s.Value
				}
			}
		}
	}
	return info
}

// String formats the identity for `meridian version`.
func (i Info) String() string {
	return fmt.Sprintf("meridian %s (commit %s, %s)", i.Version, i.Commit, i.Go)
}
