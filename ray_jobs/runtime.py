"""Connecting a job to Ray: the in-process local Ray by default, the configured cluster when
``ray.address`` is set. Every Ray job calls ``connect`` and nothing else starts Ray."""
from __future__ import annotations

import logging
import os

from jobs.config import Config
from jobs.errors import EncoreError

log = logging.getLogger(__name__)


def connect(config: Config):
    import ray
    if ray.is_initialized():
        return ray
    address = config.get("ray.address")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        try:
            ray.init(address=str(address), log_to_driver=True)
        except ConnectionError as exc:
            raise EncoreError(f"cannot reach the Ray cluster at {address} ({exc}): start it, or unset ray.address "
                              "(ENCORE__RAY__ADDRESS) to run on the local in-process Ray") from None
    else:
        cpus = config.get("ray.num_cpus")
        ray.init(num_cpus=int(cpus) if cpus else None, include_dashboard=False, log_to_driver=True,
                 configure_logging=True, logging_level=logging.WARNING)
    log.info("ray: %s", ray.cluster_resources())
    return ray
