// Package pgnode controls one real PostgreSQL server: it finds the server programs, creates a
// replication-ready primary ([Node.Init]) or clones a streaming replica ([Node.Clone]), starts and stops
// it, promotes, demotes, re-points and rewinds it, and reports its replication state ([Node.Status]).
// The agent, the lab and every integration test build on it.
//
// A [Node] owns its postmaster process: the server runs as a child of the calling process, in its own
// process group, and is killed by the kernel if the caller dies (so no test or lab leaves servers behind).
// When the caller is root the server programs run as an unprivileged operating-system user (default
// "postgres"), because PostgreSQL refuses to run as root; data directories then belong to that user.
//
// The node's configuration is written to meridian.conf in the data directory, included from
// postgresql.conf, and regenerated before every start, because pg_basebackup and pg_rewind copy the
// source's configuration files over the target's.
//
// PostgreSQL documentation implemented here:
//   - streaming replication and standby servers: https://www.postgresql.org/docs/15/warm-standby.html
//   - server shutdown modes: https://www.postgresql.org/docs/15/server-shutdown.html
//   - pg_basebackup: https://www.postgresql.org/docs/15/app-pgbasebackup.html
//   - pg_rewind: https://www.postgresql.org/docs/15/app-pgrewind.html
//   - recovery information functions: https://www.postgresql.org/docs/15/functions-admin.html
package pgnode
