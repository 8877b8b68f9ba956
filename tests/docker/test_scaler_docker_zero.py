"""Scale from zero with the Docker provider and a real engine: a pool with ``min = 0`` has no
container; the first request is held by lb while the scaler starts one (busybox httpd, host
network, 127.0.0.1), and gets its 200 without a client retry; after ``scale_to_zero_after``
the container is gone and the pool is back at 0 members."""

from __future__ import annotations

import time

from tests.docker.conftest import run_label  # noqa: F401 (the fixture)
from tests.docker.test_scaler_docker import (
    docker_config,
    running,
    scaled,  # noqa: F401 (the fixture)
)
from tests.helpers import http_get
from tests.integration.test_scaler import MARGIN, Scaled, wait_for
from tests.integration.test_scaler_zero import (
    IDLE,
    INTERVAL,
    ZERO,
    decisions,
    scale_ups,
    with_hold,
)


def test_the_first_request_starts_a_container_and_the_pool_idles_back_to_zero(
    scaled: Scaled,  # noqa: F811 (the fixture)
    run_label: str,  # noqa: F811 (the fixture)
) -> None:
    scaled.start(with_hold(docker_config(run_label, **ZERO, stop_timeout="2s")))
    scaler = scaled.scaler()
    wait_for(lambda: decisions(scaler), 10, "the scaler's first decision", scaler)
    assert running(run_label) == [] and scaled.backends() == []

    sent = time.time()
    status, _, body = http_get(scaled.port, "/", timeout=20)  # one attempt: held, then served
    served = time.time()
    assert (status, body) == (200, b"hello\n")
    (container,) = running(run_label)
    assert container["Config"]["Labels"]["lb.pool"] == "web"
    ups = scale_ups(scaler, sent)
    assert ups and ups[0]["msg"].startswith("web: scale up 0 -> 1: scale from zero: demand")
    print(f"cold start with Docker: {served - sent:.2f}s to the response")
    for _ in range(3):
        assert http_get(scaled.port, "/", timeout=10)[0] == 200

    wait_for(
        lambda: scaled.backends() == [] and running(run_label) == [],
        IDLE + 2 * INTERVAL + 5 * MARGIN,
        "back at 0 members",
        scaler,
    )
