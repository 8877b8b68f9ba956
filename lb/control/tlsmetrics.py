"""The TLS and PROXY-protocol part of ``/metrics``, and the certificate-expiry warning.

Workers count handshakes (by version), resumed sessions, handshake failures (by reason) and
PROXY refusals (by reason) as flat listener counters (``lb/proxy/edge.py``); the supervisor's
``CounterTotals`` makes them monotonic like every other listener counter, and the families
here label them. Days until each listener certificate expires is read by the supervisor from
the files themselves (cached by modification time), at scrape time; when a config is applied
(start and every reload), a certificate with fewer than ``EXPIRY_WARNING_DAYS`` left is a
warning line in the log.

Never runs in a worker.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lb.config import Config
from lb.proxyproto import REJECT_REASONS
from lb.tls import (
    EXPIRY_WARNING_DAYS,
    FAILURE_REASONS,
    HANDSHAKE_VERSIONS,
    CertificateInfo,
    TlsFileError,
    read_certificate,
)

log = logging.getLogger("lb.tls")

_cache: dict[str, tuple[int, CertificateInfo]] = {}


def certificate(path: str) -> CertificateInfo | None:
    """The certificate in ``path``, read again only when the file changed."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    hit = _cache.get(path)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    try:
        info = read_certificate(path)
    except TlsFileError:
        return None
    _cache[path] = (mtime, info)
    return info


def days_left(info: CertificateInfo, now: float) -> float:
    return (info.not_after - now) / 86400.0


def warn_expiring(config: Config) -> None:
    """A warning line per listener certificate that expires within 14 days (or has)."""
    now = time.time()
    for lc in config.listeners:
        if lc.tls is None:
            continue
        for c in lc.tls.certificates:
            info = certificate(c.cert)
            if info is None:
                continue
            days = days_left(info, now)
            if days < EXPIRY_WARNING_DAYS:
                state = f"expires in {days:.1f} days" if days >= 0 else "has expired"
                log.warning(
                    "listener %s: certificate %s (%s) %s; renew it and reload",
                    lc.name,
                    c.cert,
                    ", ".join(info.names) or info.subject,
                    state,
                    extra={"event": {"event": "certificate_expiry", "days": round(days, 2)}},
                )


def families(config: Config, totals: Mapping[str, Mapping[str, int]]) -> Iterator[Metric]:
    """The ``lb_tls_*`` and ``lb_proxy_protocol_*`` families (listeners with TLS or PROXY)."""
    lab = ["listener"]
    handshakes = CounterMetricFamily(
        "lb_tls_handshakes",
        "TLS handshakes completed, by protocol version",
        labels=[*lab, "version"],
    )
    failures = CounterMetricFamily(
        "lb_tls_handshake_failures",
        "TLS handshakes that failed, by reason (timeout, closed, not_tls, protocol_version, "
        "no_shared_cipher, client_certificate, alert, other)",
        labels=[*lab, "reason"],
    )
    resumed = CounterMetricFamily(
        "lb_tls_sessions_resumed", "TLS handshakes that resumed a session", labels=lab
    )
    expiry = GaugeMetricFamily(
        "lb_tls_certificate_expiry_days",
        "Days until the listener certificate expires (negative: expired)",
        labels=[*lab, "certificate"],
    )
    rejected = CounterMetricFamily(
        "lb_proxy_protocol_rejected",
        "Connections closed by the PROXY protocol check, by reason (untrusted source, missing, "
        "invalid or too_long header, timeout)",
        labels=[*lab, "reason"],
    )
    now = time.time()
    for lc in config.listeners:
        c = totals.get(lc.name, {})
        if lc.tls is not None:
            for v in HANDSHAKE_VERSIONS:
                key = "tls_handshakes_" + v.lower().replace(".", "_")
                handshakes.add_metric([lc.name, v], c.get(key, 0))
            for r in FAILURE_REASONS:
                failures.add_metric([lc.name, r], c.get(f"tls_failures_{r}", 0))
            resumed.add_metric([lc.name], c.get("tls_resumed", 0))
            for cert in lc.tls.certificates:
                info = certificate(cert.cert)
                if info is not None:
                    expiry.add_metric([lc.name, cert.cert], days_left(info, now))
        if lc.proxy_protocol:
            for r in REJECT_REASONS:
                rejected.add_metric([lc.name, r], c.get(f"proxy_rejected_{r}", 0))
    yield from (handshakes, failures, resumed, expiry, rejected)
