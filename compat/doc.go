// Package compat is the outside-evidence check of `meridian proxy` (`make compat`): real clients' own
// test suites and smoke suites run directly against PostgreSQL and through the proxy in session and
// transaction pool mode, compared with compat/expected-failures.txt.
//
// Everything lives in test files behind the build tag compat:
//
//	go test -tags compat -count=1 -v -timeout 30m ./compat/
//
// TestCompat starts a primary and a streaming replica with internal/pgtest, prepares the database the
// pgx suite needs (its testsetup/postgresql_setup.sql), then for each mode — direct, session,
// transaction — starts the proxy in-process (for the proxy modes) and runs:
//
//   - pgx v5's own tests (module github.com/jackc/pgx/v5 at PgxVersion; packages ., pgconn, pgxpool,
//     stdlib, pgtype) as a `go test -json` subprocess with PGX_TEST_DATABASE pointing at the target;
//   - compat/node/smoke.mjs: node-postgres and postgres.js cases, each run directly and against the
//     target and compared.
//
// See docs/testing.md for the expected-failures rules.
package compat

// PgxVersion is the pinned version of pgx whose test suite runs.
const PgxVersion = "v5.7.6"
