#!/usr/bin/env bash
# Fill deploy/docker/wheelhouse/ with the wheels that the image build needs besides lb's own
# source: lb's dependencies, its build requirements (setuptools, Cython) and `build`. The Dockerfile's
# build stage then needs no index (--build-arg PIP_NO_INDEX=1): only these wheels, and the
# compiler of its base. Uses this machine's pip (and its configured index), so run it on a
# machine like the image: Linux x86-64 (or the image's arch) and the image's Python minor.
#   PYTHON=.venv/bin/python deploy/docker/wheelhouse.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
mapfile -t reqs < <("$PY" - <<'PYEOF'
import tomllib
data = tomllib.load(open("pyproject.toml", "rb"))
for r in ["build", *data["build-system"]["requires"], *data["project"]["dependencies"]]:
    print(r)
PYEOF
)
"$PY" -m pip download --quiet --only-binary=:all: --dest deploy/docker/wheelhouse "${reqs[@]}"
ls deploy/docker/wheelhouse | grep -c '\.whl$' | sed 's/^/wheelhouse: /;s/$/ wheel(s)/'
