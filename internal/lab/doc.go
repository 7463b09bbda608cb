// Package lab runs the whole multi-region system on one machine: per region a PostgreSQL server (the
// primary in one region, streaming replicas in the others) and a Meridian proxy, each region on its own
// loopback address, with every cross-region connection (replication and proxy→remote server) going
// through an emulated WAN link (package wan) with the round-trip times of DESIGN §8.
//
// A Lab is owned by one supervisor process: Start builds it step by step, Close tears it down and
// RemoveData throws its servers' data away (a lab is disposable; `lab down` and Ctrl-C do both). The
// supervisor writes the lab's state (lab.json) into the lab directory and serves a loopback control
// endpoint (HTTP + JSON) through which other processes — `meridian lab status`, `latency`, `partition`,
// `heal`, `down` — drive it; Client is their side. Load runs a mixed read/write workload through every
// region's proxy and reports what each region saw. CleanStale finds a lab whose supervisor died and
// removes what it left behind.
package lab
