#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests in tests/, against the
# real Postgres and Redis on 127.0.0.1 (scripts/ensure-services.sh starts them).
set -euo pipefail
cd "$(dirname "$0")/.."
# One build for everything: the integration tests spawn the `ebb` and
# `ebb-worker` binaries from this same target directory.
cargo build --workspace --bins --tests --quiet
cargo test --workspace -- --test-threads "${EBB_TEST_THREADS:-2}"
# The Helm chart and the Dockerfile (see the script for what it checks).
bash scripts/check-deploy.sh
