"""Waiting for something started in the background to become ready: the one polling loop of the
scripts that start services (infra/airflow, infra/cluster) and of tests that start servers."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T], timeout: float, every: float = 2.0,
               died: Callable[[], str | None] | None = None, see: str = "") -> T:
    """Call ``check`` every ``every`` seconds until it returns something truthy, and return that.

    ``check`` raising OSError (a port not open yet) counts as not ready. ``died``, when given, is
    asked first on every round and names what exited, which ends the wait at once instead of
    at the timeout. ``see`` (e.g. "see the logs in var/cluster") ends both error messages.
    """
    suffix = f": {see}" if see else ""
    deadline = time.monotonic() + timeout
    while True:
        gone = died() if died else None
        if gone:
            raise RuntimeError(f"{gone} while waiting for {what}{suffix}")
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s{suffix}")
        time.sleep(every)
