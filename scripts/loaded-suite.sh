#!/usr/bin/env bash
# Runs the README's test command RUNS times in a row (default 5) on a fresh
# clone of HEAD while `stress-ng --cpu <cores>` keeps every core busy, and
# prints a Markdown row per run: a suite that passes only on a quiet
# machine has tests that depend on timing. The clone is built before the
# load starts; each run then rebuilds nothing. Logs stay in the clone
# (printed at the end). Results are recorded in docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
if ! command -v stress-ng >/dev/null 2>&1; then
  echo "[ebb] installing stress-ng" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq stress-ng >/dev/null; else sudo apt-get install -y -qq stress-ng >/dev/null; fi
fi
bash scripts/ensure-services.sh
work=$(mktemp -d /tmp/ebb-loaded-XXXXXX)
git clone -q "$(pwd)" "$work/ebb"
cd "$work/ebb"
echo "[ebb] building a fresh clone of $(git rev-parse --short HEAD) in $work/ebb" >&2
cargo build --workspace --bins --tests --quiet
cores=$(nproc)
stress-ng --cpu "$cores" --timeout 0 --quiet &
stress=$!
trap 'kill "$stress" 2>/dev/null || true' EXIT
echo "| run | result | minutes | tests passed | load |"
echo "|---|---|---:|---:|---|"
failed=0
for i in $(seq 1 "$runs"); do
  started=$(date +%s)
  if bash scripts/test.sh >"$work/run-$i.log" 2>&1; then result=pass; else result=FAIL; failed=1; fi
  minutes=$(awk "BEGIN { printf \"%.1f\", ($(date +%s) - $started) / 60 }")
  passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$work/run-$i.log" | awk '{s += $4} END {print s + 0}')
  echo "| $i | $result | $minutes | $passed | stress-ng --cpu $cores |"
  if [ "$result" = FAIL ]; then
    grep -E '^test .* FAILED$|panicked at|directory is kept' "$work/run-$i.log" | sed 's/^/    /' >&2 || true
  fi
done
echo "[ebb] logs: $work/run-*.log" >&2
exit "$failed"
