#!/usr/bin/env bash
# Runs the whole test suite as an unprivileged user, so that both code paths of pgnode are exercised:
# as root the servers run as RUN_AS; as a normal user they run as the caller. Used by `make test` when
# it runs as root; a normal user's `make test` already is this run.
set -euo pipefail
user="${MERIDIAN_TEST_USER:-postgres}"
[ "$(id -u)" -eq 0 ] || { echo "test-nonroot: already not root; nothing to do"; exit 0; }
id "$user" >/dev/null 2>&1 || { echo "test-nonroot: user $user does not exist" >&2; exit 1; }

top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/meridian-nonroot-XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
# A copy of the sources the unprivileged user can read (tests may read files of their package).
cp -r "$top" "$work/src"
chmod -R a+rX "$work/src"
mkdir -p "$work/bin"
cd "$top"
status=0
for pkg in $(go list ./...); do
  rel=${pkg#$(go list -m)}
  rel=${rel#/}
  bin="$work/bin/$(echo "${rel:-root}" | tr / _).test"
  go test -c -o "$bin" "$pkg"
  [ -f "$bin" ] || continue # no test files
  chmod 755 "$bin"
  echo "== as $user: $pkg"
  if ! (cd "$work/src/$rel" && runuser -u "$user" -- env HOME="$work" TMPDIR=/tmp "$bin" -test.count=1 -test.timeout=10m "$@"); then
    status=1
    echo "FAIL (as $user): $pkg"
  fi
done
exit $status
