#!/usr/bin/env bash
# Checks for the real servers and clients the tests use; installs missing Debian packages when run as root
# with apt-get available, otherwise prints what to install and fails.
set -euo pipefail
missing=()
have_pg_server() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [[ -n "${PGWARDEN_PG_BINDIR:-}" ]]; }
have_pg_server || missing+=(postgresql-15)
command -v psql >/dev/null || missing+=(postgresql-client-15)
command -v pgbench >/dev/null || missing+=(postgresql-contrib-15)
command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]] || [[ -n "${PGWARDEN_NATS_SERVER:-}" ]] || missing+=(nats-server)
/usr/bin/python3 -c 'import psycopg2' >/dev/null 2>&1 || missing+=(python3-psycopg2)
# pgjdbc compatibility test (test/compat/pgjdbc.test.ts): the driver jar and a JDK for the source launcher.
[[ -f /usr/share/java/postgresql.jar ]] || missing+=(libpostgresql-jdbc-java)
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v openssl >/dev/null || missing+=(openssl)
# The collector's web UI test drives a real browser (playwright-core with Debian's chromium).
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
if ((${#missing[@]} == 0)); then exit 0; fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
else
  echo "missing: ${missing[*]}"
  echo "install them with: sudo apt-get install -y ${missing[*]}"
  exit 1
fi
