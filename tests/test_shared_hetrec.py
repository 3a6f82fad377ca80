"""The real HetRec Last.fm-2K files (../shared/data, beside the clone in CI; never committed).

Skipped with a reason where the shared data set is absent, e.g. on a user's machine."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from conftest import HETREC_DIR, requires_shared_data
from encore.sources import hetrec
from jobs.clean import clean_date
from jobs.features import build_features
from encore.sources.generate_logs import generate
from jobs.ingest import ingest_hetrec, ingest_landing

pytestmark = requires_shared_data(HETREC_DIR)
DAY = dt.date(2011, 6, 1)


def test_reader_on_the_real_files():
    data = hetrec.load(HETREC_DIR)
    assert len(data.weights) == 92_834
    assert len(set(data.user_ids)) == 1_892 and len(data.artist_names) == 17_632
    assert 60_000_000 < data.weights.sum() < 75_000_000
    assert data.impossible_tag_dates > 0                     # the known bad years
    assert all(t["first_tagged"] is None or "2002" <= t["first_tagged"][:4] <= "2011"
               for tags in data.artist_tags.values() for t in tags)


def test_as_is_ingest_to_gold(lake):
    added = ingest_hetrec(lake, str(HETREC_DIR), DAY)
    assert added == {"bronze.play_counts_raw": 92_834, "bronze.catalog_raw": 17_632}
    clean_date(lake, DAY)
    assert lake.read("silver.play_counts").count() == 92_834
    tags = lake.read("silver.catalog").select(F.explode("tags").alias("t")).select("t.tag")
    assert tags.where(F.col("tag").contains("\ufffd")).count() == 0   # ISO-8859-1 decoded, no mojibake
    counts = build_features(lake, DAY)
    assert counts["gold.interactions"] == 92_834 and counts["gold.user_profiles"] == 1_892

    # Erasure by a real, numeric id: listener 2's rows go, and listeners 20, 200, 1200... keep theirs.
    from jobs.forget import forget
    lines = (HETREC_DIR / "user_artists.dat").read_text().splitlines()[1:]
    rows_of_2 = sum(line.split("\t")[0] == "2" for line in lines)   # 50 in the published file
    result = forget(lake, ["2", "99999"])
    users = sorted({r["user_id"] for r in lake.read("bronze.play_counts_raw").select("user_id").collect()})
    assert "2" not in users and {"20", "200", "1200"} <= set(users) and len(users) == 1_891
    removed = result.found["2"]
    assert removed["bronze.play_counts_raw"] == removed["silver.play_counts"] == removed["gold.interactions"] == rows_of_2
    assert removed["gold.user_profiles"] == 1 and result.unknown == ["99999"]
    assert lake.read("silver.play_counts").count() == 92_834 - rows_of_2
    assert lake.read("ops.erasure_log").count() == 1


@pytest.mark.parametrize("scale", [0.0005])
def test_replay_through_clean(lake, scale):
    written = generate(lake.config.path("landing"), "hetrec", DAY, days=2, seed=3, hetrec_dir=str(HETREC_DIR),
                       scale=scale, bots=1, workers=1)
    ingest_landing(lake)
    results = [clean_date(lake, DAY - dt.timedelta(days=1)), clean_date(lake, DAY)]
    assert sum(r.events for r in results) == sum(written.values())
    assert all(r.reasons.get("bot_user", 0) >= 1200 for r in results)
    assert sum(r.kept for r in results) > 0.8 * 69_000_000 * scale


def test_replay_with_real_listening_habits_keeps_every_play(lake):
    """HetRec replayed with album runs, shared-second boundaries and double scrobbles, no faults and
    no bots: every play is kept (silver = input), tracks of one artist sharing a second included."""
    written = generate(lake.config.path("landing"), "hetrec", DAY, days=1, seed=4, hetrec_dir=str(HETREC_DIR),
                       scale=0.0005, fault_rate=0.0, bots=0, workers=1)
    ingest_landing(lake)
    result = clean_date(lake, DAY)
    assert result.events == written[DAY.isoformat()] and (result.kept, result.reasons) == (result.events, {})
    silver = lake.read("silver.plays").where(F.col("date") == F.lit(DAY))
    assert (silver.groupBy("user_id", "item_id", F.date_trunc("second", "event_ts"))
            .agg(F.countDistinct("track_id").alias("tracks")).where("tracks > 1").count()) > 0
