// Package auth authenticates the proxy's clients the way PostgreSQL does
// (https://www.postgresql.org/docs/15/client-authentication.html): ordered rules in the spirit of
// pg_hba.conf choose a method per database, user and address (scram-sha-256, md5, cert, trust,
// reject); users' secrets (SCRAM verifiers or md5 hashes, never passwords) come from an auth file in
// PgBouncer's format or from an auth query run on the primary; and the exchanges with the client
// (SCRAM-SHA-256 with internal/scram, md5, a mock exchange for unknown users) run over a small Conn
// interface the proxy implements.
//
// Main types: Config and Rule (the auth: section of the proxy's configuration), Store (secrets and
// the auth query, and Authenticate), Error (a failure with its SQLSTATE).
//
// Safe by default: without rules every client must prove a password with SCRAM-SHA-256; trust rules
// never admit the admin console; the SCRAM keys a client proves are returned to the caller for that
// client's session only, never cached for others.
package auth
