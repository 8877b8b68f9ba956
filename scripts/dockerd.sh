#!/usr/bin/env bash
# Start or stop a private Docker engine for the tests (no bridge, no iptables, overlay2 or vfs),
# put it in swarm mode (a single-node swarm on loopback, for the swarm provider's tests), and
# build the tiny local test image lbtest/busybox:1. Nothing is pulled.
#   scripts/dockerd.sh start | stop | socket
# LB_DOCKER_DIR: the engine's folder (default /tmp/lb-dockerd). LB_SWARM=0: no swarm mode.
# LB_SWARM_PORT: the swarm's control port on 127.0.0.1 (default 2377). Swarm also binds its
# gossip port 7946 on 127.0.0.1, so one engine per machine can be in swarm mode.
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
    # Swarm mode, idempotent (the state persists in the data folder): loopback only, for the
    # control plane, the gossip and the data path. Host-network services work with
    # --bridge=none --iptables=false. A failure only warns: the other Docker tests need no swarm.
    if [ "${LB_SWARM:-1}" != 0 ] &&
      [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" != active ]; then
      if docker swarm init --advertise-addr 127.0.0.1 \
        --listen-addr "127.0.0.1:${LB_SWARM_PORT:-2377}" --data-path-addr 127.0.0.1 \
        >"$D/swarm-init.log" 2>&1; then
        for _ in $(seq 1 50); do # the ingress network comes a moment after the init
          docker network inspect ingress >/dev/null 2>&1 && break
          sleep 0.2
        done
      else
        echo "warning: docker swarm init failed (see $D/swarm-init.log); swarm tests will skip" >&2
      fi
    fi
    # swarm init makes the routing mesh: an "ingress" overlay and a "docker_gwbridge" bridge
    # with a 172.x address on the host. Members use the host network, so neither is needed:
    # both go, and the host keeps no interface but its own (loopback only).
    if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ]; then
      # Removing ingress takes its sandbox off docker_gwbridge a moment later, and a fresh
      # swarm may create them a moment after the init: repeat until neither is seen for 2 s.
      absent=0
      for _ in $(seq 1 80); do
        seen=0
        if docker network inspect ingress >/dev/null 2>&1; then
          seen=1
          echo y | docker network rm ingress >/dev/null 2>&1 || true
        fi
        if docker network inspect docker_gwbridge >/dev/null 2>&1; then
          seen=1
          docker network rm docker_gwbridge >/dev/null 2>&1 || true
        fi
        if [ "$seen" = 0 ]; then
          absent=$((absent + 1))
          [ "$absent" -ge 4 ] && break
        else
          absent=0
        fi
        sleep 0.5
      done
      if docker network inspect docker_gwbridge >/dev/null 2>&1; then
        echo "warning: could not remove docker_gwbridge (the routing mesh's bridge)" >&2
      fi
    fi
    if ! docker image inspect lbtest/busybox:1 >/dev/null 2>&1; then
      root=$(mktemp -d)
      mkdir -p "$root/bin" "$root/www"
      cp /bin/busybox "$root/bin/busybox"
      echo ok > "$root/www/healthz"
      echo hello > "$root/www/index.html"
      tar -C "$root" -c . | docker import - lbtest/busybox:1 >/dev/null
      rm -rf "$root"
    fi
    echo "dockerd ready at $SOCK (swarm: $(docker info --format '{{.Swarm.LocalNodeState}}'))"
    ;;
esac
