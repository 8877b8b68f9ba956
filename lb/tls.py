"""TLS settings as ``ssl.SSLContext`` objects: the listener's (termination, SNI, mTLS) and a
pool's (TLS to backends), and what the supervisor checks in the files before anyone uses them.

Theory of operation
-------------------
A listener with ``[listeners.tls]`` has one server context per certificate. The first is the
default, and it is the one each connection starts with; its ``sni_callback`` looks the name
the client asked for up among the names of every certificate (the DNS names of its
subjectAltName, or its common name when it has none; exact names first, then ``*.suffix``
wildcards, which match one label) and switches the connection to that certificate's context.
A name nobody has, or no name, keeps the default. With one context (one certificate, or an
ECDSA and an RSA one for the same names) there is nothing to switch to, and no callback: a
handshake then makes no call into Python for its name.

Two certificates for the same names with different kinds of key (ECDSA and RSA) share one
context (``load_cert_chain`` twice): OpenSSL gives each client the certificate that its
signature algorithms (TLS 1.3) or cipher suites (TLS 1.2) allow.

Every context gets the same settings (Mozilla's "intermediate" profile unless the operator
changes them): TLS 1.2 at least, TLS 1.3 on, forward-secret AEAD ciphers only, no compression,
no renegotiation, session tickets and the session cache on, ALPN ``http/1.1`` on http
listeners, and, with ``client_ca``, client certificates verified against that bundle.

:func:`check_certificate` reads a certificate/key pair the way a worker will and raises
:class:`TlsFileError` naming the file and the reason, so that the supervisor refuses a bad
file before any worker sees it (``lb check``, ``lb run`` and every reload call it through
``lb.config.load_config``). Workers build their contexts from the same files
(:class:`ServerTls`) when a listener starts and again at every reload.

No sockets and no asyncio here: only ``ssl`` and the files.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# cryptography is imported where a certificate or key is read: a worker without a TLS listener
# never reads one, and the package is about 15 MiB of a worker's RSS.

# Mozilla's "intermediate" TLS 1.2 ciphers (https://ssl-config.mozilla.org/, version 5.7),
# without the DHE ones: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305, ECDSA or RSA
# certificates. TLS 1.3's own suites are all AEAD with forward secrecy and stay as OpenSSL has
# them.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
EXPIRY_WARNING_DAYS = 14


class TlsFileError(ValueError):
    """A TLS file lb cannot use: ``path`` and a reason an operator can act on."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    path: str
    names: tuple[str, ...]  # lowercased DNS names (SAN, or the CN without one)
    subject: str
    not_after: float  # seconds since the epoch
    key_type: str = ""  # "RSA", "EC" or "Ed25519": the certificate's public key


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsFileError(path, f"cannot read the file: {exc.strerror}") from None


def read_certificate(path: str) -> CertificateInfo:
    """The leaf certificate of a PEM file (a chain may follow it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    data = _read(path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsFileError(path, "not a PEM certificate (expected BEGIN CERTIFICATE)") from None
    leaf = certs[0]
    names: list[str] = []
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    if not names:
        names = [
            str(a.value).lower() for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    public = leaf.public_key()
    key_type = (
        "RSA"
        if isinstance(public, rsa.RSAPublicKey)
        else "EC"
        if isinstance(public, ec.EllipticCurvePublicKey)
        else type(public).__name__.removesuffix("PublicKey").lstrip("_")
    )
    return CertificateInfo(
        path,
        tuple(names),
        leaf.subject.rfc4514_string(),
        leaf.not_valid_after_utc.timestamp(),
        key_type,
    )


def _check_key(path: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TlsFileError(path, "the key is encrypted; lb needs it without a passphrase") from None
    except ValueError:
        raise TlsFileError(
            path, "not a PEM private key (expected BEGIN PRIVATE KEY / RSA / EC PRIVATE KEY)"
        ) from None
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise TlsFileError(path, f"a {type(key).__name__}; use an RSA or ECDSA key")


def check_certificate(cert: str, key: str) -> CertificateInfo:
    """Read a pair as a worker will; :class:`TlsFileError` names the file that is wrong."""
    info = read_certificate(cert)
    _check_key(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        why = getattr(exc, "reason", None) or str(exc)
        if why == "KEY_VALUES_MISMATCH":
            raise TlsFileError(key, f"this key does not belong to the certificate {cert}") from None
        raise TlsFileError(cert, f"OpenSSL refused the certificate and key: {why}") from None
    return info


def check_ca_bundle(path: str) -> None:
    _read(path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TlsFileError(
            path,
            f"not a PEM CA bundle ({getattr(exc, 'reason', None) or exc}); "
            "expected BEGIN CERTIFICATE",
        ) from None


def check_ciphers(ciphers: str) -> None:
    """ValueError unless OpenSSL knows ``ciphers`` and every cipher it names has forward
    secrecy and an AEAD (the TLS 1.2 part; TLS 1.3's suites always do)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.set_ciphers(ciphers)
    except ssl.SSLError:
        raise ValueError(
            "OpenSSL knows no cipher in this list; use OpenSSL names such as "
            '"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"'
        ) from None
    for c in ctx.get_ciphers():
        if c["protocol"] == "TLSv1.3":
            continue
        if c["kea"] not in ("kx-ecdhe", "kx-dhe") or not c["aead"]:
            raise ValueError(
                f"{c['name']} has no forward secrecy or is not an AEAD cipher; "
                "remove it (the default list is Mozilla's intermediate profile)"
            )


# -- contexts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerOptions:
    min_version: str = "TLSv1.2"
    ciphers: str = INTERMEDIATE_CIPHERS
    client_ca: str | None = None
    client_verify: str = "required"  # or "optional"
    alpn: tuple[str, ...] = ()
    session_tickets: bool = True


def server_context(cert: str, key: str, opts: ServerOptions) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = VERSIONS[opts.min_version]
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx.set_ciphers(opts.ciphers)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if not opts.session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
    ctx.load_cert_chain(cert, key)
    if opts.client_ca is not None:
        ctx.load_verify_locations(cafile=opts.client_ca)
        ctx.verify_mode = (
            ssl.CERT_REQUIRED if opts.client_verify == "required" else ssl.CERT_OPTIONAL
        )
    if opts.alpn:
        ctx.set_alpn_protocols(list(opts.alpn))
    return ctx


class ServerTls:
    """A listener's contexts: the default one (the first certificate), and by SNI name."""

    __slots__ = ("certificates", "default", "exact", "wildcard")

    def __init__(self, pairs: Sequence[tuple[str, str]], opts: ServerOptions) -> None:
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}
        self.certificates: list[CertificateInfo] = []
        contexts = []
        # (names, key types, context): a certificate for the same names as an earlier one,
        # with another kind of key (an RSA one beside an ECDSA one), joins that context;
        # OpenSSL then offers each client the one its signature algorithms allow.
        built: list[tuple[frozenset[str], set[str], ssl.SSLContext]] = []
        for cert, key in pairs:
            info = read_certificate(cert)
            self.certificates.append(info)
            names = frozenset(info.names)
            twin = next((b for b in built if b[0] == names and info.key_type not in b[1]), None)
            if twin is not None:
                twin[2].load_cert_chain(cert, key)
                twin[1].add(info.key_type)
                continue
            ctx = server_context(cert, key, opts)
            built.append((names, {info.key_type}, ctx))
            contexts.append(ctx)
            for name in info.names:
                table, name = (
                    (self.wildcard, name[2:]) if name.startswith("*.") else (self.exact, name)
                )
                table.setdefault(name, ctx)  # the first certificate with a name keeps it
        self.default = contexts[0]
        if len(contexts) > 1:
            self.default.sni_callback = self._sni

    def select(self, server_name: str | None) -> ssl.SSLContext:
        """The context for a client that asked for ``server_name``."""
        if not server_name:
            return self.default
        name = server_name.lower().rstrip(".")
        ctx = self.exact.get(name)
        if ctx is None:
            ctx = self.wildcard.get(name.partition(".")[2])
        return ctx if ctx is not None else self.default

    def _sni(self, sslobj: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        chosen = self.select(server_name)
        if chosen is not ctx:
            sslobj.context = chosen


def client_context(
    *,
    ca: str | None,
    verify: bool,
    cert: str | None,
    key: str | None,
    min_version: str = "TLSv1.2",
) -> ssl.SSLContext:
    """A pool's context for TLS to its backends: verification against ``ca`` (the system's
    bundle when None) unless ``verify`` is off, and an optional client certificate."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = VERSIONS[min_version]
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


# -- what a handshake tells -----------------------------------------------------------------

HANDSHAKE_VERSIONS = ("TLSv1.2", "TLSv1.3")
FAILURE_REASONS = (
    "timeout",  # handshake_timeout passed
    "closed",  # the client went away during the handshake
    "not_tls",  # plain HTTP or garbage on a TLS port
    "protocol_version",  # no version in common (an old client)
    "no_shared_cipher",
    "client_certificate",  # mTLS: none, or one the CA bundle does not vouch for
    "alert",  # the client refused the handshake (often: it does not trust our certificate)
    "other",
)


def failure_reason(exc: BaseException | None) -> str:
    """One of :data:`FAILURE_REASONS` for what ended a server-side handshake."""
    if exc is None or isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        return "closed"
    if isinstance(exc, ConnectionAbortedError | TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or ""
        if reason in (
            "HTTP_REQUEST",
            "WRONG_VERSION_NUMBER",
            "UNKNOWN_PROTOCOL",
            "HTTPS_PROXY_REQUEST",
        ):
            return "not_tls"
        if "VERSION" in reason or reason == "UNSUPPORTED_PROTOCOL":
            return "protocol_version"
        if reason == "NO_SHARED_CIPHER":
            return "no_shared_cipher"
        if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED"):
            return "client_certificate"
        if "ALERT" in reason:
            return "alert"
        if isinstance(exc, ssl.SSLEOFError):
            return "closed"
    return "other"


def subject_of(peercert: dict[str, object] | None) -> str:
    """A verified client certificate's subject as ``CN=client,O=Example`` (RFC 4514 order:
    the most specific part first), from ``SSLObject.getpeercert()``."""
    if not peercert:
        return ""
    rdns = peercert.get("subject", ())
    parts: list[str] = []
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "countryName": "C",
        "stateOrProvinceName": "ST",
        "localityName": "L",
        "emailAddress": "emailAddress",
    }
    for rdn in reversed(rdns if isinstance(rdns, tuple) else ()):
        for name, value in rdn:
            text = "".join(ch for ch in str(value) if " " <= ch != "\x7f")  # no CR/LF
            text = text.replace("\\", "\\\\").replace(",", "\\,")
            parts.append(f"{short.get(name, name)}={text}")
    return ",".join(parts)


# -- watching the files (``[listeners.tls] watch``) ----------------------------------------

FileStamp = tuple[int, int, int] | None
"""What tells a file's versions apart: modification time (ns), size and inode (a file renamed
into place is a new inode even within the same mtime tick); None for a file that is not there."""


def file_stamps(paths: Iterable[str]) -> dict[str, FileStamp]:
    """The stamp of every file in ``paths`` (a ``stat`` each; nothing is read)."""
    out: dict[str, FileStamp] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out[path] = None
        else:
            out[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


def changed_files(before: dict[str, FileStamp], after: dict[str, FileStamp]) -> list[str]:
    """The files of ``after`` whose stamp differs from ``before``'s; a file ``before`` did not
    watch is new to the watch (a reload added it), not changed."""
    return [path for path, stamp in after.items() if path in before and before[path] != stamp]
