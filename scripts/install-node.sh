#!/usr/bin/env bash
# Makes sure node and npm are installed, for `make compat`'s node-postgres and postgres.js suites
# (compat/node). On Debian/Ubuntu as root it installs them from the distribution's packages (nodejs,
# npm); elsewhere it explains what to install. Idempotent; fast when both are present.
set -euo pipefail

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  cat >&2 <<'MSG'
node and npm are missing (make compat runs node-postgres and postgres.js through the proxy).
Install them, then run this again:
  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install nodejs npm
  Fedora/RHEL:    sudo dnf install nodejs npm
MSG
  exit 1
fi

echo "installing node and npm from the distribution's packages..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
pkgs=()
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "node or npm still not found after installing" >&2; exit 1; }
echo "node $(node --version), npm $(npm --version) installed" >&2
