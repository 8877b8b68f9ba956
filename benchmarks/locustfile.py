"""Locust: users that browse, post and check out through lb, with sticky sessions.

The easy way runs everything (3 demo backends, lb with a sticky cookie, locust) and cleans up:

    python -m benchmarks.locust_run                      # 50 users for 30 s
    python -m benchmarks.locust_run --users 100 --time 60s

Against an lb you started yourself (its pool needs ``sticky_cookie = "lb_sticky"``, or set
``LB_STICKY_COOKIE`` to your cookie name; the backends must be ``python -m lb.demo_server``, which
answers every path and says who it is in ``X-Backend``):

    locust -f benchmarks/locustfile.py --headless --host http://127.0.0.1:8080 \\
        --users 50 --spawn-rate 25 --run-time 30s --only-summary

Locust prints requests, failures and latency percentiles per endpoint, and exits 1 when any
request failed. Only ever point it at 127.0.0.1.

What a user does (weights are relative frequencies):

* browse (6): ``GET /products?page=N``, then a product page ``GET /products/ID``;
* search (2): ``GET /search?q=...``;
* add to cart (2): ``POST /echo`` with a JSON body; the echo must come back byte for byte;
* check out (1): the sticky flow below (cart, address, payment, confirm, in order).

Every user carries its own cookies (a session id and a preference, as a browser would), so lb
parses a Cookie header on every request. The **sticky flow** is the point of the scenario: the
first response to a user carries ``Set-Cookie: lb_sticky=...`` from lb; every later request sends
it back, and every response must then come from the same backend (``X-Backend``). A response
from another backend, or no sticky cookie at all, is a failure. Every request checks the pin, and
the checkout makes it the point of four requests in a row.
"""

from __future__ import annotations

import json
import os
import random
import uuid

from locust import HttpUser, between, task
from locust.clients import ResponseContextManager

STICKY_COOKIE = os.environ.get("LB_STICKY_COOKIE", "lb_sticky")


def _fail(response: ResponseContextManager, why: str) -> None:
    response.failure(why)  # type: ignore[no-untyped-call]


class _Pinned:
    """The backend this user is pinned to, learnt from the first response."""

    def __init__(self) -> None:
        self.backend: str | None = None

    def check(self, user: HttpUser, response: ResponseContextManager) -> None:
        """Fail ``response`` unless it is a 2xx from the pinned backend."""
        if response.status_code >= 400 or response.status_code == 0:
            _fail(response, f"status {response.status_code}")
            return
        backend = response.headers.get("X-Backend")
        if self.backend is None:
            if STICKY_COOKIE not in user.client.cookies:
                _fail(
                    response,
                    f"no {STICKY_COOKIE!r} cookie from lb: set sticky_cookie on the pool "
                    "(or LB_STICKY_COOKIE to its name)",
                )
                return
            self.backend = backend
        elif backend != self.backend:
            _fail(response, f"sticky session broken: pinned to {self.backend}, got {backend}")
            return
        response.success()  # type: ignore[no-untyped-call]


class Shopper(HttpUser):
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        self.pinned = _Pinned()
        self.client.cookies.set("session", uuid.uuid4().hex)
        self.client.cookies.set("theme", random.choice(["dark", "light"]))
        # The landing page: lb pins this user to a backend with its sticky cookie.
        with self.client.get("/", name="/", catch_response=True) as response:
            self.pinned.check(self, response)

    @task(6)
    def browse(self) -> None:
        with self.client.get(
            f"/products?page={random.randint(1, 20)}", name="/products", catch_response=True
        ) as response:
            self.pinned.check(self, response)
        with self.client.get(
            f"/products/{random.randint(1, 5000)}", name="/products/ID", catch_response=True
        ) as response:
            self.pinned.check(self, response)

    @task(2)
    def search(self) -> None:
        query = random.choice(["lamp", "chair", "desk", "cable", "mug"])
        with self.client.get(f"/search?q={query}", name="/search", catch_response=True) as r:
            self.pinned.check(self, r)

    @task(2)
    def add_to_cart(self) -> None:
        item = {"sku": random.randint(1, 5000), "qty": random.randint(1, 3), "note": "x" * 200}
        body = json.dumps(item).encode()
        with self.client.post(
            "/echo",
            data=body,
            headers={"Content-Type": "application/json"},
            name="/echo (cart)",
            catch_response=True,
        ) as response:
            if response.content != body:
                _fail(response, "the echoed body differs from the one sent")
            else:
                self.pinned.check(self, response)

    @task(1)
    def checkout(self) -> None:
        """The sticky flow: cart, address, payment, confirm, each on the pinned backend."""
        order = uuid.uuid4().hex[:8]
        steps: list[tuple[str, str, str, object | None]] = [
            ("GET", "/cart", "checkout: /cart", None),
            ("POST", "/echo", "checkout: address", {"street": "1 Loopback Road"}),
            ("POST", "/echo", "checkout: payment", {"card": "4111-xxxx", "order": order}),
            ("GET", f"/orders/{order}", "checkout: /orders/ID", None),
        ]
        for method, path, name, body in steps:
            with self.client.request(
                method, path, name=name, json=body, catch_response=True
            ) as response:
                self.pinned.check(self, response)
