#!/usr/bin/env bash
# Make sure the services the tests need are up: PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379).
# Starts them when installed but stopped; installs them from Debian's packages when missing.
set -euo pipefail

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    echo "[services] apt-get update"; DEBIAN_FRONTEND=noninteractive apt-get update -qq; apt_updated=1
  fi
  echo "[services] apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL ---
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  apt_install postgresql
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "[services] starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432
# Trust auth for the postgres user on loopback is what these machines have; check we can log in.
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  echo "[services] cannot log in to PostgreSQL as postgres on 127.0.0.1 (trust auth expected)" >&2
  exit 1
fi

# --- Redis ---
if ! command -v redis-server >/dev/null 2>&1; then
  apt_install redis-server
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "[services] starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping

# --- Dovecot (IMAP) for the e-mail connector's tests ---
# Only the binary: the tests start a private instance from a config file in a temp dir (tests/fakes/dovecot.py)
# and never use a system one, so the package's own service must not start either: a policy-rc.d that
# answers 101 ("action forbidden") stops invoke-rc.d from starting it during the install.
if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt_install dovecot-imapd
  if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
dovecot_bin=$(command -v dovecot || echo /usr/sbin/dovecot)
echo "[services] dovecot $("$dovecot_bin" --version)"

# --- Chromium for the browser tests (Playwright drives Debian's Chromium; Playwright's own download is not used) ---
bash "$(dirname "$0")/chromium.sh"
