"""train-music without Ray or MLflow, for a machine that has PyTorch alone (a lent GPU machine).

    encore train-music --export-windows windows.npz               # here: the training's inputs, one file
    python3 ray_jobs/train_music_standalone.py windows.npz out/    # there: bf16 and fused attention on a GPU
    encore train-music --import-run out/                           # here: log, register and gate it in MLflow

The epochs run the loop Ray Train's workers run (``music_model.train_epoch``), with the model shape
and training settings exported with the windows (``music.train``) unless overridden here. After
each epoch ``out/`` gets ``state.pt`` (the model in the Ray checkpoint's format, without the
optimizer) and ``history.json`` (per-epoch train loss, validation NLL per token and per note,
tokens/s). ``--deadline-minutes`` ends the run after the epoch that crosses it, and says so.

A CPU run of the reference model takes hours, so every epoch also writes ``out/resume.pt`` (the
optimizer, the step and the random state). Run the same command again and it goes on after the last
finished epoch, visiting the data as an uninterrupted run does; ``--deadline-minutes`` and a killed
process both leave a run that resumes.
Imports torch and numpy only: run it as a file, from the repository root.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray_jobs.music_model import ModelConfig, MusicTransformer, nll_totals, train_epoch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("windows", type=Path, help=".npz written by `encore train-music --export-windows`")
    parser.add_argument("out", type=Path, help="folder for state.pt and history.json")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--d-model", type=int, help="another model width than music.train's (a baseline size)")
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--compile", action="store_true", help="torch.compile (GPU only)")
    parser.add_argument("--deadline-minutes", type=float, help="stop after the epoch that crosses this")
    args = parser.parse_args(argv)

    data = np.load(args.windows)
    meta = json.loads(str(data["meta"]))
    settings = {**meta["train"], **{k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                                      ("lr", args.lr)) if v is not None}}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(settings["seed"])
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    model_cfg = ModelConfig(**{**meta["model"], **{k: v for k, v in (("d_model", args.d_model), ("n_layers", args.layers),
                                                                    ("n_heads", args.heads)) if v is not None}})
    model = MusicTransformer(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=0.1, betas=(0.9, 0.95),
                                  fused=device.type == "cuda")
    compiled = bool(args.compile and device.type == "cuda")
    settings["compile"] = compiled
    runner = torch.compile(model) if compiled else model
    train = torch.from_numpy(data["train"].astype(np.int64))
    valid = torch.from_numpy(data["valid"].astype(np.int64))
    if device.type == "cuda":
        train, valid = train.to(device), valid.to(device)  # a few hundred MB at most: no loader needed
    pad, batch = meta["pad_id"], settings["batch_size"]
    total = max(1, math.ceil(len(train) / batch)) * settings["epochs"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"[standalone] {len(train)} train / {len(valid)} validation windows, {model_cfg}, {settings}, on {name}",
          flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"tokenizer_sha256": meta["tokenizer_sha256"], "model": model_cfg.to_dict(), "train": settings,
              "device": name, "history": [], "stopped": "finished"}
    step, first = 0, 0
    resume = args.out / "resume.pt"
    if resume.is_file():
        step, first, record = _resume(resume, record, model, optimizer)
        print(f"[standalone] resuming {args.out} after epoch {first - 1} (step {step})", flush=True)
    began = time.perf_counter()
    for epoch in range(first, settings["epochs"]):
        started = time.perf_counter()
        step, tokens, mean_loss = train_epoch(runner, optimizer, train, epoch=epoch, step=step, total_steps=total,
                                              batch=batch, lr=settings["lr"], warmup_steps=settings["warmup_steps"],
                                              seed=settings["seed"], pad_id=pad, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        nll, count = nll_totals(model, valid, pad, device, batch=256 if device.type == "cuda" else 32)
        row = {"epoch": epoch, "step": step, "train_loss": mean_loss, "valid_nll_per_token": nll / max(1, count),
               "valid_nll_per_note": nll / max(1, meta["valid_notes"]), "tokens_per_second": tokens / seconds,
               "epoch_seconds": seconds}
        record["history"].append(row)
        torch.save({"model": {k: v.float().cpu() for k, v in model.state_dict().items()}, "epoch": epoch,
                    "step": step, "model_config": model_cfg.to_dict()}, args.out / "state.pt")
        (args.out / "history.json").write_text(json.dumps(record, indent=1))
        torch.save({"optimizer": optimizer.state_dict(), "model": model.state_dict(), "epoch": epoch, "step": step,
                    "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all(), "record": record},
                   resume.with_suffix(".tmp"))
        resume.with_suffix(".tmp").replace(resume)   # a kill while saving leaves the last epoch's
        print(f"[standalone] epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
        if args.deadline_minutes is not None and time.perf_counter() - began > args.deadline_minutes * 60 \
                and epoch + 1 < settings["epochs"]:
            record["stopped"] = f"deadline of {args.deadline_minutes} min after epoch {epoch}"
            (args.out / "history.json").write_text(json.dumps(record, indent=1))
            print(f"[standalone] {record['stopped']}", flush=True)
            break
    return 0


def _resume(path: Path, record: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """(step, next epoch, record so far) of the run in ``path``, whose model and optimizer are loaded;
    refuses a run of other windows or settings, which would mix two trainings in one model."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    mine = {k: record[k] for k in ("tokenizer_sha256", "model", "train")}
    theirs = {k: saved["record"][k] for k in mine}
    if mine != theirs:
        changed = sorted(k for k in mine if mine[k] != theirs[k])
        sys.exit(f"train_music_standalone: {path.parent} holds a run of other {' and '.join(changed)} "
                 f"({theirs}): give another output folder, or the same windows and flags to resume it")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return saved["step"], saved["epoch"] + 1, {**saved["record"], "stopped": "finished"}


if __name__ == "__main__":
    sys.exit(main())
