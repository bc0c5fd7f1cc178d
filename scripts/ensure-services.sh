#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ answer on their local ports, starting any that
# does not: from the local server binaries where they are installed, else with
# `docker compose up -d <service>`. Then create Vigil's roles and databases.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_HOST=${PGHOST:-127.0.0.1}
ADMIN_URL=${VIGIL_ADMIN_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
DATABASES=${VIGIL_DATABASES:-vigil vigil_test vigil_bench}
# Databases dropped and made anew, so that a test run starts from an empty schema
# whatever an earlier run of another revision left there.
RESET=${VIGIL_RESET_DATABASES:-}

open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() { # name host port seconds
  local i
  for ((i = 0; i < $4 * 2; i++)); do
    open "$2" "$3" && return 0
    sleep 0.5
  done
  echo "$1 did not come up on $2:$3" >&2
  return 1
}

compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose up -d "$1"
  elif command -v docker-compose >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    docker-compose up -d "$1"
  else
    echo "cannot start $1: no local server and no Docker engine" >&2
    return 1
  fi
}

if ! open "$PG_HOST" 5432; then
  echo "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
  else
    compose postgres
  fi
  wait_for PostgreSQL "$PG_HOST" 5432 60
fi

if ! open 127.0.0.1 6379; then
  echo "starting Redis"
  if command -v redis-server >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  else
    compose redis
  fi
  wait_for Redis 127.0.0.1 6379 30
fi

if ! open 127.0.0.1 5672; then
  echo "starting RabbitMQ"
  if command -v rabbitmq-server >/dev/null 2>&1; then
    rabbitmq-server -detached
    wait_for RabbitMQ 127.0.0.1 5672 120
    rabbitmqctl await_startup >/dev/null 2>&1 || true
  else
    compose rabbitmq
    wait_for RabbitMQ 127.0.0.1 5672 120
  fi
fi

# PostgreSQL may accept connections a moment before it accepts logins.
for _ in $(seq 1 60); do
  psql "$ADMIN_URL" -qAtc 'select 1' >/dev/null 2>&1 && break
  sleep 0.5
done

if command -v psql >/dev/null 2>&1; then
  for db in $RESET; do
    psql "$ADMIN_URL" -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
  done
  for db in $DATABASES; do
    psql "$ADMIN_URL" -q -v ON_ERROR_STOP=1 -v db="$db" -f migrations/bootstrap.sql >/dev/null
  done
else
  echo "psql not found: assuming the roles and databases exist (docker compose creates them)"
fi
