#!/usr/bin/env bash
# Start a local PostgreSQL for the store's tests and print its SQLAlchemy URL on the last line of stdout.
# Idempotent: installs Debian's postgresql if missing, creates/starts a cluster listening on loopback only,
# and creates (or re-passwords) the test role and database.
# Usage: export POLICYBOT_TEST_POSTGRES_URL="$(bash scripts/start-postgres.sh | tail -n1)"
set -euo pipefail
cd /  # the postgres user may not be able to read the caller's working directory

PGPORT="${PGPORT:-5432}"
DB_NAME="${POLICYBOT_PG_DB:-policybot_test}"
DB_USER="${POLICYBOT_PG_USER:-policybot}"
# A throwaway password for a loopback-only test server; never reuse it elsewhere.
DB_PASS="${POLICYBOT_PG_PASSWORD:-policybot}"

log() { echo "start-postgres: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

if ! command -v pg_lsclusters >/dev/null 2>&1 || ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    log "installing postgresql from Debian packages"
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >&2
fi

PGVER="$(ls /usr/lib/postgresql | sort -V | tail -n1)"  # newest installed major version
CLUSTER=main
cluster_field() { pg_lsclusters -h | awk -v v="$PGVER" -v c="$CLUSTER" -v f="$1" '$1==v && $2==c {print $f}'; }

if [ -z "$(cluster_field 2)" ]; then
    log "creating cluster $PGVER/$CLUSTER on port $PGPORT"
    as_root pg_createcluster "$PGVER" "$CLUSTER" --port="$PGPORT" >&2
fi

# Loopback only: this test server must never listen on another address.
if [ "$(as_root pg_conftool -s "$PGVER" "$CLUSTER" show listen_addresses 2>/dev/null || true)" != "localhost" ]; then
    as_root pg_conftool "$PGVER" "$CLUSTER" set listen_addresses localhost >&2
    if [ "$(cluster_field 4)" = online ]; then as_root pg_ctlcluster "$PGVER" "$CLUSTER" restart >&2; fi
fi

if [ "$(cluster_field 4)" != online ]; then
    log "starting cluster $PGVER/$CLUSTER"
    as_root pg_ctlcluster "$PGVER" "$CLUSTER" start >&2
fi
PORT="$(cluster_field 3)"

for _ in $(seq 1 30); do  # a fresh start can take a moment to accept connections
    if as_postgres pg_isready -q -h 127.0.0.1 -p "$PORT"; then break; fi
    sleep 1
done

psql_admin() { as_postgres psql -p "$PORT" -v ON_ERROR_STOP=1 -Atq -c "$1"; }

if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" = "1" ]; then
    psql_admin "ALTER ROLE $DB_USER LOGIN PASSWORD '$DB_PASS'" >&2
else
    log "creating role $DB_USER"
    psql_admin "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASS'" >&2
fi
if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != "1" ]; then
    log "creating database $DB_NAME"
    psql_admin "CREATE DATABASE $DB_NAME OWNER $DB_USER" >&2
fi

echo "postgresql+psycopg2://$DB_USER:$DB_PASS@127.0.0.1:$PORT/$DB_NAME"
