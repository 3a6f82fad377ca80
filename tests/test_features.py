"""Gold snapshot from generated logs: sums agree with silver, versions are recorded, reruns replace."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from jobs.clean import clean_date
from jobs.features import build_features
from encore.sources.generate_logs import generate
from jobs.ingest import ingest_landing

DAY = dt.date(2026, 11, 20)


def test_gold_tables_agree_with_silver(lake):
    generate(lake.config.path("landing"), "synthetic", DAY, days=2, seed=9, events_per_day=3000, users=80,
             items=250, bots=0, workers=1)
    ingest_landing(lake)
    for d in (DAY - dt.timedelta(days=1), DAY):
        clean_date(lake, d)
    counts = build_features(lake, DAY)
    silver_version = lake.version("silver.plays")
    assert build_features(lake, DAY) == counts                          # rerun replaces the snapshot

    inter = lake.read("gold.interactions")
    assert inter.agg(F.sum("plays")).first()[0] == lake.read("silver.plays").count()
    assert inter.where(F.abs(F.col("confidence") - F.log1p("plays")) > 1e-12).count() == 0
    assert inter.select(F.col("source_versions")["silver.plays"]).distinct().collect()[0][0] == silver_version

    items = lake.read("gold.items").orderBy("popularity_rank").collect()
    assert [r["popularity_rank"] for r in items] == list(range(1, len(items) + 1))
    assert all(a["listeners"] >= b["listeners"] for a, b in zip(items, items[1:]))
    assert all(r["top_tags"] and r["name"] for r in items)

    profiles = lake.read("gold.user_profiles").collect()
    assert len(profiles) == inter.select("user_id").distinct().count()
    for p in profiles:
        assert abs(sum(t["weight"] for t in p["tag_distribution"]) - 1) < 1e-9
        assert p["top_tags"] == [t["tag"] for t in p["tag_distribution"][:5]]
