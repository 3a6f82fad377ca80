"""The music model: a decoder-only Transformer over REMI+BPE tokens, with conditioning tokens
(style, key, tempo bucket) at the start of every sequence, and batched sampling with a KV cache.

Written for speed: fused attention (``F.scaled_dot_product_attention``), pre-LayerNorm blocks,
tied input/output embeddings; on a GPU, bf16 autocast and optionally ``torch.compile``; float32
on the CPU. The same weights decode with or without the cache (a test holds both to the same
tokens for the same seed).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    context: int = 512
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward): 6 N + 12 L d T (PaLM appendix B), N counting the
        blocks' matrices and the tied output layer (vocab x d, a real matrix product per token; nanoGPT
        and llm.c count it too), not the position table."""
        n = self.n_layers * 12 * self.d_model ** 2 + self.vocab_size * self.d_model
        return 6 * n + 12 * self.n_layers * self.d_model * self.context


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * cfg.d_model, cfg.d_model))
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        shape = (b, t, self.n_heads, d // self.n_heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        # With a cache, the t new queries sit at the end: each may see every cached key and the new
        # ones up to itself. One new token (the sampling step) needs no mask at all.
        if cache is None or t > 1:
            past = k.shape[2] - t
            mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=past) if past else None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        x = x + F.dropout(self.proj(y.transpose(1, 2).reshape(b, t, d)), self.dropout, self.training)
        x = x + F.dropout(self.mlp(self.ln2(x)), self.dropout, self.training)
        return x, (k, v)


class MusicTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.position = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, caches: list | None = None, start: int = 0):
        """Logits for ``tokens`` (B, T) at positions start..start+T-1, and the updated caches."""
        t = tokens.shape[1]
        if start + t > self.cfg.context:
            raise ValueError(f"sequence of {start + t} tokens exceeds the model's context of {self.cfg.context}")
        positions = torch.arange(start, start + t, device=tokens.device)
        x = self.embed(tokens) + self.position(positions)
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if caches is None else caches[i])
            new_caches.append(kv)
        logits = self.ln_f(x) @ self.embed.weight.T  # tied embeddings
        return logits, new_caches

    def loss(self, tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
        """Mean next-token cross-entropy, ignoring padding."""
        logits, _ = self(tokens[:, :-1])
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                               ignore_index=pad_id)


def _filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    # Drop a token once the mass before it already reaches top_p (the first token always stays).
    drop = probs.cumsum(-1) - probs >= top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


@torch.no_grad()
def sample(model: MusicTransformer, prompts: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
           top_p: float = 0.95, seed: int | list[int] = 0, use_cache: bool = True, eos_id: int | None = None,
           stop_ids: list[int] | None = None, stop_count: int | None = None,
           banned: list[int] | None = None, banned_per_row: list[list[int]] | None = None,
           bar_banned_per_row: list[list[list[int]]] | None = None) -> torch.Tensor:
    """Continue each prompt row (B, P) by up to ``max_new_tokens`` tokens, all rows in one batch.

    Rows stop once they have produced ``stop_count`` tokens from ``stop_ids`` (e.g. bars; ``eos_id`` is
    then never sampled: a short piece's end would cut the sketch short), else at ``eos_id``; stopped
    rows are padded with ``eos_id``. ``seed`` is one seed per row (or one for
    all): a row's tokens depend only on its prompt and seed, with or without the cache, whatever
    else is in the batch. ``banned`` tokens (conditioning, padding) are never sampled, nor a row's
    ``banned_per_row`` tokens (e.g. notes outside its key); ``bar_banned_per_row[row][b]`` are not
    sampled in the row's bar ``b`` (bars counted by ``stop_ids``), e.g. notes off the tonic triad in
    the first and last bar.
    """
    model.eval()
    device = prompts.device
    batch = prompts.shape[0]
    seeds = seed if isinstance(seed, list) else [seed] * batch
    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    stop_tensor = torch.tensor(stop_ids or [], dtype=torch.long, device=device)
    out = prompts.clone()
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    stops = torch.zeros(batch, dtype=torch.long, device=device)
    limit = min(max_new_tokens, model.cfg.context - prompts.shape[1])
    row_mask = _row_mask(banned_per_row, batch, model, device)
    bar_mask = _bar_mask(bar_banned_per_row, batch, model, device)
    caches, start = None, 0
    step_input = prompts
    for _ in range(limit):
        with _decoding_attention(device):
            if use_cache:
                logits, caches = model(step_input, caches, start)
                start += step_input.shape[1]
            else:
                logits, _ = model(out)
        logits = logits[:, -1, :].float() / max(temperature, 1e-5)
        if banned:
            logits[:, banned] = float("-inf")
        if eos_id is not None and stop_count:
            logits[:, eos_id] = float("-inf")   # a bar budget ends the row, not a piece's end
        if row_mask is not None:
            logits = logits.masked_fill(row_mask, float("-inf"))
        if bar_mask is not None:
            # Before the first bar token and in bar b (after b + 1 bar tokens) the row is in bar b.
            bar = (stops - 1).clamp(0, bar_mask.shape[1] - 1)
            logits = logits.masked_fill(bar_mask[torch.arange(batch, device=device), bar], float("-inf"))
        probs = _filter_top_p(logits, top_p).softmax(-1).cpu()
        nxt = torch.cat([torch.multinomial(probs[i], 1, generator=generators[i]) for i in range(batch)]).to(device)
        if eos_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
        out = torch.cat([out, nxt[:, None]], dim=1)
        step_input = nxt[:, None]
        if eos_id is not None:
            done |= nxt == eos_id
        if len(stop_tensor) and stop_count:
            stops += torch.isin(nxt, stop_tensor) & ~done
            done |= stops >= stop_count
        if bool(done.all()):
            break
    return out


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``base`` at ``total`` steps."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, train: torch.Tensor, *, epoch: int, step: int,
                total_steps: int, batch: int, lr: float, warmup_steps: int, seed: int, pad_id: int,
                device: torch.device, on_loss=None, loss_every: int = 20) -> tuple[int, int, float]:
    """One epoch of clipped AdamW steps over ``train`` windows (N, context); returns (step, tokens, mean loss).

    The order is seeded per epoch, so a resumed run visits the data as an uninterrupted one does.
    ``model`` may be wrapped (DDP, torch.compile): it is only called. ``on_loss(step, mean_loss)`` is
    called every ``loss_every`` steps with the mean loss of those steps (the live training curve; one
    host sync per call, none in between).
    """
    model.train()
    steps = max(1, math.ceil(len(train) / batch))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    tokens, loss_sum = 0, torch.zeros((), device=device)
    window = torch.zeros((), device=device)   # the losses since the last on_loss call
    for i in range(steps):
        idx = order[i * batch:(i + 1) * batch]
        if len(idx) == 0:
            idx = order[:batch]
        x = train[idx.to(train.device)].to(device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, lr, warmup_steps)
        with autocast_for(device):
            logits, _ = model(x[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                   ignore_index=pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        tokens += int((x[:, 1:] != pad_id).sum())
        loss_sum += loss.detach()  # summed on the device: no host sync per step
        if on_loss is not None:
            window += loss.detach()
            if (i + 1) % loss_every == 0 or i + 1 == steps:
                on_loss(step, float(window) / (i % loss_every + 1))
                window.zero_()
    return step, tokens, float(loss_sum) / steps


@torch.no_grad()
def nll_totals(model: nn.Module, windows: torch.Tensor, pad_id: int, device: torch.device,
               batch: int = 32) -> tuple[float, int]:
    """Summed next-token NLL (nats) and the number of non-pad targets over ``windows``."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        x = windows[i:i + batch].to(device)
        with autocast_for(device):
            logits, _ = model(x[:, :-1])
        target = x[:, 1:]
        total += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                       ignore_index=pad_id, reduction="sum"))
        count += int((target != pad_id).sum())
    return total, count


def _row_mask(ids_per_row: list[list[int]] | None, batch: int, model: MusicTransformer,
              device: torch.device) -> torch.Tensor | None:
    if not ids_per_row:
        return None
    mask = torch.zeros(batch, model.cfg.vocab_size, dtype=torch.bool, device=device)
    for i, ids in enumerate(ids_per_row):
        mask[i, ids] = True
    return mask


def _bar_mask(ids_per_row_bar: list[list[list[int]]] | None, batch: int, model: MusicTransformer,
              device: torch.device) -> torch.Tensor | None:
    if not ids_per_row_bar or not any(any(bar) for bar in ids_per_row_bar):
        return None
    bars = max(1, max(len(row) for row in ids_per_row_bar))
    mask = torch.zeros(batch, bars, model.cfg.vocab_size, dtype=torch.bool, device=device)
    for i, row in enumerate(ids_per_row_bar):
        for b, ids in enumerate(row):
            mask[i, b, ids] = True
    return mask


def _decoding_attention(device: torch.device):
    """On CUDA, attention without cuDNN's: cuDNN builds a plan for every new sequence length, and every
    decoding step brings one. On an H200 a 12 x 768 model decoded at 61 ms per token with it and at
    4.4 ms without (tests/benchmarks/music-history.md); flash and memory-efficient attention need no plans."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; a no-op context on the CPU (float32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
