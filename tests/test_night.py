"""One whole night on small data through the real parts: Spark + Delta, Ray (Tune, Train, Data),
MLflow, and the export folder. A recommender trained on the first date serves the second, where
two newcomers (one with tagged artists, one with an unknown artist) need the fallbacks."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from encore.errors import EncoreError
from tests.conftest import make_config
from tests.landing_helpers import event, write_landing
from tests.homes import TINY

D1, D2 = dt.date(2026, 11, 19), dt.date(2026, 11, 20)
K = 10
NIGHT = {
    **TINY,
    "ENCORE__GENERATE__USERS": "60", "ENCORE__GENERATE__ITEMS": "300", "ENCORE__GENERATE__EVENTS_PER_DAY": "3000",
    "ENCORE__GENERATE__DAYS": "2", "ENCORE__GENERATE__END_DATE": D2.isoformat(), "ENCORE__GENERATE__BOTS": "0",
    "ENCORE__RECOMMENDER__SEARCH__TRIALS": "0", "ENCORE__RECOMMENDER__PARAMS__EPOCHS": "10",
    "ENCORE__RECOMMENDER__PARAMS__NO_COMPONENTS": "16", "ENCORE__RECOMMENDER__PARAMS__ENSEMBLE": "1",
    "ENCORE__RECOMMENDER__SEARCH__EVAL_EVERY": "5",
    "ENCORE__SCORE__TOP_K": str(K), "ENCORE__SCORE__BLOCK_USERS": "16",
    "ENCORE__PACKS__POOL_PER_CONDITION": "3", "ENCORE__PACKS__CONDITIONS_PER_STYLE": "2",
    "ENCORE__PACKS__BARS": "2", "ENCORE__PACKS__BATCH": "4",
    # A model trained for seconds rarely stays in scale; here the checks only have to reject what
    # does not decode or has no notes (test_music covers the strict rules).
    "ENCORE__MUSIC__GENERATE__MIN_BAR_FILL": "0", "ENCORE__MUSIC__GENERATE__MIN_IN_SCALE": "0",
    "ENCORE__MUSIC__GENERATE__MIN_DIATONIC_SHARE": "0", "ENCORE__MUSIC__GENERATE__REQUIRE_KEY": "false",
    "ENCORE__MUSIC__GENERATE__MAX_SHARED_INTERVALS": "1000", "ENCORE__MUSIC__GENERATE__RETRIES": "1",
}


@pytest.fixture(scope="module")
def night(spark, tmp_path_factory):
    import ray
    from encore.sources.generate_logs import generate_from_config
    from jobs.clean import clean_date
    from jobs.features import build_features
    from jobs.ingest import ingest_landing
    from encore.lakehouse import Lakehouse
    from encore.pipeline.night import run_night
    from ray_jobs.train_recommender import train_recommender

    home = tmp_path_factory.mktemp("night")
    config = make_config(home, **NIGHT)
    lake = Lakehouse(config, spark)
    generate_from_config(config)
    ingest_landing(lake, [D1])
    clean_date(lake, D1)
    build_features(lake, D1)
    assert train_recommender(config, D1, search_trials=0).decision.promoted

    tagged = [r["item_id"] for r in lake.read("gold.items").where(f"as_of_date = DATE'{D1}' AND size(top_tags) > 0")
              .orderBy("item_id").limit(3).collect()]
    lines = [event(f"nc-t-{i}", user="newcomer_tagged", artist=a, ts=f"{D2}T1{i}:00:00Z") for i, a in enumerate(tagged)]
    lines += [event(f"nc-u-{i}", user="newcomer_untagged", artist="zz-unknown-artist", ts=f"{D2}T1{i}:30:00Z")
              for i in range(2)]
    write_landing(Path(config.path("landing")), D2.isoformat(), lines, "part-newcomers.jsonl.gz")

    report = run_night(lake, D2)
    yield config, lake, report
    ray.shutdown()


def _recs(lake, date=D2):
    return lake.read("warehouse.recommendations").where(f"run_date = DATE'{date}'").toPandas()


def test_the_night_trains_what_is_missing_and_runs_every_step(night):
    _, _, report = night
    steps = [s for s, _, _ in report.steps]
    assert steps == ["ingest", "clean", "features", "corpus (no music corpus yet)", "train-music (no champion yet)",
                     "score", "generate", "export", "validate", "report"]


def test_the_night_ends_with_a_report_drawn_from_the_ledger_the_tables_and_mlflow(night):
    config, lake, _ = night
    folder = Path(config.path("reports")) / f"run_date={D2}"
    sections = json.loads((folder / "report.json").read_text())["sections"]
    assert all(s["available"] for s in sections.values()), {k: s["note"] for k, s in sections.items()}
    records = {r["step"]: r for r in sections["night"]["data"]["steps"]}
    assert list(records) == ["ingest", "clean", "features", "ensure-models", "score", "generate", "export", "validate"]
    assert all(r["outcome"] == "succeeded" and r["seconds"] > 0 for r in records.values())
    # Versions written and rows, from the step's own Delta commits; versions read, as the step started.
    [plays_commit] = records["clean"]["writes"]["silver.plays"]
    kept = lake.read("silver.plays").where(f"date = DATE'{D2}'").count()
    assert plays_commit["rows"] == kept and plays_commit["operation"] == "WRITE"
    recs = _recs(lake)
    # The first night also created the table: its CREATE commit comes before the write.
    *_, recs_commit = records["score"]["writes"]["warehouse.recommendations"]
    assert recs_commit["operation"] == "WRITE" and recs_commit["rows"] == len(recs)
    gold_read = records["score"]["reads"]["gold.interactions"]
    assert {v["gold.interactions"] for v in recs["source_versions"]} == {gold_read}
    assert sections["recommendations"]["data"]["rows"] == len(recs)
    assert sections["recommendations"]["data"]["listeners"] == recs["user_id"].nunique()
    assert sections["quality"]["data"]["kept"][-1] == kept
    models = sections["models"]["data"]
    assert {r["model"] for r in models["recommender"]["comparison"]} >= {"popularity", "item_knn", "ease"}
    assert models["music model"]["quality"], "the music champion's quality report is charted"
    assert sections["inspiration"]["data"]["shown"]
    page = (folder / "report.html").read_text()
    assert f"<h1>Encore night of {D2}</h1>" in page and page.count("src='data:image/png;base64,") >= 8
    from encore import tracking
    import mlflow
    tracking.client(config)
    runs = mlflow.search_runs(experiment_names=[config.nightly.experiment],
                              filter_string=f"tags.job = 'report' AND tags.run_date = '{D2}'")
    assert len(runs) == 1
    logged = [a.path for a in mlflow.MlflowClient().list_artifacts(runs.iloc[0]["run_id"])]
    assert sorted(logged) == ["report.html", "report.json"]


def test_the_report_draws_what_it_can_when_mlflow_artifacts_and_the_export_are_gone(night, tmp_path):
    """A lost MLflow artifact store and an export removed by retention: the models section says "not
    available", every other section is drawn from the tables; a date with no night is one line, exit 2."""
    import os
    import shutil
    import subprocess
    import sys
    from encore.pipeline.night_report import build_report
    from tests.conftest import PROCESS_ENV
    from tests.homes import copy_home
    config, _, _ = night
    home = copy_home(Path(config.home), tmp_path / "home")
    shutil.rmtree(home / "exports")
    shutil.rmtree(home / "mlartifacts")
    copied = make_config(home, **NIGHT)
    result = build_report(copied, D2, to_mlflow=False)
    by_key = {s.key: s for s in result.sections}
    assert all(s.available for s in by_key.values())
    texts = [block for kind, block in by_key["models"].blocks if kind == "text"]
    assert len(texts) == 2 and all("not available in MLflow run" in t for t in texts), texts
    assert by_key["recommendations"].data["rows"] > 0 and by_key["inspiration"].data["shown"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    env.update({**PROCESS_ENV, **NIGHT, "ENCORE_HOME": str(home)})
    out = subprocess.run([str(Path(sys.executable).parent / "encore"), "report", "--date", "2026-10-01"], env=env,
                         capture_output=True, text=True, timeout=120)
    errors = [line for line in out.stderr.splitlines() if line.startswith("encore: error:")]
    assert out.returncode == 2 and len(errors) == 1 and "no night ran for 2026-10-01" in errors[0], out.stderr[-2000:]


def test_every_silver_user_gets_k_unplayed_recommendations_with_reasons(night):
    _, lake, _ = night
    recs = _recs(lake)
    silver_users = {r[0] for r in lake.read("silver.plays").where(f"date <= DATE'{D2}'").select("user_id").distinct()
                    .collect()}
    assert set(recs["user_id"]) == silver_users and {"newcomer_tagged", "newcomer_untagged"} <= silver_users
    per_user = recs.groupby("user_id")["rank"].agg(["count", "min", "max", "nunique"])
    assert (per_user["count"] == K).all() and (per_user["min"] == 1).all() and (per_user["max"] == K).all()
    assert (per_user["nunique"] == K).all()

    played = lake.read("gold.interactions").where(f"as_of_date = DATE'{D2}'").select("user_id", "item_id").toPandas()
    played_pairs = set(zip(played["user_id"], played["item_id"]))
    assert not any(pair in played_pairs for pair in zip(recs["user_id"], recs["item_id"]))

    model = recs[recs["strategy"] == "model"]
    assert len(model) >= 0.9 * len(recs) - 2 * K
    assert all(pair in played_pairs for pair in zip(model["user_id"], model["reason_item_id"]))
    names = dict(lake.read("gold.items").where(f"as_of_date = DATE'{D2}'").select("item_id", "name").toPandas()
                 .itertuples(index=False, name=None))
    assert all(reason == f"because you play {names[item]}" for reason, item in zip(model["reason"], model["reason_item_id"]))

    tagged = recs[recs["user_id"] == "newcomer_tagged"].sort_values("rank")
    assert tagged["strategy"].iloc[0] == "tag_profile" and set(tagged["strategy"]) <= {"tag_profile", "popularity"}
    assert tagged["reason"].iloc[0].startswith("because you like ")
    untagged = recs[recs["user_id"] == "newcomer_untagged"]
    assert set(untagged["strategy"]) == {"popularity"}
    row = lake.read("warehouse.recommendations").where(f"run_date = DATE'{D2}'").first()
    assert row["model_version"] == 1 and row["mlflow_run_id"] and row["source_versions"]["gold.interactions"] >= 0


def test_packs_decode_are_tied_to_recommendations_and_are_deterministic(night):
    import symusic
    from ray_jobs.packs import generate_packs
    config, lake, _ = night
    packs = lake.read("warehouse.inspiration_packs").where(f"run_date = DATE'{D2}'").toPandas()
    recs = _recs(lake)
    assert set(packs["user_id"]) == set(recs["user_id"]) and packs["pack_id"].is_unique
    stored = lake.read("warehouse.sketches").where(f"run_date = DATE'{D2}'").toPandas()
    assert stored["sketch_id"].is_unique                                           # each sketch once
    by_id = stored.set_index("sketch_id")
    bars = int(NIGHT["ENCORE__PACKS__BARS"])
    named = set()
    for pack in packs.itertuples():
        assert 2 <= len(pack.sketches) <= 4
        assert len({s["sketch_id"] for s in pack.sketches}) == len(pack.sketches)     # no repeats within a pack
        for ref in pack.sketches:
            sketch = by_id.loc[ref["sketch_id"]]
            assert (ref["style"], ref["key"], ref["tempo_bucket"]) == (sketch["style"], sketch["key"], sketch["tempo_bucket"])
            assert symusic.Score.from_midi(sketch["midi"]).note_num() == sketch["n_notes"] > 0
            assert len(sketch["chords"].split(" | ")) == bars and sketch["style"] in pack.styles
            named.add(ref["sketch_id"])
        top3 = recs[(recs["user_id"] == pack.user_id) & (recs["rank"] <= 3)].sort_values("rank")["item_id"].tolist()
        assert [s["item_id"] for s in pack.seed_items] == top3
    assert named <= set(stored["sketch_id"]) and len(stored) < int(packs["sketches"].apply(len).sum())
    assert dict(packs["data_versions"].iloc[0])["warehouse.recommendations"] >= 0

    again = generate_packs(lake, D2)
    assert again.short_packs == 0
    rerun = lake.read("warehouse.inspiration_packs").where(f"run_date = DATE'{D2}'").toPandas()
    assert len(rerun) == len(packs)
    before = {p.user_id: [s["sketch_id"] for s in p.sketches] for p in packs.itertuples()}
    after = {p.user_id: [s["sketch_id"] for s in p.sketches] for p in rerun.itertuples()}
    assert before == after
    restored = lake.read("warehouse.sketches").where(f"run_date = DATE'{D2}'").toPandas()
    assert dict(zip(restored["sketch_id"], restored["midi"])) == dict(zip(stored["sketch_id"], stored["midi"]))


def test_rescoring_a_date_replaces_it(night):
    from ray_jobs.score import score
    _, lake, _ = night
    before = _recs(lake)
    total = lake.read("warehouse.recommendations").count()
    score(lake, D2)
    after = _recs(lake)
    assert lake.read("warehouse.recommendations").count() == total == len(after)
    key = ["user_id", "rank", "item_id", "strategy"]
    assert before[key].sort_values(key).values.tolist() == after[key].sort_values(key).values.tolist()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_manifest_matches_files_and_a_crash_keeps_the_previous_export(night, monkeypatch):
    import pyarrow.parquet as pq
    import symusic
    from jobs import export
    from schemas import export as contract
    config, lake, _ = night
    export.export_run(lake, D2)                          # the warehouse may have been rewritten by other tests
    root = Path(config.path("exports"))
    folder = root / f"run_date={D2}"
    assert (folder / "_SUCCESS").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    contract.validate_manifest(manifest)
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert listed == on_disk - {"manifest.json", "_SUCCESS", "SHA256SUMS"}
    for f in manifest["files"]:
        assert _sha(folder / f["path"]) == f["sha256"] and (folder / f["path"]).stat().st_size == f["bytes"]
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.count(": OK\n") == len(listed), checked.stdout[-2000:]
    recs = pq.read_table(folder / "recommendations")
    sketches = pq.read_table(folder / "packs")
    assert recs.num_rows == manifest["datasets"]["recommendations"]["rows"] == len(_recs(lake))
    packs = lake.read("warehouse.inspiration_packs").where(f"run_date = DATE'{D2}'").toPandas()
    assert sketches.num_rows == manifest["datasets"]["packs"]["rows"] == int(packs["sketches"].apply(len).sum())
    assert recs.schema.names == [f.name for f in contract.RECOMMENDATIONS]
    assert sketches.schema.names == [f.name for f in contract.PACK_SKETCHES]
    frame = sketches.to_pandas()
    assert set(frame["midi_path"]) == {f"midi/{p.name}" for p in (folder / "midi").iterdir()}
    for path, sha in zip(frame["midi_path"], frame["midi_sha256"]):
        assert _sha(folder / path) == sha and symusic.Score.from_midi((folder / path).read_bytes()).note_num() > 0
    assert manifest["models"]["recommender"]["version"] == 1 and manifest["upstream_runs"]["score"]

    assert export.validate_export(lake, D2)["recommendations"] == recs.num_rows
    published = (folder / "manifest.json").read_bytes()

    def crash(store, staging, run_date):
        raise RuntimeError("injected crash between writing the files and publishing")
    monkeypatch.setattr(export.ExportStore, "publish", crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        export.export_run(lake, D2)
    assert (folder / "manifest.json").read_bytes() == published and (folder / "_SUCCESS").is_file()
    leftovers = [p for p in root.iterdir() if p.name.startswith(".staging-")]
    assert len(leftovers) == 1 and (leftovers[0] / "manifest.json").is_file()
    assert not (leftovers[0] / "_SUCCESS").exists()
    assert [p for p in root.rglob("_SUCCESS")] == [folder / "_SUCCESS"]

    monkeypatch.undo()
    export.export_run(lake, D2)                          # a rerun replaces the folder whole and tidies up
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    rows = {k: v["rows"] for k, v in json.loads((folder / "manifest.json").read_text())["datasets"].items()}
    assert rows == {k: v["rows"] for k, v in manifest["datasets"].items()}

    midi = next((folder / "midi").iterdir())
    midi.write_bytes(midi.read_bytes() + b"tampered")
    (folder / "unlisted.txt").write_text("x")
    with pytest.raises(EncoreError, match="failed validation") as failure:
        export.validate_export(lake, D2)
    assert f"{midi.relative_to(folder).as_posix()} differs" in str(failure.value)
    assert "unlisted.txt is not in the manifest" in str(failure.value)


def test_export_datasets_are_split_into_bounded_files_by_user(night, spark):
    """export.max_file_mb bounds each Parquet file; a user's rows stay in one file, sorted; validate still passes.
    Each dataset is 13-15 KB on this night, and a file carries ~6 KB of Parquet footer and Spark schema: 8 KB
    files split both. With export.notify_url, the published export's summary is POSTed there (a busy
    receiver first)."""
    TARGET_MB = 0.008
    import pyarrow.parquet as pq
    from encore.lakehouse import Lakehouse
    from jobs import export
    from tests.http_receiver import receiver
    config, _, _ = night
    with receiver(fail_first=1) as webhook:
        lake = Lakehouse(make_config(Path(config.home), **NIGHT, ENCORE__EXPORT__MAX_FILE_MB=str(TARGET_MB),
                                     ENCORE__EXPORT__NOTIFY_URL=webhook.url), spark)
        export.export_run(lake, D2)
    folder = Path(config.path("exports")) / f"run_date={D2}"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert webhook.statuses == [503, 200] and webhook.bodies[-1]["manifest_uri"] == (folder / "manifest.json").as_uri()
    assert webhook.bodies[-1]["rows"] == {k: v["rows"] for k, v in manifest["datasets"].items()}
    sizes = {f["path"]: f["bytes"] for f in manifest["files"]}
    for dataset, order in (("recommendations", ["user_id", "rank"]), ("packs", ["user_id", "sketch_index"])):
        files = manifest["datasets"][dataset]["files"]
        assert len(files) > 1 and all(sizes[f] <= 1.5 * TARGET_MB * 2 ** 20 for f in files), (dataset, files)
        frames = [pq.read_table(folder / f).to_pandas() for f in files]
        assert sum(len(f) for f in frames) == manifest["datasets"][dataset]["rows"]
        users = [set(f["user_id"]) for f in frames]
        assert sum(len(u) for u in users) == len(set().union(*users))      # no user in two files
        assert all(f[order].equals(f[order].sort_values(order, ignore_index=True)) for f in frames)
    assert export.validate_export(lake, D2)["packs"] == manifest["datasets"]["packs"]["rows"]


def test_with_a_soundfont_the_export_carries_audio_previews(night, spark):
    """Contract 1.1: audio/<sketch_id>.ogg beside every MIDI file, listed and checked like the rest."""
    import pyarrow.parquet as pq
    import soundfile
    from encore.lakehouse import Lakehouse
    from jobs import export
    from tests.conftest import require_audio
    font = require_audio()
    config, _, _ = night
    lake = Lakehouse(make_config(Path(config.home), **NIGHT, ENCORE__MUSIC__AUDIO__SOUNDFONT=str(font)), spark)
    folder = Path(config.path("exports")) / f"run_date={D2}"
    export.export_run(lake, D2)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["schema_version"] == "1.2.0"
    audio, midi = manifest["datasets"]["audio"], manifest["datasets"]["midi"]
    assert audio["rows"] == midi["rows"] > 0
    assert {Path(f).stem for f in audio["files"]} == {Path(f).stem for f in midi["files"]}
    frame = pq.read_table(folder / "packs").to_pandas()
    assert set(frame["audio_path"]) == set(audio["files"])
    samples, rate = soundfile.read(str(folder / audio["files"][0]))
    assert rate == 44100 and len(samples) > rate and abs(samples).max() > 0
    assert export.validate_export(lake, D2)["audio"] == audio["rows"]

    (folder / audio["files"][0]).unlink()
    with pytest.raises(EncoreError, match="failed validation") as failure:
        export.validate_export(lake, D2)
    assert f"{audio['files'][0]} is missing" in str(failure.value)


def test_an_object_store_export_is_published_by_a_pointer_written_last(night, spark, s3_endpoint, monkeypatch):
    """paths.exports on S3 (moto's server): the run goes to an attempt prefix, then _SUCCESS names it. A crash
    between the upload and _SUCCESS leaves the published run as it was; the next export removes the orphan."""
    import pyarrow.fs
    from encore.export_store import ExportStore
    from encore.lakehouse import Lakehouse
    from encore.notify import export_summary
    from jobs import export
    from tests.conftest import s3_client
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket="exports")
    for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    config, _, _ = night
    remote = {"ENCORE__PATHS__EXPORTS": "s3a://exports/encore", "ENCORE__SPARK__CONF__SPARK.HADOOP.FS.S3A.ENDPOINT": s3_endpoint,
              "ENCORE__SPARK__CONF__SPARK.HADOOP.FS.S3A.ENDPOINT.REGION": "us-east-1"}
    lake = Lakehouse(make_config(Path(config.home), **NIGHT, **remote), spark)

    def keys() -> set[str]:
        """The objects under the prefix, less the empty folder markers pyarrow leaves."""
        return {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="exports", Prefix="encore/")
                for o in page.get("Contents", []) if not o["Key"].endswith("/")}

    def pointer() -> dict:
        return json.loads(s3.get_object(Bucket="exports", Key=f"encore/run_date={D2}/_SUCCESS")["Body"].read())

    first = export.export_run(lake, D2)
    attempt = pointer()["attempt"]
    assert first.location == f"s3://exports/encore/run_date={D2}/{attempt}"
    manifest_key = f"encore/run_date={D2}/{attempt}/manifest.json"
    manifest = json.loads(s3.get_object(Bucket="exports", Key=manifest_key)["Body"].read())
    assert pointer()["manifest_sha256"] == hashlib.sha256(s3.get_object(Bucket="exports", Key=manifest_key)["Body"]
                                                            .read()).hexdigest()
    assert {f"encore/run_date={D2}/{attempt}/{f['path']}" for f in manifest["files"]} | {
        manifest_key, f"encore/run_date={D2}/{attempt}/SHA256SUMS", f"encore/run_date={D2}/_SUCCESS"} == keys()
    assert export.validate_export(lake, D2)["recommendations"] == manifest["datasets"]["recommendations"]["rows"]
    assert export_summary(lake.config, D2)["manifest_uri"] == f"s3://exports/encore/run_date={D2}/{attempt}/manifest.json"
    assert not list(Path(lake.config.path("export_staging")).iterdir())     # the local staging is gone once uploaded

    real_copy = pyarrow.fs.copy_files

    def upload_then_crash(*args, **kwargs):
        real_copy(*args, **kwargs)
        raise OSError("injected crash between the upload and _SUCCESS")
    with monkeypatch.context() as crashing:
        crashing.setattr(pyarrow.fs, "copy_files", upload_then_crash)
        with pytest.raises(EncoreError, match="cannot reach the object store.*injected crash.*spark.hadoop.fs.s3a.endpoint"):
            export.export_run(lake, D2)
    orphans = {k.split("/")[2] for k in keys() if k.split("/")[2].startswith("attempt=")} - {attempt}
    assert len(orphans) == 1 and pointer()["attempt"] == attempt          # readers still get the first run, whole
    assert ExportStore(lake.config).published(D2).folder.endswith(attempt)
    assert export.validate_export(lake, D2)["packs"] == manifest["datasets"]["packs"]["rows"]

    again = export.export_run(lake, D2)                                   # publishes anew and removes both others
    assert {k.split("/")[2] for k in keys() if "attempt=" in k} == {pointer()["attempt"]} != {attempt}
    assert again.location.endswith(pointer()["attempt"])
    ExportStore(lake.config).withdraw(D2)
    assert not keys()

    for setting, value, message in (
            ("ENCORE__SPARK__CONF__SPARK.HADOOP.FS.S3A.ENDPOINT", "http://127.0.0.1:9", "cannot reach the object store"),
            ("ENCORE__PATHS__EXPORTS", "s3a://no-such-bucket/x", "bucket of paths.exports .* does not exist")):
        broken = Lakehouse(make_config(Path(config.home), **NIGHT, **{**remote, setting: value}), spark)
        with pytest.raises(EncoreError, match=message):
            export.export_run(broken, D2)


def test_retention_keeps_the_newest_runs_and_the_current_one(tmp_path):
    from encore.export_store import ExportStore
    for day in ("2026-11-01", "2026-11-02", "2026-11-03", "2026-10-01"):
        (tmp_path / f"run_date={day}").mkdir()
    (tmp_path / "unrelated").mkdir()
    removed = ExportStore(make_config(tmp_path, ENCORE__PATHS__EXPORTS=str(tmp_path))).apply_retention(2, "2026-10-01")
    assert sorted(removed) == ["2026-11-01"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_date=2026-10-01", "run_date=2026-11-02",
                                                           "run_date=2026-11-03", "unrelated"]


def test_maintain_beside_a_running_night_breaks_neither(night):
    """`encore maintain` (its own process, as Airflow runs it) compacts and Z-orders the tables while this
    process rescores the date over and over: Delta's conflict handling and the retries keep both whole."""
    import os
    import subprocess
    import sys
    from ray_jobs.score import score
    from tests.conftest import PROCESS_ENV
    config, lake, _ = night
    before = _recs(lake)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    env.update({**PROCESS_ENV, **NIGHT, "ENCORE_HOME": str(config.home)})
    maintain = subprocess.Popen([str(Path(sys.executable).parent / "encore"), "maintain"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rescored = 0
    try:
        while maintain.poll() is None or rescored == 0:
            score(lake, D2)
            rescored += 1
        output = maintain.communicate(timeout=600)[0]
    finally:
        maintain.kill()
    assert maintain.returncode == 0, output[-3000:]
    assert "warehouse.recommendations" in output and "MLflow run" in output, output[-3000:]
    after = _recs(lake)
    key = ["user_id", "rank", "item_id", "strategy"]
    assert len(after) == len(before) and not after.duplicated(["user_id", "rank"]).any()
    assert before[key].sort_values(key).values.tolist() == after[key].sort_values(key).values.tolist()
    details = lake.spark.sql(f"DESCRIBE HISTORY delta.`{lake.path('warehouse.recommendations')}`").collect()
    assert "OPTIMIZE" in {d["operation"] for d in details}


def test_score_generate_and_export_killed_inside_their_write_and_rerun_lose_and_double_nothing(night, tmp_path,
                                                                                             monkeypatch):
    """Fault matrix rows (tests/test_faults.py has ingest, clean and features): on a copy of the night's home,
    score, generate and export each SIGKILLed, with the process group (driver, JVM, a local Ray's
    workers), once their first new data file is written and before their commit or publish; each is
    rerun. The date's lists and packs are then as before the kills, with no row twice, and the export
    validates with no staging left behind."""
    import os
    import sys
    from encore.lakehouse import Lakehouse
    from encore.pipeline.cli import main
    from tests.conftest import PROCESS_ENV, TEST_ENV
    from tests.homes import copy_home
    from tests.kills import kill_inside_write, kill_when
    config, lake, _ = night
    home = copy_home(Path(config.home), tmp_path / "home")
    copy = make_config(home, **NIGHT)
    killed = Lakehouse(copy, lake.spark, catalog=False)

    def outputs():
        recs = killed.read("warehouse.recommendations").where(f"run_date = DATE'{D2}'")
        packs = killed.read("warehouse.inspiration_packs").where(f"run_date = DATE'{D2}'")
        return (sorted(tuple(r) for r in recs.select("user_id", "rank", "item_id").collect()),
                sorted((r["user_id"], tuple(s["sketch_id"] for s in r["sketches"]))
                       for r in packs.select("user_id", "sketches").collect()))
    before = outputs()
    process_env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    process_env.update(PROCESS_ENV, **NIGHT, ENCORE_HOME=str(home))
    for key, value in {**TEST_ENV, **NIGHT, "ENCORE_HOME": str(home)}.items():
        monkeypatch.setenv(key, value)
    encore = str(Path(sys.executable).parent / "encore")
    tables = Path(copy.path("lakehouse")) / "warehouse"
    exports = Path(copy.path("exports"))

    kill_inside_write([encore, "score", "--date", D2.isoformat()], process_env, tables / "recommendations")
    assert main(["score", "--date", D2.isoformat()]) == 0
    kill_inside_write([encore, "generate", "--date", D2.isoformat()], process_env, tables / "inspiration_packs")
    assert main(["generate", "--date", D2.isoformat()]) == 0
    kill_when([encore, "export", "--date", D2.isoformat()], process_env,
              lambda: set(exports.glob(f".staging-run_date={D2}-*/recommendations/*.parquet")))
    assert [p.name for p in exports.iterdir() if p.name.startswith(".staging-")], "the kill left no staging to tidy"
    assert main(["export", "--date", D2.isoformat()]) == 0
    assert main(["validate", "--date", D2.isoformat()]) == 0

    after = outputs()
    assert after == before
    assert len(after[0]) == len(set((user, rank) for user, rank, _ in after[0]))
    assert len(after[1]) == len(set(user for user, _ in after[1]))
    assert not [p.name for p in exports.iterdir() if p.name.startswith(".")]


def test_a_date_without_landing_data_fails_first_and_writes_nothing(night):
    from encore.pipeline.night import run_night
    config, lake, _ = night
    missing = D2 + dt.timedelta(days=1)
    versions = {name: lake.version(name) for name in ("silver.plays", "warehouse.recommendations")}
    with pytest.raises(EncoreError, match=f"no landing data for {missing}"):
        run_night(lake, missing)
    assert {name: lake.version(name) for name in versions} == versions
    assert not (Path(config.path("exports")) / f"run_date={missing}").exists()


ANALYST_QUERIES = [   # docs/analyst.md's queries, in SQL both engines speak
    f"SELECT as_of_date, item_id, name, plays, listeners, popularity_rank, top_tags FROM gold.items "
    f"WHERE as_of_date = DATE'{D2}' ORDER BY popularity_rank LIMIT 10",
    f"SELECT reason, count(*) AS n FROM silver.plays_quarantine WHERE date = DATE'{D2}' GROUP BY reason ORDER BY reason",
    f"SELECT rank, item_name, strategy, reason FROM warehouse.recommendations WHERE run_date = DATE'{D2}' "
    f"AND user_id = (SELECT min(user_id) FROM warehouse.recommendations) ORDER BY rank LIMIT 10",
    f"SELECT strategy, count(DISTINCT user_id) AS users FROM warehouse.recommendations WHERE run_date = DATE'{D2}' "
    f"GROUP BY strategy ORDER BY strategy",
    f"SELECT user_id, styles, cardinality(sketches) AS n FROM warehouse.inspiration_packs WHERE run_date = DATE'{D2}' "
    f"ORDER BY user_id LIMIT 5",
]


@pytest.mark.parametrize("query", ANALYST_QUERIES)
def test_encore_sql_gives_spark_s_answers_from_duckdb(night, query):
    from encore import sql
    config, lake, _ = night
    lake.register_all()
    duck, _ = sql.run_duckdb(config, query, None)
    spark, _ = sql.run_spark(lake, query, None)
    assert duck.num_rows > 0
    assert [tuple(r.values()) for r in duck.to_pylist()] == [tuple(r.values()) for r in spark.to_pylist()]


def test_the_analyst_join_of_packs_and_their_sketches_names_every_pack_sketch(night):
    """docs/analyst.md's DuckDB query: packs name sketches by id, warehouse.sketches holds them once."""
    from encore import sql
    config, lake, _ = night
    query = (f"SELECT p.user_id, p.ref.sketch_id AS sketch_id, s.chords FROM (SELECT user_id, run_date, "
             f"unnest(sketches) AS ref FROM warehouse.inspiration_packs WHERE run_date = DATE'{D2}') p "
             f"JOIN warehouse.sketches s ON s.run_date = p.run_date AND s.sketch_id = p.ref.sketch_id")
    joined, _ = sql.run_duckdb(config, query, None)
    packs = lake.read("warehouse.inspiration_packs").where(f"run_date = DATE'{D2}'").toPandas()
    assert joined.num_rows == int(packs["sketches"].apply(len).sum()) > 0
    assert all(joined.column("chords").to_pylist())


def test_spark_sql_refuses_writes_unless_allowed_and_logs_them(night):
    from encore import sql
    config, lake, _ = night
    lake.register_all()
    before = lake.read("warehouse.recommendations").count()
    with pytest.raises(EncoreError, match=r"sql: DeleteFromTable changes data and `encore sql` is read-only"):
        sql.run_spark(lake, "DELETE FROM warehouse.recommendations WHERE rank > 5", None)
    with pytest.raises(EncoreError, match=r"sql: the query does not parse"):
        sql.run_spark(lake, "SELEC 1", None)
    assert lake.read("warehouse.recommendations").count() == before
    history, _ = sql.run_spark(lake, "DESCRIBE HISTORY silver.plays", 5)
    assert history.num_rows > 0 and "operation" in history.column_names
    sql.run_spark(lake, "ALTER TABLE silver.plays SET TBLPROPERTIES ('encore.note' = 'sql test')", None,
                  allow_writes=True)
    audit = (Path(config.home) / "logs" / "sql-writes.log").read_text().splitlines()
    assert audit[-1].endswith("ALTER TABLE silver.plays SET TBLPROPERTIES ('encore.note' = 'sql test')")


def _files_naming(root: Path, text: str) -> list[str]:
    """Files under ``root`` that hold ``text``: Parquet files decoded (every column of every row, as their
    pages may be compressed), every other file as raw bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def decoded(column) -> bytes:   # text columns as bytes: a raw line may not be valid UTF-8
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            return b"\n".join(v or b"" for v in column.cast(pa.large_binary()).to_pylist())
        return repr(column.to_pylist()).encode()
    needle = text.encode()
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if data[:4] == b"PAR1":
            data = b"\n".join(decoded(column) for column in pq.read_table(path).columns)
        if needle in data:
            hits.append(str(path.relative_to(root)))
    return hits


def test_bi_tools_query_the_sql_server_which_refuses_writes_and_stops_on_sigterm(night, tmp_path):
    """`encore sql-server` as its own process, queried with beeline (pyspark's HiveServer2 client, as DBeaver's
    driver is): the night's tables by name, a DELETE refused, a second server on the port refused with one
    line, SIGTERM a clean stop."""
    import os
    import signal
    import sys
    import pyspark
    from encore.devtools.waiting import wait_until
    from tests.conftest import PROCESS_ENV, free_port
    config, lake, _ = night
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    env.update(PROCESS_ENV, **NIGHT, ENCORE_HOME=config.home)
    encore = [str(Path(sys.executable).parent / "encore"), "sql-server", "--port", str(port)]
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(encore, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until("encore sql-server", lambda: "ready, read-only" in log.read_text(), 300, every=1,
                   died=lambda: f"exited with {server.returncode}: {log.read_text()[-3000:]}"
                   if server.poll() is not None else None)

        def beeline(statement: str) -> subprocess.CompletedProcess:
            return subprocess.run([str(Path(pyspark.__file__).parent / "bin" / "beeline"), "-u",
                                   f"jdbc:hive2://127.0.0.1:{port}/default", "-n", "analyst", "--silent=true",
                                   "--outputformat=csv2", "--showNestedErrs=false", "-e", statement],
                                  env=env, capture_output=True, text=True, timeout=120)
        expected = lake.read("warehouse.recommendations").where(f"run_date = DATE'{D2}'").count()
        answer = beeline(f"SELECT count(*) AS n FROM warehouse.recommendations WHERE run_date = DATE'{D2}'")
        assert answer.stdout.split()[-2:] == ["n", str(expected)], (answer.stdout[-2000:], answer.stderr[-2000:])
        refused = beeline("DELETE FROM warehouse.recommendations WHERE rank > 1")
        assert "encore sql-server is read-only: DeleteFromTable changes data" in refused.stdout + refused.stderr
        assert lake.read("warehouse.recommendations").where(f"run_date = DATE'{D2}'").count() == expected

        second = subprocess.run(encore, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and second.stderr.strip().splitlines() == [
            f"encore: error: sql-server: port {port} on 127.0.0.1 is in use (Address already in use): stop what holds "
            "it or pick another with --port (or sql_server.port)"], second.stderr
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0 and log.read_text().rstrip().endswith("encore sql-server: stopped")
    finally:
        if server.poll() is None:
            server.kill()


def test_forget_erases_a_listener_from_every_table_and_export_and_vacuum_leaves_no_byte(night, tmp_path,
                                                                                      monkeypatch, capsys):
    """`encore forget` on a copy of the night's home, then a VACUUM as if its window had passed (0 h): no
    file under the lakehouse or the exports names the id, the Delta logs included."""
    from encore.pipeline.cli import main
    from jobs.forget import salt, user_hash, user_tables
    from schemas.tables import TABLES
    from tests.conftest import TEST_ENV
    from tests.homes import copy_home
    config, lake, _ = night
    home = copy_home(Path(config.home), tmp_path / "home")
    for key, value in {**TEST_ENV, **NIGHT, "ENCORE_HOME": str(home)}.items():
        monkeypatch.setenv(key, value)
    copy = make_config(home, **NIGHT)
    from encore.lakehouse import Lakehouse
    erased = Lakehouse(copy, lake.spark, catalog=False)
    quarantined = {r["user_id"] for r in erased.read("silver.plays_quarantine").select("user_id").distinct().collect()}
    served = sorted({r["user_id"] for r in erased.read("warehouse.inspiration_packs").select("user_id").collect()}
                    & quarantined)
    listener = served[0]   # in every layer: bronze lines, silver, quarantine, gold, warehouse, the export
    roots = [Path(copy.path("lakehouse")), Path(copy.path("exports"))]
    assert all(_files_naming(root, listener) for root in roots)   # the scan finds what is there
    ids = tmp_path / "erase.txt"
    ids.write_text(f"# erasure requests of the day\n{listener}\nnever-a-listener\n")
    capsys.readouterr()

    assert main(["forget", "--users-file", str(ids)]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 listeners found; not in any table (nothing to remove): never-a-listener" in out, out
    assert f"exports published again without them: {D2}" in out, out
    for name in [t for t in user_tables() if erased.exists(t)]:
        table = erased.read(name)
        column = "user_id" if "user_id" in table.columns else "value"
        assert table.where(table[column].contains(listener)).count() == 0, name
    assert main(["validate", "--date", D2.isoformat()]) == 0
    audit = erased.read("ops.erasure_log").collect()
    assert len(audit) == 1 and audit[0]["user_hash"] == user_hash(salt(copy), listener)
    assert audit[0]["rows_removed"]["bronze.plays_raw"] > 0 and audit[0]["rows_removed"]["silver.plays_quarantine"] > 0
    assert audit[0]["exports_republished"] == [D2.isoformat()] and listener not in repr(audit[0].asDict())

    # A VACUUM past its window (0 h here, as `encore maintain --force` runs it): the files the erasure
    # replaced are deleted. (tests/test_maintain.py covers maintain itself.)
    spark = lake.spark
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        for name in [t for t in TABLES if erased.exists(t)]:
            spark.sql(f"VACUUM delta.`{erased.path(name)}` RETAIN 0 HOURS").collect()
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")
    left = [hit for root in roots for hit in _files_naming(root, listener)]
    assert left == [], "\n".join(left)

    # Asked again: nobody is found, which is one line and changes nothing.
    versions = {name: erased.version(name) for name in user_tables() + ["ops.erasure_log"] if erased.exists(name)}
    assert main(["forget", "--user", listener]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("encore: error: forget: none of the 1 listener ids is in any table"), err
    assert {name: erased.version(name) for name in versions} == versions
