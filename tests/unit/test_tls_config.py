"""TLS and PROXY settings: config errors that name the field and the fix, files refused with
their path and reason, SNI selection, handshake failure reasons, the mTLS header rewrite."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from lb.config import ConfigError, load_config, parse_config
from lb.http.rewrite import replace_header
from lb.tls import ServerOptions, ServerTls, failure_reason, subject_of
from tests.certs import Authority
from tests.helpers import to_toml


def config(
    listener: dict[str, Any] | None = None, pool: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "name": "web",
                "bind": "127.0.0.1:8443",
                "mode": "http",
                "pool": "p",
                **(listener or {}),
            }
        ],
        "pools": {"p": {"backends": [{"address": "127.0.0.1:9000"}], **(pool or {})}},
    }


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "lb.toml")
    return str(err.value)


CERTS = {"certificates": [{"cert": "a.pem", "key": "a.key"}]}


@pytest.mark.parametrize(
    ("listener", "pool", "field", "hint"),
    [
        ({"proxy_protocol": True}, {}, "listeners[0].trusted_proxies", "CIDRs"),
        ({"trusted_proxies": ["10.0.0.0/8"]}, {}, "listeners[0].trusted_proxies", "proxy_protocol"),
        ({"proxy_protocol": True, "trusted_proxies": ["10.0.0.300/8"]}, {}, "trusted_proxies", "CIDR"),  # noqa: E501
        ({"tls": {**CERTS, "ciphers": "AES128-SHA"}}, {}, "tls.ciphers", "forward secrecy"),
        ({"tls": {**CERTS, "ciphers": "NOPE"}}, {}, "tls.ciphers", "OpenSSL names"),
        ({"tls": {**CERTS, "min_version": "TLSv1.1"}}, {}, "tls.min_version", "TLSv1.2"),
        ({"tls": {"certificates": []}}, {}, "tls.certificates", "at least 1"),
        ({"tls": {**CERTS, "client_subject_header": "X-S"}}, {}, "client_subject_header", "client_ca"),  # noqa: E501
        ({"tls": {**CERTS, "client_ca": "ca.pem", "client_subject_header": "X S"}}, {}, "client_subject_header", "header name"),  # noqa: E501
        ({"tls": {**CERTS, "hsts": "1 year"}}, {}, "tls.hsts", "max-age"),
        ({"tls": CERTS, "redirect_https": True}, {}, "redirect_https", "plain http listener"),
        ({"mode": "tcp", "redirect_https": True}, {}, "redirect_https", 'mode = "http"'),
        ({}, {"tls_ca": "ca.pem"}, "pools.p.tls_ca", "tls = true"),
        ({}, {"tls": True, "tls_cert": "c.pem"}, "pools.p.tls_key", "both"),
        ({}, {"send_proxy": "v3"}, "pools.p.send_proxy", "v1"),
        ({}, {"send_proxy": "v1", "upstream_max_idle": 4}, "pools.p.upstream_max_idle", "never pooled"),  # noqa: E501
    ],
)  # fmt: skip
def test_refused_with_field_and_fix(
    listener: dict[str, Any], pool: dict[str, Any], field: str, hint: str
) -> None:
    message = refused(config(listener, pool))
    assert field in message and hint in message, message


def test_send_proxy_with_tls() -> None:
    """The PROXY header goes in clear, then TLS (HAProxy's ``ssl send-proxy-v2``)."""
    pool = parse_config(config(pool={"tls": True, "send_proxy": "v2"})).pools["p"]
    assert pool.tls and pool.send_proxy == "v2" and pool.upstream_max_idle == 0


def test_send_proxy_turns_pooling_off() -> None:
    cfg = parse_config(config(pool={"send_proxy": "v1"}))
    assert cfg.pools["p"].upstream_max_idle == 0
    # and the dumped form (supervisor -> workers) validates again
    assert parse_config(cfg.model_dump()).pools["p"].send_proxy == "v1"


def write(tmp: Path, data: dict[str, Any]) -> Path:
    path = tmp / "lb.toml"
    path.write_text(to_toml(data))
    return path


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    ca = Authority(tmp_path / "certs")
    ca.issue("a", "a.test")
    data = config(
        {"tls": {"certificates": [{"cert": "certs/a.pem", "key": "certs/a.key"}],
                 "client_ca": "certs/ca.pem"}},
        {"tls": True, "tls_ca": "certs/ca.pem"},
    )  # fmt: skip
    cfg = load_config(write(tmp_path, data))
    tls = cfg.listeners[0].tls
    assert tls is not None
    assert tls.certificates[0].cert == str(tmp_path / "certs/a.pem")
    assert tls.client_ca == str(tmp_path / "certs/ca.pem")
    assert cfg.pools["p"].tls_ca == str(tmp_path / "certs/ca.pem")


@pytest.mark.parametrize("problem", ["missing", "garbage", "mismatch", "encrypted", "bad_ca"])
def test_unusable_files_are_named(tmp_path: Path, problem: str) -> None:
    ca = Authority(tmp_path / "certs")
    a, b = ca.issue("a", "a.test"), ca.issue("b", "b.test")
    cert, key, client_ca = a.cert, a.key, ca.ca_pem
    culprit: Path = cert
    if problem == "missing":
        cert = culprit = tmp_path / "nope.pem"
    elif problem == "garbage":
        cert.write_text("hello\n")
    elif problem == "mismatch":
        key = culprit = b.key
    elif problem == "encrypted":
        from cryptography.hazmat.primitives import serialization

        pk = serialization.load_pem_private_key(key.read_bytes(), None)
        key.write_bytes(
            pk.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        culprit = key
    else:
        client_ca.write_text("not a bundle\n")
        culprit = client_ca
    data = config(
        {
            "tls": {
                "certificates": [{"cert": str(cert), "key": str(key)}],
                "client_ca": str(client_ca),
            }
        }
    )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    message = str(err.value)
    assert str(culprit) in message, message
    assert "listeners[0].tls." in message
    assert {
        "missing": "cannot read",
        "garbage": "not a PEM certificate",
        "mismatch": "does not belong",
        "encrypted": "passphrase",
        "bad_ca": "CA bundle",
    }[problem] in message


def test_sni_selection(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    d = ca.issue("d", "default.test")
    a = ca.issue("a", "a.test", "*.wild.test")
    b = ca.issue("b", "b.test", "A.test", ecdsa=False)  # a.test again: the first one keeps it
    tls = ServerTls([(str(p.cert), str(p.key)) for p in (d, a, b)], ServerOptions())
    by_name = {name: tls.select(name) for name in ("a.test", "A.TEST.", "x.wild.test", "b.test")}
    assert by_name["a.test"] is by_name["A.TEST."] is by_name["x.wild.test"]
    assert by_name["b.test"] is not by_name["a.test"]
    for other in (None, "", "wild.test", "y.x.wild.test", "c.test"):
        assert tls.select(other) is tls.default
    assert tls.default.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.default.options & ssl.OP_NO_RENEGOTIATION
    assert tls.default.options & ssl.OP_NO_COMPRESSION


def test_an_rsa_and_an_ecdsa_certificate_for_the_same_names_share_a_context(
    tmp_path: Path,
) -> None:
    ca = Authority(tmp_path)
    ec = ca.issue("ec", "a.test", "*.a.test")
    rsa = ca.issue("rsa", "*.a.test", "a.test", ecdsa=False)
    rsa2 = ca.issue("rsa2", "a.test", "*.a.test", ecdsa=False)  # a second RSA one: its own
    other = ca.issue("other", "a.test", ecdsa=False)  # other names: its own context
    tls = ServerTls([(str(p.cert), str(p.key)) for p in (ec, rsa, rsa2, other)], ServerOptions())
    assert [c.key_type for c in tls.certificates] == ["EC", "RSA", "RSA", "RSA"]
    assert tls.select("a.test") is tls.select("x.a.test") is tls.default
    # (the later contexts exist, but every name they have is taken by the first one)
    assert len({id(tls.select(n)) for n in ("a.test", "x.a.test", "b.test")}) == 1
    # a TLS 1.2 client that takes one kind of key only gets that one, from the same context
    for cipher, want in (
        ("ECDHE-ECDSA-AES128-GCM-SHA256", "EC"),
        ("ECDHE-RSA-AES128-GCM-SHA256", "RSA"),
    ):
        client = ssl.create_default_context(cafile=str(ca.ca_pem))
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        client.set_ciphers(cipher)
        assert _served_key_type(tls.default, client, "a.test") == want


def test_sni_switches_contexts_only_when_there_are_several(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    a = ca.issue("a", "a.test")
    b = ca.issue("b", "b.test")
    client = ssl.create_default_context(cafile=str(ca.ca_pem))
    client.check_hostname = False  # the certificate each name gets is what is checked
    # two certificates: the callback is there, and each name gets its own certificate
    tls = ServerTls([(str(a.cert), str(a.key)), (str(b.cert), str(b.key))], ServerOptions())
    assert tls.default.sni_callback is not None
    for name, want in (("a.test", "a.test"), ("b.test", "b.test"), ("c.test", "a.test")):
        assert _served_names(tls.default, client, name) == [want]
    # one certificate: no callback (no call into Python per handshake), every name gets it
    one = ServerTls([(str(b.cert), str(b.key))], ServerOptions())
    assert one.default.sni_callback is None
    for name in ("b.test", "a.test"):
        assert _served_names(one.default, client, name) == ["b.test"]


def _served_names(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> list[str]:
    """The DNS names of the certificate the server gives a client that asks for ``name``."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(_served_certificate(server, client, name))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(san.value.get_values_for_type(x509.DNSName))


def _served_key_type(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> str:
    """The kind of key the server's certificate has."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    key = x509.load_der_x509_certificate(_served_certificate(server, client, name)).public_key()
    return "EC" if isinstance(key, ec.EllipticCurvePublicKey) else "RSA"


def _served_certificate(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> bytes:
    """A handshake between two SSLObjects in memory; the server's certificate (DER)."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname=name)
    done = set()
    for _ in range(10):
        for side, obj in (("c", cli), ("s", srv)):
            if side not in done:
                try:
                    obj.do_handshake()
                    done.add(side)
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == {"c", "s"}:
            break
    der = cli.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (None, "closed"),
        (ConnectionResetError(), "closed"),
        (ConnectionAbortedError("SSL handshake is taking longer than 10 seconds"), "timeout"),
        (ssl.SSLError(1, "[SSL: HTTP_REQUEST] http request"), "other"),
        (ValueError(), "other"),
    ],
)
def test_failure_reason(exc: BaseException | None, reason: str) -> None:
    assert failure_reason(exc) == reason


def test_failure_reason_from_openssl() -> None:
    """Real handshake errors, produced by a server context and a client in memory."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    incoming = ssl.MemoryBIO()
    outgoing = ssl.MemoryBIO()
    sobj = server.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ssl.SSLError) as err:
        sobj.do_handshake()
    assert failure_reason(err.value) == "not_tls"


def test_subject_of() -> None:
    cert = {
        "subject": (
            (("countryName", "FR"),),
            (("organizationName", "Example, Inc"),),
            (("commonName", "client-7\r\nX-Evil: 1"),),
        )
    }
    assert subject_of(cert) == "CN=client-7X-Evil: 1,O=Example\\, Inc,C=FR"
    assert subject_of({}) == "" and subject_of(None) == ""


def test_replace_header() -> None:
    head = (
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Client-Subject: CN=admin\r\nA: 1\r\n"
        b"x-client-subject: CN=root\r\nX-Client-Subject-Other: keep\r\n\r\n"
    )
    out = replace_header(head, b"X-Client-Subject", b"CN=real")
    assert out == (
        b"GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nX-Client-Subject-Other: keep\r\n"
        b"X-Client-Subject: CN=real\r\n\r\n"
    )
    assert replace_header(head, b"X-Client-Subject", None) == (
        b"GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nX-Client-Subject-Other: keep\r\n\r\n"
    )
