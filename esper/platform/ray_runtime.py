"""Where a command's Ray comes from: an embedded Ray of its own, or a cluster it joins."""

from __future__ import annotations

import ray

from esper.config import EsperConfig

__all__ = ["start_ray"]


def start_ray(cfg: EsperConfig, address: str | None) -> None:
    """Start an embedded Ray on this machine, or join the cluster at ``address`` (or
    ``cluster.address``); nothing if Ray is already up."""
    if ray.is_initialized():
        return
    address = address or cfg.cluster.address
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=cfg.cluster.num_cpus, include_dashboard=False, log_to_driver=False)
