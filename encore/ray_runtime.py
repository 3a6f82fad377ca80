"""Connecting a job to Ray: the in-process local Ray by default, the configured cluster when
``ray.address`` is set. Every Ray job calls ``connect`` and nothing else starts Ray."""
from __future__ import annotations

import logging
import os

from encore.config import Config
from encore.errors import EncoreError

log = logging.getLogger(__name__)


def apply_auth_mode(config: Config) -> None:
    """Ray reads RAY_AUTH_MODE from the environment; a profile sets it with ``ray.auth_mode`` so that
    drivers and job clients match the cluster (Ray 2.59+ turns token auth on for new clusters)."""
    mode = config.ray.auth_mode
    if mode:
        os.environ["RAY_AUTH_MODE"] = str(mode)


def connect(config: Config):
    apply_auth_mode(config)   # before Ray is imported: it reads RAY_AUTH_MODE once
    import ray
    if ray.is_initialized():
        return ray
    address = config.ray.address
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Off a terminal (Airflow, Ray job logs) Ray Data logs its progress instead of drawing bars:
    # every 30 s rather than its default 10, so a long night's log stays readable.
    os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", "30")
    if address:
        try:
            ray.init(address=str(address), log_to_driver=True)
        except ConnectionError as exc:
            raise EncoreError(f"cannot reach the Ray cluster at {address} ({exc}): start it, or unset ray.address "
                              "(ENCORE__RAY__ADDRESS) to run on the local in-process Ray") from None
    else:
        cpus = config.ray.num_cpus
        # "local": a Ray of this process's own. With no address, ray.init joins the newest cluster that
        # `ray start` left on this machine (/tmp/ray/ray_current_cluster), whatever the profile says.
        ray.init(address="local", num_cpus=int(cpus) if cpus else None, include_dashboard=False, log_to_driver=True,
                 configure_logging=True, logging_level=logging.WARNING)
    log.info("ray: %s", ray.cluster_resources())
    return ray


def write_parquet(dataset, path: str) -> None:
    """Write a Ray Dataset as Parquet files under ``path`` (a local folder or Spark's ``s3a://`` URI).

    The write tasks reserve no CPU. An actor pool (scoring's) holds every CPU until its input is done;
    once its output outgrows Ray Data's object-store budget it waits for the writes, and writes that
    need a CPU then wait for the actors for ever. A 1M-listener night's score stopped there."""
    from encore.locations import storage_uri
    dataset.write_parquet(storage_uri(path)[0], ray_remote_args={"num_cpus": 0})
