"""Providers: where members come from (``process``: local commands, ``docker``: containers,
``swarm``: one Docker Swarm service per member)."""

from __future__ import annotations

from pathlib import Path

from scaler.config import ScalerConfig, resolve
from scaler.providers.base import Member, MemberGone, Provider, ProviderError

__all__ = ["Member", "MemberGone", "Provider", "ProviderError", "make_provider"]


def make_provider(sc: ScalerConfig, config_path: str | Path, run_dir: Path) -> Provider:
    """The provider of one ``[[scalers]]`` entry (not opened yet)."""
    if sc.swarm is not None:
        from scaler.providers.swarm import SwarmProvider

        return SwarmProvider(
            sc.pool, sc.swarm, start_timeout=sc.start_timeout, stop_timeout=sc.stop_timeout
        )
    if sc.docker is not None:
        from scaler.providers.docker import DockerProvider

        return DockerProvider(sc.pool, sc.docker, start_timeout=sc.start_timeout)
    from scaler.providers.process import ProcessProvider

    assert sc.process is not None
    p = sc.process
    return ProcessProvider(
        sc.pool,
        p,
        state_file=(
            resolve(config_path, p.state_file)
            if p.state_file
            else run_dir / f"scaler-{sc.pool}.json"
        ),
        log_dir=resolve(config_path, p.log_dir) if p.log_dir else run_dir / "members",
        cwd=resolve(config_path, p.cwd) if p.cwd else Path(config_path).resolve().parent,
        start_timeout=sc.start_timeout,
    )
