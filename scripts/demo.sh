#!/usr/bin/env bash
# Run lb on config.toml with the demo backends it points at (127.0.0.1:9001-9003).
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CONFIG=${CONFIG:-config.toml}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for port in 9001 9002 9003; do
  "$PY" -m lb.backend --port "$port" --name "backend-$port" >/dev/null &
  pids+=($!)
done
"$PY" -m lb check -c "$CONFIG"
"$PY" -m lb run -c "$CONFIG" &
pids+=($!)
wait "${pids[-1]}"
