// Package topology is Meridian's shared model: the types every component agrees on and that carry no
// behaviour beyond parsing, printing and comparing. It imports nothing of ours, so that the proxy, the
// agent and the controller can all depend on it without depending on each other.
//
// [LSN] is a position in PostgreSQL's write-ahead log; see
// https://www.postgresql.org/docs/15/datatype-pg-lsn.html and
// https://www.postgresql.org/docs/15/wal-internals.html. The control plane's model (the store keeps it
// as JSON): [Topology], written only by the controller leader, whose epoch is the fencing token;
// [NodeStatus], reported by each agent under its lease; [ProxyStatus], reported by each proxy; and
// [Event], the append-only log of decisions and observations.
package topology
