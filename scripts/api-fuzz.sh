#!/usr/bin/env bash
# Property-based tests of `ebb serve`'s API against its own OpenAPI document,
# with schemathesis (installed from PyPI when missing): every operation is
# called with generated valid and invalid input, as an operator, and each
# answer is checked against the document (no 5xx, documented status codes,
# bodies matching their schemas, valid input accepted, invalid rejected).
# Uses throwaway databases (ebb_fuzz_*) on the local Postgres and a queue
# prefix of its own on the local Redis. Results: docs/api.md.
#
#   bash scripts/api-fuzz.sh                 # 200 examples per operation
#   bash scripts/api-fuzz.sh --max-examples 50
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/ensure-services.sh
if ! command -v schemathesis >/dev/null 2>&1; then
  echo "[ebb] installing schemathesis from PyPI" >&2
  python3 -m pip install -q schemathesis
fi
cargo build --quiet --bins

pg="postgres://postgres@127.0.0.1:5432"
for db in ebb_fuzz_state ebb_fuzz_warehouse ebb_fuzz_app; do
  psql "$pg/postgres" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  psql "$pg/postgres" -qAtc "CREATE DATABASE $db" >/dev/null
done
psql "$pg/ebb_fuzz_warehouse" -q -f examples/quickstart/seed.sql
psql "$pg/ebb_fuzz_app" -q -f examples/quickstart/replica.sql

dir=$(mktemp -d /tmp/ebb-api-fuzz.XXXXXX)
cp -r examples/quickstart/models "$dir/"
token="fuzz-operator-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat > "$dir/ebb.toml" <<TOML
[state]
database_url = "$pg/ebb_fuzz_state"
redis_url = "redis://127.0.0.1:6379"
queue_prefix = "ebbfuzz"

[api]
tokens = [{ name = "fuzz", token = "\${EBB_FUZZ_TOKEN}", role = "operator" }]

[dbt]
manifest = "target/manifest.json"
webhook_secret = "fuzz-dbt-secret"

[sources.warehouse]
type = "postgres"
url = "$pg/ebb_fuzz_warehouse"

[destinations.replica]
type = "postgres"
url = "$pg/ebb_fuzz_app"
table = "public.customers_synced"

[syncs.customers]
source = "warehouse"
model_file = "models/customers.sql"
primary_key = "id"
destination = "replica"
mode = "mirror"
schedule = "0 3 * * *"

[syncs.customers.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"
TOML
export EBB_FUZZ_TOKEN="$token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$root/target/debug/ebb" --config "$dir/ebb.toml" serve --listen "127.0.0.1:$port" 2>"$dir/serve.log" &
serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
worker_log="$dir/worker.log"
"$root/target/debug/ebb-worker" --config "$dir/ebb.toml" --concurrency 2 2>"$worker_log" &
worker=$!
trap 'kill $serve $worker 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -fs "127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.5
done
# A run first, so runs, records and DLQ entries exist to be read.
curl -fs -X POST -H "Authorization: Bearer $token" "127.0.0.1:$port/api/v1/syncs/customers/runs" >/dev/null
sleep 5
echo "[ebb] schemathesis against http://127.0.0.1:$port/api/v1/openapi.json (logs in $dir)" >&2
schemathesis run "http://127.0.0.1:$port/api/v1/openapi.json" \
  -H "Authorization: Bearer $token" --max-examples 200 "$@"
