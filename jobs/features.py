"""Features: silver -> the gold snapshot as of a date (gold.interactions, gold.items, gold.user_profiles).

A snapshot for as_of_date D uses silver.plays dates in (D - features.window_days, D], the newest
silver.play_counts snapshot at or before D per source, and the catalogue. Silver is read at pinned
Delta versions, recorded in every gold row's ``source_versions``; a rerun of D replaces D's snapshot.

  interactions: plays = event plays + imported counts; confidence = log1p(plays)
  items:        listeners (distinct users) as popularity, catalogue name and most applied tags
  user_profiles: play-weighted tag shares — each item's tags weighted by their share of the item's
                tag applications, summed over the user's plays, top N kept and renormalised to 1
"""
from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import Window
from pyspark.sql import functions as F

from encore.errors import EncoreError
from encore.lakehouse import Lakehouse
from schemas.table_names import (GOLD_INTERACTIONS, GOLD_ITEMS, GOLD_USER_PROFILES, SILVER_CATALOG,
                                   SILVER_PLAYS, SILVER_PLAY_COUNTS)

log = logging.getLogger(__name__)


def _pinned(lake: Lakehouse, name: str):
    """(DataFrame at the current version, version) or (None, None) when the table does not exist."""
    if not lake.exists(name):
        return None, None
    version = lake.version(name)
    return lake.read(name, version=version), version


def build_features(lake: Lakehouse, as_of: dt.date) -> dict[str, int]:
    cfg = lake.config.features
    window = cfg.window_days
    plays, v_plays = _pinned(lake, SILVER_PLAYS)
    counts, v_counts = _pinned(lake, SILVER_PLAY_COUNTS)
    catalog, v_catalog = _pinned(lake, SILVER_CATALOG)
    versions = {k: v for k, v in {SILVER_PLAYS: v_plays, SILVER_PLAY_COUNTS: v_counts,
                                  SILVER_CATALOG: v_catalog}.items() if v is not None}
    if not versions.keys() & {SILVER_PLAYS, SILVER_PLAY_COUNTS}:
        raise EncoreError("silver has no plays yet: run `encore clean --date D` first")
    source_versions = F.create_map(*[x for k, v in sorted(versions.items()) for x in (F.lit(k), F.lit(v))])

    parts = []
    if plays is not None:
        start = as_of - dt.timedelta(days=window - 1)
        parts.append(plays.where(F.col("date").between(F.lit(start), F.lit(as_of)))
                     .groupBy("user_id", "item_id")
                     .agg(F.count(F.lit(1)).alias("plays"), F.sum("ms_played").alias("ms_played"),
                          F.max("event_ts").alias("last_played"), F.first("artist_name", ignorenulls=True).alias("_name")))
    if counts is not None:
        latest = (counts.where(F.col("snapshot_date") <= F.lit(as_of)).groupBy("source")
                  .agg(F.max("snapshot_date").alias("snapshot_date")))
        parts.append(counts.join(latest, ["source", "snapshot_date"])
                     .groupBy("user_id", "item_id").agg(F.sum("play_count").alias("plays"))
                     .select("user_id", "item_id", "plays", F.lit(None).cast("long").alias("ms_played"),
                             F.lit(None).cast("timestamp").alias("last_played"), F.lit(None).cast("string").alias("_name")))
    merged = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    pairs = (merged.groupBy("user_id", "item_id")
             .agg(F.sum("plays").alias("plays"), F.sum("ms_played").alias("ms_played"),
                  F.max("last_played").alias("last_played"), F.first("_name", ignorenulls=True).alias("_name"))
             .withColumn("confidence", F.log1p("plays"))
             .withColumn("as_of_date", F.lit(as_of))
             .withColumn("source_versions", source_versions)
             .cache())
    try:
        n_pairs = pairs.count()
        if n_pairs == 0:
            raise EncoreError(f"no plays in the {window} days up to {as_of}: check that clean ran for those dates")
        run_info = {"job": "features", "as_of_date": as_of.isoformat(), **versions}
        lake.replace_partition(pairs, GOLD_INTERACTIONS, "as_of_date", as_of, run_info)

        if catalog is not None:
            item_tags = catalog.select("item_id", F.col("name").alias("_catalog_name"), "tags")
        else:
            item_tags = lake.empty("item_id string, _catalog_name string, "
                                   "tags array<struct<tag:string,count:bigint,first_tagged:date>>")
        ranked_tags = F.transform(F.slice(F.sort_array(F.transform(F.coalesce("tags", F.array()),
                                  lambda t: F.struct((-t["count"]).alias("o"), t.tag.alias("tag")))),
                                  1, cfg.top_tags_per_item), lambda t: t.tag)
        items = (pairs.groupBy("item_id")
                 .agg(F.sum("plays").alias("plays"), F.countDistinct("user_id").alias("listeners"),
                      F.first("_name", ignorenulls=True).alias("_event_name"))
                 .join(item_tags, "item_id", "left")
                 .select("item_id", F.coalesce("_catalog_name", "_event_name").alias("name"),
                         ranked_tags.alias("top_tags"), "plays", "listeners")
                 .withColumn("popularity_rank", F.row_number().over(
                     Window.orderBy(F.desc("listeners"), F.desc("plays"), "item_id")))
                 .withColumn("as_of_date", F.lit(as_of)).withColumn("source_versions", source_versions))
        lake.replace_partition(items, GOLD_ITEMS, "as_of_date", as_of, run_info)

        tag_share = (item_tags.select("item_id", F.explode("tags").alias("t"))
                     .select("item_id", F.col("t.tag").alias("tag"), F.col("t.count").alias("n"))
                     .withColumn("share", F.col("n") / F.sum("n").over(Window.partitionBy("item_id"))))
        user_tags = (pairs.join(tag_share, "item_id").groupBy("user_id", "tag")
                     .agg(F.sum(F.col("plays") * F.col("share")).alias("w"))
                     .withColumn("_r", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("w"), "tag")))
                     .where(F.col("_r") <= cfg.top_tags_per_user)
                     .withColumn("weight", F.col("w") / F.sum("w").over(Window.partitionBy("user_id")))
                     .groupBy("user_id")
                     .agg(F.sort_array(F.collect_list(F.struct(F.col("_r"), "tag", "weight"))).alias("_d")))
        profiles = (pairs.groupBy("user_id").agg(F.sum("plays").alias("plays"), F.countDistinct("item_id").alias("distinct_items"))
                    .join(user_tags, "user_id", "left")
                    .select("user_id", "plays", "distinct_items",
                            F.transform("_d", lambda x: F.struct(x.tag.alias("tag"), x.weight.alias("weight"))).alias("tag_distribution"),
                            F.transform(F.slice("_d", 1, 5), lambda x: x.tag).alias("top_tags"))
                    .withColumn("as_of_date", F.lit(as_of)).withColumn("source_versions", source_versions))
        lake.replace_partition(profiles, GOLD_USER_PROFILES, "as_of_date", as_of, run_info)
    finally:
        pairs.unpersist()
    out = {name: lake.read(name).where(F.col("as_of_date") == F.lit(as_of)).count()
           for name in (GOLD_INTERACTIONS, GOLD_ITEMS, GOLD_USER_PROFILES)}
    log.info("features as of %s: %s (silver versions %s)", as_of, out, versions)
    return out
