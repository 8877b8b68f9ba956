"""The dashboard in headless Chromium (selenium + chromium-driver) against a real lb and a real
lb-scaler: backend states, a stopped backend turning "down" within the health-check window,
the chart canvas drawing data (read back as pixels), and the scaler's decisions after a scale
event. Screenshots go to /tmp (paths printed); LB_UPDATE_DASHBOARD_PNG=1 also writes
docs/dashboard.png for the README.

Skips when Chromium, chromedriver or selenium is missing, and fails instead when
LB_REQUIRE_BROWSER=1 (``.ci/run`` installs them and sets it). Nothing is installed here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import ROOT, Proc, ProcessGroup, env_flag, free_port, http_get

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
INTERVAL = 0.3  # health checks
FALL = 2
CHECK_TIMEOUT = 0.3
POLL = 0.5  # the page's polling interval (?interval=)
SCREENSHOTS = Path("/tmp")


def _missing() -> list[str]:
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    if CHROMIUM is None:
        missing.append("chromium (apt-get install chromium)")
    if CHROMEDRIVER is None:
        missing.append("chromedriver (apt-get install chromium-driver)")
    return missing


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    missing = _missing()
    if missing:
        why = "the browser test needs " + ", ".join(missing)
        if env_flag("LB_REQUIRE_BROWSER"):
            pytest.fail(why + " (LB_REQUIRE_BROWSER=1)")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,800",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(
        service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
        options=opts,
    )
    try:
        yield driver
    finally:
        driver.quit()


def viewport(driver: Any, width: int, height: int, mobile: bool = False) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def screenshot(driver: Any, path: Path, full: bool = False) -> None:
    """The viewport, or the whole page at the viewport's width."""
    import base64

    params: dict[str, Any] = {"format": "png"}
    if full:
        width, height = driver.execute_script(
            "return [window.innerWidth, document.documentElement.scrollHeight]"
        )
        params.update(
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        )
    data = driver.execute_cdp_cmd("Page.captureScreenshot", params)["data"]
    path.write_bytes(base64.b64decode(data))
    print(f"dashboard screenshot: {path}")


def until(what: str, cond: Callable[[], Any], limit: float) -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit}s: {what}")
        time.sleep(0.1)


def row(driver: Any, pool: str, backend: str) -> dict[str, str] | None:
    found: dict[str, str] | None = driver.execute_script(
        """
        const [pool, id] = arguments;
        const sel = `table.backends[data-pool="${pool}"] tbody tr`;
        for (const tr of document.querySelectorAll(sel)) {
          if (tr.dataset.backend === id) {
            return {health: tr.dataset.health, admin: tr.dataset.admin,
                    badge: tr.querySelector("td.state .badge").textContent,
                    color: getComputedStyle(tr.querySelector("td.state .badge")).backgroundColor};
          }
        }
        return null;
        """,
        pool,
        backend,
    )
    return found


def chart_pixels(driver: Any, pool: str) -> dict[str, int]:
    """Opaque pixels of the chart close to the req/s and the replicas colours."""
    counts: dict[str, int] = driver.execute_script(
        """
        const canvas = document.querySelector(`canvas[data-pool="${arguments[0]}"]`);
        const rgb = (name) => {
          const hex = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
          return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
        };
        const want = {rps: rgb("--rps"), replicas: rgb("--replicas")};
        const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        const out = {rps: 0, replicas: 0, width: canvas.width, height: canvas.height};
        for (let i = 0; i < px.length; i += 4) {
          if (px[i + 3] < 200) continue;
          for (const [k, c] of Object.entries(want)) {
            const d = Math.abs(px[i] - c[0]) + Math.abs(px[i + 1] - c[1])
              + Math.abs(px[i + 2] - c[2]);
            if (d < 60) out[k] += 1;
          }
        }
        return out;
        """,
        pool,
    )
    return counts


def scaler_rows(driver: Any) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = driver.execute_script(
        """
        return [...document.querySelectorAll("#scaler table.decisions tbody tr")].map((tr) => ({
          pool: tr.dataset.pool, kind: tr.dataset.kind, dir: tr.dataset.dir || "",
          reason: tr.querySelector("td.reason").textContent,
          replicas: tr.querySelector('td[data-label="Replicas"]').textContent,
        }));
        """
    )
    return rows


def lbctl(config: Path, *args: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "lb.control.lbctl", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr


def scaler_available() -> bool:
    try:
        import scaler.cli  # noqa: F401
    except ImportError:
        return False
    return True


def stop_scaler(scaler: Proc | None, config: Path, members: Path) -> None:
    """Stop lb-scaler, then its members (they outlive it by design): ``stop-all`` drains,
    stops and deregisters them; whatever is still recorded alive after that is killed."""
    if scaler is None:
        return
    scaler.stop(signal.SIGTERM, timeout=15)
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            [sys.executable, "-m", "scaler", "stop-all", "-c", str(config)],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
        )
    with contextlib.suppress(OSError, ValueError):
        for rec in orjson.loads(members.read_bytes()).get("members", []):
            if not isinstance(rec["pid"], int) or rec["pid"] <= 1:
                continue  # null: recorded, never spawned
            pid = rec["pid"]
            with contextlib.suppress(OSError):
                if b"lb.demo_server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


def test_dashboard_in_chromium(procs: ProcessGroup, browser: Any, tmp_path: Path) -> None:
    b1, b2 = procs.backend("d1"), procs.backend("d2")
    dead = free_port()  # nothing listens there: "down" from the first checks on
    web, admin, members_base = free_port(), free_port(), free_port()
    members = tmp_path / "members.json"
    health = {"interval": f"{INTERVAL}s", "fall": FALL, "rise": 1, "timeout": f"{CHECK_TIMEOUT}s"}
    cfg: dict[str, Any] = {
        "lb": {"workers": 1, "grace": "1s"},
        "admin": {"bind": f"127.0.0.1:{admin}"},
        "listeners": [
            {
                "name": "web",
                "bind": f"127.0.0.1:{web}",
                "mode": "http",
                "pool": "web",
                "routes": [{"path_prefix": "/sleep", "pool": "app"}],
            }
        ],
        "pools": {
            "web": {
                "strategy": "round_robin",
                "health": health,
                "backends": [
                    {"address": f"127.0.0.1:{b1.port}"},
                    {"address": f"127.0.0.1:{b2.port}"},
                    {"address": f"127.0.0.1:{dead}"},
                ],
            },
            "app": {"health": health, "drain_timeout": "1s", "backends": []},
        },
    }
    use_scaler = scaler_available()
    if use_scaler:
        cfg["scalers"] = [
            {
                "pool": "app",
                "provider": "process",
                "min": 2,
                "max": 4,
                "target": 2,  # in-flight per member: only the docs scenario loads this pool
                "interval": "0.5s",
                "scale_down_stabilization": "8s",
                "drain_timeout": "1s",
                "stop_timeout": "2s",
                "process": {
                    "command": "{python} -m lb.demo_server --port {port}",
                    "port_range": f"{members_base}-{members_base + 40}",
                    "state_file": str(members),
                    "log_dir": str(tmp_path / "members"),
                },
            }
        ]
    lb = procs.lb(cfg)
    config = Path(lb.extra["config_path"])
    scaler: Proc | None = None
    stop_load = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 60
        while not stop_load.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                http_get(web, timeout=2)
            time.sleep(0.004)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        lbctl(config, "maint", "web", f"127.0.0.1:{dead}")
        viewport(browser, 1280, 800)
        browser.get(f"http://127.0.0.1:{admin}/?interval={POLL}")
        until(
            "the first poll",
            lambda: browser.execute_script("return document.body.dataset.polls"),
            10,
        )

        # 1. The backends table shows the states lb has.
        addr1, addr2, addr3 = (f"127.0.0.1:{p}" for p in (b1.port, b2.port, dead))
        until(
            "b3 shown down and in maint",
            lambda: (row(browser, "web", addr3) or {}).get("admin") == "maint",
            5,
        )
        r1, r2, r3 = (row(browser, "web", a) for a in (addr1, addr2, addr3))
        assert r1 is not None and r2 is not None and r3 is not None
        assert (r1["health"], r1["admin"], r1["badge"]) == ("up", "ready", "up")
        assert (r2["health"], r2["admin"]) == ("up", "ready")
        assert (r3["health"], r3["admin"], r3["badge"]) == ("down", "maint", "down")
        assert r1["color"] != r3["color"]  # state colours

        # 2. The scaler scales the empty pool up to min (a scale event), and the page says so.
        if use_scaler:
            scaler = procs.spawn(
                "scaler", [sys.executable, "-m", "scaler", "run", "-c", str(config)]
            )
        else:
            print("scaler package missing: posting a decision through POST /v1/pools/app/events")
            post_decision(config)

        # 3. A stopped backend turns "down" on the page within the health-check window.
        killed = time.monotonic()
        b2.stop(signal.SIGKILL)
        window = FALL * INTERVAL + CHECK_TIMEOUT + POLL + 1.5
        until(
            f"{addr2} shown down",
            lambda: (row(browser, "web", addr2) or {}).get("health") == "down",
            window,
        )
        took = time.monotonic() - killed
        print(f"stopped backend shown down on the page after {took:.2f}s (window {window:.1f}s)")
        assert (row(browser, "web", addr1) or {}).get("health") == "up"

        def decided() -> list[dict[str, str]]:
            return [
                r
                for r in scaler_rows(browser)
                if r["pool"] == "app" and r["kind"] == "decision" and r["dir"] == "up"
            ]

        (dec, *_) = until("a scale-up decision in the scaler panel", decided, 20)
        assert dec["reason"].strip() not in ("", "\u2013")  # an en dash: no reason
        assert "→ 2" in dec["replicas"], dec
        if use_scaler:
            # Its members register, pass their checks, and appear in the pool's table.
            def members_up() -> bool:
                rows = browser.execute_script(
                    'return [...document.querySelectorAll(\'table.backends[data-pool="app"] '
                    "tbody tr[data-backend]')].map((tr) => tr.dataset.health)"
                )
                return rows == ["up", "up"]

            until("the scaler's two members up in the app pool", members_up, 15)

        # 4. The chart has drawn data: its req/s and replicas lines are on the canvas.
        time.sleep(3 * POLL)
        px = until("chart pixels", lambda: (c := chart_pixels(browser, "web"))["rps"] > 20 and c, 5)
        assert px["replicas"] > 20, px
        history = browser.execute_script("return window.lbDashboard.history.get('web').length")
        assert history >= 3

        # Readable at 1280x800 (no sideways scrolling) and on a narrow screen.
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        )
        time.sleep(POLL)
        shot = SCREENSHOTS / "lb-dashboard-1280x800.png"
        screenshot(browser, shot)
        screenshot(browser, SCREENSHOTS / "lb-dashboard-full.png", full=True)
        if env_flag("LB_UPDATE_DASHBOARD_PNG") and use_scaler:
            docs_scenario(browser, web)
            screenshot(browser, ROOT / "docs" / "dashboard.png", full=True)
        viewport(browser, 390, 844, mobile=True)
        time.sleep(2 * POLL)
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        ), "the page scrolls sideways at 390 px"
        assert (
            browser.execute_script(
                "return getComputedStyle(document.querySelector('table.backends thead')).display"
            )
            == "none"
        )  # the tables became stacked cards
        screenshot(browser, SCREENSHOTS / "lb-dashboard-narrow.png", full=True)
        logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not logs, logs
    finally:
        stop_load.set()
        loader.join(10)
        stop_scaler(scaler, config, members)


def docs_scenario(browser: Any, web: int) -> None:
    """For the README's picture (LB_UPDATE_DASHBOARD_PNG=1, about a minute): slow requests
    to the scaled pool make lb-scaler scale it up; when they stop it scales back down."""
    stop = threading.Event()

    def slow() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                http_get(web, "/sleep?ms=150", timeout=5)

    clients = [threading.Thread(target=slow) for _ in range(12)]
    for t in clients:
        t.start()
    try:
        until(
            "a scale-up under load",
            lambda: any(
                r["dir"] == "up" and "→ 2" not in r["replicas"] for r in scaler_rows(browser)
            ),
            30,
        )
        time.sleep(15)
    finally:
        stop.set()
        for t in clients:
            t.join(10)
    until(
        "a scale-down after the load",
        lambda: any(r["dir"] == "down" for r in scaler_rows(browser)),
        40,
    )
    time.sleep(8)


def post_decision(config: Path) -> None:
    """Without the scaler package: the decision it would post, through the same API call."""
    import asyncio

    from lb.control.client import ControlClient

    async def post() -> None:
        sock = config.parent / "run" / "lb.sock"
        async with ControlClient(sock) as c:
            await c.request(
                "POST",
                "/v1/pools/app/events",
                body={
                    "source": "test",
                    "events": [
                        {
                            "time": time.time(),
                            "kind": "decision",
                            "message": "scale up 0 -> 2: below min=2",
                            "current": 0,
                            "desired": 2,
                            "data": {"action": "scale_up"},
                        }
                    ],
                },
            )

    asyncio.run(post())


def test_dashboard_shows_a_state_file_that_was_moved_aside(
    procs: ProcessGroup, browser: Any, tmp_path: Path
) -> None:
    """Issue 14: an unreadable state file moved aside at start showed only in the log."""
    admin, web = free_port(), free_port()
    state = tmp_path / "run" / "state.json"
    state.parent.mkdir()
    state.write_text('{"version": 99}')
    cfg: dict[str, Any] = {
        "lb": {"workers": 1, "grace": "1s"},
        "admin": {"bind": f"127.0.0.1:{admin}"},
        "listeners": [{"name": "web", "bind": f"127.0.0.1:{web}", "mode": "http", "pool": "p"}],
        "pools": {"p": {"backends": [{"address": f"127.0.0.1:{free_port()}"}]}},
    }
    procs.lb(cfg)
    (moved,) = state.parent.glob("state.json.bad-*")
    browser.get(f"http://127.0.0.1:{admin}/?interval={POLL}")
    text = until(
        "the state-file notice",
        lambda: browser.execute_script(
            "const box = document.getElementById('state-file');"
            "return box && !box.hidden && box.offsetHeight > 0 ? box.textContent : null"
        ),
        10,
    )
    assert str(moved) in text and "format 99 is not supported" in text, text
    assert "config.toml alone" in text or "config alone" in text, text
