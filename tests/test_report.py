"""The step ledger, the figures and the night's report where no night ran (pure Python: no JVM, no
Ray). The report of a whole night, its failure modes on a real home, and the report opened in a
real browser are in tests/test_night.py and tests/test_cli.py."""
from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from encore.errors import EncoreError
from encore.pipeline import ledger, steps
from tests.conftest import make_config

DAY = dt.date(2026, 11, 20)
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_ledger_records_a_step_its_result_and_a_rerun_replaces_it(tmp_path):
    config = make_config(tmp_path)
    validate = steps.get("validate")
    with ledger.recording(config, validate, DAY) as record:
        record.result = "first"
    with ledger.recording(config, validate, DAY) as record:
        record.result = "second"
    [only] = ledger.read(config, DAY)
    assert only["step"] == "validate" and only["outcome"] == "succeeded" and only["result"] == "second"
    assert only["run_date"] == DAY.isoformat() and only["seconds"] >= 0 and only["engine"] == "spark"
    # Tables that do not exist yet are read as "no version", not an error.
    assert set(only["reads"]) == set(validate.reads) and all(v is None for v in only["reads"].values())
    assert only["writes"] == {}
    assert not list(ledger.steps_folder(config, DAY).glob(".*")), "no partial record is left behind"


def test_the_ledger_records_a_failed_step_with_its_error_and_lets_the_error_through(tmp_path):
    config = make_config(tmp_path)
    with pytest.raises(EncoreError, match="no bronze rows"):
        with ledger.recording(config, steps.get("clean"), DAY):
            raise EncoreError("clean 2026-11-20: no bronze rows for the date\nsecond line")
    [record] = ledger.read(config, DAY)
    assert record["outcome"] == "failed" and record["error"] == "clean 2026-11-20: no bronze rows for the date"


def test_a_step_without_a_date_is_not_recorded(tmp_path):
    config = make_config(tmp_path)
    with ledger.recording(config, steps.get("maintain"), None) as record:
        record.result = "done"
    assert not (tmp_path / "reports").exists()


def test_an_unreadable_record_is_skipped_not_fatal(tmp_path):
    config = make_config(tmp_path)
    folder = ledger.steps_folder(config, DAY)
    folder.mkdir(parents=True)
    (folder / "score.json").write_text("{not json")
    (folder / "export.json").write_text(json.dumps({"step": "export", "started_at": "2026-11-20T01:00:00+00:00"}))
    assert [r["step"] for r in ledger.read(config, DAY)] == ["export"]


def test_a_piano_roll_is_drawn_from_the_midi_notes():
    import symusic
    from encore import figures
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    for i, pitch in enumerate((60, 64, 67, 72)):
        track.notes.append(symusic.Note(time=i * 480, duration=480, pitch=pitch, velocity=90))
    score.tracks.append(track)
    png = figures.piano_roll(score.dumps_midi(), "C major arpeggio")
    assert png.startswith(PNG) and len(png) > 5000
    empty = symusic.Score(480)
    empty.tracks.append(symusic.Track(program=0))
    assert figures.piano_roll(empty.dumps_midi(), "silence").startswith(PNG)


def test_charts_are_pngs_even_for_gaps_in_the_dates(caplog):
    from encore import figures
    dates = ["2026-11-18", "2026-11-19", "2026-11-20"]
    with caplog.at_level(logging.INFO, logger="matplotlib"):
        assert figures.stacked_bars(dates, {"kept": [5, 0, 7], "quarantined": [1, 0, 2]}, "t",
                                    "plays").startswith(PNG)
        assert figures.lines(dates, {"share": [float("nan"), 0.5, 1.0]}, "t", "share", ylim=(0, 1)).startswith(PNG)
        assert figures.grouped_bars(["a", "b"], {"x": [1, 2], "y": [2, float("nan")]}, "t", "v",
                                    errors={"y": [0.1, 0.0]}).startswith(PNG)
    # dates drawn as strings made matplotlib log a line per chart into every step's log
    assert [r.getMessage() for r in caplog.records if r.name.startswith("matplotlib")] == []


def test_a_report_of_a_date_with_no_night_is_one_line_naming_the_date(tmp_path):
    from encore.pipeline.night_report import build_report
    config = make_config(tmp_path)
    with pytest.raises(EncoreError, match="no night ran for 2026-11-20.*encore night --date 2026-11-20"):
        build_report(config, DAY, to_mlflow=False)
    assert not (tmp_path / "reports" / "run_date=2026-11-20" / "report.html").exists()


def test_a_report_with_only_a_failed_step_draws_it_and_says_what_did_not_run(tmp_path):
    from encore.pipeline.night_report import build_report
    config = make_config(tmp_path)
    with pytest.raises(EncoreError):
        with ledger.recording(config, steps.get("clean"), DAY):
            raise EncoreError("clean 2026-11-20: bronze is empty: run `encore ingest` first")
    nightly = tuple(s.name for s in steps.of_dag(steps.NIGHTLY) if s.name != "report")
    result = build_report(config, DAY, steps=nightly, to_mlflow=False)
    by_key = {s.key: s for s in result.sections}
    assert by_key["night"].available and not by_key["quality"].available
    assert "not run" in by_key["recommendations"].note and "not run" in by_key["inspiration"].note
    page = result.html_path.read_text()
    assert "Encore night of 2026-11-20" in page and "failed: clean 2026-11-20: bronze is empty" in page
    assert "<td>score</td><td>not run</td>" in page and "<td>ingest</td><td>not run</td>" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    saved = json.loads(result.json_path.read_text())
    assert saved["sections"]["night"]["data"]["steps"][0]["outcome"] == "failed"
