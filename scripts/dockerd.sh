#!/usr/bin/env bash
# Start or stop a private Docker engine for the tests (no bridge, no iptables, overlay2 or vfs),
# and build the tiny local test image lbtest/busybox:1. Nothing is pulled.
#   scripts/dockerd.sh start | stop | socket
set -euo pipefail
D=${LB_DOCKER_DIR:-/tmp/lb-dockerd}
SOCK="$D/docker.sock"
case "${1:-start}" in
  socket) echo "$SOCK" ;;
  stop)
    if [ -f "$D/pid" ]; then kill "$(cat "$D/pid")" 2>/dev/null || true; fi
    ;;
  start)
    command -v dockerd >/dev/null || { echo "dockerd not installed" >&2; exit 1; }
    mkdir -p "$D/data" "$D/exec"
    if ! DOCKER_HOST="unix://$SOCK" docker info >/dev/null 2>&1; then
      # overlay2 where the kernel and the data root allow it (ext4 here: an image build is
      # about three times faster than on vfs, which copies every layer whole); else vfs.
      # LB_DOCKER_STORAGE=vfs|overlay2 forces one.
      for driver in ${LB_DOCKER_STORAGE:-overlay2 vfs}; do
        dockerd --bridge=none --iptables=false --ip6tables=false --storage-driver="$driver" \
          --data-root="$D/data" --exec-root="$D/exec" -H "unix://$SOCK" --pidfile "$D/pid" \
          >"$D/dockerd.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 100); do
          DOCKER_HOST="unix://$SOCK" docker info >/dev/null 2>&1 && break 2
          kill -0 "$pid" 2>/dev/null || break  # it refused this driver: try the next
          sleep 0.2
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "dockerd did not start with storage driver $driver; see $D/dockerd.log" >&2
      done
    fi
    export DOCKER_HOST="unix://$SOCK"
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see $D/dockerd.log" >&2; exit 1; }
    if ! docker image inspect lbtest/busybox:1 >/dev/null 2>&1; then
      root=$(mktemp -d)
      mkdir -p "$root/bin" "$root/www"
      cp /bin/busybox "$root/bin/busybox"
      echo ok > "$root/www/healthz"
      echo hello > "$root/www/index.html"
      tar -C "$root" -c . | docker import - lbtest/busybox:1 >/dev/null
      rm -rf "$root"
    fi
    echo "dockerd ready at $SOCK"
    ;;
esac
