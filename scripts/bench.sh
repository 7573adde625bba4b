#!/usr/bin/env bash
# Throughput benchmark (see docs/benchmarks.md): a generated model of 1,000,000
# rows (override: scripts/bench.sh --rows 200000) synced by release builds of
# `ebb` and `ebb-worker` into the postgres destination and a local HTTP
# receiver, next to a plain COPY of the same query. Prints a Markdown report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh
cargo build --release --workspace --bins --quiet
cargo bench -p ebb-tests --bench sync_throughput --quiet -- "$@"
