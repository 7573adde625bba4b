#!/usr/bin/env bash
# Photographs every page of the web UI at desktop (1280 px) and phone
# (390 px) width into docs/ui/, by running the browser test
# (tests/tests/ui.rs) against real services, and lists what it wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh
cargo build --workspace --bins --tests --quiet
mkdir -p docs/ui
EBB_UI_SCREENSHOTS="$(pwd)/docs/ui" cargo test --quiet -p ebb-tests --test ui
ls -1 docs/ui
