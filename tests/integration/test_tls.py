"""TLS at the edge, end to end: lb runs as a real process with certificates made at test time
(trustme), and real clients reach it: curl, openssl s_client, wrk, sslyze, Python's ssl.

Covers issue 16's acceptance: SNI with two names and a default; an sslyze scan; a certificate
replaced by ``lbctl reload`` under wrk load with no failed request (and a broken replacement
refused while the old certificate serves); mTLS with the subject header; HTTPS redirect; TLS
to an nginx backend with verification on, and its clear failure on a name mismatch.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.certs import Authority, Pair
from tests.helpers import Proc, ProcessGroup, free_port, to_toml
from tests.integration.edge_peers import nginx_https
from tests.integration.test_proxy_protocol import metric, wait_metric

CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")
WRK = shutil.which("wrk")


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "certs")


def backend_pool(port: int, **extra: Any) -> dict[str, Any]:
    return {"backends": [{"address": f"127.0.0.1:{port}"}], **extra}


def tls_config(
    port: int,
    backend: int,
    pairs: list[Pair],
    *,
    tls: dict[str, Any] | None = None,
    admin: int | None = None,
    **listener: Any,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "lb": {"workers": 1},
        "listeners": [
            {
                "name": "web",
                "bind": f"127.0.0.1:{port}",
                "mode": "http",
                "pool": "p",
                **listener,
                "tls": {
                    "certificates": [{"cert": str(p.cert), "key": str(p.key)} for p in pairs],
                    **(tls or {}),
                },
            }
        ],
        "pools": {"p": backend_pool(backend)},
    }
    if admin is not None:
        cfg["admin"] = {"bind": f"127.0.0.1:{admin}"}
    return cfg


def served_cn(port: int, server_name: str | None) -> str:
    """The common name of the certificate lb presents to ``openssl s_client``."""
    assert OPENSSL is not None
    args = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}"]
    args += ["-servername", server_name] if server_name else ["-noservername"]
    r = subprocess.run(args, input=b"", capture_output=True, timeout=10)
    m = re.search(rb"^subject=.*CN ?= ?([\w.-]+)", r.stdout, re.M)
    assert m, r.stdout.decode() + r.stderr.decode()
    return m.group(1).decode()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    assert CURL is not None
    return subprocess.run(
        [CURL, "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=20
    )


def reload(lb: Proc, cfg: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    path = Path(lb.extra["config_path"])
    if cfg is not None:
        path.write_text(to_toml(cfg))
    return subprocess.run(
        [sys.executable, "-m", "lb.control.lbctl", "-c", str(path), "reload"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def client_context(ca: Authority, pair: Pair | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.ca_pem))
    if pair is not None:
        ctx.load_cert_chain(str(pair.cert), str(pair.key))
    return ctx


def https_get(
    port: int,
    ctx: ssl.SSLContext,
    server_name: str,
    path: str = "/headers",
    extra: str = "",
) -> tuple[int, dict[str, str], bytes]:
    request = f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n{extra}\r\n"
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as s,
    ):
        s.sendall(request.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    if not data:
        raise ConnectionError("closed without an answer")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


# -- SNI -------------------------------------------------------------------------------------


@pytest.mark.skipif(CURL is None or OPENSSL is None, reason="needs curl and openssl")
def test_sni_picks_each_names_certificate_and_unknown_gets_the_default(
    procs: ProcessGroup, ca: Authority
) -> None:
    default = ca.issue("default", "default.test", common_name="default-cert")
    a = ca.issue("a", "a.test", "*.wild.test", common_name="a-cert")
    b = ca.issue("b", "b.test", ecdsa=False, common_name="b-cert")  # RSA beside ECDSA
    be = procs.backend("be")
    port = free_port()
    procs.lb(tls_config(port, be.port, [default, a, b], tls={"hsts": "max-age=600"}))

    assert served_cn(port, "a.test") == "a-cert"
    assert served_cn(port, "x.wild.test") == "a-cert"  # wildcard from the SAN
    assert served_cn(port, "b.test") == "b-cert"
    assert served_cn(port, "unknown.test") == "default-cert"
    assert served_cn(port, None) == "default-cert"
    assert served_cn(port, "y.x.wild.test") == "default-cert"  # a wildcard is one label

    for name in ("a.test", "b.test"):
        r = curl(
            "--cacert", str(ca.ca_pem), "--resolve", f"{name}:{port}:127.0.0.1", "-D", "-",
            f"https://{name}:{port}/headers",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        head, _, body = r.stdout.replace("\r\n", "\n").partition("\n\n")
        assert head.startswith("HTTP/1.1 200")
        assert "strict-transport-security: max-age=600" in head.lower()
        seen = json.loads(body)["headers"]
        assert seen["x-forwarded-proto"] == "https"
        assert seen["x-forwarded-for"] == "127.0.0.1"
    # curl checks the name: the default certificate does not cover b.test's neighbour
    r = curl("--cacert", str(ca.ca_pem), "--resolve", f"c.test:{port}:127.0.0.1",
             f"https://c.test:{port}/")  # fmt: skip
    assert r.returncode != 0 and "c.test" in r.stderr


def _served_key(port: int, ctx: ssl.SSLContext, name: str) -> str:
    """The kind of key of the certificate lb presents: ``EC`` or ``RSA``."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as s,
    ):
        der = s.getpeercert(binary_form=True)
    assert der is not None
    key = x509.load_der_x509_certificate(der).public_key()
    return "EC" if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__


def test_an_ecdsa_and_an_rsa_certificate_for_one_name(procs: ProcessGroup, ca: Authority) -> None:
    ecdsa = ca.issue("a-ec", "a.test", common_name="a-ec")
    rsa = ca.issue("a-rsa", "a.test", ecdsa=False, common_name="a-rsa")
    other = ca.issue("b", "b.test", common_name="b-cert")
    be = procs.backend("be")
    port = free_port()
    procs.lb(tls_config(port, be.port, [ecdsa, rsa, other]))
    seen = {}
    for label, cipher in (
        ("ecdsa", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("rsa", "ECDHE-RSA-AES128-GCM-SHA256"),
    ):
        ctx = client_context(ca)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(cipher)  # a TLS 1.2 client that can take one kind of key only
        seen[label] = _served_key(port, ctx, "a.test")
    assert seen["ecdsa"] == "EC", seen
    assert "RSA" in seen["rsa"], seen
    # a TLS 1.3 client that takes both gets one of them, and the other name is untouched
    assert served_cn(port, "a.test") in ("a-ec", "a-rsa")
    assert served_cn(port, "b.test") == "b-cert"


def test_alpn_versions_and_metrics(procs: ProcessGroup, ca: Authority) -> None:
    pair = ca.issue("a", "a.test")
    soon = ca.issue("soon", "soon.test", days=5)
    be = procs.backend("be")
    port, admin = free_port(), free_port()
    lb = procs.lb(tls_config(port, be.port, [pair, soon], admin=admin))
    # a certificate that expires within 14 days: a warning line, and the gauge says so
    assert f"certificate {soon.cert} (soon.test) expires in " in lb.output()
    days = metric(
        admin, "lb_tls_certificate_expiry_days", listener="web", certificate=str(soon.cert)
    )
    assert 4.5 < days <= 5
    days = metric(
        admin, "lb_tls_certificate_expiry_days", listener="web", certificate=str(pair.cert)
    )
    assert days > 14
    ctx = client_context(ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="a.test") as s,
    ):
        assert s.selected_alpn_protocol() == "http/1.1"
        assert s.version() == "TLSv1.3"
    old = client_context(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    # TLS 1.2 with an RSA key exchange (no forward secrecy) is refused too
    rsa_kx = client_context(ca)
    rsa_kx.maximum_version = ssl.TLSVersion.TLSv1_2
    rsa_kx.set_ciphers("AES128-GCM-SHA256")
    for refused in (old, rsa_kx):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            pytest.raises(ssl.SSLError),
        ):
            refused.wrap_socket(raw, server_hostname="a.test")

    # a resumed TLS 1.2 session
    ctx12 = client_context(ca)
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    session = None
    for _ in range(2):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx12.wrap_socket(raw, server_hostname="a.test", session=session) as s,
        ):
            reused = s.session_reused
            session = s.session
    assert reused
    # plain HTTP on the TLS port: lb closes it
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            while raw.recv(100):
                pass
    wait_metric(admin, "lb_tls_handshakes_total", 2, listener="web", version="TLSv1.2")
    wait_metric(admin, "lb_tls_handshakes_total", 1, listener="web", version="TLSv1.3")
    wait_metric(admin, "lb_tls_sessions_resumed_total", 1, listener="web")
    for reason in ("not_tls", "protocol_version", "no_shared_cipher"):
        wait_metric(admin, "lb_tls_handshake_failures_total", 1, listener="web", reason=reason)


# -- sslyze ------------------------------------------------------------------------------------


def test_sslyze_finds_only_modern_forward_secret_tls(procs: ProcessGroup, ca: Authority) -> None:
    pytest.importorskip("sslyze")
    ecdsa = ca.issue("a", "a.test")
    rsa = ca.issue("b", "b.test", ecdsa=False)
    be = procs.backend("be")
    port = free_port()
    procs.lb(tls_config(port, be.port, [ecdsa, rsa]))
    out = procs.tmp / "sslyze.json"
    for name in ("a.test", "b.test"):  # the ECDSA and the RSA certificate
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "sslyze",
                f"{name}:{port}{{127.0.0.1}}",
                "--sslv2",
                "--sslv3",
                "--tlsv1",
                "--tlsv1_1",
                "--tlsv1_2",
                "--tlsv1_3",
                "--reneg",
                "--compression",
                f"--json_out={out}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        result = json.loads(out.read_text())["server_scan_results"][0]
        assert result["scan_status"] == "COMPLETED", result
        scan = result["scan_result"]
        for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
            assert scan[f"{old}_cipher_suites"]["result"]["accepted_cipher_suites"] == [], old
        tls12 = scan["tls_1_2_cipher_suites"]["result"]["accepted_cipher_suites"]
        assert tls12
        for accepted in tls12:
            suite = accepted["cipher_suite"]
            assert suite["key_size"] >= 128, suite
            assert suite["openssl_name"].startswith("ECDHE-"), suite  # forward secrecy
            assert "GCM" in suite["openssl_name"] or "CHACHA20" in suite["openssl_name"], suite
            assert accepted["ephemeral_key"] is not None
        assert scan["tls_1_3_cipher_suites"]["result"]["accepted_cipher_suites"]
        reneg = scan["session_renegotiation"]["result"]
        assert not reneg["is_vulnerable_to_client_renegotiation_dos"]
        assert reneg["supports_secure_renegotiation"]  # RFC 5746 only, and no client reneg
        assert scan["tls_compression"]["result"]["supports_compression"] is False


# -- reload --------------------------------------------------------------------------------------


@pytest.mark.skipif(WRK is None or OPENSSL is None, reason="needs wrk and openssl")
def test_certificate_reload_under_wrk_load(procs: ProcessGroup, ca: Authority) -> None:
    """``lbctl reload`` swaps the certificate while wrk runs over HTTPS: no request fails,
    new handshakes get the new certificate; a broken file is refused and the last good one
    keeps serving."""
    assert WRK is not None
    first = ca.issue("web", "web.test", common_name="first-cert")
    be = procs.backend("be")
    port = free_port()
    lb = procs.lb(tls_config(port, be.port, [first]))
    assert served_cn(port, "web.test") == "first-cert"

    wrk_out: dict[str, str] = {}

    def load() -> None:
        # -c 8 with Connection: close on half of them would need a script; keep-alive plus a
        # new connection per thread reconnect is enough: wrk reconnects on every close.
        r = subprocess.run(
            [WRK, "-t1", "-c8", "-d4s", "--timeout", "5s", f"https://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        wrk_out["out"] = r.stdout + r.stderr

    runner = threading.Thread(target=load)
    runner.start()
    time.sleep(1.0)
    second = ca.issue("next", "web.test", common_name="second-cert")
    shutil.copy(second.cert, first.cert)
    shutil.copy(second.key, first.key)
    r = reload(lb)
    assert r.returncode == 0, r.stdout + r.stderr
    assert served_cn(port, "web.test") == "second-cert"
    # a handshake with a Connection: close request in the middle of the load
    status, _, _ = https_get(port, client_context(ca), "web.test", "/")
    assert status == 200

    # a broken replacement: refused, naming the file; the second certificate keeps serving
    first.cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    r = reload(lb)
    assert r.returncode != 0
    assert str(first.cert) in r.stdout + r.stderr
    assert "listeners[0].tls.certificates[0]" in r.stdout + r.stderr
    assert served_cn(port, "web.test") == "second-cert"
    runner.join(30)
    out = wrk_out["out"]
    m = re.search(r"(\d+) requests in", out)
    assert m and int(m.group(1)) > 0, out
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out


def test_broken_key_refuses_to_start(procs: ProcessGroup, ca: Authority) -> None:
    pair = ca.issue("a", "a.test")
    other = ca.issue("b", "b.test")
    cfg = tls_config(free_port(), free_port(), [Pair(pair.cert, other.key)])
    lb = procs.lb(cfg, wait=False)
    assert lb.popen.wait(20) != 0
    out = lb.output()
    assert "listeners[0].tls.certificates[0]" in out
    assert str(other.key) in out and "does not belong to the certificate" in out


# -- mTLS --------------------------------------------------------------------------------------


def test_mtls_requires_a_client_certificate_and_passes_its_subject(
    procs: ProcessGroup, ca: Authority
) -> None:
    server = ca.issue("server", "mtls.test")
    client = ca.issue("client", "client.test", common_name="client-7")
    stranger = Authority(procs.tmp / "other", "other").issue("stranger", "x.test")
    be = procs.backend("be")
    port = free_port()
    procs.lb(
        tls_config(
            port,
            be.port,
            [server],
            tls={"client_ca": str(ca.ca_pem), "client_subject_header": "X-Client-Subject"},
        )
    )
    # no certificate: the handshake (or the first read, with TLS 1.3) fails
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(port, client_context(ca), "mtls.test")
    # a certificate from another CA: refused
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(port, client_context(ca, stranger), "mtls.test")
    # a valid one: the backend sees the verified subject, not the one the client sent
    status, _, body = https_get(
        port,
        client_context(ca, client),
        "mtls.test",
        extra="X-Client-Subject: CN=admin\r\nx-client-subject: CN=root\r\n",
    )
    assert status == 200
    seen = json.loads(body)
    assert seen["headers"]["x-client-subject"].startswith("CN=client-7,")
    assert [k for k, _ in seen["raw"]].count("X-Client-Subject") == 1
    assert "admin" not in body.decode() and "root" not in body.decode()


def test_optional_client_certificate_strips_the_header(procs: ProcessGroup, ca: Authority) -> None:
    server = ca.issue("server", "mtls.test")
    be = procs.backend("be")
    port = free_port()
    procs.lb(
        tls_config(
            port,
            be.port,
            [server],
            tls={
                "client_ca": str(ca.ca_pem),
                "client_verify": "optional",
                "client_subject_header": "X-Client-Subject",
            },
        )
    )
    status, _, body = https_get(
        port, client_context(ca), "mtls.test", extra="X-Client-Subject: CN=admin\r\n"
    )
    assert status == 200
    assert "x-client-subject" not in json.loads(body)["headers"]


# -- HTTPS redirect ------------------------------------------------------------------------------


def test_redirect_https(procs: ProcessGroup) -> None:
    port, tls_port = free_port(), free_port()
    cfg: dict[str, Any] = {
        "lb": {"workers": 1},
        "listeners": [
            {
                "name": "plain",
                "bind": f"127.0.0.1:{port}",
                "mode": "http",
                "pool": "p",
                "redirect_https": True,
                "redirect_port": tls_port,
            },
        ],
        "pools": {"p": backend_pool(free_port())},
    }
    procs.lb(cfg)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /a/b?c=1 HTTP/1.1\r\nHost: shop.test:8080\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.decode()
    assert head.startswith("HTTP/1.1 308 ")
    assert f"Location: https://shop.test:{tls_port}/a/b?c=1\r\n" in head


# -- TLS to backends -----------------------------------------------------------------------------


def test_tls_pool_verifies_the_backend(procs: ProcessGroup, ca: Authority) -> None:
    backend_cert = ca.issue("nginx", "backend.test", "127.0.0.1")
    nginx_port = nginx_https(procs, backend_cert.cert, backend_cert.key)
    good, bad = free_port(), free_port()
    cfg: dict[str, Any] = {
        "lb": {"workers": 1},
        "listeners": [
            {"name": "good", "bind": f"127.0.0.1:{good}", "mode": "http", "pool": "ok"},
            {"name": "bad", "bind": f"127.0.0.1:{bad}", "mode": "http", "pool": "wrong"},
        ],
        "pools": {
            "ok": backend_pool(
                nginx_port,
                tls=True,
                tls_ca=str(ca.ca_pem),
                tls_server_name="backend.test",
                health={"type": "http", "interval": "200ms"},
            ),
            "wrong": backend_pool(
                nginx_port,
                tls=True,
                tls_ca=str(ca.ca_pem),
                tls_server_name="other.test",
                retries=0,
            ),
        },
    }
    lb = procs.lb(cfg)
    # the health check speaks TLS too: the backend comes up
    deadline = time.monotonic() + 10
    while "up" not in _backend_health(lb, "ok") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "up" in _backend_health(lb, "ok")
    with urllib.request.urlopen(f"http://127.0.0.1:{good}/", timeout=5) as r:
        assert r.status == 200
        assert r.read().startswith(b"tls-backend TLSv1.")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{bad}/", timeout=5)
    assert err.value.code == 502
    err.value.close()
    deadline = time.monotonic() + 5
    while "certificate verification failed" not in lb.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(x for x in lb.output().splitlines() if "certificate verification failed" in x)
    assert "pool wrong" in line and "other.test" in line


def _backend_health(lb: Proc, pool: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "lb.control.lbctl", "-c", str(lb.extra["config_path"]),
         "--json", "backends", pool],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return r.stdout


def test_tcp_listener_terminates_and_originates_tls(procs: ProcessGroup, ca: Authority) -> None:
    """mode = "tcp": TLS ends at lb and the bytes go on in the clear; and a plain tcp
    listener relays to a TLS pool."""
    pair = ca.issue("front", "front.test")
    backend_cert = ca.issue("nginx", "backend.test")
    nginx_port = nginx_https(procs, backend_cert.cert, backend_cert.key)
    be = procs.backend("be")
    tls_in, tls_out = free_port(), free_port()
    cfg: dict[str, Any] = {
        "lb": {"workers": 1},
        "listeners": [
            {
                "name": "in",
                "bind": f"127.0.0.1:{tls_in}",
                "mode": "tcp",
                "pool": "plain",
                "tls": {"certificates": [{"cert": str(pair.cert), "key": str(pair.key)}]},
            },
            {"name": "out", "bind": f"127.0.0.1:{tls_out}", "mode": "tcp", "pool": "secure"},
        ],
        "pools": {
            "plain": backend_pool(be.port),
            "secure": backend_pool(
                nginx_port, tls=True, tls_ca=str(ca.ca_pem), tls_server_name="backend.test"
            ),
        },
    }
    procs.lb(cfg)
    status, _, body = https_get(tls_in, client_context(ca), "front.test")
    assert status == 200
    seen = json.loads(body)
    assert "x-forwarded-proto" not in seen["headers"]  # L4: the bytes as the client sent them
    with urllib.request.urlopen(f"http://127.0.0.1:{tls_out}/", timeout=5) as r:
        assert r.read().startswith(b"tls-backend TLSv1.")
