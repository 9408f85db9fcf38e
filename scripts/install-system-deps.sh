#!/usr/bin/env bash
# Install the Debian packages the test suite's real components need, and make sure
# the shared local PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) run.
#
# Why: tests/rig starts *private* sshd/nginx/pebble instances on their own ports, so
# the packages must be present but their system services must NOT be left running
# (a system nginx on :80 or sshd on :22 is not wanted on a CI box). Idempotent:
# installs only what is missing and can be re-run at any time. Debian 12, as root.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps.sh: must run as root" >&2
  exit 1
fi

# Package the tests need -> package to install. postgresql-contrib-15 is a *virtual*
# package on Debian 12 (provided by postgresql-15, which ships pgstattuple and
# pg_stat_statements), so dpkg cannot be asked about it directly.
declare -A PROVIDER=([postgresql-contrib-15]=postgresql-15)
PACKAGES=(
  openssh-server openssh-client nginx-light certbot pebble logrotate
  postgresql-contrib-15 postgresql-client-15 redis-server redis-tools procps rsync
  python3 python3-venv python3-pip sudo
  xfsprogs cloud-guest-utils   # volume.resize host half (xfs_growfs, growpart) and its loop-device test
)

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

daemon_running() {  # $1 = pidfile of a system daemon
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_service() {  # stop a system service without systemctl when systemd is not PID 1
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl stop "$1" || true
  elif [ -x "/etc/init.d/$1" ]; then
    "/etc/init.d/$1" stop || true
  fi
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  real=${PROVIDER[$pkg]:-$pkg}
  installed "$real" || missing+=("$real")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  nginx_before=0; sshd_before=0
  daemon_running /run/nginx.pid && nginx_before=1
  daemon_running /run/sshd.pid && sshd_before=1

  # Keep maintainer scripts from starting services (Docker images usually ship
  # such a policy already; then leave it alone).
  temp_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    temp_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi

  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"

  if [ $temp_policy = 1 ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi

  # If the install started a system nginx/sshd anyway, stop it (only if it was not
  # running before - never stop a pre-existing sshd someone may be logged in with).
  if [ $nginx_before = 0 ] && daemon_running /run/nginx.pid; then
    echo "stopping system nginx started by the install"; stop_service nginx
  fi
  if [ $sshd_before = 0 ] && daemon_running /run/sshd.pid; then
    echo "stopping system sshd started by the install"; stop_service ssh
  fi
else
  echo "all packages already installed"
fi

# tests/rig/sshd.py needs sshd's privilege-separation dir.
mkdir -p /run/sshd

wait_for() {  # $1 = description, rest = probe command
  local what=$1; shift
  for _ in $(seq 1 50); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "install-system-deps.sh: $what did not come up" >&2
  return 1
}

# --- PostgreSQL on 127.0.0.1:5432 ---
if pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "postgresql already running"
else
  pg_version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting postgresql $pg_version/main"
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
  wait_for "postgresql" pg_isready -q -h 127.0.0.1 -p 5432
fi

# --- Redis on 127.0.0.1:6379 ---
if [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null || true)" = PONG ]; then
  echo "redis already running"
else
  echo "starting redis-server"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for "redis" sh -c '[ "$(redis-cli -h 127.0.0.1 -p 6379 ping)" = PONG ]'
fi

echo "system deps ok"
