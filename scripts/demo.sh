#!/usr/bin/env bash
# Run lb and lb-scaler on config.toml. The scaler starts the web pool's demo backends itself
# (1 at once, up to 5 under load; README "Autoscaling" shows how to load it).
#
# Ctrl-C stops both and leaves nothing behind: lb-scaler stops first (on its own it leaves its
# members running and registered, so that a restarted scaler adopts them), then
# `lb-scaler stop-all` drains, stops and deregisters the members while lb still runs, then lb
# stops. lb runs in a session of its own so that Ctrl-C reaches it only in that order.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CONFIG=${CONFIG:-config.toml}
lb_pid=""
scaler_pid=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$scaler_pid" ]; then
    kill -TERM "$scaler_pid" 2>/dev/null || true
    wait "$scaler_pid" 2>/dev/null || true
  fi
  if [ -n "$lb_pid" ]; then
    "$PY" -m scaler -c "$CONFIG" stop-all || true
    kill -TERM "$lb_pid" 2>/dev/null || true
    wait "$lb_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM
"$PY" -m lb check -c "$CONFIG"
"$PY" -m scaler -c "$CONFIG" check
setsid "$PY" -m lb run -c "$CONFIG" &
lb_pid=$!
"$PY" -m scaler -c "$CONFIG" &
scaler_pid=$!
wait -n "$lb_pid" "$scaler_pid" || true # either one ending ends the demo
