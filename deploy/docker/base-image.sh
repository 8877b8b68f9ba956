#!/usr/bin/env bash
# Make the two Debian bookworm base images that the Dockerfile can build on where no image can
# be pulled (nothing comes from Docker Hub here; Debian's packages do):
#
#   lb-base:bookworm-HASH        python3 and python3-venv: the runtime stage (--build-arg BASE)
#   lb-base-build:bookworm-HASH  the same plus gcc and the Python headers: the build stage
#                                (--build-arg BUILD_BASE), which compiles lb's Cython modules;
#                                and tini, the init that the runtime stage copies from it
#
# Each HASH follows that image's package list, so an image is made once per engine and reused;
# a changed list makes a new one. Prints "BASE BUILD_BASE" (the two names) on stdout. Needs mmdebstrap (root).
#   DOCKER_HOST=... deploy/docker/base-image.sh
set -euo pipefail
RUNTIME_PKGS="python3,python3-venv"
BUILD_PKGS="$RUNTIME_PKGS,python3-dev,gcc,libc6-dev,tini"
SUITE=bookworm
tag() { printf '%s\n%s\n' "$SUITE" "$1" | sha256sum | cut -c1-10; }
base="lb-base:$SUITE-$(tag "$RUNTIME_PKGS")"
build="lb-base-build:$SUITE-$(tag "$BUILD_PKGS")"

make_image() { # name packages
  local name=$1 pkgs=$2 tmp
  if docker image inspect "$name" >/dev/null 2>&1; then return 0; fi
  command -v mmdebstrap >/dev/null || {
    echo "mmdebstrap is not installed (apt-get install mmdebstrap)" >&2
    return 1
  }
  tmp=$(mktemp -d)
  # minbase: essential packages and apt only; no recommends, no docs kept.
  mmdebstrap --quiet --variant=minbase --include="$pkgs" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$SUITE" "$tmp/rootfs.tar" >&2
  docker import --change 'CMD ["/bin/sh"]' "$tmp/rootfs.tar" "$name" >/dev/null
  rm -rf "$tmp"
  echo "made $name" >&2
}

make_image "$base" "$RUNTIME_PKGS" &
a=$!
make_image "$build" "$BUILD_PKGS" &
b=$!
wait $a
wait $b
echo "$base $build"
