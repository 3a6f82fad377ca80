"""The seeded log generator: deterministic, faulty in the documented ways, HetRec replay proportional."""
from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import numpy as np

from encore.sources import hetrec
from encore.sources.generate_logs import generate

DAY = dt.date(2026, 11, 20)


def _lines(landing: Path, day: dt.date) -> list[str]:
    out = []
    for part in sorted((landing / "plays" / f"date={day}").glob("*.jsonl.gz")):
        with gzip.open(part, "rt", encoding="utf-8", errors="surrogateescape", newline="") as handle:
            out += handle.read().removeprefix("\ufeff").replace("\r\n", "\n").splitlines()
    return out


def test_same_seed_same_files_and_rerun_replaces(tmp_path):
    args = dict(source="synthetic", end_date=DAY, days=2, seed=11, events_per_day=3000, users=50, items=100, workers=1)
    generate(str(tmp_path / "a"), **args)
    generate(str(tmp_path / "b"), **args)
    generate(str(tmp_path / "b"), **args)  # rerun: replaced, not appended
    for day in (DAY - dt.timedelta(days=1), DAY):
        assert _lines(tmp_path / "a", day) == _lines(tmp_path / "b", day)
    assert not list((tmp_path / "b" / "plays").glob("*.tmp"))


def test_synthetic_logs_look_like_clients(tmp_path):
    generate(str(tmp_path), "synthetic", DAY, days=1, seed=5, events_per_day=5000, users=80, items=300,
             fault_rate=0.1, bots=1, workers=1)
    lines = _lines(tmp_path, DAY)
    parsed, broken = [], 0
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            broken += 1
    assert broken > 0                                       # truncated lines
    ids = [p.get("event_id") for p in parsed if not isinstance(p.get("event_id"), dict)]
    assert len(ids) > len(set(ids))                          # duplicate deliveries
    assert {type(p["user_id"]) for p in parsed if "user_id" in p} >= {str, list}   # ids of a wrong JSON type
    assert any(isinstance(p.get("event_id"), dict) for p in parsed) and any(p.get("artist_id") is True for p in parsed)
    assert any(isinstance(p.get("ts"), int) for p in parsed) and any(isinstance(p.get("ts"), str) for p in parsed)
    assert any("client_version" in p for p in parsed)        # unknown extra fields
    assert any("\udce9" in line for line in lines)            # a Latin-1 byte: not UTF-8
    assert any(len(line) > 2000 for line in lines)           # oversized lines
    raw = gzip.open(tmp_path / "plays" / f"date={DAY}" / "part-00000.jsonl.gz").read()
    assert raw.startswith(b"\xef\xbb\xbf{") and b"\r\n" in raw      # written as a Windows client writes
    users = {}
    for p in parsed:
        user = str(p.get("user_id"))
        users[user] = users.get(user, 0) + 1
    assert max(users.values()) > 1200                        # the bot
    plays = np.array(sorted(users.values()))[:-1]
    assert plays.max() < 1000                                # humans stay human
    skips = sum(1 for p in parsed if isinstance(p.get("ms_played"), int) and 0 <= p["ms_played"] < 30_000)
    assert 0.1 < skips / len(parsed) < 0.5
    catalog = gzip.open(tmp_path / "catalog" / f"date={DAY}" / "catalog.jsonl.gz", "rt").read().splitlines()
    assert len(catalog) == 300 and all(json.loads(c)["tags"] for c in catalog)


def write_hetrec_sample(root: Path) -> Path:
    """A tiny folder in HetRec's exact format: tabs, header rows, ISO-8859-1 tags, impossible years."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "user_artists.dat").write_text("userID\tartistID\tweight\n2\t51\t1000\n2\t52\t300\n3\t51\t100\n3\t53\t600\n")
    (root / "artists.dat").write_text("id\tname\turl\tpictureURL\n51\tDuran Duran\tu\tp\n52\tMorcheeba\tu\tp\n53\tSigur Rós\tu\tp\n")
    (root / "tags.dat").write_bytes("tagID\ttagValue\n1\tnew wave\n2\tTrip-Hop\n3\tpost-rock\n4\tfrançais\n".encode("iso-8859-1"))
    (root / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n"
        "2\t51\t1\t1\t4\t2009\n3\t51\t1\t1\t5\t2008\n2\t52\t2\t1\t4\t1956\n2\t53\t3\t31\t2\t2010\n3\t53\t4\t1\t1\t2010\n")
    return root


def test_hetrec_reader_handles_latin1_and_impossible_dates(tmp_path):
    data = hetrec.load(write_hetrec_sample(tmp_path / "hetrec"))
    assert data.weights.sum() == 2000
    assert {t["tag"] for t in data.artist_tags["53"]} == {"post-rock", "français"}
    assert data.impossible_tag_dates == 2                     # 1956 and 31 February
    assert data.artist_tags["51"][0] == {"tag": "new wave", "count": 2, "first_tagged": "2008-05-01"}


def test_hetrec_replay_is_proportional_to_weights(tmp_path):
    src = write_hetrec_sample(tmp_path / "hetrec")
    written = generate(str(tmp_path / "landing"), "hetrec", DAY, days=3, seed=1, hetrec_dir=str(src),
                       scale=0.5, fault_rate=0.0, bots=0, workers=1, double_scrobbles=0)
    assert sum(written.values()) == 1000                      # 0.5 x 2000 plays
    counts = {}
    for day in (DAY - dt.timedelta(days=i) for i in range(3)):
        for line in _lines(tmp_path / "landing", day):
            p = json.loads(line)
            counts[(p["user_id"], p["artist_id"])] = counts.get((p["user_id"], p["artist_id"]), 0) + 1
    assert counts == {("2", "51"): 500, ("2", "52"): 150, ("3", "51"): 50, ("3", "53"): 300}


def test_replayed_plays_stay_inside_their_day_even_for_heavy_listeners(tmp_path):
    src = write_hetrec_sample(tmp_path / "hetrec")
    (src / "user_artists.dat").write_text("userID\tartistID\tweight\n2\t51\t30000\n3\t52\t40\n")
    generate(str(tmp_path / "landing"), "hetrec", DAY, days=1, seed=2, hetrec_dir=str(src), scale=1.0,
             fault_rate=0.0, bots=0, workers=1, double_scrobbles=0)
    start = np.datetime64(DAY.isoformat(), "ms").astype(np.int64)
    times = []
    for line in _lines(tmp_path / "landing", DAY):
        ts = json.loads(line)["ts"]
        if isinstance(ts, int):
            times.append(ts)
        else:
            stamp = np.datetime64(ts.replace("Z", "")[:23], "ms").astype(np.int64)
            times.append(stamp - 3_600_000 if ts.endswith("+01:00") else stamp)
    assert len(times) == 30_040
    assert start <= min(times) and max(times) < start + 86_400_000
