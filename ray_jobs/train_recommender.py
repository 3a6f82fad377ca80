"""train-recommender: gold snapshot -> Ray Tune search -> final LightFM fit -> evaluation against the
baselines -> MLflow run, registered model and promotion gate.

Splits (all from ``ray_jobs.recsys.split_holdout``, stable per (user, item)):
  test        = the protocol's held-out 20%; every reported number and the gate use it
  train       = the rest; the final model is fitted on all of it
  fit / valid = train split again the same way (seed + 1): the search trains on ``fit`` and early-
                stops and ranks trials on ``valid``; the EASE blend weight is chosen on ``valid`` too
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from encore.config import Config
from encore.errors import EncoreError
from ray_jobs import lightfm_model as lm
from encore import figures, tracking
from ray_jobs import recsys
from encore.delta_reader import read_snapshot
from ray_jobs.recommender_model import RecommenderBundle, load_bundle, pyfunc_model, pyfunc_signature
from schemas.table_names import GOLD_INTERACTIONS, GOLD_ITEMS

log = logging.getLogger(__name__)
BLEND_GRID = (0.0, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5)
METRIC = "ndcg_at_10"


@dataclass
class TrainResult:
    run_id: str
    model_version: int
    params: dict
    comparison: pd.DataFrame
    decision: tracking.GateDecision
    versions: dict[str, int]
    bundle: RecommenderBundle
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)


# The columns training reads: at a million listeners the others (a map and a timestamp per row) cost
# gigabytes as pandas objects.
GOLD_COLUMNS = {GOLD_INTERACTIONS: ["user_id", "item_id", "plays"], GOLD_ITEMS: ["item_id", "top_tags"]}


def load_gold(config: Config, as_of: dt.date | None, versions: dict[str, int] | None = None):
    """(the indexed plays and tags, the pinned reads with their rows dropped: only their schema is logged)."""
    versions = versions or {}
    reads = {name: read_snapshot(config, name, as_of, versions.get(name), columns=columns, arrow=True)
             for name, columns in GOLD_COLUMNS.items()}
    data = recsys.build_interactions(reads[GOLD_INTERACTIONS].frame, reads[GOLD_ITEMS].frame,
                                     what=f"as of {as_of or 'latest'}")
    return data, {name: replace(read, frame=read.frame.slice(0, 0)) for name, read in reads.items()}


# --- one trial: fit on `fit`, early-stop on `valid`, choose the blend weight ------------------

def assemble_bundle(data: recsys.Interactions, factors: lm.Factors, seen, blend: float, ease_lambda: float,
                    ease_max_items: int, with_ease: bool | None = None) -> RecommenderBundle:
    """The deployable bundle from fitted factors and the plays they were fitted on (plus EASE when
    blending, or when ``with_ease`` asks for it so the weight can still be varied)."""
    seen = seen.tocsr()
    items = weights = None
    if with_ease or (with_ease is None and blend > 0):
        items, weights = recsys.ease_matrix(seen, ease_lambda, ease_max_items)
    return RecommenderBundle(data.user_ids, data.item_ids, factors.user, factors.item, factors.item_bias, seen,
                             np.asarray((seen > 0).sum(axis=0)).ravel().astype(np.float32), blend, items, weights)


def _choose_blend(data: recsys.Interactions, factors: lm.Factors, fit, valid, settings: dict) -> tuple[float, float]:
    """The EASE weight (from BLEND_GRID) whose blend, scored exactly as the deployed bundle scores,
    gives the best validation NDCG@10. Every weight is ranked in one pass: each block of users is
    scored by LightFM and EASE once, not once per weight."""
    bundle = assemble_bundle(data, factors, fit, 0.0, settings["ease_lambda"], settings["ease_max_items"],
                             with_ease=True)

    by_weight = recsys.evaluate_variants(lambda rows: bundle.blended_scores(rows, BLEND_GRID), fit, valid,
                                         max_users=settings["eval_users"])
    best_w, best = 0.0, -1.0
    for w in BLEND_GRID:
        if by_weight[w][METRIC] > best + 1e-9:
            best_w, best = w, by_weight[w][METRIC]
    return best_w, best


def run_trial(params: dict, data: recsys.Interactions, fit, valid, settings: dict, report=None) -> dict:
    """Fit one configuration; ``report(metrics)`` is called at each evaluation (Ray Tune's report)."""
    started = time.time()
    last: dict = {}

    def on_eval(epoch: int, metrics: dict, seconds: float) -> bool:
        last.update({METRIC: metrics[METRIC], "epoch": epoch, "seconds_per_epoch": seconds, "started_at": started,
                     "reported_at": time.time(), "blend_weight": float("nan"), "score": float("nan")})
        if report:
            report(dict(last))
        else:   # a single fit: Tune's callbacks do not log it, and at a million listeners an epoch takes minutes
            log.info("fit: epoch %d, validation %s %.4f (%.0f s per epoch)", epoch, METRIC, metrics[METRIC], seconds)
        return False

    model, features, best_epoch, history = lm.fit(
        data, fit, params, seed=settings["seed"], threads=settings["threads"], validation=valid,
        eval_every=settings["eval_every"], patience=settings["patience"], on_eval=on_eval,
        eval_users=settings["eval_users"])
    if not history or not all(math.isfinite(h[METRIC]) for h in history):
        raise RuntimeError("LightFM produced non-finite validation scores")
    w, blended = (_choose_blend(data, lm.factors_of(model, features), fit, valid, settings)
                  if settings.get("blend", True) else (0.0, last[METRIC]))
    if not report:
        log.info("fit: best epoch %d; with EASE at weight %g, validation %s %.4f", best_epoch, w, METRIC, blended)
    final = {**last, "best_epoch": best_epoch, "best_lightfm": max(h[METRIC] for h in history),
             "blend_weight": w, "score": blended, "reported_at": time.time()}
    if report:
        report(final)
    return final


def _tune_trainable(config_params: dict, data, fit, valid, settings):
    from ray import tune
    params = {**settings["base_params"], **config_params}
    run_trial(params, data, fit, valid, settings, report=tune.report)


def log_trials_as_child_runs(trials: pd.DataFrame) -> None:
    """One nested MLflow run per Tune trial (its parameters, validation metrics and status), so MLflow's
    run comparison and parallel-coordinates views show the search."""
    import mlflow
    for row in trials.to_dict("records"):
        with mlflow.start_run(run_name=f"trial {row['trial']}", nested=True):
            mlflow.set_tags({"job": "train-recommender trial", "status": row["status"]})
            mlflow.log_params({f"lightfm.{k}": row[k] for k in search_space() if k in row})
            mlflow.log_metrics({f"valid.{k}": float(row[k]) for k in ("score", "best_lightfm", "blend_weight",
                                                                        "best_epoch", "seconds_per_epoch")
                                if row.get(k) is not None and math.isfinite(float(row[k]))})


def search_space() -> dict:
    from ray import tune
    return {
        "no_components": tune.choice([64, 128, 192]),
        "learning_rate": tune.loguniform(0.02, 0.06),
        "loss": tune.choice(["warp", "warp", "bpr"]),
        "item_alpha": tune.choice([0.0, 1e-6, 1e-5]),
        "max_sampled": tune.choice([30, 50, 100]),
        "tag_share": tune.uniform(0.6, 0.9),
        "weighting": tune.choice(["binary", "log"]),
        "user_tag_share": tune.choice([0.0, 0.0, 0.3]),
    }


def _progress_callback(total: int):
    """Logs each trial's end, so a long search shows where it is (Tune's own output is off)."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self):
            self.ended = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            log.info("trial %s: epoch %s, validation NDCG@10 %.4f", trial.trial_id, result.get("epoch"), result.get(METRIC, 0))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ended += 1
            r = trial.last_result or {}
            log.info("search %d/%d: trial %s ended at epoch %s, LightFM %.4f, with blend %.4f (w=%s)", self.ended, total,
                     trial.trial_id, r.get("epoch"), r.get("best_lightfm", r.get(METRIC, float("nan"))),
                     r.get("score", float("nan")), r.get("blend_weight"))

        def on_trial_error(self, iteration, trials, trial, **info):
            self.ended += 1
            log.warning("search %d/%d: trial %s failed (it can never be chosen)", self.ended, total, trial.trial_id)
    return Progress()


def search(config: Config, data, fit, valid, settings: dict, trials: int) -> tuple[dict, dict, pd.DataFrame]:
    """Ray Tune random search (seeded) with ASHA early stopping; returns (params, final metrics, trials table)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from encore.ray_runtime import connect
    connect(config)
    rc = config.recommender
    storage = Path(config.path("ray_storage")).resolve() if "://" not in config.path("ray_storage") \
        else config.path("ray_storage")
    trainable = tune.with_resources(
        tune.with_parameters(_tune_trainable, data=data, fit=fit, valid=valid, settings=settings),
        {"cpu": settings["threads"]})
    tuner = tune.Tuner(
        trainable, param_space=search_space(),
        tune_config=tune.TuneConfig(
            num_samples=trials, max_concurrent_trials=rc.search.max_concurrent or None,
            # The configured parameters are always the first trial, so a search never does worse than them.
            search_alg=BasicVariantGenerator(random_state=settings["seed"], points_to_evaluate=[
                {k: settings["base_params"][k] for k in search_space()}]),
            scheduler=ASHAScheduler(metric=METRIC, mode="max", time_attr="training_iteration",
                                    grace_period=rc.search.grace_evaluations,
                                    max_t=max(1, settings["base_params"]["epochs"] // settings["eval_every"]) + 1)),
        run_config=tune.RunConfig(name=f"recommender-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}",
                                  storage_path=str(storage), verbose=0, callbacks=[_progress_callback(trials)],
                                  failure_config=tune.FailureConfig(max_failures=0)))
    grid = tuner.fit()
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        finished = metrics.get("score") is not None and math.isfinite(metrics["score"])
        row = {"trial": Path(result.path).name if result.path else "?",
               "status": "error" if result.error else ("ok" if finished else "stopped early"),
               **{k: result.config.get(k) for k in search_space()}}
        row.update({k: metrics.get(k) for k in ("epoch", "best_epoch", "best_lightfm", "blend_weight", "score",
                                                 "seconds_per_epoch", "started_at", "reported_at")})
        row["error"] = str(result.error).splitlines()[0][:200] if result.error else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty or not (table["status"] == "ok").any():
        raise EncoreError(f"all {len(table)} search trials failed or were stopped early; first error: "
                          f"{table['error'].iloc[0] if len(table) else 'none'} (see {storage})")
    best = grid.get_best_result(metric="score", mode="max", scope="last", filter_nan_and_inf=True)
    params = {**settings["base_params"], **{k: best.config[k] for k in search_space()}}
    return params, dict(best.metrics), table


# --- the job ---------------------------------------------------------------------------------

def _settings(config: Config, params: dict) -> dict:
    rc = config.recommender
    return {"seed": rc.seed, "threads": rc.search.cpus_per_trial, "eval_every": rc.search.eval_every,
            "patience": rc.search.patience, "ease_lambda": rc.baselines.ease_lambda,
            "ease_max_items": rc.baselines.ease_max_items, "blend": rc.blend, "base_params": params,
            "eval_users": rc.eval_users}


def evaluate_champion(config: Config, model_name: str, data: recsys.Interactions, train, test) -> tuple[float, int] | None:
    """The current champion's score on this run's test split (ids mapped; unknown ids cannot score)."""
    current = tracking.champion(config, model_name)
    if current is None:
        return None
    bundle = load_bundle(f"models:/{model_name}@{tracking.CHAMPION}")
    score = remapped_score(bundle, data)
    return recsys.evaluate_scores(score, train, test, max_users=config.recommender.eval_users)[METRIC], current.version


def remapped_score(bundle: RecommenderBundle, data: recsys.Interactions):
    """A score function over ``data``'s indices from a bundle trained on possibly other ids."""
    user_map = pd.Index(bundle.user_ids).get_indexer(data.user_ids)
    item_map = pd.Index(bundle.item_ids).get_indexer(data.item_ids)
    known_items = item_map >= 0
    popularity = np.where(known_items, bundle.listeners[np.maximum(item_map, 0)], 0).astype(np.float32)

    def score(users: np.ndarray) -> np.ndarray:
        out = np.full((len(users), len(data.item_ids)), -1e9, dtype=np.float32)
        mapped = user_map[users]
        known = mapped >= 0
        if known.any():
            s = bundle.score(mapped[known])
            block = np.full((known.sum(), len(data.item_ids)), -1e9, dtype=np.float32)
            block[:, known_items] = s[:, item_map[known_items]]
            out[known] = block
        out[~known] = np.where(known_items, popularity, -1e9)
        return out
    return score


def comparison_table(data, train, test, final_score, lightfm_score, settings, label: str) -> pd.DataFrame:
    """Every baseline and model on the same test users. Each baseline is built just before its own
    evaluation and dropped after it: at a million listeners, item-kNN's and EASE's matrices together
    are gigabytes."""
    rows = []
    scorers = {"popularity": lambda: recsys.popularity(train), "item_knn": lambda: recsys.item_knn(train),
               "ease": lambda: recsys.ease(train, settings["ease_lambda"], settings["ease_max_items"]),
               "lightfm": lambda: lightfm_score}
    if label != "lightfm":
        scorers[label] = lambda: final_score
    for name, build in scorers.items():
        started = time.perf_counter()
        metrics = recsys.evaluate_scores(build(), train, test, max_users=settings["eval_users"])
        rows.append({"model": name, **metrics, "seconds": time.perf_counter() - started})
        log.info("test split: %s %s %.4f (%.0f s)", name, METRIC, metrics[METRIC], rows[-1]["seconds"])
    return pd.DataFrame(rows)


def train_recommender(config: Config, as_of: dt.date | None, *, search_trials: int | None = None,
                      versions: dict[str, int] | None = None, param_overrides: dict | None = None,
                      register: bool = True) -> TrainResult:
    import mlflow
    rc = config.recommender
    base = {**lm.DEFAULT_PARAMS, **rc.params.model_dump(), **(param_overrides or {})}
    settings = _settings(config, base)
    trials = rc.search.trials if search_trials is None else int(search_trials)

    data, reads = load_gold(config, as_of, versions)
    train, test = recsys.split_holdout(data, rc.holdout_share, rc.min_items, settings["seed"])
    fit, valid = recsys.split_holdout(data.with_plays(train), rc.holdout_share, rc.min_items,
                                      settings["seed"] + 1)
    if test.nnz == 0 or valid.nnz == 0:
        raise EncoreError(f"too little data to evaluate: no user has {rc.min_items} or more items "
                          f"({data.plays.nnz} interactions, {len(data.user_ids)} users)")
    log.info("recommender: %d users x %d items, %d train / %d test interactions", *data.shape, train.nnz, test.nnz)

    tracking.experiment(config, rc.experiment)
    with mlflow.start_run(run_name=f"train-recommender {as_of or 'latest'}") as run:
        mlflow.set_tags({"job": "train-recommender", "as_of_date": str(as_of or "latest")})
        for read in reads.values():
            tracking.log_delta_input(read.frame, read.name, read.path, read.version)
        if trials > 0:
            params, best, trial_table = search(config, data, fit, valid, settings, trials)
            mlflow.log_metrics({"search.trials": len(trial_table),
                                "search.failed_trials": int((trial_table["status"] == "error").sum()),
                                "search.stopped_early": int((trial_table["status"] == "stopped early").sum())})
            with tempfile.TemporaryDirectory() as tmp:
                trial_table.to_csv(Path(tmp) / "trials.csv", index=False)
                mlflow.log_artifact(str(Path(tmp) / "trials.csv"), "search")
            log_trials_as_child_runs(trial_table)
        else:
            params, trial_table = base, pd.DataFrame()
            best = run_trial(params, data, fit, valid, settings)
        params = {**params, "epochs": int(best["best_epoch"]), "blend_ease": float(best["blend_weight"])}
        mlflow.log_params({f"lightfm.{k}": v for k, v in params.items()})
        mlflow.log_metrics({"valid.ndcg_at_10": float(best["score"]), "valid.lightfm_ndcg_at_10": float(best["best_lightfm"])})

        started = time.perf_counter()
        models, features, _, _ = lm.fit(data, train, params, seed=settings["seed"], threads=rc.final_threads)
        fit_seconds = time.perf_counter() - started
        log.info("final fit on the whole training split: %d epochs in %.0f s", params["epochs"], fit_seconds)
        factors = lm.factors_of(models, features)
        w = float(params["blend_ease"])
        bundle = assemble_bundle(data, factors, train, w, settings["ease_lambda"], settings["ease_max_items"])
        label = "lightfm" if w <= 0 else f"lightfm+ease w={w:g}"
        table = comparison_table(data, train, test, bundle.score, factors.score, settings, label)
        candidate = float(table.loc[table["model"] == label, METRIC].iloc[0])
        mlflow.log_metrics({"final_fit_seconds": fit_seconds, "final_seconds_per_epoch": fit_seconds / max(1, params["epochs"])})
        for row in table.to_dict("records"):
            key = "candidate" if row["model"] == label else row["model"]
            mlflow.log_metrics({f"test.{key}.{k}": float(v) for k, v in row.items() if k not in ("model", "seconds")})
        mlflow.log_table(table, artifact_file="comparison.json")
        tracking.log_png(figures.grouped_bars(
            [m for m in ("ndcg_at_10", "recall_at_10") if m in table.columns],
            {row["model"]: [row[m] for m in ("ndcg_at_10", "recall_at_10") if m in table.columns]
             for row in table.to_dict("records")},
            "Candidate vs baselines on the held-out test split", "score"), "comparison.png")

        champion_eval = evaluate_champion(config, rc.model_name, data, train, test) if register else None
        with tempfile.TemporaryDirectory() as tmp:
            path = bundle.save(Path(tmp) / "bundle.npz")
            info = mlflow.pyfunc.log_model(
                name="model", python_model=pyfunc_model(), artifacts={"bundle": str(path)},
                registered_model_name=rc.model_name if register else None, signature=pyfunc_signature())
        version = int(info.registered_model_version) if register else 0
        decision = tracking.decide(candidate, champion_eval[0] if champion_eval else None,
                                   champion_eval[1] if champion_eval else None, METRIC, higher_is_better=True)
        if register:
            tracking.apply_gate(config, rc.model_name, version, decision)
        result = TrainResult(run.info.run_id, version, params, table, decision,
                             {r.name: r.version for r in reads.values()}, bundle, trial_table)
    return result
