"""Recommender on real parts: gold built by Spark into Delta, read with deltalake at pinned versions,
searched with real (local) Ray Tune, tracked in a real MLflow SQLite store, gated on the alias."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from encore.errors import EncoreError
from encore import tracking
from ray_jobs import recsys
from tests.conftest import make_config

DAY = dt.date(2026, 11, 20)
FAST = {  # small but real: a few epochs of small models, EASE over the few hundred items there are
    "ENCORE__RECOMMENDER__PARAMS__EPOCHS": "20",
    "ENCORE__RECOMMENDER__PARAMS__NO_COMPONENTS": "16",
    "ENCORE__RECOMMENDER__PARAMS__MAX_SAMPLED": "10",
    "ENCORE__RECOMMENDER__SEARCH__EVAL_EVERY": "5",
    "ENCORE__RECOMMENDER__SEARCH__GRACE_EVALUATIONS": "2",
    "ENCORE__RECOMMENDER__BASELINES__EASE_MAX_ITEMS": "400",
    "ENCORE__RECOMMENDER__PARAMS__ENSEMBLE": "2",
}
LONG_TRIALS = {
    "ENCORE__RECOMMENDER__PARAMS__EPOCHS": "300",
    "ENCORE__RECOMMENDER__SEARCH__EVAL_EVERY": "30",
    "ENCORE__RECOMMENDER__SEARCH__PATIENCE": "10",
    "ENCORE__RECOMMENDER__SEARCH__GRACE_EVALUATIONS": "10",
}


# --- protocol and metrics on hand-made data ---------------------------------------------------

def test_metrics_match_a_hand_computed_example():
    train = sp.csr_matrix(([1, 1], ([0, 1], [0, 1])), shape=(2, 6), dtype=np.float32)
    held = sp.csr_matrix(([1, 1, 1], ([0, 0, 1], [2, 3, 4])), shape=(2, 6), dtype=np.float32)
    recommended = np.array([[2, 5], [0, 4]])
    m = recsys.evaluate(recommended, np.array([0, 1]), held, train, k=2)
    ndcg_user0 = 1 / (1 + 1 / np.log2(3))   # hit at rank 1 of 2 relevant
    ndcg_user1 = 1 / np.log2(3)              # hit at rank 2 of 1 relevant
    assert m["precision_at_2"] == pytest.approx(0.5)
    assert m["recall_at_2"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["ndcg_at_2"] == pytest.approx((ndcg_user0 + ndcg_user1) / 2)
    assert m["coverage"] == pytest.approx(4 / 6)          # items 0, 2, 4, 5 of 6
    assert m["long_tail_share"] == pytest.approx(3 / 4)   # item 0 is the top 1% (ceil -> 1 item)


def test_top_k_excludes_seen_items_and_breaks_ties_by_index():
    seen = sp.csr_matrix(([1.0], ([0], [1])), shape=(1, 4))
    items, scores = recsys.top_k(lambda u: np.array([[1.0, 5.0, 1.0, 0.5]]), np.array([0]), seen, 3)
    assert items.tolist() == [[0, 2, 3]] and scores.tolist() == [[1.0, 1.0, 0.5]]


def test_a_large_evaluation_scores_one_fixed_sample_of_the_held_out_users():
    rng = np.random.default_rng(3)
    held = sp.random(500, 40, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    everyone = recsys.evaluation_users(held)
    assert everyone.tolist() == np.flatnonzero(np.diff(held.indptr) > 0).tolist()
    assert recsys.evaluation_users(held, max_users=len(everyone)).tolist() == everyone.tolist()
    sample = recsys.evaluation_users(held, max_users=50)
    assert len(sample) == 50 and set(sample) <= set(everyone) and (np.diff(sample) > 0).all()
    assert recsys.evaluation_users(held, max_users=50).tolist() == sample.tolist()   # every model, the same users
    train = sp.csr_matrix(held.shape, dtype=np.float32)
    metrics = recsys.evaluate_scores(recsys.popularity(held), train, held, max_users=50)
    assert metrics["evaluated_users"] == 50


def _interactions(pairs: list[tuple[str, str]]) -> recsys.Interactions:
    frame = pd.DataFrame(pairs, columns=["user_id", "item_id"]).assign(plays=3)
    items = pd.DataFrame({"item_id": sorted({i for _, i in pairs}), "top_tags": None})
    return recsys.build_interactions(frame, items)


def test_item_knn_keeps_each_items_nearest_neighbours_whatever_the_block_size():
    rng = np.random.default_rng(5)
    listeners = sp.random(300, 60, density=0.1, format="csr", random_state=rng, dtype=np.float32)
    # 60 more users who each played one item: their scores are the similarity's rows.
    plays = sp.vstack([listeners, sp.identity(60, format="csr", dtype=np.float32)]).tocsr()
    x = recsys.binary(plays).toarray()
    norms = np.linalg.norm(x, axis=0)
    cosine = (x.T @ x) / np.outer(norms, norms)
    np.fill_diagonal(cosine, 0)
    one_item = np.arange(300, 360)
    # With room for every neighbour, the score is the user's plays times the whole similarity.
    assert np.allclose(recsys.item_knn(plays, neighbours=60)(np.arange(360)), x @ cosine, atol=1e-5)
    # Pruned, each item keeps its 5 most similar items, whatever the block size.
    pruned = [recsys.item_knn(plays, neighbours=5, block_cells=cells)(one_item) for cells in (1, 60 * 7, 10**9)]
    assert all(np.array_equal(pruned[0], other) for other in pruned[1:])
    for j in range(60):
        kept = np.sort(pruned[0][:, j][pruned[0][:, j] > 0])
        assert len(kept) == 5 and np.allclose(kept, np.sort(cosine[:, j])[-5:], atol=1e-6)


def test_split_holds_out_a_fifth_of_users_with_five_items_stably():
    pairs = [(f"u{u}", f"i{i}") for u in range(30) for i in range(u % 12)]
    data = _interactions(pairs)
    train, held = recsys.split_holdout(data, seed=3)
    per_user = np.diff(data.plays.indptr)
    held_per_user = np.diff(held.indptr)
    assert (held_per_user[per_user < 5] == 0).all()
    assert (held_per_user[per_user >= 5] == np.maximum(1, np.floor(0.2 * per_user[per_user >= 5] + 0.5))).all()
    assert (train.multiply(held)).nnz == 0 and train.nnz + held.nnz == data.plays.nnz
    # Same seed, same split; another user's new pair does not move this user's held-out items.
    again = recsys.split_holdout(_interactions(pairs + [("zz-new", "i0")]), seed=3)[1]
    assert set(zip(*held.nonzero())) <= set(zip(*again.nonzero()))


def test_the_split_hashes_pairs_in_chunks_to_the_same_values(monkeypatch):
    data = _interactions([(f"u{u}", f"i{i}") for u in range(30) for i in range(u % 12)])
    whole = recsys.split_holdout(data, seed=3)[1]
    monkeypatch.setattr(recsys, "PAIR_HASH_CHUNK", 7)
    assert (recsys.split_holdout(data, seed=3)[1] != whole).nnz == 0


def test_tables_out_of_sync_stop_with_one_message():
    frame = pd.DataFrame({"user_id": ["u1"], "item_id": ["ghost"], "plays": [1]})
    with pytest.raises(EncoreError, match="out of sync"):
        recsys.build_interactions(frame, pd.DataFrame({"item_id": ["other"], "top_tags": [None]}))
    with pytest.raises(EncoreError, match="no rows"):
        recsys.build_interactions(frame.head(0), pd.DataFrame({"item_id": ["other"], "top_tags": [None]}))


def test_ids_are_found_whatever_their_arrow_type():
    import pyarrow as pa
    # deltalake may return string_view; pandas ids may be numbers; absent and null ids read -1
    found = recsys.positions(pa.array(["b", None, "x"], type=pa.string_view()), np.array(["a", "b"]))
    assert found.tolist() == [1, -1, -1]
    assert recsys.positions(pa.chunked_array([[3, 1]]), np.array([1, 3])).tolist() == [1, 0]
    assert recsys.positions(pa.array(["a"]), np.array([], dtype=object)).tolist() == [-1]


def test_the_gate_never_prints_a_winner_equal_to_the_champion():
    reason = tracking.decide(0.21331, 0.21328, 1, "ndcg_at_10", higher_is_better=True).reason
    assert reason == "candidate ndcg_at_10 0.21331 beats champion v1 0.21328"
    assert "does not beat champion v1 0.2133" in tracking.decide(0.2133, 0.2133, 1, "ndcg_at_10", True).reason


# --- the job on real Spark-built gold, Ray and MLflow --------------------------------------------

@pytest.fixture(scope="module")
def gold_home(spark, tmp_path_factory):
    from jobs.clean import clean_date
    from jobs.features import build_features
    from encore.sources.generate_logs import generate
    from jobs.ingest import ingest_landing
    from encore.lakehouse import Lakehouse
    home = tmp_path_factory.mktemp("recommender")
    lake = Lakehouse(make_config(home), spark)
    generate(lake.config.path("landing"), "synthetic", DAY, days=2, seed=5, events_per_day=5000, users=150,
             items=300, bots=0, workers=1)
    ingest_landing(lake)
    for d in (DAY - dt.timedelta(days=1), DAY):
        clean_date(lake, d)
    build_features(lake, DAY)
    yield home, lake
    import ray
    ray.shutdown()


def test_search_runs_trials_in_parallel_then_registers_and_the_model_loads_back(gold_home):
    import mlflow
    from ray_jobs.train_recommender import train_recommender
    home, _ = gold_home
    # Trials long enough (hundreds of epochs, no early stop) that they outlast the stagger of Ray
    # starting their two worker processes (0.7 s on a slow host, longer than a 20-epoch trial).
    config = make_config(home, **{**FAST, **LONG_TRIALS})
    result = train_recommender(config, DAY, search_trials=2)

    trials = result.trials
    assert len(trials) == 2 and (trials["status"] != "error").all()
    (a0, a1), (b0, b1) = trials[["started_at", "reported_at"]].to_numpy()
    assert a0 < b1 and b0 < a1, f"the two trials did not overlap in time: {a0:.2f}-{a1:.2f} and {b0:.2f}-{b1:.2f}"

    models = set(result.comparison["model"])
    assert {"popularity", "item_knn", "ease", "lightfm"} <= models
    by_model = result.comparison.set_index("model")["ndcg_at_10"]
    assert by_model.drop("popularity").max() > by_model["popularity"]

    assert result.decision.promoted and result.decision.reason == "no champion yet"
    champion = tracking.champion(config, "encore-recommender")
    assert champion == tracking.Champion(result.model_version, result.run_id)

    run = mlflow.get_run(result.run_id)
    assert run.data.params["source.gold.interactions.version"] == str(result.versions["gold.interactions"])
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {
        f"{n}@v{v}" for n, v in result.versions.items()}
    assert run.data.metrics["search.trials"] == 2
    assert "test.ease.ndcg_at_10" in run.data.metrics and "gate.candidate_score" in run.data.metrics
    # The comparison as a chart, and each trial as a child run (MLflow's compare and parallel-coordinates views).
    client = tracking.client(config)
    assert "comparison.png" in {a.path for a in client.list_artifacts(result.run_id)}
    children = mlflow.search_runs(experiment_ids=[run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert len(children) == 2 and set(children["tags.status"]) == set(trials["status"])
    assert children["params.lightfm.no_components"].notna().all() and children["metrics.valid.score"].notna().any()

    model = mlflow.pyfunc.load_model("models:/encore-recommender@champion")
    bundle = model.unwrap_python_model().bundle
    users, items = bundle.user_ids[:5], bundle.item_ids[:7]
    pairs = pd.DataFrame([(u, i) for u in users for i in items], columns=["user_id", "item_id"])
    predicted = model.predict(pairs)["score"].to_numpy()
    direct = result.bundle.score(np.arange(5))[:, :7].ravel()
    np.testing.assert_allclose(predicted, direct, rtol=1e-5, atol=1e-6)
    assert np.isnan(model.predict(pd.DataFrame({"user_id": ["nobody"], "item_id": [items[0]]}))["score"]).all()


def test_gate_refuses_a_worse_model_and_accepts_a_better_one(gold_home):
    from ray_jobs.train_recommender import train_recommender
    home, _ = gold_home
    gate_home = home / "gate"  # its own MLflow store; same gold tables
    env = {**FAST, "ENCORE__MLFLOW__TRACKING_URI": f"sqlite:///{gate_home}/mlflow.db",
           "ENCORE__MLFLOW__ARTIFACT_ROOT": str(gate_home / "artifacts"), "ENCORE__RECOMMENDER__BLEND": "false"}
    config = make_config(home, **env)
    weak = {"no_components": 2, "epochs": 1, "learning_rate": 0.001, "n_tags": 0}
    first = train_recommender(config, DAY, search_trials=0, param_overrides=weak)
    assert first.decision.promoted                                    # nothing to beat yet
    better = train_recommender(config, DAY, search_trials=0)
    assert better.decision.promoted and better.decision.champion_version == first.model_version
    assert better.decision.candidate_score > better.decision.champion_score
    worse = train_recommender(config, DAY, search_trials=0, param_overrides=weak)
    assert not worse.decision.promoted
    assert worse.decision.champion_score == pytest.approx(better.decision.candidate_score, abs=1e-9)
    assert tracking.champion(config, "encore-recommender").version == better.model_version


def test_failed_trials_never_become_champion(gold_home):
    from ray_jobs.train_recommender import train_recommender
    home, _ = gold_home
    fail_home = home / "failing"
    config = make_config(home, **FAST, ENCORE__MLFLOW__TRACKING_URI=f"sqlite:///{fail_home}/mlflow.db",
                         ENCORE__MLFLOW__ARTIFACT_ROOT=str(fail_home / "artifacts"))
    with pytest.raises(EncoreError, match="trials failed"):
        train_recommender(config, DAY, search_trials=2, param_overrides={"user_alpha": -1.0})
    assert tracking.champion(config, "encore-recommender") is None


def test_bad_inputs_stop_with_one_clear_message(gold_home):
    from ray_jobs.train_recommender import train_recommender
    home, lake = gold_home
    config = make_config(home, **FAST)
    with pytest.raises(EncoreError, match="no rows"):
        train_recommender(config, DAY - dt.timedelta(days=30), search_trials=0)
    with pytest.raises(EncoreError, match="has no version 99"):
        train_recommender(config, DAY, search_trials=0, versions={"gold.interactions": 99})
    with pytest.raises(EncoreError, match="no 'champion' version"):
        tracking.require_champion(make_config(home / "empty"), "encore-recommender", "run train-recommender first")


def test_a_vacuumed_version_is_named_not_crashed(gold_home, spark):
    from jobs.features import build_features
    from encore.delta_reader import read_snapshot
    home, lake = gold_home
    old = lake.version("gold.items")
    build_features(lake, DAY)  # rewrites the snapshot: the old version's files become unreferenced
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        spark.sql(f"VACUUM delta.`{lake.path('gold.items')}` RETAIN 0 HOURS")
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")
    with pytest.raises(EncoreError, match=f"version {old} can no longer be read"):
        read_snapshot(make_config(home), "gold.items", DAY, old)
    assert len(read_snapshot(make_config(home), "gold.items", DAY).frame) > 0


def _write_hetrec_folder(root, users: int = 60, artists: int = 120, seed: int = 3):
    """A small folder in HetRec's format whose listeners have two clusters of taste."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    rows = []
    for u in range(users):
        group = u % 2
        pool = np.arange(group, artists, 2)
        for a in rng.choice(pool, size=rng.integers(8, 16), replace=False):
            rows.append(f"{u + 2}\t{a + 51}\t{int(rng.integers(10, 900))}")
    (root / "user_artists.dat").write_text("userID\tartistID\tweight\n" + "\n".join(rows) + "\n")
    (root / "artists.dat").write_text("id\tname\turl\tpictureURL\n" + "".join(
        f"{a + 51}\tArtist {a}\tu\tp\n" for a in range(artists)))
    (root / "tags.dat").write_text("tagID\ttagValue\n1\tfolk\n2\tmetal\n")
    (root / "user_taggedartists.dat").write_text("userID\tartistID\ttagID\tday\tmonth\tyear\n" + "".join(
        f"2\t{a + 51}\t{1 + a % 2}\t1\t1\t2009\n" for a in range(artists)))
    return rows


@pytest.mark.e2e
def test_recommender_eval_writes_top10_in_hetrec_ids_and_leaves_the_main_lakehouse_alone(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    from tests.conftest import PROCESS_ENV
    rows = _write_hetrec_folder(tmp_path / "hetrec")
    main_home = tmp_path / "main-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    env.update({**PROCESS_ENV, **FAST, "ENCORE_HOME": str(main_home)})
    out = tmp_path / "top10.parquet"
    done = subprocess.run([str(Path(sys.executable).parent / "encore"), "recommender-eval", "--hetrec-dir",
                           str(tmp_path / "hetrec"), "--out", str(out), "--trials", "0"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ndcg_at_10" in done.stdout and "item_knn" in done.stdout

    lists = pd.read_parquet(out)
    assert list(lists.columns) == ["user_id", "item_id", "rank"]
    assert lists["user_id"].dtype == np.int64 and lists["item_id"].dtype == np.int64
    given = {tuple(map(int, r.split("\t")[:2])) for r in rows}
    assert lists["user_id"].nunique() == len({u for u, _ in given})
    assert all(ranks == list(range(1, 11)) for ranks in lists.groupby("user_id")["rank"].apply(list))
    assert not given & set(zip(lists["user_id"], lists["item_id"]))     # never a row the user already has
    # Taste clusters: user u+2 plays artists a+51 with a = u (mod 2), so ids of opposite parity.
    assert ((lists["user_id"] % 2) != (lists["item_id"] % 2)).mean() > 0.8
    assert not (main_home / "lakehouse").exists() and not (main_home / "mlflow.db").exists()
