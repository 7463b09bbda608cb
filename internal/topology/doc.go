// Package topology is Meridian's shared model: the types every component agrees on and that carry no
// behaviour beyond parsing, printing and comparing. It imports nothing of ours, so that the proxy, the
// agent and the controller can all depend on it without depending on each other.
//
// Its first type is [LSN], a position in PostgreSQL's write-ahead log; see
// https://www.postgresql.org/docs/15/datatype-pg-lsn.html and
// https://www.postgresql.org/docs/15/wal-internals.html.
package topology
