#!/usr/bin/env bash
# make compat: pgx v5's own test suite and the node-postgres / postgres.js smoke suites, directly and
# through meridian proxy in session and transaction pool mode, checked against
# compat/expected-failures.txt (see docs/testing.md, "Compatibility").
#
# Needs: Go (the pgx module and its dependencies come through the Go module proxy), PostgreSQL's
# server programs (found like every integration test's), node and npm. When something is missing the
# missing part is skipped with a message — except under CI=true, where it fails.
# COMPAT_MODES=direct,session,transaction and COMPAT_SUITES=pgx,node narrow a run while developing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing() {
  if [ "${CI:-}" = true ]; then
    echo "FAIL: $1 — failing, not skipping, because CI=true" >&2
    exit 1
  fi
  echo "WARNING: $1: the node suites will be skipped" >&2
}

if ! command -v node >/dev/null; then
  missing "node is not installed (apt-get install nodejs npm)"
elif [ ! -d compat/node/node_modules ]; then
  if command -v npm >/dev/null; then
    (cd compat/node && npm ci --no-audit --no-fund)
  else
    missing "npm is not installed (apt-get install npm)"
  fi
fi

start=$(date +%s)
set +e
go test -tags compat -count=1 -v -timeout "${COMPAT_TIMEOUT:-40m}" ./compat/ 2>&1 | tee compat/out.log
status=${PIPESTATUS[0]}
set -e
echo "make compat: $(( $(date +%s) - start )) s; full log in compat/out.log, per-mode results in compat/out/"
exit "$status"
