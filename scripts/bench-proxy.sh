#!/usr/bin/env bash
# Benchmarks `meridian proxy` against direct PostgreSQL, PgBouncer (transaction mode) and Pgpool-II with
# pgbench, all on this machine, and writes a Markdown report (TPS, mean and p99 latency, TPS relative to
# PgBouncer, where the transactions ran, and each pooler's memory holding many idle clients).
#
#   make bench-proxy                      # or: scripts/bench-proxy.sh
#   BENCH_DURATION=3 BENCH_CLIENTS="1 16" BENCH_MODES=simple scripts/bench-proxy.sh   # quick look
#
# What it does, in one go:
#   1. installs what is missing (as root on Debian/Ubuntu): PostgreSQL through scripts/install-postgres.sh,
#      pgbouncer and pgpool2 with apt-get, with a policy-rc.d that stops the packages from starting
#      their services; builds bin/meridian (`make build`) and the idle-connection client
#      (scripts/bench/idleconns);
#   2. in a fresh temporary directory (mktemp -d /tmp/meridian-bench-XXXXXX) starts, on 127.0.0.1 and
#      free ports: a PostgreSQL primary, a streaming replica of it (pg_basebackup -R), PgBouncer in front
#      of the primary, Pgpool-II in streaming-replication mode load-balancing reads over both servers,
#      and the Meridian proxy with both servers as nodes of its region (reads → replica, writes →
#      primary). As root, PostgreSQL, PgBouncer and Pgpool-II run as the user "postgres" (BENCH_USER);
#   3. pgbench -i at scale BENCH_SCALE, then for each protocol (-M simple, -M extended), script
#      (select-only -S, the default TPC-B-like one) and client count, runs pgbench for BENCH_DURATION
#      seconds against each target in turn (targets interleaved, so that drift on a shared machine
#      hits all of them alike). p99 comes from pgbench's per-transaction log (-l);
#   4. opens BENCH_IDLE_CONNS idle client connections to each pooler (Pgpool-II: as many as it has
#      child processes, since it needs one process per client) and reads the pooler's memory from /proc;
#   5. stops everything it started (by process id, also on error or Ctrl-C) and removes the directory.
#
# The Meridian proxy is optional: when `bin/meridian proxy --help` fails (or the build fails) its row
# says so and the rest still runs.
#
# Environment (defaults in brackets):
#   BENCH_DURATION [10]  seconds per pgbench run        BENCH_CLIENTS ["1 16 64"]
#   BENCH_MODES ["simple extended"]                     BENCH_SCRIPTS ["select-only tpcb-like"]
#   BENCH_TARGETS ["direct meridian pgbouncer pgpool"]  BENCH_SCALE [10]
#   BENCH_POOL_SIZE [20]  server connections per pool (PgBouncer default_pool_size, Meridian pool_size)
#   BENCH_IDLE_CONNS [10000]  idle clients for the memory test (0 skips it)
#   BENCH_PGPOOL_MODE [streaming_replication]  or "raw" (Pgpool-II in front of the primary only)
#   BENCH_SYNC_COMMIT [on]  synchronous_commit of the servers
#   BENCH_OUT_DIR [<repo>/bench-results]
#   BENCH_KEEP [on-error]  keep the temporary directory (server and pooler logs): 1 always, 0 never
#   BENCH_USER [postgres]  who runs the servers when this runs as root
#   BENCH_SKIP_BUILD [0]  1 uses bin/meridian as it is
#   BENCH_MERIDIAN_BIN [<repo>/bin/meridian]  the meridian binary to run (implies nothing about building)
#   BENCH_WARMUP [3]  seconds of untimed select-only load through each target before the runs
#   BENCH_BAR_ROUNDS [5]  after the table: rounds of select-only at BENCH_BAR_CLIENTS [16] clients
#       through every bar contender below, BENCH_BAR_DURATION [5] seconds each, the order rotated every
#       round; each verdict is the median of the per-round ratios (0 skips them). One 10 s run per cell
#       is at the mercy of this shared machine's drift (±15 % seen); ratios from the same rounds are not.
#   The bar contenders, each its own process on 127.0.0.1 and all in the same rounds:
#     meridian   the Meridian proxy of the table: this tree's build, its DEFAULT configuration (the
#                YAML does not set auto_prepare; the report says what the build did, from its
#                meridian_proxy_auto_prepare_total metric) — the transparent configuration
#     pgbouncer  PgBouncer, transaction mode — the bar: meridian / pgbouncer ≥ 1.0
#     autoprep   BENCH_BAR_AUTOPREP [1]: a second proxy of this build with `auto_prepare: true`, to
#                show what automatic preparation adds (autoprep / pgbouncer and autoprep / meridian).
#                BENCH_BAR_PLAIN, its former name (then a proxy with auto_prepare off), is still read
#                as its default: BENCH_BAR_PLAIN=0 leaves it out.
#     baseline   BENCH_BASELINE_REV [e04db26]: that revision's cmd/meridian (the build before the
#                hardening work), built from `git archive` into the temporary directory (or
#                BENCH_BASELINE_BIN, a binary built already), run with this build's configuration
#                plus an explicit `auto_prepare: false` (its default was true). The safety must not
#                cost speed: meridian / baseline ≥ 0.95 in the median. BENCH_BASELINE_REV="" leaves
#                it out.
#     relay      BENCH_BAR_RELAY [1]: the epoll relay (scripts/bench/epollrelay, internal/benchrelay),
#                an event loop reduced to copying bytes, in front of the primary — the yardstick of
#                what any Go proxy could do here. "relay" in BENCH_TARGETS adds it to the table.
#   Every Meridian configuration written here has explicit auth rules trusting 127.0.0.1 (pgbench and
#   the idle clients log in as postgres without a password, as they do through PgBouncer's
#   auth_type trust): the result does not depend on the proxy's default rules.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
DURATION=${BENCH_DURATION:-10}
CLIENTS=${BENCH_CLIENTS:-"1 16 64"}
MODES=${BENCH_MODES:-"simple extended"}
SCRIPTS=${BENCH_SCRIPTS:-"select-only tpcb-like"}
TARGETS=${BENCH_TARGETS:-"direct meridian pgbouncer pgpool"}
SCALE=${BENCH_SCALE:-10}
POOL_SIZE=${BENCH_POOL_SIZE:-20}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
PGPOOL_MODE=${BENCH_PGPOOL_MODE:-streaming_replication}
SYNC_COMMIT=${BENCH_SYNC_COMMIT:-on}
OUT_DIR=${BENCH_OUT_DIR:-$top/bench-results}
KEEP=${BENCH_KEEP:-on-error}
RUN_USER=${BENCH_USER:-postgres}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
MERIDIAN=${BENCH_MERIDIAN_BIN:-$top/bin/meridian}
WARMUP=${BENCH_WARMUP:-3}
BAR_ROUNDS=${BENCH_BAR_ROUNDS:-5}
BAR_DURATION=${BENCH_BAR_DURATION:-5}
BAR_CLIENTS=${BENCH_BAR_CLIENTS:-16}
BAR_RELAY=${BENCH_BAR_RELAY:-1}
BAR_AUTOPREP=${BENCH_BAR_AUTOPREP:-${BENCH_BAR_PLAIN:-1}}
BASELINE_REV=${BENCH_BASELINE_REV-e04db26}
BASELINE_BIN=${BENCH_BASELINE_BIN:-}
BASELINE_BAR=0.95 # the transparent configuration's TPS / the baseline build's, median of the rounds
export PATH="$PATH:/usr/sbin:/sbin"
export LC_ALL=C

log() { echo "[bench-proxy $(date +%H:%M:%S)] $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

for v in DURATION SCALE POOL_SIZE IDLE_CONNS WARMUP BAR_ROUNDS BAR_DURATION BAR_CLIENTS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "BENCH_$v must be a whole number, got '${!v}'"
done
for c in $CLIENTS; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "BENCH_CLIENTS: '$c' is not a client count"; done
for m in $MODES; do [[ $m =~ ^(simple|extended|prepared)$ ]] || die "BENCH_MODES: unknown protocol '$m'"; done
for s in $SCRIPTS; do [[ $s =~ ^(select-only|tpcb-like)$ ]] || die "BENCH_SCRIPTS: unknown script '$s'"; done
for t in $TARGETS; do [[ $t =~ ^(direct|meridian|pgbouncer|pgpool|relay)$ ]] || die "BENCH_TARGETS: unknown target '$t'"; done
[[ $BAR_RELAY =~ ^[01]$ ]] || die "BENCH_BAR_RELAY must be 0 or 1"
[[ $BAR_AUTOPREP =~ ^[01]$ ]] || die "BENCH_BAR_AUTOPREP (or BENCH_BAR_PLAIN) must be 0 or 1"
[[ $PGPOOL_MODE =~ ^(streaming_replication|raw)$ ]] || die "BENCH_PGPOOL_MODE must be streaming_replication or raw"
want() { [[ " $TARGETS " == *" $1 "* ]]; }
max_clients=0
for c in $CLIENTS; do ((c > max_clients)) && max_clients=$c; done

# ---------------------------------------------------------------------------------------------------
# Cleanup: everything started is recorded with its process id; each runs in its own session (setsid),
# so its process group id is its pid and holds its children (Pgpool-II's forked children).
# ---------------------------------------------------------------------------------------------------
STARTED=()             # pids, in start order
declare -A NAME_OF=()  # pid → name
declare -A SIG_OF=()   # pid → signal that shuts it down cleanly
WORK=""
POLICY_CREATED=0

pids_of() { # pid → the live (non-zombie) processes of its process group (itself and its children)
  local g=$1 s line f
  for s in /proc/[0-9]*/stat; do
    { read -r line <"$s"; } 2>/dev/null || continue
    line=${line##*) } # state ppid pgrp ...
    # shellcheck disable=SC2086
    set -- $line
    if [ "$3" = "$g" ] && [ "$1" != Z ]; then
      f=${s#/proc/}
      echo "${f%/stat}"
    fi
  done
}
running() { [ -n "$(pids_of "$1")" ]; }

stop_one() {
  local pid=$1 sig=${SIG_OF[$1]:-TERM} i
  running "$pid" || {
    wait "$pid" 2>/dev/null || true
    return 0
  }
  kill -s "$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    running "$pid" || break
    sleep 0.1
  done
  if running "$pid"; then
    log "${NAME_OF[$pid]:-$pid} did not stop after SIG$sig within 15 s; killing its process group"
    kill -KILL -- "-$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      running "$pid" || break
      sleep 0.1
    done
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? i pid
  trap - EXIT INT TERM HUP
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    pid=${STARTED[$i]}
    stop_one "$pid"
  done
  if [ "$POLICY_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$KEEP" = 1 ] || { [ "$rc" -ne 0 ] && [ "$KEEP" = on-error ]; }; then
      log "kept $WORK (logs in $WORK/logs; remove it with: rm -rf $WORK)"
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted; stopping everything"; exit 130' INT
trap 'log "terminated; stopping everything"; exit 143' TERM
trap 'log "hung up; stopping everything"; exit 129' HUP

# start NAME SIGNAL LOGFILE CMD... — runs CMD in its own session; the pid is left in REPLY.
start() {
  local name=$1 sig=$2 logf=$3
  shift 3
  setsid "$@" >>"$logf" 2>&1 </dev/null &
  REPLY=$!
  STARTED+=("$REPLY")
  NAME_OF[$REPLY]=$name
  SIG_OF[$REPLY]=$sig
}

# ---------------------------------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------------------------------
is_root() { [ "$(id -u)" -eq 0 ]; }

find_bindir() {
  local dir="${MERIDIAN_PG_BINDIR:-}"
  if [ -z "$dir" ] && command -v pg_config >/dev/null 2>&1; then dir=$(pg_config --bindir); fi
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  [ -n "$dir" ] && [ -x "$dir/postgres" ] || die "PostgreSQL server programs not found (set MERIDIAN_PG_BINDIR)"
  echo "$dir"
}

install_poolers() {
  local missing=()
  if want pgbouncer && ! command -v pgbouncer >/dev/null 2>&1; then missing+=(pgbouncer); fi
  if want pgpool && ! command -v pgpool >/dev/null 2>&1; then missing+=(pgpool2); fi
  [ ${#missing[@]} -gt 0 ] || return 0
  if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
    die "missing: ${missing[*]} — install them (Debian/Ubuntu: apt-get install ${missing[*]}), or leave them out with BENCH_TARGETS"
  fi
  log "installing ${missing[*]} with apt-get (their services are kept from starting)..."
  # Debian's maintainer scripts start services through invoke-rc.d / deb-systemd-invoke, which both ask
  # policy-rc.d first: 101 = "action forbidden". Ours only lives for the install.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# temporary, from meridian scripts/bench-proxy.sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_CREATED=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$POLICY_CREATED" = 1 ]; then
    rm -f /usr/sbin/policy-rc.d
    POLICY_CREATED=0
  fi
  # Belt and braces: if a service manager started them anyway, stop the distribution's instances.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    local u
    for u in pgbouncer pgpool2; do
      if systemctl is-active --quiet "$u" 2>/dev/null; then
        log "stopping and disabling the distribution's $u service"
        systemctl stop "$u" || true
        systemctl disable "$u" >/dev/null 2>&1 || true
      fi
    done
  fi
  for u in "${missing[@]}"; do
    case $u in
    pgbouncer) command -v pgbouncer >/dev/null || die "pgbouncer was installed but is not on PATH" ;;
    pgpool2) command -v pgpool >/dev/null || die "pgpool2 was installed but pgpool is not on PATH" ;;
    esac
  done
}

# ---------------------------------------------------------------------------------------------------
# Ports and helpers
# ---------------------------------------------------------------------------------------------------
declare -A TAKEN=()
port_in_use() {
  local hex
  hex=$(printf '%04X' "$1")
  grep -q ":$hex " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
# pick_port → REPLY: a free port below the ephemeral range, so that the many client connections of the
# memory test cannot collide with it.
pick_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    if [ -z "${TAKEN[$p]:-}" ] && ! port_in_use "$p"; then
      TAKEN[$p]=1
      REPLY=$p
      return
    fi
  done
}

export PGSSLMODE=disable PGCONNECT_TIMEOUT=10 PGUSER=postgres
unset PGHOST PGPORT PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS PGAPPNAME

sql() { # port db sql... → unaligned tuples
  local port=$1 db=$2
  shift 2
  "$BINDIR/psql" -X -h 127.0.0.1 -p "$port" -U postgres -d "$db" -Atq -v ON_ERROR_STOP=1 -c "$*"
}

# wait_sql NAME PID PORT DB TIMEOUT LOG — until `select 1` works through PORT; fails if PID dies.
wait_sql() {
  local name=$1 pid=$2 port=$3 db=$4 timeout=$5 logf=$6 deadline
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if ! running "$pid"; then
      log "$name exited while starting; last lines of $logf:"
      tail -n 20 "$logf" >&2 || true
      return 1
    fi
    if sql "$port" "$db" 'select 1' >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "$name did not accept queries on port $port within ${timeout}s; last lines of $logf:"
  tail -n 20 "$logf" >&2 || true
  return 1
}

kib_sum() { # field pids... → sum of FIELD (kB) over /proc/PID/status (VmRSS) or smaps_rollup (Pss)
  local field=$1 total=0 p v
  shift
  for p in "$@"; do
    if [ "$field" = Pss ]; then
      v=$(awk '$1 == "Pss:" {print $2; exit}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
    else
      v=$(awk -v f="$field:" '$1 == f {print $2; exit}' "/proc/$p/status" 2>/dev/null || true)
    fi
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# ---------------------------------------------------------------------------------------------------
# 1. Install and build
# ---------------------------------------------------------------------------------------------------
"$top/scripts/install-postgres.sh"
BINDIR=$(find_bindir)
install_poolers

if is_root; then
  id "$RUN_USER" >/dev/null 2>&1 || die "user $RUN_USER does not exist (PostgreSQL refuses to run as root; set BENCH_USER)"
  AS_PG=(setpriv "--reuid=$RUN_USER" "--regid=$(id -g "$RUN_USER")" --init-groups --)
else
  AS_PG=()
  RUN_USER=$(id -un)
fi

# Many idle clients need many descriptors, in the poolers and in the client. Raise the soft limit as
# far as the hard one allows; children inherit it.
nofile_hard=$(ulimit -Hn)
if [ "$nofile_hard" = unlimited ]; then nofile_hard=1048576; fi
nofile=$((nofile_hard < 65536 ? nofile_hard : 65536))
ulimit -n "$nofile" 2>/dev/null || nofile=$(ulimit -n)
IDLE_NOTE=""
if ((IDLE_CONNS > 0 && IDLE_CONNS + 200 > nofile)); then
  IDLE_NOTE="open-file limit is $nofile (hard $nofile_hard): idle clients lowered from $IDLE_CONNS to $((nofile - 200))"
  log "$IDLE_NOTE"
  IDLE_CONNS=$((nofile - 200))
fi

WORK=$(mktemp -d /tmp/meridian-bench-XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/logs" "$WORK/pg" "$WORK/sock" "$WORK/pgbouncer" "$WORK/pgpool" "$WORK/meridian" "$WORK/runs" "$WORK/bin"
chmod 755 "$WORK/logs"
if is_root; then chown "$RUN_USER:" "$WORK/pg" "$WORK/sock" "$WORK/pgbouncer" "$WORK/pgpool"; fi
log "working in $WORK"

MERIDIAN_REASON=""
if want meridian; then
  if [ "$SKIP_BUILD" != 1 ]; then
    log "building bin/meridian (make build)..."
    if ! make -C "$top" --no-print-directory build >"$WORK/logs/build.log" 2>&1; then
      first=$(grep -m1 -E '\.go:[0-9]+|^go: |cannot|error' "$WORK/logs/build.log" | grep -v '^go build ' || true)
      MERIDIAN_REASON="not available in this build (make build failed: ${first:-see its output}"
      MERIDIAN_REASON="${MERIDIAN_REASON:0:160})"
    fi
  fi
  if [ -z "$MERIDIAN_REASON" ]; then
    if [ ! -x "$MERIDIAN" ] || ! "$MERIDIAN" proxy --help >/dev/null 2>&1; then
      MERIDIAN_REASON="not available in this build"
    fi
  fi
  [ -z "$MERIDIAN_REASON" ] || log "meridian proxy: $MERIDIAN_REASON"
fi

# The baseline build for the bar rounds: BENCH_BASELINE_REV's cmd/meridian, built from `git archive`
# (no worktree to clean up: the sources live in $WORK, removed with it on exit, error or Ctrl-C).
BASELINE_REASON=""
BASELINE_DESC=""
if [ -n "$BASELINE_REV$BASELINE_BIN" ] && ((BAR_ROUNDS > 0)) && want meridian && want pgbouncer; then
  if [ -n "$BASELINE_BIN" ]; then
    BASELINE_DESC="binary $BASELINE_BIN${BASELINE_REV:+ (given as revision $BASELINE_REV)}"
    if [ ! -x "$BASELINE_BIN" ] || ! "$BASELINE_BIN" proxy --help >/dev/null 2>&1; then
      BASELINE_REASON="BENCH_BASELINE_BIN=$BASELINE_BIN is not a meridian binary with a proxy command"
    fi
  elif ! baseline_sha=$(git -C "$top" rev-parse --verify --quiet "$BASELINE_REV^{commit}"); then
    BASELINE_REASON="BENCH_BASELINE_REV=$BASELINE_REV is not a commit of $top"
  else
    BASELINE_DESC="$BASELINE_REV (${baseline_sha:0:12})"
    log "building the baseline: cmd/meridian at $BASELINE_DESC..."
    BASELINE_BIN="$WORK/bin/meridian-baseline"
    mkdir -p "$WORK/baseline-src"
    if ! { git -C "$top" archive "$baseline_sha" | tar -x -C "$WORK/baseline-src"; } >"$WORK/logs/baseline-build.log" 2>&1 ||
      ! (cd "$WORK/baseline-src" && "$GO" build \
        -ldflags "-X github.com/meridiandb/meridian/internal/buildinfo.version=$BASELINE_REV -X github.com/meridiandb/meridian/internal/buildinfo.commit=${baseline_sha:0:7}" \
        -o "$BASELINE_BIN" ./cmd/meridian) >>"$WORK/logs/baseline-build.log" 2>&1; then
      first=$(grep -m1 -E '\.go:[0-9]+|^go: |cannot|error|fatal' "$WORK/logs/baseline-build.log" || true)
      BASELINE_REASON="could not build $BASELINE_REV: ${first:-see $WORK/logs/baseline-build.log}"
      BASELINE_REASON=${BASELINE_REASON:0:200}
    fi
    rm -rf "$WORK/baseline-src"
  fi
  [ -z "$BASELINE_REASON" ] || log "baseline: $BASELINE_REASON (the bar rounds run without it)"
fi

RELAY_REASON=""
if want relay || ((BAR_RELAY == 1 && BAR_ROUNDS > 0)); then
  if ! (cd "$top" && "$GO" build -o "$WORK/bin/epollrelay" ./scripts/bench/epollrelay) >"$WORK/logs/epollrelay-build.log" 2>&1; then
    RELAY_REASON="could not build scripts/bench/epollrelay: $(head -n 1 "$WORK/logs/epollrelay-build.log")"
    log "$RELAY_REASON"
  fi
fi

IDLE_REASON=""
if ((IDLE_CONNS > 0)); then
  if ! (cd "$top" && "$GO" build -o "$WORK/bin/idleconns" ./scripts/bench/idleconns) >"$WORK/logs/idleconns-build.log" 2>&1; then
    IDLE_REASON="could not build scripts/bench/idleconns: $(head -n 1 "$WORK/logs/idleconns-build.log")"
    log "$IDLE_REASON"
  fi
fi

# ---------------------------------------------------------------------------------------------------
# 2. Servers and poolers
# ---------------------------------------------------------------------------------------------------
pick_port
P_PRIMARY=$REPLY
pick_port
P_REPLICA=$REPLY
pick_port
P_BOUNCER=$REPLY
pick_port
P_PGPOOL=$REPLY
pick_port
P_PCP=$REPLY
pick_port
P_MERIDIAN=$REPLY
pick_port
P_MERIDIAN_HTTP=$REPLY
pick_port
P_RELAY=$REPLY
pick_port
P_AUTOPREP=$REPLY
pick_port
P_AUTOPREP_HTTP=$REPLY
pick_port
P_BASE=$REPLY
pick_port
P_BASE_HTTP=$REPLY

log "initdb + primary on 127.0.0.1:$P_PRIMARY"
"${AS_PG[@]}" "$BINDIR/initdb" -D "$WORK/pg/primary" -U postgres -A trust -E UTF8 --locale=C >"$WORK/logs/initdb.log" 2>&1 ||
  {
    tail -n 20 "$WORK/logs/initdb.log" >&2
    die "initdb failed"
  }
cat >>"$WORK/pg/primary/postgresql.conf" <<EOF

# meridian bench-proxy
listen_addresses = '127.0.0.1'
port = $P_PRIMARY
unix_socket_directories = '$WORK/sock'
max_connections = 300
shared_buffers = 256MB
wal_level = replica
max_wal_senders = 5
hot_standby = on
synchronous_commit = $SYNC_COMMIT
max_wal_size = 4GB
checkpoint_timeout = 30min
EOF
# pg_stat_statements counts statements the moment they finish, on the primary and on the replica, which
# is how the report says where each target's statements ran (pg_stat_database is flushed lazily).
TRACK=0
if [ -f "$("$BINDIR/pg_config" --pkglibdir 2>/dev/null)/pg_stat_statements.so" ]; then
  TRACK=1
  echo "shared_preload_libraries = 'pg_stat_statements'" >>"$WORK/pg/primary/postgresql.conf"
fi
start primary INT "$WORK/logs/primary.log" "${AS_PG[@]}" "$BINDIR/postgres" -D "$WORK/pg/primary"
PID_PRIMARY=$REPLY
wait_sql primary "$PID_PRIMARY" "$P_PRIMARY" postgres 60 "$WORK/logs/primary.log" || die "primary did not start"

log "replica on 127.0.0.1:$P_REPLICA (pg_basebackup -R)"
"${AS_PG[@]}" "$BINDIR/pg_basebackup" -h 127.0.0.1 -p "$P_PRIMARY" -U postgres -D "$WORK/pg/replica" -R -X stream -c fast \
  >"$WORK/logs/basebackup.log" 2>&1 || {
  tail -n 20 "$WORK/logs/basebackup.log" >&2
  die "pg_basebackup failed"
}
echo "port = $P_REPLICA" >>"$WORK/pg/replica/postgresql.conf"
start replica INT "$WORK/logs/replica.log" "${AS_PG[@]}" "$BINDIR/postgres" -D "$WORK/pg/replica"
PID_REPLICA=$REPLY
wait_sql replica "$PID_REPLICA" "$P_REPLICA" postgres 60 "$WORK/logs/replica.log" || die "replica did not start"
for ((i = 0; i < 100; i++)); do
  [ "$(sql "$P_PRIMARY" postgres "select count(*) from pg_stat_replication where state = 'streaming'")" = 1 ] && break
  sleep 0.2
done
[ "$(sql "$P_REPLICA" postgres 'select pg_is_in_recovery()')" = t ] || die "the replica is not in recovery"

log "pgbench -i -s $SCALE"
sql "$P_PRIMARY" postgres 'create database bench' >/dev/null
"$BINDIR/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$P_PRIMARY" -U postgres bench >"$WORK/logs/pgbench-init.log" 2>&1 || {
  tail -n 20 "$WORK/logs/pgbench-init.log" >&2
  die "pgbench -i failed"
}
sql "$P_PRIMARY" bench 'checkpoint' >/dev/null
if [ "$TRACK" = 1 ]; then sql "$P_PRIMARY" postgres 'create extension pg_stat_statements' >/dev/null; fi

wait_replay() { # until the replica has replayed everything the primary has written so far
  local lsn i
  lsn=$(sql "$P_PRIMARY" postgres 'select pg_current_wal_lsn()')
  for ((i = 0; i < 600; i++)); do
    [ "$(sql "$P_REPLICA" postgres "select pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")" = t ] && return 0
    sleep 0.1
  done
  log "warning: the replica did not catch up with $lsn within 60 s"
}
wait_replay

declare -A PORT_OF=([direct]=$P_PRIMARY)
declare -A PID_OF=([direct]=$PID_PRIMARY)
declare -A UNAVAILABLE=()

if want pgbouncer; then
  log "PgBouncer on 127.0.0.1:$P_BOUNCER (transaction mode, pool $POOL_SIZE → primary)"
  echo '"postgres" ""' >"$WORK/pgbouncer/userlist.txt"
  cat >"$WORK/pgbouncer/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$P_PRIMARY

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $P_BOUNCER
unix_socket_dir =
auth_type = trust
auth_file = $WORK/pgbouncer/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $((IDLE_CONNS + 100 > 1000 ? IDLE_CONNS + 100 : 1000))
max_db_connections = 0
log_connections = 0
log_disconnections = 0
EOF
  if is_root; then chown -R "$RUN_USER:" "$WORK/pgbouncer"; fi
  start pgbouncer TERM "$WORK/logs/pgbouncer.log" "${AS_PG[@]}" "$(command -v pgbouncer)" "$WORK/pgbouncer/pgbouncer.ini"
  PID_OF[pgbouncer]=$REPLY
  PORT_OF[pgbouncer]=$P_BOUNCER
  wait_sql PgBouncer "$REPLY" "$P_BOUNCER" bench 30 "$WORK/logs/pgbouncer.log" || UNAVAILABLE[pgbouncer]="failed to start (see its log)"
fi

if want relay || ((BAR_RELAY == 1 && BAR_ROUNDS > 0)); then
  if [ -n "$RELAY_REASON" ]; then
    UNAVAILABLE[relay]=$RELAY_REASON
  else
    log "epoll relay (yardstick) on 127.0.0.1:$P_RELAY (one server connection per client → primary)"
    start relay TERM "$WORK/logs/epollrelay.log" "$WORK/bin/epollrelay" -listen "127.0.0.1:$P_RELAY" -server "127.0.0.1:$P_PRIMARY"
    PID_OF[relay]=$REPLY
    PORT_OF[relay]=$P_RELAY
    wait_sql "epoll relay" "$REPLY" "$P_RELAY" bench 30 "$WORK/logs/epollrelay.log" || UNAVAILABLE[relay]="failed to start (see its log)"
  fi
fi

PGPOOL_CHILDREN=$((max_clients + 4))
if want pgpool; then
  if [ "$PGPOOL_MODE" = raw ]; then
    log "Pgpool-II on 127.0.0.1:$P_PGPOOL (raw mode → primary only, $PGPOOL_CHILDREN children)"
  else
    log "Pgpool-II on 127.0.0.1:$P_PGPOOL (streaming replication, load balancing primary + replica, $PGPOOL_CHILDREN children)"
  fi
  {
    cat <<EOF
backend_clustering_mode = '$PGPOOL_MODE'
listen_addresses = '127.0.0.1'
port = $P_PGPOOL
socket_dir = '$WORK/pgpool'
pcp_listen_addresses = ''
pcp_port = $P_PCP
pcp_socket_dir = '$WORK/pgpool'
wd_ipc_socket_dir = '$WORK/pgpool'
pid_file_name = '$WORK/pgpool/pgpool.pid'
logdir = '$WORK/pgpool'
log_destination = 'stderr'
log_connections = off
enable_pool_hba = off
pool_passwd = ''
num_init_children = $PGPOOL_CHILDREN
max_pool = 1
child_life_time = 0
connection_life_time = 0
client_idle_limit = 0
connection_cache = on
use_watchdog = off
memory_cache_enabled = off
health_check_period = 0
failover_on_backend_error = off
sr_check_period = 0
sr_check_user = 'postgres'
sr_check_password = ''
sr_check_database = 'postgres'
backend_hostname0 = '127.0.0.1'
backend_port0 = $P_PRIMARY
backend_weight0 = 1
backend_flag0 = 'DISALLOW_TO_FAILOVER'
EOF
    if [ "$PGPOOL_MODE" = raw ]; then
      echo "load_balance_mode = off"
    else
      cat <<EOF
load_balance_mode = on
backend_hostname1 = '127.0.0.1'
backend_port1 = $P_REPLICA
backend_weight1 = 1
backend_flag1 = 'DISALLOW_TO_FAILOVER'
EOF
    fi
  } >"$WORK/pgpool/pgpool.conf"
  : >"$WORK/pgpool/pcp.conf"
  printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$WORK/pgpool/pool_hba.conf"
  if is_root; then chown -R "$RUN_USER:" "$WORK/pgpool"; fi
  start pgpool INT "$WORK/logs/pgpool.log" "${AS_PG[@]}" "$(command -v pgpool)" -n -D \
    -f "$WORK/pgpool/pgpool.conf" -F "$WORK/pgpool/pcp.conf" -a "$WORK/pgpool/pool_hba.conf"
  PID_OF[pgpool]=$REPLY
  PORT_OF[pgpool]=$P_PGPOOL
  wait_sql Pgpool-II "$REPLY" "$P_PGPOOL" bench 60 "$WORK/logs/pgpool.log" || UNAVAILABLE[pgpool]="failed to start (see its log)"
fi

# meridian_config FILE PORT HTTP_PORT [LINE...] — the configuration every Meridian contender runs with;
# the LINEs are appended (auto_prepare for the second proxy and the baseline, nothing for the default).
meridian_config() {
  local f=$1 port=$2 http=$3 l
  shift 3
  {
    cat <<EOF
listen: 127.0.0.1:$port
region: us-east-1
pool_mode: transaction
pool_size: $POOL_SIZE
max_client_conn: $((IDLE_CONNS + 100 > 1000 ? IDLE_CONNS + 100 : 1000))
http_listen: 127.0.0.1:$http
# pgbench and the idle clients log in from 127.0.0.1 as postgres without a password, as through
# PgBouncer (auth_type trust) and Pgpool-II; explicit, so that the proxy's default rules do not matter.
auth:
  rules:
    - {address: 127.0.0.1/32, method: trust}
    - {address: "::1/128", method: trust}
nodes:
  - {name: east-a, address: 127.0.0.1:$P_PRIMARY, region: us-east-1}
  - {name: east-b, address: 127.0.0.1:$P_REPLICA, region: us-east-1}
EOF
    for l in "$@"; do echo "$l"; done
  } >"$f"
}

# start_meridian NAME BINARY PORT HTTP_PORT DESCRIPTION [LINE...] — one Meridian contender; on failure
# UNAVAILABLE[NAME] says why.
declare -A HTTP_OF=()
start_meridian() {
  local name=$1 bin=$2 port=$3 http=$4 desc=$5
  shift 5
  meridian_config "$WORK/meridian/$name.yaml" "$port" "$http" "$@"
  log "$desc on 127.0.0.1:$port (transaction mode, pool $POOL_SIZE; reads → replica, writes → primary)"
  start "$name" TERM "$WORK/logs/$name.log" "$bin" proxy --config "$WORK/meridian/$name.yaml"
  PID_OF[$name]=$REPLY
  PORT_OF[$name]=$port
  HTTP_OF[$name]=$http
  if ! wait_sql "$desc" "$REPLY" "$port" bench 30 "$WORK/logs/$name.log"; then
    UNAVAILABLE[$name]="failed to start: $(tail -n 1 "$WORK/logs/$name.log" | cut -c1-160)"
    stop_one "$REPLY"
  fi
}

if want meridian; then
  if [ -n "$MERIDIAN_REASON" ]; then
    UNAVAILABLE[meridian]=$MERIDIAN_REASON
  else
    # The default configuration: auto_prepare is whatever this build defaults to.
    start_meridian meridian "$MERIDIAN" "$P_MERIDIAN" "$P_MERIDIAN_HTTP" "Meridian proxy (default configuration)"
  fi
  if ((BAR_AUTOPREP == 1 && BAR_ROUNDS > 0)) && [ -z "${UNAVAILABLE[meridian]:-}" ]; then
    start_meridian autoprep "$MERIDIAN" "$P_AUTOPREP" "$P_AUTOPREP_HTTP" "Meridian proxy with auto_prepare on (bar rounds)" \
      "auto_prepare: true"
  else
    UNAVAILABLE[autoprep]="not asked for"
  fi
  if [ -n "$BASELINE_BIN" ] && [ -z "$BASELINE_REASON" ] && ((BAR_ROUNDS > 0)) && [ -z "${UNAVAILABLE[meridian]:-}" ]; then
    start_meridian baseline "$BASELINE_BIN" "$P_BASE" "$P_BASE_HTTP" "Meridian $BASELINE_REV build with auto_prepare off (bar rounds)" \
      "auto_prepare: false"
  else
    UNAVAILABLE[baseline]=${BASELINE_REASON:-not asked for}
  fi
fi

# ---------------------------------------------------------------------------------------------------
# 3. pgbench
# ---------------------------------------------------------------------------------------------------
LABELS_direct="direct PostgreSQL"
LABELS_meridian="Meridian proxy"
LABELS_pgbouncer="PgBouncer"
LABELS_pgpool="Pgpool-II"
LABELS_relay="epoll relay (yardstick)"
LABELS_autoprep="Meridian proxy, auto_prepare on"
LABELS_baseline="Meridian ${BASELINE_REV:-baseline} build, auto_prepare off"
label() { local v="LABELS_$1"; echo "${!v}"; }

statements() { # port → statements run in database bench since the last reset_statements
  sql "$1" postgres "select coalesce(sum(s.calls), 0) from pg_stat_statements s join pg_database d on d.oid = s.dbid where d.datname = 'bench'"
}
reset_statements() { sql "$1" postgres 'select pg_stat_statements_reset()' >/dev/null; }

declare -A TPS=() LAT=() P99=() REPL=() ERR=()
n_runs=0
for m in $MODES; do for s in $SCRIPTS; do for c in $CLIENTS; do for t in $TARGETS; do
  [ -z "${UNAVAILABLE[$t]:-}" ] && n_runs=$((n_runs + 1))
done; done; done; done
log "$n_runs pgbench runs of ${DURATION}s each: about $((n_runs * (DURATION + 4) / 60 + 1)) min"

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
ratio() { # tps pgbouncer_tps
  if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.3f", a / b; else print "n/a"}'; else echo "n/a"; fi
}

LOAD_START=$(loadavg)
CPU_START=$(head -n 1 /proc/stat)
if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN {exit !(l > n / 2)}'; then
  log "warning: load average is already $LOAD_START on $(nproc) CPUs: something else is running, expect noisy numbers"
fi
if ((WARMUP > 0)); then
  for t in $TARGETS; do
    [ -z "${UNAVAILABLE[$t]:-}" ] || continue
    log "warm-up: ${WARMUP}s of select-only through $(label "$t")"
    wc=$((max_clients < 16 ? max_clients : 16))
    "$BINDIR/pgbench" -h 127.0.0.1 -p "${PORT_OF[$t]}" -U postgres -n -S -c "$wc" -j $((wc < 2 ? wc : 2)) -T "$WARMUP" bench \
      >"$WORK/logs/warmup-$t.log" 2>&1 || log "warning: warm-up through $t failed (see $WORK/logs/warmup-$t.log)"
  done
fi

run=0
for mode in $MODES; do
  for script in $SCRIPTS; do
    for c in $CLIENTS; do
      for t in $TARGETS; do
        [ -z "${UNAVAILABLE[$t]:-}" ] || continue
        key="$mode|$script|$c|$t"
        run=$((run + 1))
        if ! running "${PID_OF[$t]}"; then
          ERR[$key]="$(label "$t") is no longer running"
          log "[$run/$n_runs] $t: ${ERR[$key]}"
          continue
        fi
        # What pgbench itself does before a run without -n, done directly on the primary for every
        # target alike (a pooler need not pass VACUUM through).
        sql "$P_PRIMARY" bench 'vacuum pgbench_branches' >/dev/null
        sql "$P_PRIMARY" bench 'vacuum pgbench_tellers' >/dev/null
        sql "$P_PRIMARY" bench 'truncate pgbench_history' >/dev/null
        wait_replay
        if [ "$TRACK" = 1 ]; then
          reset_statements "$P_PRIMARY"
          reset_statements "$P_REPLICA"
        fi
        j=$((c < 2 ? c : 2))
        args=(-h 127.0.0.1 -p "${PORT_OF[$t]}" -U postgres -n -M "$mode" -c "$c" -j "$j" -T "$DURATION" -l --log-prefix="r$run")
        [ "$script" = select-only ] && args+=(-S)
        rdir="$WORK/runs/$run"
        mkdir -p "$rdir"
        rc=0
        (cd "$rdir" && "$BINDIR/pgbench" "${args[@]}" bench) >"$rdir/out" 2>&1 || rc=$?
        tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$rdir/out")
        lat=$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' "$rdir/out")
        failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$rdir/out")
        p99=$(cat "$rdir"/r"$run".* 2>/dev/null | awk '$3 ~ /^[0-9]+$/ {print $3}' | sort -n |
          awk '{v[NR] = $1} END {if (NR == 0) exit; i = int(NR * 0.99); if (i < NR * 0.99) i++; if (i < 1) i = 1; printf "%.3f", v[i] / 1000}')
        rm -f "$rdir"/r"$run".*
        if [ "$TRACK" = 1 ]; then
          dp=$(statements "$P_PRIMARY")
          dr=$(statements "$P_REPLICA")
          if ((dp + dr > 0)); then REPL[$key]=$(awk -v r="$dr" -v a="$((dp + dr))" 'BEGIN {printf "%.0f %%", 100 * r / a}'); fi
        fi
        if [ "$rc" -ne 0 ] || [ -z "$tps" ]; then
          ERR[$key]="pgbench exit $rc: $({ grep -m1 -iE 'error|abort|fatal' "$rdir/out" || true; } | cut -c1-160)"
          [ -n "${ERR[$key]#pgbench exit $rc: }" ] || ERR[$key]="pgbench exit $rc: $(tail -n 1 "$rdir/out" | cut -c1-160)"
          log "[$run/$n_runs] $t -M $mode $script c=$c: FAILED: ${ERR[$key]}"
          cp "$rdir/out" "$WORK/logs/pgbench-failed-$run.out"
        else
          TPS[$key]=$tps
          LAT[$key]=$lat
          P99[$key]=${p99:-0}
          if [ -n "$failed" ] && [ "$failed" != 0 ]; then ERR[$key]="$failed failed transactions"; fi
          log "[$run/$n_runs] $t -M $mode $script c=$c: $tps tps, mean $lat ms, p99 ${p99:-n/a} ms, on replica ${REPL[$key]:-n/a}"
        fi
      done
    done
  done
done

# The bar rounds: select-only at BAR_CLIENTS clients through every bar contender, the order rotated
# every round. BAR_PAIRS lists the ratios reported: "key contender reference bar" (bar "-" = none).
declare -A BARR=()  # "key|mode" → "ratio contender_tps reference_tps " per round
BAR_PAIRS=(
  "default meridian pgbouncer 1.0"
  "autoprep autoprep pgbouncer -"
  "adds autoprep meridian -"
  "transparent meridian baseline $BASELINE_BAR"
  "baseline baseline pgbouncer -"
  "relay relay pgbouncer -"
)
declare -A AP_EXEC=()  # Meridian contender → simple queries its proxy ran as statements it prepared
bar_targets=()
if ((BAR_ROUNDS > 0)) && want meridian && want pgbouncer && [ -z "${UNAVAILABLE[meridian]:-}" ] && [ -z "${UNAVAILABLE[pgbouncer]:-}" ]; then
  bar_tps() { # target mode → tps of one select-only run
    local out
    out=$("$BINDIR/pgbench" -h 127.0.0.1 -p "${PORT_OF[$1]}" -U postgres -n -S -M "$2" -c "$BAR_CLIENTS" \
      -j $((BAR_CLIENTS < 2 ? BAR_CLIENTS : 2)) -T "$BAR_DURATION" bench 2>&1) || { echo 0; return; }
    echo "$out" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p'
  }
  bar_targets=(meridian pgbouncer)
  for t in autoprep baseline relay; do
    [ "$t" != relay ] || ((BAR_RELAY == 1)) || continue
    if [ -n "${PORT_OF[$t]:-}" ] && [ -z "${UNAVAILABLE[$t]:-}" ]; then bar_targets+=("$t"); fi
  done
  # The contenders that are not in the table get the table's warm-up now.
  if ((WARMUP > 0)); then
    for t in "${bar_targets[@]}"; do
      ! want "$t" || continue
      log "warm-up: ${WARMUP}s of select-only through $(label "$t")"
      "$BINDIR/pgbench" -h 127.0.0.1 -p "${PORT_OF[$t]}" -U postgres -n -S -c "$BAR_CLIENTS" -j $((BAR_CLIENTS < 2 ? BAR_CLIENTS : 2)) \
        -T "$WARMUP" bench >"$WORK/logs/warmup-$t.log" 2>&1 || log "warning: warm-up through $t failed (see $WORK/logs/warmup-$t.log)"
    done
  fi
  n_bar=${#bar_targets[@]}
  log "bar rounds: ${bar_targets[*]}; $BAR_ROUNDS rounds per protocol, ${BAR_DURATION}s each: about $(((BAR_ROUNDS * n_bar * (BAR_DURATION + 1) * $(wc -w <<<"$MODES")) / 60 + 1)) min"
  for mode in $MODES; do
    for ((r = 1; r <= BAR_ROUNDS; r++)); do
      order=""
      for ((i = 0; i < n_bar; i++)); do order+="${bar_targets[$(((i + r - 1) % n_bar))]} "; done
      declare -A got=()
      for t in $order; do got[$t]=$(bar_tps "$t" "$mode"); done
      line="bar -M $mode round $r/$BAR_ROUNDS (${order% }):"
      for t in "${bar_targets[@]}"; do line+=" $t ${got[$t]:-?}"; done
      line+=" tps;"
      for pair in "${BAR_PAIRS[@]}"; do
        read -r key a b _ <<<"$pair"
        [ -n "${got[$a]:-}" ] && [ -n "${got[$b]:-}" ] || continue
        q=$(ratio "${got[$a]}" "${got[$b]}")
        BARR[$key|$mode]+="$q ${got[$a]} ${got[$b]} "
        line+=" $a/$b $q"
      done
      log "$line"
      unset got
    done
  done
fi
# What auto_prepare did in each Meridian proxy, from its own counter (the configuration of the default
# proxy does not set it, so this is how the report knows).
for t in meridian autoprep baseline; do
  [ -n "${HTTP_OF[$t]:-}" ] && [ -z "${UNAVAILABLE[$t]:-}" ] || continue
  AP_EXEC[$t]=$(curl -fsS --max-time 10 "http://127.0.0.1:${HTTP_OF[$t]}/metrics" 2>/dev/null |
    awk '/^meridian_proxy_auto_prepare_total\{event="executed"\}/ {printf "%.0f", $2; f = 1} END {if (!f) print "n/a"}' || echo n/a)
done
ap_said() { # contender → what auto_prepare did, for the report
  local n=${AP_EXEC[$1]:-n/a}
  case $n in
  n/a) echo "auto_prepare counter not available" ;;
  0) echo "**auto_prepare off** in effect (0 queries run as statements the proxy prepared)" ;;
  *) echo "**auto_prepare on** in effect ($n queries run as statements the proxy prepared)" ;;
  esac
}

LOAD_END=$(loadavg)
# The share of CPU time the hypervisor gave to other guests while this machine wanted it (steal).
STEAL=$(printf '%s\n%s\n' "$CPU_START" "$(head -n 1 /proc/stat)" | awk '{t = 0; for (i = 2; i <= NF; i++) t += $i; tot[NR] = t; st[NR] = $9} END {d = tot[2] - tot[1]; if (d > 0) printf "%.1f %%", 100 * (st[2] - st[1]) / d; else print "n/a"}')
PGPOOL_NODES=""
if want pgpool && [ -z "${UNAVAILABLE[pgpool]:-}" ] && running "${PID_OF[pgpool]}"; then
  PGPOOL_NODES=$(sql "$P_PGPOOL" bench 'show pool_nodes' 2>/dev/null | awk -F'|' '{printf "%snode %s (port %s, %s, %s): select_cnt %s", (NR > 1 ? "; " : ""), $1, $3, $4, $7, $9}' || true)
fi

# ---------------------------------------------------------------------------------------------------
# 4. Memory with many idle clients
# ---------------------------------------------------------------------------------------------------
declare -A RSS_ROW=()
measure_idle() { # target count [note] [goal MiB]
  local t=$1 n=$2 extra=${3:-} goal=${4:-} pid=${PID_OF[$1]} before pids rss pss nprocs ready result per deadline cpid
  before=$(kib_sum VmRSS $(pids_of "$pid"))
  ready="$WORK/idle-$t.ready"
  log "memory: $n idle clients → $(label "$t")"
  start "idleconns-$t" TERM "$WORK/logs/idleconns-$t.log" "$WORK/bin/idleconns" -addr "127.0.0.1:${PORT_OF[$t]}" \
    -db bench -n "$n" -concurrency 64 -connect-timeout 20s -hold 30m -ready "$ready"
  cpid=$REPLY
  deadline=$((SECONDS + 120 + n / 50))
  while [ ! -s "$ready" ] && ((SECONDS < deadline)) && running "$cpid"; do sleep 0.2; done
  if [ ! -s "$ready" ]; then
    RSS_ROW[$t]="| $(label "$t") | $n | — | — | — | — | — | — | idle client failed: $(tail -n 1 "$WORK/logs/idleconns-$t.log" | cut -c1-120) |"
    stop_one "$cpid"
    return
  fi
  sleep 3 # let the pooler settle (server connections, buffers)
  mapfile -t pids < <(pids_of "$pid")
  rss=$(kib_sum VmRSS "${pids[@]}")
  pss=$(kib_sum Pss "${pids[@]}")
  nprocs=${#pids[@]}
  result=$(head -n 1 "$ready")
  local opened=${result#opened }
  opened=${opened%% *}
  stop_one "$cpid"
  per="—"
  if ((opened > 0)); then per=$(awk -v a="$rss" -v b="$before" -v n="$opened" 'BEGIN {printf "%.1f", (a - b) / n}'); fi
  local note=$extra
  if [ -n "$goal" ]; then
    if ((rss < goal * 1024)); then note+="${note:+; }within the ${goal} MiB goal"; else note+="${note:+; }OVER the ${goal} MiB goal"; fi
  fi
  if [[ $result != *"(failed 0)"* ]]; then
    note+="${note:+; }$(echo "$result" | sed 's/^opened [0-9]* of [0-9]* in [^ ]* //' | cut -c1-160)"
  fi
  RSS_ROW[$t]="| $(label "$t") | $n | $opened | $nprocs | $(mib "$before") | $(mib "$rss") | $(mib "$pss") | $per | $note |"
  log "memory: $(label "$t"): $result; RSS $(mib "$before") → $(mib "$rss") MiB (PSS $(mib "$pss") MiB, $nprocs processes)"
}
if ((IDLE_CONNS > 0)) && [ -z "$IDLE_REASON" ]; then
  for t in $TARGETS; do
    [ "$t" != direct ] && [ "$t" != relay ] || continue
    [ -z "${UNAVAILABLE[$t]:-}" ] || continue
    running "${PID_OF[$t]}" || {
      RSS_ROW[$t]="| $(label "$t") | — | — | — | — | — | — | — | no longer running |"
      continue
    }
    if [ "$t" = pgpool ]; then
      # One process per client: Pgpool-II serves at most num_init_children clients at once (the rest
      # wait in the listen queue), so 10,000 idle clients would need 10,000 processes.
      measure_idle pgpool "$PGPOOL_CHILDREN" "$IDLE_CONNS clients: n/a, one process per client (num_init_children = $PGPOOL_CHILDREN); measured at num_init_children"
    elif [ "$t" = meridian ]; then
      measure_idle meridian "$IDLE_CONNS" "" 256 # DESIGN: 10,000 idle clients in under 256 MiB
    else
      measure_idle "$t" "$IDLE_CONNS"
    fi
  done
fi

# ---------------------------------------------------------------------------------------------------
# 5. Report
# ---------------------------------------------------------------------------------------------------
stamp=$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT_DIR"
report="$OUT_DIR/proxy-$stamp.md"
ver_pg=$("$BINDIR/postgres" --version)
ver_bouncer=$(command -v pgbouncer >/dev/null && pgbouncer --version 2>/dev/null | head -n 1 || echo "not installed")
ver_pgpool=$(command -v pgpool >/dev/null && pgpool --version 2>&1 | head -n 1 || echo "not installed")
ver_meridian=$({ [ -x "$MERIDIAN" ] && "$MERIDIAN" version 2>/dev/null | head -n 1; } || echo "meridian not built")
ver_baseline=""
if [ -n "${PORT_OF[baseline]:-}" ]; then ver_baseline="; baseline $("$BASELINE_BIN" version 2>/dev/null | head -n 1 || true) from $BASELINE_DESC"; fi
ver_git=$(git -C "$top" describe --tags --always --dirty 2>/dev/null || echo unknown)
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
os=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || uname -s)

fmt0() { awk -v v="$1" 'BEGIN {printf "%.0f", v}'; }
fmt2() { awk -v v="$1" 'BEGIN {printf "%.2f", v}'; }

{
  echo "# Meridian proxy vs PgBouncer vs Pgpool-II (pgbench)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- command: \`make bench-proxy\` (BENCH_DURATION=$DURATION BENCH_CLIENTS=\"$CLIENTS\" BENCH_MODES=\"$MODES\" BENCH_SCALE=$SCALE BENCH_POOL_SIZE=$POOL_SIZE BENCH_IDLE_CONNS=$IDLE_CONNS BENCH_PGPOOL_MODE=$PGPOOL_MODE BENCH_BAR_ROUNDS=$BAR_ROUNDS BENCH_BAR_DURATION=$BAR_DURATION BENCH_BAR_CLIENTS=$BAR_CLIENTS BENCH_BAR_AUTOPREP=$BAR_AUTOPREP BENCH_BASELINE_REV=\"$BASELINE_REV\")"
  echo "- machine: $(nproc) CPUs ($cpu), $mem RAM, $os, kernel $(uname -r); load average (1/5/15 min) $LOAD_START before the pgbench runs, $LOAD_END after (everything, pgbench included, shares these CPUs: a load above ~2 before the runs means something else was running); CPU time stolen by the hypervisor during the runs: $STEAL"
  echo "- software: $ver_pg; $ver_bouncer; $ver_pgpool; $ver_meridian (tree $ver_git)$ver_baseline"
  echo "- servers: one primary and one streaming replica (pg_basebackup -R), max_connections 300, shared_buffers 256MB, synchronous_commit $SYNC_COMMIT, trust auth on 127.0.0.1; pgbench scale $SCALE"
  echo "- direct PostgreSQL: pgbench straight to the primary"
  echo "- Meridian proxy: transaction pooling, pool_size $POOL_SIZE, both servers as nodes of its region (reads → replica, writes → primary), auth rules trusting 127.0.0.1 (as PgBouncer's auth_type trust)"
  echo "- configuration measured (auto_prepare):"
  if [ -n "${PORT_OF[meridian]:-}" ] && [ -z "${UNAVAILABLE[meridian]:-}" ]; then
    echo "  - **Meridian proxy** (the table, and \"meridian\" in the bar rounds): this tree's build in its **default configuration** — auto_prepare not set, so the build's default: $(ap_said meridian)"
  fi
  if [ -n "${PORT_OF[autoprep]:-}" ]; then
    echo "  - Meridian proxy, auto_prepare on (bar rounds only): the same build and configuration plus \`auto_prepare: true\` — $(ap_said autoprep)${UNAVAILABLE[autoprep]:+; ${UNAVAILABLE[autoprep]}}"
  fi
  if [ -n "${PORT_OF[baseline]:-}" ]; then
    echo "  - Meridian $BASELINE_REV build (bar rounds only): cmd/meridian at $BASELINE_DESC, before the hardening work, with the same configuration plus \`auto_prepare: false\` (its default was true) — $(ap_said baseline)${UNAVAILABLE[baseline]:+; ${UNAVAILABLE[baseline]}}"
  elif [ -n "$BASELINE_REV$BASELINE_BIN" ] && ((BAR_ROUNDS > 0)); then
    echo "  - baseline build ${BASELINE_REV}: ${UNAVAILABLE[baseline]:-not run}"
  fi
  echo "- PgBouncer: pool_mode transaction, default_pool_size $POOL_SIZE, max_client_conn $((IDLE_CONNS + 100 > 1000 ? IDLE_CONNS + 100 : 1000)), in front of the primary only"
  if [ "$PGPOOL_MODE" = raw ]; then
    echo "- Pgpool-II: raw mode in front of the primary only, num_init_children $PGPOOL_CHILDREN, max_pool 1 (connection cache on)"
  else
    echo "- Pgpool-II: streaming_replication mode, load_balance_mode on over primary + replica (weights 1:1, session-level), num_init_children $PGPOOL_CHILDREN, max_pool 1, health checks and sr_check off"
  fi
  echo "- pgbench: -T $DURATION, -j min(clients, 2), -n (the vacuum/truncate pgbench would do is run on the primary directly before every run), on the same 2-CPU host as everything else; TPS excludes connection time; p99 from the per-transaction log (-l); \"on replica\" = share of the statements run in database bench (pgbench's and the pooler's own) that ran on the replica, from pg_stat_statements (loaded on both servers for every target)"
  echo
  for mode in $MODES; do
    echo "## pgbench -M $mode"
    echo
    echo "| target | script | clients | TPS | mean ms | p99 ms | TPS vs PgBouncer | on replica |"
    echo "|---|---|---|---|---|---|---|---|"
    for t in $TARGETS; do
      if [ -n "${UNAVAILABLE[$t]:-}" ]; then
        if [ "$t" = meridian ]; then
          echo "| meridian proxy: ${UNAVAILABLE[$t]} | | | | | | | |"
        else
          echo "| $(label "$t"): ${UNAVAILABLE[$t]} | | | | | | | |"
        fi
      fi
    done
    for script in $SCRIPTS; do
      for c in $CLIENTS; do
        for t in $TARGETS; do
          [ -z "${UNAVAILABLE[$t]:-}" ] || continue
          key="$mode|$script|$c|$t"
          bkey="$mode|$script|$c|pgbouncer"
          if [ -n "${TPS[$key]:-}" ]; then
            note=""
            [ -z "${ERR[$key]:-}" ] || note=" (${ERR[$key]})"
            echo "| $(label "$t")$note | $script | $c | $(fmt0 "${TPS[$key]}") | $(fmt2 "${LAT[$key]}") | $(fmt2 "${P99[$key]}") | $(ratio "${TPS[$key]}" "${TPS[$bkey]:-}") | ${REPL[$key]:-n/a} |"
          else
            echo "| $(label "$t") | $script | $c | error: ${ERR[$key]:-no result} | | | | |"
          fi
        done
      done
    done
    echo
  done
  if [ ${#BARR[@]} -gt 0 ]; then
    echo "## The bar rounds: select-only, $BAR_CLIENTS clients"
    echo
    echo "$BAR_ROUNDS rounds per protocol after the table, ${BAR_DURATION}s each, the contenders ($(for t in "${bar_targets[@]}"; do printf '%s; ' "$(label "$t")"; done | sed 's/; $//')) back to back in an order rotated every round; each verdict is the median of the per-round ratios, TPS of the contender / TPS of the reference in the same round."
    echo "The bars: Meridian in its default configuration ≥ PgBouncer; and the safety must not cost speed, the default configuration ≥ $BASELINE_BAR × the ${BASELINE_REV:-baseline} build with auto_prepare off."
    if [ -n "${PORT_OF[relay]:-}" ] && [ -z "${UNAVAILABLE[relay]:-}" ] && ((BAR_RELAY == 1)); then
      echo "The epoll relay (scripts/bench/epollrelay: an event loop reduced to copying bytes, one server connection per client, in front of the primary) is the yardstick of what any Go proxy could do here."
    fi
    echo
    echo "| protocol | contender | reference | ratio per round (contender TPS / reference TPS) | median | min | max | verdict |"
    echo "|---|---|---|---|---|---|---|---|"
    for mode in $MODES; do
      for pair in "${BAR_PAIRS[@]}"; do
        read -r key a b bar <<<"$pair"
        [ -n "${BARR[$key|$mode]:-}" ] || continue
        case $key in
        default) what="**Meridian** (default configuration)" ;;
        adds) what="Meridian, auto_prepare on — what auto_prepare adds" ;;
        transparent) what="**Meridian** (default configuration) — the safety's cost" ;;
        *) what=$(label "$a") ;;
        esac
        ref=$(label "$b")
        [ "$key" != adds ] || ref="Meridian proxy (default configuration)"
        echo "${BARR[$key|$mode]}" | awk -v mode="$mode" -v what="$what" -v ref="$ref" -v bar="$bar" 'NF > 0 {
          n = 0; list = ""
          for (i = 1; i + 2 <= NF; i += 3) { n++; q[n] = $i + 0; list = list sprintf("%s%.3f (%.0f / %.0f)", (n > 1 ? ", " : ""), $i, $(i + 1), $(i + 2)) }
          for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (q[j] < q[i]) { t = q[i]; q[i] = q[j]; q[j] = t }
          med = (n % 2) ? q[(n + 1) / 2] : (q[n / 2] + q[n / 2 + 1]) / 2
          v = (bar == "-") ? "—" : ((med >= bar + 0) ? "**met** (≥ " bar ")" : "**not met** (≥ " bar ")")
          printf "| %s | %s | %s | %s | **%.3f** | %.3f | %.3f | %s |\n", mode, what, ref, list, med, q[1], q[n], v
        }'
      done
    done
    echo
    for mode in $MODES; do
      [ -n "${BARR[transparent|$mode]:-}" ] || continue
      med=$(echo "${BARR[transparent|$mode]}" | awk '{n = 0; for (i = 1; i + 2 <= NF; i += 3) q[++n] = $i + 0
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (q[j] < q[i]) { t = q[i]; q[i] = q[j]; q[j] = t }
        printf "%.3f", (n % 2) ? q[(n + 1) / 2] : (q[n / 2] + q[n / 2 + 1]) / 2}')
      verdict=$(awk -v m="$med" -v b="$BASELINE_BAR" 'BEGIN {print (m >= b) ? "**met**" : "**NOT met**"}')
      case ${AP_EXEC[meridian]:-n/a} in
      0) ;;
      n/a) verdict+=" (whether the default configuration ran with auto_prepare off is unknown: no meridian_proxy_auto_prepare_total counter)" ;;
      *) verdict="not judged: this build's default configuration ran with auto_prepare on (${AP_EXEC[meridian]} queries run as statements the proxy prepared), so it is not the transparent configuration (by the numbers alone: ${verdict//\*/})" ;;
      esac
      echo "- -M $mode: transparent configuration vs the ${BASELINE_REV:-baseline} build with auto_prepare off: median **$med** (bar: ≥ $BASELINE_BAR): $verdict"
    done
    echo
  fi
  if [ -n "$PGPOOL_NODES" ]; then
    echo "Pgpool-II's own count of load-balanced SELECTs (SHOW pool_nodes, whole run including the warm-up): $PGPOOL_NODES"
    echo
  fi
  echo "## Memory holding idle client connections"
  echo
  if ((IDLE_CONNS == 0)); then
    echo "skipped (BENCH_IDLE_CONNS=0)"
  elif [ -n "$IDLE_REASON" ]; then
    echo "skipped: $IDLE_REASON"
  else
    echo "Each pooler after the pgbench runs; clients opened by scripts/bench/idleconns (full startup, then idle). RSS is VmRSS summed over the pooler's processes (it counts shared memory once per process); PSS shares it out and is the fairer total for Pgpool-II. Per client = (RSS with clients − RSS before) / clients opened."
    [ -z "$IDLE_NOTE" ] || echo "Note: $IDLE_NOTE."
    echo
    echo "| pooler | clients asked | clients opened | processes | RSS before MiB | RSS with clients MiB | PSS with clients MiB | KiB per client | note |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for t in $TARGETS; do
      [ "$t" != direct ] && [ "$t" != relay ] || continue
      if [ -n "${UNAVAILABLE[$t]:-}" ]; then
        if [ "$t" = meridian ]; then echo "| meridian proxy: ${UNAVAILABLE[$t]} | | | | | | | | |"; else echo "| $(label "$t"): ${UNAVAILABLE[$t]} | | | | | | | | |"; fi
        continue
      fi
      echo "${RSS_ROW[$t]:-| $(label "$t") | not measured | | | | | | | |}"
    done
  fi
} >"$WORK/report.md"

cp "$WORK/report.md" "$report"
cat "$report"
log "report written to $report"
