"""The one polling loop (encore/devtools/waiting.py) that the service scripts and server-starting tests share."""
from __future__ import annotations

import time

import pytest

from encore.devtools.waiting import wait_until


def test_returns_what_the_check_found_once_it_is_ready():
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionRefusedError   # an OSError: not listening yet
        return {"ready": len(calls)} if len(calls) >= 3 else None
    assert wait_until("a server", check, timeout=5, every=0.01) == {"ready": 3}


def test_times_out_with_what_it_waited_for_and_where_to_look():
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"gave up waiting for the workers after 0 s: see the logs in /x"):
        wait_until("the workers", lambda: None, timeout=0.2, every=0.05, see="see the logs in /x")
    assert time.monotonic() - started < 2


def test_a_died_process_ends_the_wait_at_once():
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="ray-head exited while waiting for the Ray head"):
        wait_until("the Ray head", lambda: None, timeout=60, died=lambda: "ray-head exited")
    assert time.monotonic() - started < 2
