"""Test certificates made at test time with trustme (nothing private is committed)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


class Authority:
    """A throwaway CA that issues server and client certificates into ``folder``."""

    def __init__(self, folder: Path, name: str = "ca") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name=f"lb tests {name}")
        self.ca_pem = folder / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))

    def issue(
        self,
        label: str,
        *names: str,
        ecdsa: bool = True,
        common_name: str | None = None,
        days: float | None = None,
    ) -> Pair:
        """``days``: valid for that long from now (trustme's default otherwise)."""
        key_type = trustme.KeyType.ECDSA if ecdsa else trustme.KeyType.RSA
        not_after = (
            datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
            if days is not None
            else None
        )
        cert = self.ca.issue_cert(
            *names, common_name=common_name, key_type=key_type, not_after=not_after
        )
        pair = Pair(self.folder / f"{label}.pem", self.folder / f"{label}.key")
        pair.cert.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(pair.key))
        return pair
