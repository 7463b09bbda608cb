#!/usr/bin/env bash
# Makes sure PostgreSQL server programs (initdb, postgres, pg_basebackup, pg_rewind, pgbench) and psql
# are installed. On Debian/Ubuntu as root it installs them from the distribution's packages, without
# creating or starting the distribution's default cluster (Meridian runs its own servers). Elsewhere it
# explains what to install. Idempotent; fast when everything is present.
set -euo pipefail

have_server() {
  local dir="${MERIDIAN_PG_BINDIR:-}"
  if [ -z "$dir" ] && command -v pg_config >/dev/null 2>&1; then dir=$(pg_config --bindir); fi
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  [ -n "$dir" ] || return 1
  for p in initdb postgres pg_ctl pg_basebackup pg_rewind pg_controldata pgbench; do
    [ -x "$dir/$p" ] || return 1
  done
  command -v psql >/dev/null 2>&1
}

if have_server; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  cat >&2 <<'MSG'
PostgreSQL server programs are missing. Install them, then run this again:
  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install postgresql postgresql-contrib
  Fedora/RHEL:    sudo dnf install postgresql-server postgresql-contrib
or set MERIDIAN_PG_BINDIR to the folder holding initdb, postgres, pg_basebackup and pg_rewind.
MSG
  exit 1
fi

echo "installing PostgreSQL from the distribution's packages..." >&2
# Meridian creates its own clusters; do not let the package create and start the default one.
mkdir -p /etc/postgresql-common
if ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
  echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql postgresql-contrib postgresql-client >/dev/null
have_server || { echo "PostgreSQL was installed but its server programs are still not found" >&2; exit 1; }
echo "PostgreSQL installed: $(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin)" >&2
