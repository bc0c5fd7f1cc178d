#!/usr/bin/env bash
# Run by the PostgreSQL image on first start: Vigil's roles and database, with passwords.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -v db="${VIGIL_DB_NAME:-vigil}" -U "$POSTGRES_USER" -d postgres \
  -f /vigil/bootstrap.sql
for role in vigil_owner vigil_app vigil_relay; do
  psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
    -c "ALTER ROLE $role PASSWORD '${VIGIL_DB_PASSWORD:?set VIGIL_DB_PASSWORD}'"
done
