"""`encore maintain` on a real lakehouse (Spark + Delta) and a real MLflow store: retention keeps the
newest dates, compaction Z-orders what the week wrote, VACUUM removes what no version in its window
needs while a champion's training versions stay readable, and unsafe settings are refused."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from encore.errors import EncoreError
from tests.conftest import make_config

DATES = [dt.date(2026, 11, 1) + dt.timedelta(days=i) for i in range(5)]
RECS = "warehouse.recommendations"
SKETCHES = "warehouse.sketches"
GOLD = "gold.interactions"


def _recommendations(spark, day: dt.date, users: int = 40):
    return spark.sql(f"""
        SELECT DATE'{day}' AS run_date, concat('u', lpad(CAST(id % {users} AS STRING), 4, '0')) AS user_id,
               CAST(id DIV {users} + 1 AS INT) AS rank, concat('a', CAST(id AS STRING)) AS item_id,
               'Artist' AS item_name, 1.0 / (id + 1) AS score, 'popularity' AS strategy, 'popular' AS reason,
               CAST(NULL AS STRING) AS reason_item_id, 'encore-recommender' AS model_name, 1 AS model_version,
               'run' AS mlflow_run_id, map('gold.interactions', CAST(1 AS BIGINT)) AS source_versions
        FROM range({users * 5})""")


def _sketches(spark, day: dt.date):
    return spark.sql(f"""
        SELECT DATE'{day}' AS run_date, concat('s', CAST(id AS STRING)) AS sketch_id, 'folk' AS style,
               'D major' AS key, 'medium' AS tempo_bucket, 100.0 AS tempo_bpm, 2 AS bars, id AS seed,
               'D | A' AS chords, 8 AS n_notes, 1.0 AS in_scale, 2 AS longest_shared_intervals,
               X'4D546864' AS midi, 'encore-music-model' AS model_name, 1 AS model_version, 'run' AS mlflow_run_id
        FROM range(4)""")


def _interactions(spark, day: dt.date, users: int = 40):
    return spark.sql(f"""
        SELECT DATE'{day}' AS as_of_date, concat('u', CAST(id % {users} AS STRING)) AS user_id,
               concat('a', CAST(id AS STRING)) AS item_id, CAST(id + 1 AS BIGINT) AS plays,
               CAST(NULL AS BIGINT) AS ms_played, log1p(id + 1) AS confidence,
               CAST(NULL AS TIMESTAMP) AS last_played, map('silver.plays', CAST(1 AS BIGINT)) AS source_versions
        FROM range({users * 3})""")


def _register_champion(config, name: str, params: dict, tags: dict | None = None) -> None:
    """A registered model whose champion's run pins table versions, as the training jobs' runs do."""
    import mlflow
    from encore import tracking
    tracking.experiment(config, "maintain-test")
    with mlflow.start_run() as run:
        mlflow.log_params(params)
        mlflow.set_tags(tags or {})
        mlflow.log_dict({"model": name}, "model/MLmodel.json")
    client = tracking.client(config)
    client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)


@pytest.fixture
def kept_lake(lake_factory, spark):
    """Five nights of recommendations (each date written twice: a rerun leaves removed files behind),
    sketches and gold snapshots. The recommender's champion pins the version of the recommendations
    that the second date's first write made, and the gold snapshot of the second date, as training does."""
    lake = lake_factory("home")
    pinned = None
    for day in DATES:
        for _ in range(2):
            lake.replace_partition(_recommendations(spark, day).repartition(3), RECS, "run_date", day)
            if day == DATES[1] and pinned is None:
                pinned = lake.version(RECS)
        for _ in range(2):
            lake.replace_partition(_sketches(spark, day), SKETCHES, "run_date", day)
        lake.replace_partition(_interactions(spark, day).repartition(3), GOLD, "as_of_date", day)
        if day == DATES[1]:
            gold_pinned = lake.version(GOLD)
    _register_champion(lake.config, lake.config.recommender.model_name,
                       {f"source.{RECS}.version": pinned, f"source.{GOLD}.version": gold_pinned},
                       {"as_of_date": str(DATES[1])})
    return lake, pinned, gold_pinned


def _config(lake, **overrides):
    return make_config(Path(lake.config.home), **{"ENCORE__MAINTAIN__KEEP__WAREHOUSE.RECOMMENDATIONS": "3",
                                                  "ENCORE__MAINTAIN__KEEP__GOLD.INTERACTIONS": "2", **overrides})


def test_maintain_keeps_the_newest_dates_compacts_vacuums_and_keeps_the_champion_s_versions(kept_lake, spark):
    import mlflow
    from encore.delta_reader import version_files
    from encore.lakehouse import Lakehouse
    from jobs.maintain import maintain
    lake, pinned, gold_pinned = kept_lake
    config = _config(lake, ENCORE__MAINTAIN__VACUUM_RETENTION_HOURS="0", ENCORE__MAINTAIN__LOG_RETENTION_HOURS="0")
    assert config.maintain.keep[RECS] == 3
    lake = Lakehouse(config, spark)
    before = {d: lake.read(RECS).where(f"run_date = DATE'{d}'").count() for d in DATES}

    with pytest.raises(EncoreError, match="below Delta's safety minimum of 168 hours"):
        maintain(lake)
    versions = {t: lake.version(t) for t in (RECS, SKETCHES)}
    dry = maintain(lake, force=True, dry_run=True)
    assert {t: lake.version(t) for t in versions} == versions and dry.run_id is None
    assert next(u for u in dry.tables if u.table == RECS).dates_deleted == [str(d) for d in DATES[:2]]

    result = maintain(lake, force=True)
    upkeep = {u.table: u for u in result.tables}
    recs = upkeep[RECS]
    assert recs.dates_deleted == [str(d) for d in DATES[:2]] and recs.rows_deleted == before[DATES[0]] * 2
    kept = sorted(r[0] for r in lake.read(RECS).select("run_date").distinct().collect())
    assert kept == DATES[2:]
    assert {d: lake.read(RECS).where(f"run_date = DATE'{d}'").count() for d in kept} == {d: before[d] for d in kept}
    assert recs.files_compacted >= 3 * 3 and recs.files_written == 3      # each kept date: 3 files into one
    assert upkeep[SKETCHES].dates_deleted == []                           # 5 dates: under the default 90
    # The sketches' rewrites are not pinned: a window of 0 hours removes every file no version needs now.
    assert upkeep[SKETCHES].retention_hours == 0 and upkeep[SKETCHES].files_vacuumed >= len(DATES)
    # The recommendations' window stretches back to the champion's version: its files are all still there.
    assert recs.retention_hours >= 1 and f"version {pinned}" in recs.note
    assert all(Path(uri.removeprefix("file://")).exists() for uri in version_files(config, RECS, pinned))
    # The champion's gold snapshot is neither deleted nor compacted, so no window has to stretch for it:
    # the deleted snapshots' files go at once, and the pinned version still reads the snapshot it trained on.
    gold = upkeep[GOLD]
    assert gold.dates_deleted == [str(d) for d in DATES[:1] + DATES[2:3]] and str(DATES[1]) in gold.note
    assert sorted(r[0] for r in lake.read(GOLD).select("as_of_date").distinct().collect()) == [DATES[1], *DATES[3:]]
    assert gold.retention_hours == 0 and gold.files_vacuumed >= 2 * 3
    assert gold.files_compacted == 2 * 3 and gold.files == 3 + 2          # the newest two compacted, the held one not
    snapshot = version_files(config, GOLD, gold_pinned, ("as_of_date", DATES[1]))
    assert len(snapshot) == 3 and all(Path(uri.removeprefix("file://")).exists() for uri in snapshot)
    assert result.lineage == ["encore-recommender v1: the table versions it was trained on are still readable"]
    # The log is cut at the newest checkpoint: the sketches' first versions are gone, the current one reads.
    # The pinned tables keep theirs: no checkpoint precedes the champion's versions.
    assert upkeep[SKETCHES].log_entries_deleted >= 10 and upkeep[SKETCHES].log_starts_at in lake.checkpoint_versions(SKETCHES)
    with pytest.raises(EncoreError, match="version 0 can no longer be read .*its log entries were deleted"):
        version_files(config, SKETCHES, 0)
    assert lake.read(SKETCHES).count() == 4 * len(DATES)
    assert recs.log_entries_deleted == 0 and gold.log_entries_deleted == 0
    run = mlflow.get_run(result.run_id)
    assert run.data.metrics[f"{RECS}.dates_deleted"] == 2 and run.data.metrics[f"{RECS}.files"] == 3

    # Someone vacuums by hand with no window: maintain says plainly which model lost its lineage.
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        spark.sql(f"VACUUM delta.`{lake.path(RECS)}` RETAIN 0 HOURS").collect()
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")
    again = maintain(lake, force=True)
    assert len(again.lineage) == 1 and again.lineage[0].startswith(
        f"encore-recommender v1: lineage lost, its training data can no longer be read: {RECS} v{pinned} (")


def test_settings_that_would_lose_data_are_refused_in_one_line(tmp_path):
    from jobs.maintain import check_settings
    config = make_config(tmp_path, **{"ENCORE__MAINTAIN__KEEP__SILVER.PLAYS": "30"})
    with pytest.raises(EncoreError, match=r"maintain.keep.silver.plays is 30, fewer dates than features need .* "
                                          r"keep at least 92"):
        check_settings(config, force=False)
    assert check_settings(make_config(tmp_path), force=False) == 168
    with pytest.raises(EncoreError, match=r"^maintain.log_retention_hours is 24, below Delta's safety minimum of 168 "):
        check_settings(make_config(tmp_path, ENCORE__MAINTAIN__LOG_RETENTION_HOURS="24"), force=False)
    with pytest.raises(Exception, match="unknown table 'silver.nothing'"):
        make_config(tmp_path, **{"ENCORE__MAINTAIN__KEEP__SILVER.NOTHING": "3"})
