#!/usr/bin/env bash
# Fails if anything the tests started is still running: PostgreSQL servers of the test harness
# (pgtest names its directories meridian-pgtest-*), of the end-to-end lab (meridian-e2e-*) and of
# bench-consistency's lab (meridian-bench-*), any `meridian` process started from one of those
# directories (a lab supervisor, a proxy), and any postgres server run as the postgres user whose
# data directory is under /tmp (where every test and lab directory lives). Server command lines name
# their data directory, so pgrep finds them.
set -euo pipefail
left=$( (pgrep -a -f 'meridian-(pgtest|e2e|bench)-' || true) | grep -v -e pgrep -e check-leaks || true)
stray=$( (pgrep -a -u postgres -x postgres || true) | grep ' -D /tmp/' || true)
if [ -n "$left$stray" ]; then
  echo "FAIL: processes started by the tests outlived them:" >&2
  printf '%s\n%s\n' "$left" "$stray" | sed '/^$/d' >&2
  exit 1
fi
echo "no test servers, labs or proxies left running"
