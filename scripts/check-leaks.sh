#!/usr/bin/env bash
# Fails if any PostgreSQL server started by Meridian's tests is still running (pgtest names its
# directories meridian-pgtest-*, and server command lines contain the data directory).
set -euo pipefail
left=$(pgrep -a -f 'meridian-pgtest-' | grep -v -e pgrep -e check-leaks || true)
if [ -n "$left" ]; then
  echo "FAIL: test servers outlived go test:" >&2
  echo "$left" >&2
  exit 1
fi
echo "no test servers left running"
