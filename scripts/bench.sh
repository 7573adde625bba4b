#!/usr/bin/env bash
# Throughput benchmark (see docs/benchmarks.md): a generated model of 1,000,000
# rows (override: scripts/bench.sh --rows 200000) synced by release builds of
# `ebb` and `ebb-worker` into the postgres destination and a local HTTP
# receiver, next to a plain COPY of the same query. Prints a Markdown report.
# `--peer sling` also runs Sling 1.4.11 (installed from PyPI when missing) on
# the same model in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh
for arg in "$@"; do
    if [ "$arg" = "sling" ]; then
        if ! python3 -c "import sling_linux_amd64" 2>/dev/null; then
            python3 -m pip install --quiet "sling==1.4.11" "sling-linux-amd64==1.4.11"
        fi
        # The sling-linux-amd64 wheel carries the binary (the `sling` package's
        # wrapper would download it again).
        SLING_BIN="$(python3 -c 'import os, sling_linux_amd64; print(os.path.join(os.path.dirname(sling_linux_amd64.__file__), "bin", "sling-linux-amd64"))')"
        export SLING_BIN
    fi
done
cargo build --release --workspace --bins --quiet
cargo bench -p ebb-tests --bench sync_throughput --quiet -- "$@"
