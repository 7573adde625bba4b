#!/usr/bin/env bash
# Ebb quickstart: starts Postgres and Redis (installing them if needed), seeds
# a demo warehouse with 12,000 customers (some invalid), starts two workers,
# runs a real sync with a progress bar, and shows the summary and the DLQ;
# then syncs the same model to HubSpot contacts, against a local HubSpot
# *emulator* (no HubSpot account needed or used).
#
# --mysql: the demo warehouse is in MariaDB instead (the `mysql` source), with
# the same customers and the same model.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
warehouse_kind=postgres
case "${1:-}" in
  --mysql) warehouse_kind=mysql ;;
  "") ;;
  *) echo "usage: scripts/quickstart.sh [--mysql]" >&2; exit 2 ;;
esac

bash scripts/ensure-services.sh

echo "[ebb] building ebb and ebb-worker"
cargo build --quiet --bins
ebb="$root/target/debug/ebb"
worker="$root/target/debug/ebb-worker"
emulator="$root/target/debug/hubspot-emulator"

pg="postgres://postgres@127.0.0.1:5432"
for db in ebb_demo_state ebb_demo_warehouse ebb_demo_app; do
  psql "$pg/postgres" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  psql "$pg/postgres" -qAtc "CREATE DATABASE $db" >/dev/null
done
psql "$pg/ebb_demo_app" -q -f examples/quickstart/replica.sql

export EBB_DATABASE_URL="$pg/ebb_demo_state"
export EBB_REDIS_URL="redis://127.0.0.1:6379"
export REPLICA_URL="$pg/ebb_demo_app"
if [ "$warehouse_kind" = mysql ]; then
  echo "[ebb] seeding the demo warehouse in MariaDB (database ebb_demo_analytics)"
  mariadb -h 127.0.0.1 -u root < examples/quickstart/seed-mysql.sql
  export WAREHOUSE_URL="mysql://root@127.0.0.1:3306/ebb_demo_analytics"
  # The same config and model, with the warehouse's type and schema swapped.
  demo="$root/target/quickstart-mysql"
  mkdir -p "$demo/models"
  sed 's/^type = "postgres"  # warehouse$/type = "mysql"/' examples/quickstart/ebb.toml >"$demo/ebb.toml"
  sed 's/analytics\.customers/ebb_demo_analytics.customers/' examples/quickstart/models/customers.sql >"$demo/models/customers.sql"
  export EBB_CONFIG="$demo/ebb.toml"
else
  psql "$pg/ebb_demo_warehouse" -q -f examples/quickstart/seed.sql
  export WAREHOUSE_URL="$pg/ebb_demo_warehouse"
  export EBB_CONFIG="$root/examples/quickstart/ebb.toml"
fi
hubspot_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export HUBSPOT_BASE_URL="http://127.0.0.1:$hubspot_port"
export HUBSPOT_TOKEN="pat-na1-emulated-token"
export EBB_LOG_TEXT=1
# A fresh queue namespace per quickstart, so old demo tasks never interfere.
redis-cli -h 127.0.0.1 --scan --pattern '{ebb:writes}*' | xargs -r redis-cli -h 127.0.0.1 del >/dev/null

echo "[ebb] starting the HubSpot emulator on $HUBSPOT_BASE_URL (an emulator, not HubSpot)"
"$emulator" "127.0.0.1:$hubspot_port" >target/quickstart-hubspot-emulator.log 2>&1 &
emulator_pid=$!
pids=()
trap 'kill -TERM "${pids[@]}" "$emulator_pid" 2>/dev/null; wait "${pids[@]}" "$emulator_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$hubspot_port") 2>/dev/null && break
  sleep 0.1
done

echo "[ebb] ebb check --connect"
"$ebb" check --connect

echo "[ebb] starting two workers (logs in target/quickstart-worker-*.log)"
for i in 1 2; do
  "$worker" --concurrency 4 --name "quickstart-$i" >"target/quickstart-worker-$i.log" 2>&1 &
  pids+=($!)
done

echo "[ebb] ebb plan customers_to_replica"
"$ebb" plan customers_to_replica
echo "[ebb] ebb run customers_to_replica"
"$ebb" run customers_to_replica || true
echo
echo "[ebb] a second run with no model change re-tries only the rejected records:"
"$ebb" run customers_to_replica | grep -E "run #|sent" || true
echo
echo "[ebb] dead letters (ebb dlq list --limit 5):"
"$ebb" dlq list --limit 5
echo
first=$("$ebb" dlq list --json --limit 1 | python3 -c 'import json,sys; e=json.load(sys.stdin); print(e[0]["id"] if e else "")')
if [ -n "$first" ]; then
  echo "[ebb] ebb dlq show $first"
  "$ebb" dlq show "$first"
fi
echo
echo "[ebb] run history (ebb runs):"
"$ebb" runs
echo
echo "[ebb] rows in the destination table: $(psql "$pg/ebb_demo_app" -qAtc 'SELECT count(*) FROM customers_synced')"
echo
echo "[ebb] ebb run customers_to_hubspot (against the HubSpot emulator: 100 contacts per request,"
echo "      HubSpot's limit of 100 requests per 10 s; invalid emails rejected before any request)"
"$ebb" run customers_to_hubspot || true
echo
echo "[ebb] a second run sends nothing new to HubSpot:"
"$ebb" run customers_to_hubspot | grep -E "run #|sent" || true
sleep 5
echo "[ebb] the emulator reports: $(tail -n 1 target/quickstart-hubspot-emulator.log)"
echo
echo "[ebb] to see these syncs, runs and dead letters in the web UI, run"
echo "      EBB_DATABASE_URL=$EBB_DATABASE_URL EBB_REDIS_URL=$EBB_REDIS_URL REPLICA_URL=$REPLICA_URL \\"
echo "      WAREHOUSE_URL=$WAREHOUSE_URL HUBSPOT_BASE_URL=$HUBSPOT_BASE_URL HUBSPOT_TOKEN=$HUBSPOT_TOKEN \\"
echo "        $ebb --config $EBB_CONFIG serve --insecure-no-auth"
echo "      and open http://127.0.0.1:8080/ (--insecure-no-auth: local demo only; give [api] tokens otherwise)"
