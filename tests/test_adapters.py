"""Input adapters on real-format samples written here: Last.fm-1K TSV and HetRec files as-is."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from jobs.clean import clean_date
from jobs.features import build_features
from jobs.ingest import ingest_hetrec, ingest_lastfm1k
from test_generate import write_hetrec_sample

LASTFM1K = [
    "user_000001\t2009-05-04T23:08:57Z\tf1b1cf71-bd35-4e99-8624-24a6e15f133a\tDeep Dish\t\tFuck Me Im Famous (Pacha Ibiza)-09-28-2007",
    "user_000001\t2009-05-04T13:54:10Z\ta7f7df4a-77d8-4f12-8acd-5c60c93f4de8\t坂本龍一\t\tComposition 0919 (Live_2009_4_15)",
    "user_000001\t2009-05-04T13:52:04Z\ta7f7df4a-77d8-4f12-8acd-5c60c93f4de8\t坂本龍一\t\tMc2 (Live_2009_4_15)",
    "user_000002\t2009-05-04T13:42:52Z\t\tThe Artist Without Mbid\t\tUntitled",
    "user_000002\t2009-05-04T13:42:52Z\t\tThe Artist Without Mbid\t\tUntitled",
    "user_000003\t2009-05-05T01:00:00Z\t0a3f1e2b-0000-4000-8000-000000000001\tБорис Гребенщиков\t3b0e2c1a-0000-4000-8000-000000000002\tГород",
    "this line lost its tabs",
    # An album played through: tracks of one artist sharing a second, with and without track MBIDs.
    "user_000004\t2009-05-04T20:00:00Z\tf6bf6e3b-0000-4000-8000-000000000003\tSigur Rós\t"
    "5f1a1e6c-0000-4000-8000-000000000004\tSvefn-g-englar",
    "user_000004\t2009-05-04T20:00:00Z\tf6bf6e3b-0000-4000-8000-000000000003\tSigur Rós\t"
    "5f1a1e6c-0000-4000-8000-000000000005\tStarálfur",
    "user_000004\t2009-05-04T20:10:00Z\tf6bf6e3b-0000-4000-8000-000000000003\tSigur Rós\t\tFlugufrelsarinn",
    "user_000004\t2009-05-04T20:10:00Z\tf6bf6e3b-0000-4000-8000-000000000003\tSigur Rós\t\tOlsen Olsen",
]


def test_lastfm1k_tsv_to_silver(lake_factory, tmp_path):
    lake = lake_factory(ENCORE__CLEAN__MAX_QUARANTINE_SHARE="0.5")  # 2 of 10 rows are bad on purpose
    path = tmp_path / "userid-timestamp-artid-artname-traid-traname.tsv"
    path.write_text("\n".join(LASTFM1K) + "\n", encoding="utf-8")
    assert ingest_lastfm1k(lake, str(path), dt.date(2009, 5, 4)) == len(LASTFM1K)
    assert ingest_lastfm1k(lake, str(path)) == 0                       # same file again: nothing added
    first = clean_date(lake, dt.date(2009, 5, 4))
    second = clean_date(lake, dt.date(2009, 5, 5))
    assert (first.kept, first.reasons) == (8, {"duplicate_event_id": 1, "malformed_record": 1})
    assert second.kept == 1
    silver = {r["track_name"]: r for r in lake.read("silver.plays").collect()}
    assert silver["Город"]["artist_name"] == "Борис Гребенщиков" and silver["Город"]["track_id"].startswith("3b0e2c1a")
    assert silver["Untitled"]["item_id"] == "name:the artist without mbid"
    # Four tracks of one artist, two by two in the same second: four plays.
    assert {"Svefn-g-englar", "Starálfur", "Flugufrelsarinn", "Olsen Olsen"} <= set(silver)
    assert silver["Mc2 (Live_2009_4_15)"]["item_id"] == "a7f7df4a-77d8-4f12-8acd-5c60c93f4de8"
    assert silver["Mc2 (Live_2009_4_15)"]["ms_played"] is None
    assert silver["Mc2 (Live_2009_4_15)"]["event_ts"] == dt.datetime(2009, 5, 4, 13, 52, 4)
    raw = lake.read("silver.plays_quarantine").where(F.col("reason") == "malformed_record").first()
    assert raw["value"] == "this line lost its tabs"


def test_hetrec_as_is_counts_become_interactions(lake, tmp_path):
    src = write_hetrec_sample(tmp_path / "hetrec")
    day = dt.date(2011, 6, 1)
    added = ingest_hetrec(lake, str(src), day)
    assert added == {"bronze.play_counts_raw": 4, "bronze.catalog_raw": 3}
    assert ingest_hetrec(lake, str(src), day) == {"bronze.play_counts_raw": 0, "bronze.catalog_raw": 0}
    result = clean_date(lake, day)
    assert result.events == 0                                          # counts are not events
    assert lake.read("silver.play_counts").count() == 4
    assert lake.read("silver.plays").count() == 0
    catalog = {r["item_id"]: r for r in lake.read("silver.catalog").collect()}
    assert [t["tag"] for t in catalog["53"]["tags"]] == ["français", "post-rock"] or \
           sorted(t["tag"] for t in catalog["53"]["tags"]) == ["français", "post-rock"]
    assert catalog["53"]["name"] == "Sigur Rós"
    trip_hop = catalog["52"]["tags"][0]
    assert trip_hop["tag"] == "trip-hop" and trip_hop["first_tagged"] is None  # year 1956 is impossible
    assert catalog["51"]["tags"][0]["first_tagged"] == dt.date(2008, 5, 1)

    build_features(lake, day)
    inter = {(r["user_id"], r["item_id"]): r for r in lake.read("gold.interactions").collect()}
    assert inter[("2", "51")]["plays"] == 1000 and abs(inter[("2", "51")]["confidence"] - 6.90875) < 1e-4
    items = {r["item_id"]: r for r in lake.read("gold.items").collect()}
    assert items["51"]["listeners"] == 2 and items["51"]["popularity_rank"] == 1
    assert items["51"]["top_tags"] == ["new wave"]
    profile = lake.read("gold.user_profiles").where("user_id = '3'").first()
    weights = {t["tag"]: t["weight"] for t in profile["tag_distribution"]}
    # user 3: 100 plays of 51 (new wave), 600 of 53 (half post-rock, half français)
    assert abs(weights["new wave"] - 100 / 700) < 1e-9 and abs(weights["post-rock"] - 300 / 700) < 1e-9
