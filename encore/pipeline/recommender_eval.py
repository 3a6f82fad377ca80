"""recommender-eval: train on someone else's interactions and hand back top-10 lists they can score.

Given a HetRec Last.fm-2K folder whose ``user_artists.dat`` holds only training rows, this runs the
real pipeline (Spark ingest -> clean -> features, then train-recommender with its search) in a
temporary home with its own lakehouse and MLflow store, refits the chosen settings on *every*
given row, and writes Parquet ``user_id, item_id, rank`` (1..10) in HetRec's own ids for every user,
never recommending a row the user already has. The main lakehouse and MLflow store are untouched.
"""
from __future__ import annotations

import copy
import datetime as dt
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from encore.config import Config
from encore.errors import EncoreError

log = logging.getLogger(__name__)
SNAPSHOT = dt.date(2011, 12, 31)  # any fixed date: the folder is one snapshot


def _isolated(config: Config, home: Path) -> Config:
    """The same settings with everything that lives under home moved to ``home``."""
    settings = copy.deepcopy(config.settings)
    old = settings["home"]
    settings["home"] = str(home)
    for key, value in settings["paths"].items():
        if str(value).startswith(old):
            settings["paths"][key] = str(home) + str(value)[len(old):]
    for key in ("tracking_uri", "artifact_root"):
        value = str(settings["mlflow"].get(key) or "")
        if old in value:
            settings["mlflow"][key] = value.replace(old, str(home))
    if not str(settings["mlflow"]["tracking_uri"]).startswith("sqlite:///" + str(home)):
        settings["mlflow"]["tracking_uri"] = f"sqlite:///{home}/mlflow.db"
        settings["mlflow"]["artifact_root"] = str(home / "mlartifacts")
    if "://" in settings["paths"]["lakehouse"]:
        settings["paths"]["lakehouse"] = str(home / "lakehouse")
    return Config(profile=config.profile, settings=settings)


def _external_ids(ids: np.ndarray) -> pd.Series:
    series = pd.Series(ids.astype(str))
    numeric = pd.to_numeric(series, errors="coerce")
    return numeric.astype("int64") if numeric.notna().all() else series


def recommender_eval(config: Config, hetrec_dir: str, out: str, trials: int | None = None,
                     keep_home: bool = False) -> pd.DataFrame:
    from encore.sources import hetrec
    from jobs.clean import clean_date
    from jobs.features import build_features
    from jobs.ingest import ingest_hetrec
    from encore.lakehouse import open_lakehouse
    from ray_jobs import lightfm_model as lm
    from ray_jobs import recsys
    from ray_jobs.train_recommender import assemble_bundle, load_gold, train_recommender

    hetrec.check_dir(hetrec_dir)
    out_path = Path(out)
    if out_path.exists() and out_path.is_dir():
        raise EncoreError(f"--out {out} is a folder: give a file path such as {out.rstrip('/')}/top10.parquet")
    home = Path(tempfile.mkdtemp(prefix="encore-receval-"))
    local = _isolated(config, home)
    try:
        lake = open_lakehouse(local, "encore-recommender-eval")
        try:
            ingest_hetrec(lake, hetrec_dir, SNAPSHOT)
            clean_date(lake, SNAPSHOT)
            build_features(lake, SNAPSHOT)
        finally:
            lake.spark.stop()
        result = train_recommender(local, SNAPSHOT, search_trials=trials)
        print_comparison(result.comparison, f"held-out split of the given rows (as_of {SNAPSHOT})")

        data, _ = load_gold(local, SNAPSHOT, result.versions)
        rc = local.recommender
        params = result.params
        log.info("refitting %s on all %d given rows", params, data.plays.nnz)
        models, features, _, _ = lm.fit(data, data.plays, params, seed=rc.seed, threads=rc.final_threads)
        factors = lm.factors_of(models, features)
        bundle = assemble_bundle(data, factors, data.plays, float(params["blend_ease"]),
                                 rc.baselines.ease_lambda, rc.baselines.ease_max_items)
        users = np.arange(len(data.user_ids))
        items, _ = recsys.top_k(bundle.score, users, data.plays, 10)
        frame = pd.DataFrame({"user_id": np.repeat(data.user_ids, 10), "item_id": data.item_ids[items.ravel()],
                              "rank": np.tile(np.arange(1, 11, dtype=np.int32), len(users))})
        frame["user_id"] = _external_ids(frame["user_id"].to_numpy())
        frame["item_id"] = _external_ids(frame["item_id"].to_numpy())
        out_path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out_path, index=False)
        log.info("wrote %d lists to %s", len(users), out_path)
        return frame
    finally:
        if keep_home:
            log.info("kept the evaluation home at %s", home)
        else:
            shutil.rmtree(home, ignore_errors=True)


def print_comparison(table: pd.DataFrame, split: str) -> None:
    columns = ["model", "precision_at_10", "recall_at_10", "ndcg_at_10", "coverage", "long_tail_share"]
    print(f"\nRecommender comparison on the {split}:")
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
