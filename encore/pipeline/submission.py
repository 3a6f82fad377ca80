"""Running one Encore step as a Ray job on a cluster (the Ray Job Submission SDK).

The cluster profile's DAG tasks call ``run_as_ray_job``: the step's command line (``encore score
--date D``) becomes the entrypoint of a job on the head at ``ray.dashboard``, with the caller's
``ENCORE_*`` settings passed on, and the caller waits for it, printing the job's log as it goes.
The submission id is fixed per DAG run and task: a task retried after its worker died re-attaches
to the job that is still running or already succeeded instead of starting it twice; only when that
job failed or was stopped does the retry submit a new attempt (``<id>-r2``, ``-r3``, …).
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import time
from typing import Callable

from encore.config import Config
from encore.errors import EncoreError

log = logging.getLogger(__name__)

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def encore_environment(environ: dict | None = None) -> dict:
    """The caller's Encore settings (ENCORE_HOME, ENCORE_PROFILE, ENCORE_CONFIG, ENCORE__…)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith("ENCORE_") and k != "ENCORE_BIN"}


def submission_id(run_id: str, task_id: str) -> str:
    """A stable, Ray-safe id: the same DAG run and task always give the same id."""
    raw = f"encore-{run_id}-{task_id}"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", raw)[:120]


def _client(config: Config):
    from encore.ray_runtime import apply_auth_mode
    apply_auth_mode(config)   # before Ray is imported: it reads RAY_AUTH_MODE once
    from ray.job_submission import JobSubmissionClient
    address = config.ray.dashboard
    if not address:
        raise EncoreError(f"profile '{config.profile}' has no ray.dashboard (the Ray job server, e.g. "
                          "http://ray-head:8265): set it, or ENCORE__RAY__DASHBOARD")
    try:
        return JobSubmissionClient(str(address))
    except (ConnectionError, RuntimeError, PermissionError) as exc:
        raise EncoreError(f"cannot reach the Ray job server at {address} ({str(exc).splitlines()[0]}): start the "
                          "cluster (infra/cluster/local_cluster.py up) or fix ray.dashboard") from None


def _agent_not_ready(exc: BaseException) -> bool:
    # A head that has just started answers 500 "No available agent to submit job" until its job agent is up.
    return isinstance(exc, RuntimeError) and "No available agent" in str(exc)


def _submit(client, address: str, **job) -> None:
    """``client.submit_job``, again for up to about two minutes while the head's job agent is starting (tenacity)."""
    from tenacity import Retrying, before_sleep_log, retry_if_exception, stop_after_delay, wait_exponential
    try:
        for attempt in Retrying(retry=retry_if_exception(_agent_not_ready), stop=stop_after_delay(120), reraise=True,
                                wait=wait_exponential(multiplier=1, max=15),
                                before_sleep=before_sleep_log(log, logging.WARNING)):
            with attempt:
                client.submit_job(**job)
    except RuntimeError as exc:
        if not _agent_not_ready(exc):
            raise
        raise EncoreError(
            f"the Ray head at {address} accepts no jobs: its job agent has not served for two minutes (\"No available "
            "agent\"). An agent that cannot bind its listen port stays up without serving: look for \"Failed to "
            "bind\" in the head's dashboard_agent.log, and start the head with a free --dashboard-agent-listen-port "
            "(Ray's default 52365 clashes with any other Ray on the same machine)") from None


def run_as_ray_job(config: Config, args: list[str], job_id: str, *, poll_s: float = 5.0,
                   echo: Callable[[str], None] = print) -> str:
    """Submit ``encore <args>`` as a Ray job, or re-attach to the newest attempt under ``job_id`` when it
    is pending, running or succeeded, and wait for it. Returns the id of the job it waited for; raises
    EncoreError with the job's last log line when that job does not succeed."""
    client = _client(config)
    from ray.job_submission import JobStatus
    attempt, current, status = 1, job_id, None
    while True:   # the newest attempt: job_id, job_id-r2, job_id-r3, ...
        try:
            status = client.get_job_status(current)
        except RuntimeError:   # no such job: submit this attempt
            status = None
            break
        if status.value not in ("FAILED", "STOPPED"):
            break
        attempt += 1
        current = f"{job_id}-r{attempt}"
    if status is not None:
        echo(f"re-attaching to Ray job {current} ({status.value})")
    else:
        entrypoint = " ".join([config.ray.entrypoint, *map(shlex.quote, args)])
        _submit(client, str(config.ray.dashboard), entrypoint=entrypoint, submission_id=current,
                runtime_env={"env_vars": encore_environment()}, metadata={"encore_step": args[0] if args else ""})
        echo(f"submitted Ray job {current}: {entrypoint} to {config.ray.dashboard}")
    job_id = current
    printed = 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        for line in logs[printed:].splitlines():
            echo(f"[ray job] {line}")
        printed = len(logs)
        if status.value in TERMINAL:
            break
        time.sleep(poll_s)
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(job_id)
        lines = [line.strip() for line in logs.splitlines() if line.strip()]
        # The job's own `encore: error: ...` line, without its prefix: this line gets one of its own. Spark's
        # shutdown can log after it (a WARN from the stopping scheduler), so the last line is not always it.
        errors = [line for line in lines if line.startswith("encore: error: ")]
        cause = (errors or lines or [info.message or ""])[-1].removeprefix("encore: error: ")
        raise EncoreError(f"Ray job {job_id} ({' '.join(args)}) ended {status.value}: {cause}")
    return job_id
