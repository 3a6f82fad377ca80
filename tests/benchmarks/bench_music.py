"""Benchmark: music Transformer training throughput (and MFU on a GPU) and KV-cache generation speed.

    .venv/bin/python tests/benchmarks/bench_music.py                 # the configured model, CPU or GPU
    .venv/bin/python tests/benchmarks/bench_music.py --gpt2-small     # GPT-2 124M shape (12 x 768, 1024 ctx)
    python3 tests/benchmarks/bench_music.py --shape 12,768,1024,1100 --compile   # torch alone suffices

Training: forward + backward + AdamW steps on random token windows of the model's context
(throughput does not depend on which tokens they are), bf16 autocast and fused attention on a
GPU, float32 on the CPU. MFU = 6N + 12LdT FLOPs per token x tokens/s / the device's peak dense
bf16 FLOP/s (H100 SXM 989 TFLOP/s, H200 the same; unknown devices print n/a). Target on an H100:
>= 35% (llm.c's GPT-2 124M level).
Generation: 512 new tokens per row after a 4-token prompt, with the KV cache against recomputing
the whole prefix each step, same seed (the tokens are checked to be identical). Target: >= 10x.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ray_jobs.music_model import ModelConfig, MusicTransformer, autocast_for, sample  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def train_throughput(cfg: ModelConfig, device: torch.device, batch: int, steps: int, compile_: bool) -> float:
    model = MusicTransformer(cfg).to(device)
    if compile_ and device.type == "cuda":
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.context + 1), device=device)

    def step():
        with autocast_for(device):
            logits, _ = model(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * cfg.context * steps / (time.perf_counter() - started)


def generation(cfg: ModelConfig, device: torch.device, rows: int, new_tokens: int) -> tuple[float, float, bool]:
    model = MusicTransformer(cfg).to(device).eval()
    prompt = torch.randint(0, cfg.vocab_size, (rows, 4), device=device)
    times, outs = [], []
    for use_cache in (True, False):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with autocast_for(device):
            outs.append(sample(model, prompt, new_tokens, seed=list(range(rows)), use_cache=use_cache, top_p=1.0))
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    produced = rows * new_tokens
    return produced / times[0], produced / times[1], bool(torch.equal(outs[0], outs[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpt2-small", action="store_true", help="GPT-2 124M shape instead of the configured model")
    parser.add_argument("--shape", metavar="LAYERS,D_MODEL,CONTEXT,VOCAB",
                        help="any other shape, e.g. 12,768,1024,1100 (the gpu profile's); needs no Encore config")
    parser.add_argument("--batch", type=int, help="training batch (default 16 on GPU, 4 on CPU)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="torch.compile (GPU)")
    parser.add_argument("--rows", type=int, default=4, help="generation batch (0: training only)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.gpt2_small:
        cfg = ModelConfig(vocab_size=50304, context=1024, d_model=768, n_layers=12, n_heads=12, dropout=0.0)
    elif args.shape:
        layers, d_model, context, vocab = (int(v) for v in args.shape.split(","))
        cfg = ModelConfig(vocab_size=vocab, context=context, d_model=d_model, n_layers=layers,
                          n_heads=max(1, d_model // 64), dropout=0.0)
    else:
        from encore.config import load_config  # only here: a GPU machine with torch alone can run the others
        train = load_config().section("music")["train"]
        cfg = ModelConfig(vocab_size=1100, context=512, d_model=int(train["d_model"]), n_layers=int(train["n_layers"]),
                          n_heads=int(train["n_heads"]), dropout=0.0)
    batch = args.batch or (16 if device.type == "cuda" else 4)
    tps = train_throughput(cfg, device, batch, args.steps, args.compile)
    peak = peak_flops(device)
    mfu = cfg.flops_per_token() * tps / peak if peak else None
    gen_cfg = ModelConfig(**{**cfg.to_dict(), "context": max(cfg.context, 520)})
    cached, uncached, same = generation(gen_cfg, device, args.rows, 512) if args.rows else (float("nan"),) * 2 + (None,)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\ndevice: {name}; model: {cfg.n_layers} layers x {cfg.d_model}, context {cfg.context}, "
          f"vocab {cfg.vocab_size}, {sum(p.numel() for p in MusicTransformer(cfg).parameters()) / 1e6:.1f}M parameters")
    print(f"{'measure':<40} {'value':>14}")
    print(f"{'training tokens/s (batch ' + str(batch) + ')':<40} {tps:>14,.0f}")
    print(f"{'model FLOPs utilisation':<40} {(f'{mfu:.1%}' if mfu is not None else 'n/a (no known peak)'):>14}")
    print(f"{'generation tokens/s, KV cache':<40} {cached:>14,.0f}")
    print(f"{'generation tokens/s, no cache':<40} {uncached:>14,.0f}")
    print(f"{'KV cache speed-up at 512 tokens':<40} {cached / uncached:>13.1f}x")
    print(f"{'identical tokens with and without cache':<40} {str(same):>14}")


if __name__ == "__main__":
    main()
