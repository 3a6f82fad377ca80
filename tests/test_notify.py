"""The export's webhook (``export.notify_url``) against a real local HTTP server: the summary it
POSTs, retries on a receiver that is down or busy, and one line when it never accepts."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from encore.errors import EncoreError
from encore.notify import EVENT, export_summary, post_summary
from tests.conftest import free_port, make_config
from tests.http_receiver import receiver

pytestmark = pytest.mark.unit
DAY = dt.date(2026, 11, 20)


def _published(home: Path) -> Path:
    """A published export folder as jobs/export.py leaves it: manifest.json, then _SUCCESS."""
    folder = home / "exports" / f"run_date={DAY}"
    (folder / "midi").mkdir(parents=True)
    (folder / "midi" / "a.mid").write_bytes(b"MThd")
    manifest = {"schema_version": "1.1.0", "run_date": DAY.isoformat(), "created_at": "2026-11-21T02:10:00Z",
                "run_id": "r1", "datasets": {"recommendations": {"rows": 50, "files": []},
                                            "midi": {"rows": 1, "files": ["midi/a.mid"]}},
                "files": [{"path": "midi/a.mid", "bytes": 4, "sha256": "x"}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "_SUCCESS").write_bytes(b"")
    return folder


def test_the_summary_names_the_export_its_manifest_and_its_counts(tmp_path):
    config = make_config(tmp_path)
    folder = _published(Path(config.path("exports")).parent)
    summary = export_summary(config, DAY)
    assert summary == {"event": EVENT, "run_date": "2026-11-20", "export_uri": folder.resolve().as_uri(),
                       "manifest_uri": (folder / "manifest.json").resolve().as_uri(), "schema_version": "1.1.0",
                       "created_at": "2026-11-21T02:10:00Z", "rows": {"midi": 1, "recommendations": 50},
                       "files": 1, "bytes": 4, "mlflow_run_id": "r1"}
    (folder / "_SUCCESS").unlink()
    with pytest.raises(EncoreError, match="not a published export .* run `encore export --date 2026-11-20`"):
        export_summary(config, DAY)


def test_a_busy_receiver_gets_the_summary_on_a_later_attempt():
    summary = {"run_date": "2026-11-20", "rows": {"packs": 3}}
    with receiver(fail_first=2) as got:
        assert post_summary(got.url, summary, attempts=3, first_wait_s=0.01) == 200
    assert got.statuses == [503, 503, 200] and got.bodies == [summary] * 3


def test_a_receiver_that_never_accepts_is_one_line_and_a_refusal_is_not_retried():
    summary = {"run_date": "2026-11-20"}
    with receiver(fail_first=10) as got:
        with pytest.raises(EncoreError) as failure:
            post_summary(got.url, summary, attempts=3, first_wait_s=0.01)
    assert len(got.bodies) == 3 and "\n" not in str(failure.value)
    assert str(failure.value).startswith(f"export 2026-11-20 is published, but its notification to {got.url} failed "
                                         "3 times (HTTP 503 Service Unavailable)")
    with receiver(fail_first=10, fail_status=404) as got:
        with pytest.raises(EncoreError, match=r"refused its notification \(HTTP 404 Not Found\)"):
            post_summary(got.url, summary, attempts=3, first_wait_s=0.01)
    assert len(got.bodies) == 1

    port = free_port()    # nobody listens on it: connection refused, every attempt
    with pytest.raises(EncoreError, match=r"failed 2 times \(.*[Cc]onnection refused"):
        post_summary(f"http://127.0.0.1:{port}/", summary, attempts=2, first_wait_s=0.01)
