#!/usr/bin/env bash
# Make sure the PostgreSQL server behind $DATABASE_URL can create the PostGIS extension,
# and pgRouting, then make sure the target database exists and has both enabled.
#
# Usage: scripts/ensure-postgis.sh [--server-only | DBNAME]
#   DATABASE_URL   libpq or SQLAlchemy URL (default postgresql://postgres@127.0.0.1:5432/tpa).
#                  The database named in it is created and given PostGIS, unless DBNAME is given;
#                  with --server-only only the server's PostGIS package is checked (tests make their own DBs).
# Installs the Debian package postgresql-<major>-postgis-3 when the extension is missing, the server is local
# and we run as root; otherwise it stops and says exactly what to do.
set -euo pipefail

url="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/tpa}"
# SQLAlchemy driver suffixes (postgresql+asyncpg://) are not libpq URLs.
url="$(printf '%s' "$url" | sed -E 's#^postgres(ql)?\+[a-z0-9]+://#postgresql://#')"
server_only=0
if [ "${1:-}" = "--server-only" ]; then server_only=1; shift; fi
target_db="${1:-$(printf '%s' "$url" | sed -E 's#^[^/]*//[^/]*/([^?]*).*#\1#')}"
target_db="${target_db:-tpa}"
case "$target_db" in *[!A-Za-z0-9_]*) echo "[ensure-postgis] database name must be letters, digits, _: $target_db" >&2; exit 2 ;; esac
# The maintenance URL: same server, database "postgres".
admin_url="$(printf '%s' "$url" | sed -E 's#^([^/]*//[^/]*)/[^?]*#\1/postgres#')"
case "$admin_url" in */postgres*) ;; *) admin_url="${admin_url%/}/postgres" ;; esac

say() { printf '[ensure-postgis] %s\n' "$*" >&2; }
export PGOPTIONS="-c client_min_messages=warning"
host="$(printf '%s' "$admin_url" | sed -E 's#^[^/]*//([^@/]*@)?([^:/?]*).*#\2#')"
case "$host" in 127.0.0.1|localhost|::1|"") local_server=1 ;; *) local_server=0 ;; esac

if ! command -v psql >/dev/null 2>&1; then
  say "psql (the PostgreSQL client) is not on PATH. Install it: apt-get install -y postgresql-client"
  exit 1
fi
if ! psql "$admin_url" -Atqc 'SELECT 1' >/dev/null 2>&1 && [ "$local_server" = 1 ] && [ "$(id -u)" = 0 ] \
   && command -v pg_ctlcluster >/dev/null 2>&1; then
  for v in $(ls /etc/postgresql 2>/dev/null); do
    say "PostgreSQL is not answering; starting cluster $v/main"
    pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || true
  done
  for _ in $(seq 1 20); do psql "$admin_url" -Atqc 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done
fi
if ! psql "$admin_url" -Atqc 'SELECT 1' >/dev/null 2>&1; then
  say "cannot reach PostgreSQL at $admin_url."
  say "Start the server (e.g. pg_ctlcluster 15 main start) or set DATABASE_URL to a reachable server."
  exit 1
fi

available() { psql "$admin_url" -Atqc "SELECT count(*) FROM pg_available_extensions WHERE name = '$1'"; }

# PostGIS, and pgRouting for travel time on road networks (Debian packages of the server's major version)
major="$(psql "$admin_url" -Atqc 'SHOW server_version_num' | cut -c1-2)"
missing=()
[ "$(available postgis)" = "0" ] && missing+=("postgresql-${major}-postgis-3")
[ "$(available pgrouting)" = "0" ] && missing+=("postgresql-${major}-pgrouting")
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$local_server" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "not installed on this server: ${missing[*]}; installing (apt-get)."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    say "The PostgreSQL server at $host lacks ${missing[*]}."
    if [ "$local_server" = 1 ]; then
      say "Install as root and run this command again:  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    else
      say "Install PostGIS 3 and pgRouting on that server (packages ${missing[*]} on Debian/Ubuntu)."
    fi
    exit 1
  fi
  for ext in postgis pgrouting; do
    if [ "$(available $ext)" = "0" ]; then
      say "${missing[*]} installed but the server still lists no $ext extension; is the server version $major?"
      exit 1
    fi
  done
fi

if [ "$server_only" = 1 ]; then
  say "PostGIS and pgRouting are available on the server"
  exit 0
fi
if [ "$(psql "$admin_url" -Atqc "SELECT count(*) FROM pg_database WHERE datname = '$target_db'")" = "0" ]; then
  say "creating database $target_db"
  psql "$admin_url" -qc "CREATE DATABASE \"$target_db\"" >/dev/null
fi
db_url="$(printf '%s' "$admin_url" | sed -E "s#/postgres([?]|\$)#/${target_db}\\1#")"
psql "$db_url" -qc 'CREATE EXTENSION IF NOT EXISTS postgis; CREATE EXTENSION IF NOT EXISTS pgrouting' >/dev/null
say "PostGIS $(psql "$db_url" -Atqc 'SELECT postgis_lib_version()') ready in database $target_db"
