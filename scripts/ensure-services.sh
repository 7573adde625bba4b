#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and MariaDB answer on 127.0.0.1 (5432, 6379,
# 3306): starts them if they are installed but stopped, installs them (Debian)
# if missing. MariaDB is the warehouse of the `mysql` source's tests. Also
# installs Debian's Chromium and ChromeDriver, which the web UI's browser
# tests (tests/tests/ui.rs) drive.
set -euo pipefail

log() { echo "[ebb] $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

postgres_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
  log "installing PostgreSQL"
  apt_install postgresql postgresql-client
fi
if ! postgres_ready; then
  log "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do postgres_ready && break; sleep 1; done
fi
postgres_ready || { log "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }

if ! command -v redis-server >/dev/null 2>&1; then
  log "installing Redis"
  apt_install redis-server
fi
if ! redis_ready; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ebb.log
  for _ in $(seq 1 30); do redis_ready && break; sleep 1; done
fi
redis_ready || { log "Redis did not come up on 127.0.0.1:6379"; exit 1; }

# Ebb's scripts and tests connect as the `postgres` superuser over TCP.
if ! psql "postgres://postgres@127.0.0.1:5432/postgres" -qAtc "SELECT 1" >/dev/null 2>&1; then
  log "allowing local trust connections for the postgres user"
  hba=$(as_root su postgres -c "psql -qAtc 'SHOW hba_file'")
  as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  as_root su postgres -c "psql -qAtc 'SELECT pg_reload_conf()'" >/dev/null
fi
mariadb_ready() { mariadb -h 127.0.0.1 -P 3306 -u root -e "SELECT 1" >/dev/null 2>&1; }
if ! command -v mariadbd >/dev/null 2>&1 && ! command -v mysqld >/dev/null 2>&1; then
  log "installing MariaDB"
  apt_install mariadb-server mariadb-client
fi
if ! mariadb -u root -e "SELECT 1" >/dev/null 2>&1 && ! mariadb_ready; then
  log "starting MariaDB"
  as_root mkdir -p /run/mysqld
  as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
  if [ ! -d /var/lib/mysql/mysql ]; then
    as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  (as_root mariadbd-safe --user=mysql --bind-address=127.0.0.1 --port=3306 >/dev/null 2>&1 &)
  for _ in $(seq 1 30); do
    mariadb -u root -e "SELECT 1" >/dev/null 2>&1 && break
    mariadb_ready && break
    sleep 1
  done
fi
# The tests connect as root over TCP without a password, as on a developer's
# machine; Debian's package lets root in only through the socket.
if ! mariadb_ready; then
  log "allowing root over TCP from 127.0.0.1 without a password"
  as_root mariadb -u root -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; \
    GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;"
fi
mariadb_ready || { log "MariaDB did not come up on 127.0.0.1:3306"; exit 1; }
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  log "installing Chromium and ChromeDriver (the web UI's browser tests)"
  apt_install chromium chromium-driver
fi
log "PostgreSQL, Redis, MariaDB and Chromium are ready"
