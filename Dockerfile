# lb and lb-scaler in one image (docs/deploy.md).
#
# Two stages. "build" makes lb's sdist and wheel with `python -m build`, compiling the Cython
# modules, and installs the wheel and its dependencies' wheels in a fresh venv (/opt/lb); the
# runtime stage copies only that venv: no compiler, no source tree, no pip. The build fails if
# lb did not compile.
#
#   docker build -t lb .            # on python:3.11-slim; wheels and gcc come from the network
#
# Without any network (what tests/docker does): Debian base images made locally
# (deploy/docker/base-image.sh), and wheels fetched beforehand (deploy/docker/wheelhouse.sh):
#
#   docker build --network host -t lb \
#     --build-arg BASE=lb-base:bookworm-HASH --build-arg BUILD_BASE=lb-base-build:bookworm-HASH \
#     --build-arg PIP_NO_INDEX=1 .
#
# BASE and BUILD_BASE must carry the same Python (the venv is built in one, run in the other).
#
#   docker run -d --name lb --network host -v $PWD/config.toml:/etc/lb/config.toml:ro lb
#   docker exec lb lbctl backends        # WORKDIR is /etc/lb: lbctl finds config.toml there
#
# The config's writable paths (control_socket, state_file) go under /var/lib/lb (the lb user's;
# a volume there keeps runtime changes across restarts). SIGTERM (through tini, PID 1) stops lb
# gracefully: no new connections, open ones get [lb] grace; give `docker stop -t` more than grace.

ARG BASE=python:3.11-slim
ARG BUILD_BASE=${BASE}

FROM ${BUILD_BASE} AS build
# PIP_NO_INDEX=1: only the wheels in deploy/docker/wheelhouse/ (deploy/docker/wheelhouse.sh).
ARG PIP_NO_INDEX=
ENV PIP_NO_INDEX=${PIP_NO_INDEX} \
    PIP_FIND_LINKS=/wheelhouse \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# A C compiler and the Python headers for the Cython modules, and tini (the runtime's init):
# the local build base has them; python:3.11-slim has the headers and gets the rest from apt.
RUN if ! command -v gcc >/dev/null || ! [ -x /usr/bin/tini-static ]; then \
      apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev tini \
      && rm -rf /var/lib/apt/lists/*; \
    fi
COPY deploy/docker/wheelhouse/ /wheelhouse/
COPY pyproject.toml setup.py README.md /src/
COPY lb/ /src/lb/
COPY scaler/ /src/scaler/
# `python -m build`: the sdist, then the wheel built from that sdist (so the sdist is known to
# be complete), in /dist (tests/docker copies them out: `--target build`). Then a fresh venv
# gets that wheel and its dependencies, nothing else.
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --quiet build \
    && /opt/build/bin/python -m build --outdir /dist /src >/dev/null \
    && ls /dist \
    && python3 -m venv /opt/lb \
    && PIP_FIND_LINKS="/dist /wheelhouse" /opt/lb/bin/pip install --quiet lb \
    && /opt/lb/bin/pip uninstall --quiet --yes pip \
    && /opt/lb/bin/python -c "import lb._compiled as c, sys; \
ok = c.speedups_loaded() and all(c.compiled_modules().values()); \
print(c.report()); sys.exit(0 if ok else 'lb did not compile: see the report above')"

FROM ${BASE}
LABEL org.opencontainers.image.title="lb" \
      org.opencontainers.image.description="asyncio L4/L7 load balancer with an autoscaling sidecar (lb, lbctl, lb-scaler)" \
      org.opencontainers.image.licenses="MIT"
# A fixed non-root user (no useradd needed: minimal bases may not have it).
RUN echo 'lb:x:10001:10001:lb:/var/lib/lb:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'lb:x:10001:' >> /etc/group \
    && mkdir -p /etc/lb /var/lib/lb \
    && chown 10001:10001 /var/lib/lb && chmod 0750 /var/lib/lb
COPY --from=build /opt/lb /opt/lb
# An init as PID 1 (tini, static): it forwards signals to lb and reaps orphans.
COPY --from=build /usr/bin/tini-static /usr/bin/tini
COPY deploy/docker/healthcheck.py /usr/local/bin/lb-healthcheck
COPY deploy/docker/lb-scaler-container /usr/local/bin/lb-scaler-container
ENV PATH=/opt/lb/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /etc/lb
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["lb-healthcheck"]
# -s: tini also works below another init (docker run --init, lb-scaler's members).
ENTRYPOINT ["/usr/bin/tini", "-s", "--"]
CMD ["lb", "run", "-c", "/etc/lb/config.toml"]
