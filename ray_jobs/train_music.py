"""train-music: gold.music_sequences -> the music Transformer, trained with Ray Train (DDP), then
MLflow (model + tokenizer), registered as ``encore-music-model`` with a gated ``champion`` alias.

Examples: each piece becomes windows of ``[BOS, <style>, <key>, <tempo>, tokens...]`` of at most
``context`` tokens (the conditioning prefix is repeated in every window, so a sampler can start
from it). Conditioning tokens are appended after the tokenizer's vocabulary (``encore.music.Vocabulary``).

Fault tolerance: every epoch ends with a checkpoint (model, optimizer, epoch, step). A worker
failure restarts the workers from the latest checkpoint (``music.train.max_failures``); a rerun
with the same data and settings finds its run folder under ``paths.ray_storage`` and resumes there.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from encore import figures, music
from encore.config import Config
from encore.errors import EncoreError
from encore import tracking
from encore.delta_reader import read_table
from ray_jobs.music_model import ModelConfig, MusicTransformer, nll_totals, train_epoch
from schemas.table_names import GOLD_MUSIC_SEQUENCES

log = logging.getLogger(__name__)


def windows(frame, vocab: music.Vocabulary, context: int) -> np.ndarray:
    """(N, context) int64 training windows, PAD-filled; the prefix leads every window."""
    rows = []
    for rec in frame.itertuples():
        prefix = vocab.prefix(rec.style, rec.key, rec.tempo_bucket)
        body = list(rec.token_ids) + [vocab.eos_id]
        step = context - len(prefix)
        for start in range(0, len(body), step):
            chunk = prefix + body[start:start + step]
            if len(chunk) > len(prefix) + 1:
                rows.append(chunk + [vocab.pad_id] * (context - len(chunk)))
    if not rows:
        return np.zeros((0, context), dtype=np.int64)
    return np.asarray(rows, dtype=np.int64)


def device_and_gpu(config: Config) -> bool:
    wanted = config.music.train.use_gpu
    return torch.cuda.is_available() if wanted in (None, "auto") else bool(wanted)


# --- the per-worker loop ----------------------------------------------------------------------

def train_loop(cfg: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg["seed"] + rank)
    device = ray.train.torch.get_device()
    model_cfg = ModelConfig(**cfg["model"])
    model = MusicTransformer(model_cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.1, betas=(0.9, 0.95),
                                  fused=device.type == "cuda")
    start_epoch, step = 0, 0
    checkpoint = ray.train.get_checkpoint()
    state = None
    if checkpoint is not None:
        # Read in place from local storage; a remote checkpoint comes through a temporary copy that
        # is removed afterwards (to_directory() left a copy in /tmp on every restart).
        with checkpoint.as_directory() as resume_dir:
            state = torch.load(Path(resume_dir) / "state.pt", map_location="cpu", weights_only=False)
    elif cfg.get("resume_path"):
        state = torch.load(Path(cfg["resume_path"]) / "state.pt", map_location="cpu", weights_only=False)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        print(f"[music] rank {rank}: resumed after epoch {state['epoch']} at step {step}", flush=True)
    model = ray.train.torch.prepare_model(model)
    if cfg.get("compile") and device.type == "cuda":
        model = torch.compile(model)
    raw = model.module if hasattr(model, "module") else model

    train = torch.from_numpy(np.array(cfg["train"]))[rank::world]
    valid = torch.from_numpy(np.array(cfg["valid"]))[rank::world]
    batch = cfg["batch_size"]
    steps_per_epoch = max(1, math.ceil(len(train) / batch))
    total = steps_per_epoch * cfg["epochs"]
    pad = cfg["pad_id"]

    live = LiveMetrics(cfg.get("mlflow")) if rank == 0 else None

    def report(epoch: int, step: int, seconds: float, tokens_seen: int, train_loss: float) -> None:
        """Validation NLL over every worker's shard, then one report with rank 0's checkpoint."""
        nll, count = nll_totals(raw, valid, pad, device, batch)
        totals = torch.tensor([nll, float(count), float(tokens_seen)], dtype=torch.float64, device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        metrics = {"epoch": epoch, "step": step, "train_loss": train_loss,
                   "valid_nll_per_token": float(totals[0] / max(1.0, float(totals[1]))),
                   "valid_nll_per_note": float(totals[0] / max(1, cfg["valid_notes"])),
                   "tokens_per_second": float(totals[2]) / max(seconds, 1e-9), "epoch_seconds": seconds}
        if live is not None:
            live.log({k: metrics[k] for k in ("train_loss", "valid_nll_per_token", "valid_nll_per_note",
                                               "tokens_per_second")}, epoch)
        with tempfile.TemporaryDirectory() as tmp:
            report_checkpoint = None
            if rank == 0:
                torch.save({"model": raw.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                            "step": step, "model_config": model_cfg.to_dict()}, Path(tmp) / "state.pt")
                report_checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=report_checkpoint)

    if start_epoch >= cfg["epochs"]:  # a rerun of a finished run: report its final state again
        report(start_epoch - 1, step, 0.0, 0, float("nan"))
    for epoch in range(start_epoch, cfg["epochs"]):
        if cfg.get("fail_at_epoch") == epoch and not Path(cfg["fail_marker"]).exists():
            Path(cfg["fail_marker"]).write_text("failed once")
            raise RuntimeError(f"injected worker failure at epoch {epoch}")
        started = time.perf_counter()
        step, tokens_seen, mean_loss = train_epoch(
            model, optimizer, train, epoch=epoch, step=step, total_steps=total, batch=batch, lr=cfg["lr"],
            warmup_steps=cfg["warmup_steps"], seed=cfg["seed"], pad_id=pad, device=device,
            on_loss=(lambda at, loss: live.log({"train_loss_step": loss}, at)) if live is not None else None)
        report(epoch, step, time.perf_counter() - started, tokens_seen, mean_loss)


class LiveMetrics:
    """Metrics logged to the driver's MLflow run while training runs (rank 0 only), so the curves grow
    live; a store that cannot be reached is logged once and training goes on."""

    def __init__(self, target: dict | None):
        self.client, self.run_id = None, None
        if target:
            from mlflow import MlflowClient
            self.client, self.run_id = MlflowClient(target["tracking_uri"]), target["run_id"]

    def log(self, values: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(step)) for k, v in values.items() if v == v]
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as exc:   # the curve is a convenience: never stop training for it
            print(f"[music] live metrics to MLflow stopped: {str(exc).splitlines()[0]}", flush=True)
            self.client = None


# --- the driver -------------------------------------------------------------------------------

def _load_state_model(path: Path) -> MusicTransformer:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = MusicTransformer(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model


@torch.no_grad()
def validation_nll(model: MusicTransformer, windows_: np.ndarray, pad_id: int, batch: int = 32) -> float:
    """Mean NLL per (non-pad) token over validation windows, on the CPU: the gate's one yardstick."""
    total, count = nll_totals(model.to("cpu"), torch.from_numpy(windows_), pad_id, torch.device("cpu"), batch)
    return total / max(1, count)


@dataclass
class MusicTrainResult:
    run_id: str
    model_version: int
    metrics: dict
    history: list[dict]
    decision: tracking.GateDecision
    checkpoint: str  # where Ray stored the final checkpoint (a path or a storage URI)
    resumed_from_epoch: int | None
    quality: "object" = None  # pandas DataFrame: the per-style quality report


def _settings(config: Config):
    return config.music.train


def _latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("checkpoint_*"), key=lambda p: p.stat().st_mtime) if run_dir.is_dir() else []
    for path in reversed(found):
        if (path / "state.pt").is_file():
            return path
    return None


@dataclass
class Prepared:
    """What a training needs from gold.music_sequences and the tokenizer, for Ray Train or a torch-only runner."""
    frame: "object"  # pandas DataFrame of gold.music_sequences
    read: "object"   # the Delta read (name, path, version)
    tokenizer_path: Path
    tokenizer_sha256: str
    vocab: music.Vocabulary
    train_windows: np.ndarray
    valid_windows: np.ndarray
    valid_notes: int
    model_cfg: ModelConfig


def prepare(config: Config, version: int | None = None) -> Prepared:
    settings = _settings(config)
    read = read_table(config, GOLD_MUSIC_SEQUENCES, version)
    frame = read.frame
    if frame.empty:
        raise EncoreError("gold.music_sequences is empty: run `encore corpus` first")
    tokenizer_path = Path(config.path("artifacts")) / "music_tokenizer.json"
    if not tokenizer_path.is_file():
        raise EncoreError(f"tokenizer {tokenizer_path} is missing: run `encore corpus` to rebuild it")
    sha = hashlib.sha256(tokenizer_path.read_bytes()).hexdigest()
    stale = set(frame["tokenizer_sha256"]) - {sha}
    if stale:
        raise EncoreError(f"gold.music_sequences was tokenized with another tokenizer than {tokenizer_path}: "
                          "rerun `encore corpus` so both match")
    vocab = music.Vocabulary.of(music.load_tokenizer(tokenizer_path))
    context = settings.context
    train_frame, valid_frame = frame[frame["split"] == "train"], frame[frame["split"] == "validation"]
    if valid_frame.empty:
        valid_frame = train_frame.iloc[: max(1, len(train_frame) // 20)]
    train_windows, valid_windows = windows(train_frame, vocab, context), windows(valid_frame, vocab, context)
    if len(train_windows) == 0:
        raise EncoreError("no training windows: the corpus has no training pieces with tokens")
    model_cfg = ModelConfig(vocab_size=vocab.size, context=context, d_model=settings.d_model,
                            n_layers=settings.n_layers, n_heads=settings.n_heads, dropout=settings.dropout)
    return Prepared(frame, read, tokenizer_path, sha, vocab, train_windows, valid_windows,
                    int(valid_frame["n_notes"].sum()), model_cfg)


def export_windows(config: Config, out: Path) -> Prepared:
    """Write the training's inputs to one .npz for ``ray_jobs/train_music_standalone.py`` (torch alone)."""
    prep = prepare(config)
    settings = _settings(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, train=prep.train_windows.astype(np.int16), valid=prep.valid_windows.astype(np.int16),
                        meta=np.array(json.dumps({
                            "pad_id": prep.vocab.pad_id, "valid_notes": prep.valid_notes,
                            "tokenizer_sha256": prep.tokenizer_sha256, "model": prep.model_cfg.to_dict(),
                            "train": {k: getattr(settings, k) for k in
                                      ("epochs", "batch_size", "lr", "warmup_steps", "seed")}})))
    return prep


def _ray_run_name(config: Config, prep: Prepared) -> str:
    """The Ray Train run's name: a hash of what it trains, so a rerun of the same training resumes it."""
    settings = _settings(config)
    identity = json.dumps({"model": prep.model_cfg.to_dict(), "data": f"{prep.read.version}:{prep.tokenizer_sha256}",
                           "epochs": settings.epochs, "lr": settings.lr, "batch": settings.batch_size,
                           "seed": settings.seed, "workers": settings.num_workers}, sort_keys=True)
    return "music-" + hashlib.sha256(identity.encode()).hexdigest()[:12]


def _ray_fit(config: Config, prep: Prepared, fail_at_epoch: int | None, live: dict | None = None):
    """Ray Train over the prepared windows; yields (checkpoint dir, history, final metrics, resumed-from epoch).
    ``live`` ({tracking_uri, run_id}) is the MLflow run rank 0 logs its curves to as it trains."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from encore.ray_runtime import connect
    settings = _settings(config)
    use_gpu = device_and_gpu(config)
    run_name = _ray_run_name(config, prep)
    storage = config.path("ray_storage")
    resume = _latest_checkpoint(Path(storage) / run_name) if "://" not in storage else None
    resumed_from = None
    if resume is not None:
        resumed_from = int(torch.load(resume / "state.pt", map_location="cpu", weights_only=False)["epoch"])
        log.info("train-music: resuming %s from %s (after epoch %d)", run_name, resume, resumed_from)
    loop_cfg = {"model": prep.model_cfg.to_dict(), "train": prep.train_windows, "valid": prep.valid_windows,
                "valid_notes": prep.valid_notes, "pad_id": prep.vocab.pad_id, "epochs": settings.epochs,
                "batch_size": settings.batch_size, "lr": settings.lr,
                "warmup_steps": settings.warmup_steps, "seed": settings.seed,
                "compile": settings.compile, "resume_path": str(resume) if resume else None,
                "fail_at_epoch": fail_at_epoch, "fail_marker": str(Path(storage) / f"{run_name}.failed-once"),
                "mlflow": live}
    log.info("train-music: %d train / %d validation windows of %d tokens, vocab %d, %s, %d worker(s)",
             len(prep.train_windows), len(prep.valid_windows), prep.model_cfg.context, prep.vocab.size,
             "GPU" if use_gpu else "CPU", settings.num_workers)
    connect(config)
    trainer = TorchTrainer(
        train_loop, train_loop_config=loop_cfg,
        scaling_config=ray.train.ScalingConfig(num_workers=settings.num_workers, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(name=run_name, storage_path=str(Path(storage).resolve()) if "://" not in storage
                                       else storage,
                                       failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)))
    result = trainer.fit()
    if result.error:
        raise EncoreError(f"music training failed: {result.error}")
    history = result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None else []
    tags = {"ray_run": run_name, "device": "cuda" if use_gpu else "cpu"}
    return result.checkpoint, history, dict(result.metrics), resumed_from, tags, settings.model_dump()


def _imported_fit(config: Config, prep: Prepared, run_dir: Path):
    """A run of ``train_music_standalone.py``: its state.pt and history.json, checked against these inputs."""
    history_path, state_path = run_dir / "history.json", run_dir / "state.pt"
    why = "train-music --import-run"
    if not (history_path.is_file() and state_path.is_file()):
        raise EncoreError(f"{why}: {run_dir} holds no standalone training run (state.pt and history.json): "
                          "give the folder train_music_standalone.py wrote to")
    record = json.loads(history_path.read_text())
    if record["tokenizer_sha256"] != prep.tokenizer_sha256:
        raise EncoreError(f"{why}: {run_dir} was trained on windows of another tokenizer than "
                          f"{prep.tokenizer_path}: export the windows again (--export-windows) and retrain")
    if record["model"] != prep.model_cfg.to_dict():
        raise EncoreError(f"{why}: {run_dir} holds a model of another shape ({record['model']}) than music.train "
                          f"sets ({prep.model_cfg.to_dict()}): import it with the settings it was trained with")
    import ray.train
    settings = _settings(config)
    tags = {"device": record["device"], "trained_by": "train_music_standalone", "stopped": record["stopped"]}
    params = {**settings.model_dump(), **record["train"]}  # what the run used, where it overrode the config
    return (ray.train.Checkpoint.from_directory(str(run_dir)), record["history"], record["history"][-1], None, tags,
            params)


def train_music(config: Config, *, fail_at_epoch: int | None = None, version: int | None = None,
                import_run: Path | None = None) -> MusicTrainResult:
    """Train with Ray Train (or import a torch-only run from ``import_run``), then log, register and gate it."""
    import mlflow
    prep = prepare(config, version)
    tracking.experiment(config, config.music.experiment)
    name = Path(str(import_run)).name if import_run else _ray_run_name(config, prep)
    # The run starts before training, so its curves grow while Ray Train runs (rank 0 logs them).
    with mlflow.start_run(run_name=f"train-music {name}") as run:
        live = {"tracking_uri": mlflow.get_tracking_uri(), "run_id": run.info.run_id}
        started = time.perf_counter()
        checkpoint, history, metrics, resumed_from, tags, train_params = (
            _imported_fit(config, prep, Path(import_run)) if import_run else
            _ray_fit(config, prep, fail_at_epoch, live))
        mlflow.log_metric("fit_seconds", time.perf_counter() - started)   # its timestamp marks the end of fit()
        # The final checkpoint is read where Ray stored it; from remote storage, through a temporary
        # copy removed at the end of the block (to_directory() left a copy in /tmp on every run).
        with checkpoint.as_directory() as checkpoint_dir:
            return _log_and_gate(config, prep, run, checkpoint, checkpoint_dir, history, metrics, resumed_from,
                                 tags, train_params, logged_live=not import_run)


def _log_and_gate(config: Config, prep: Prepared, run, checkpoint, checkpoint_dir: str, history: list[dict],
                  metrics: dict, resumed_from, tags: dict, train_params: dict, logged_live: bool) -> MusicTrainResult:
    import mlflow
    model_name = config.music.model_name
    sha, vocab, valid_windows = prep.tokenizer_sha256, prep.vocab, prep.valid_windows
    mlflow.set_tags({"job": "train-music", **tags})
    tracking.log_delta_input(prep.frame, prep.read.name, prep.read.path, prep.read.version)
    mlflow.log_params({**{f"model.{k}": v for k, v in prep.model_cfg.to_dict().items()},
                       **{f"train.{k}": v for k, v in train_params.items()}, "tokenizer_sha256": sha,
                       "train_windows": len(prep.train_windows), "valid_windows": len(valid_windows)})
    for row in ([] if logged_live else history):   # an imported run's curves, after the fact
        mlflow.log_metrics({k: float(row[k]) for k in ("train_loss", "valid_nll_per_token", "valid_nll_per_note",
                                                       "tokens_per_second") if k in row}, step=int(row["epoch"]))
    mlflow.log_artifact(str(prep.tokenizer_path), "tokenizer")
    candidate_nll = validation_nll(_load_state_model(Path(checkpoint_dir) / "state.pt"), valid_windows, vocab.pad_id)
    champion = tracking.champion(config, model_name)
    champion_score = None
    if champion is not None:
        champion_sha = mlflow.get_run(champion.run_id).data.params.get("tokenizer_sha256")
        if champion_sha == sha:
            from ray_jobs.music_bundle import load_generator
            generator = load_generator(f"models:/{model_name}@{tracking.CHAMPION}")
            champion_score = validation_nll(generator.model, valid_windows, vocab.pad_id)
        else:  # NLL over another vocabulary is not comparable: the new tokenizer's model wins
            log.info("train-music: the champion used another tokenizer; promoting the new model")
    from ray_jobs.music_bundle import log_music_model
    info = log_music_model(checkpoint_dir, prep.tokenizer_path, model_name)
    version_number = int(info.registered_model_version)
    decision = tracking.decide(candidate_nll, champion_score,
                               champion.version if champion else None, "valid_nll_per_token", higher_is_better=False)
    mlflow.log_metrics({"valid_nll_per_token": float(metrics["valid_nll_per_token"]),
                        "valid_nll_per_note": float(metrics["valid_nll_per_note"])},
                       step=int(metrics.get("epoch", 0)))   # the last epoch's point, not a second point at 0
    tracking.apply_gate(config, model_name, version_number, decision)
    quality = _quality_report(config, checkpoint_dir, prep.tokenizer_path, prep.frame)
    return MusicTrainResult(run.info.run_id, version_number, metrics, history, decision, checkpoint.path,
                            resumed_from, quality)


def _quality_report(config: Config, checkpoint_dir: str, tokenizer_path: Path, frame):
    """Per-style report of generated vs held-out pieces, logged to the active MLflow run."""
    import mlflow
    from ray_jobs.music_bundle import MusicGenerator
    from ray_jobs.music_quality import report
    section = config.music.report
    generator = MusicGenerator(Path(checkpoint_dir) / "state.pt", tokenizer_path)
    samples: dict = {}
    table = report(generator, frame, section.sketches_per_style, section.bars,
                   in_key=config.music.generate.in_key, tonic_frame=config.music.generate.tonic_frame, samples=samples)
    for row in table.to_dict("records"):
        for kind in ("generated", "real", "real_std", "distance"):
            if row[kind] == row[kind]:
                mlflow.log_metric(f"quality.{row['style']}.{row['metric']}.{kind}", row[kind])
    mlflow.log_table(table, artifact_file="quality_report.json")
    tracking.log_png(figures.quality_gaps(table.to_dict("records")), "quality_report.png")
    for style, sketch in sorted(samples.items()):   # what the validation sketches look like
        tracking.log_png(figures.piano_roll(sketch.midi, f"{style}, {sketch.key}, {sketch.tempo_bucket}, seed "
                                                         f"{sketch.seed}"), f"samples/{style}.png")
    log.info("music quality report:\n%s", table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return table
