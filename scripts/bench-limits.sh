#!/usr/bin/env bash
# Limits benchmark (see docs/benchmarks.md): allowed vs achieved request rate
# for several rate limits and worker counts, against the receiver emulator
# enforcing the same limit. Prints a Markdown table. About 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh
cargo build --release --workspace --bins --quiet
cargo bench -p ebb-tests --bench limits --quiet -- "$@"
