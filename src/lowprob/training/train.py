"""Train the shipped models from the corpus recipe, resumably, and measure them for the card.

Every training sequence is ``[BOS] + 64 consecutive corpus tokens`` from one kind, drawn with the
mix below: the same shape as the benchmark's inputs (BOS at position 0, then text), so the model
is in-distribution at position 0. Batch ``s`` is drawn from an RNG seeded with ``(seed, s)``, so a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import io
import math
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lowprob.errors import LowprobError
from lowprob.files import atomic_path, atomic_write, output_lock, prepare_output
from lowprob.models.tokenizer import BOS, Tokenizer, balanced_documents
from lowprob.models.transformer import Transformer, TransformerConfig
from lowprob.models.zoo import FILES, save_model, sha256_bytes
from lowprob.training.corpus import EOT, KINDS, manifest_summary

TOKENIZER_CHARS_PER_KIND = 5_000_000
CHECKPOINT = "checkpoint.pt"  # in the model directory while a run is unfinished


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 4500
    batch_size: int = 64
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    mix: dict[str, float] = field(default_factory=lambda: {"code": 0.4, "english": 0.35,
                                                           "spanish": 0.25})
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 250
    eval_windows: int = 512

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise LowprobError("steps and batch_size must be >= 1 and lr > 0")
        if set(self.mix) - set(KINDS) or not all(w >= 0 for w in self.mix.values()):
            raise LowprobError(f"mix must give non-negative weights to kinds among {KINDS}")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def train_tokenizer(corpus: Path, vocab_size: int = 4096) -> Tokenizer:
    return Tokenizer.train(balanced_documents(corpus, KINDS, TOKENIZER_CHARS_PER_KIND), vocab_size)


def _bos(tokenizer: Tokenizer) -> int:
    """BOS separates the corpus's documents and starts every training sequence: a tokenizer needs one."""
    if tokenizer.bos_id is None:
        raise LowprobError(f"training needs a tokenizer with {BOS}, which starts every sequence; this one has none")
    return tokenizer.bos_id


def corpus_tokens(corpus: Path, tokenizer: Tokenizer, kind: str, split: str) -> np.ndarray:
    """The kind's text as one token stream (documents separated by BOS), cached beside the corpus."""
    tag = sha256_bytes(tokenizer.to_str().encode())[:12]
    cache = Path(corpus) / f"tokens-{tag}-{kind}.{split}.npy"
    if cache.exists():
        return np.load(cache)
    docs = (Path(corpus) / f"{kind}.{split}.txt").read_text(encoding="utf-8").split(EOT)
    ids: list[int] = []
    for encoded in tokenizer.encode_batch(docs):
        ids.extend(encoded)
        ids.append(_bos(tokenizer))
    arr = np.asarray(ids, dtype=np.uint16 if tokenizer.vocab_size <= 65536 else np.int32)
    with atomic_path(cache) as tmp, tmp.open("wb") as f:  # a file object: np.save would append ".npy" to a name
        np.save(f, arr)
    return arr


def windows(stream: np.ndarray, starts: np.ndarray, n_ctx: int, bos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[BOS, s_0 .. s_{n-2}]`` and targets ``[s_0 .. s_{n-1}]`` for each start."""
    idx = starts[:, None] + np.arange(n_ctx)[None, :]
    tgt = torch.from_numpy(stream[idx].astype(np.int64))
    inp = torch.cat([torch.full((len(starts), 1), bos, dtype=torch.long), tgt[:, :-1]], dim=1)
    return inp, tgt


@torch.no_grad()
def evaluate(model: Transformer, corpus: Path, tokenizer: Tokenizer, n_windows: int = 512,
             batch_size: int = 128) -> dict[str, dict[str, float]]:
    """Held-out cross-entropy (nats/token) per kind, next to a unigram model fit on training data."""
    results = {}
    for kind in KINDS:
        val = corpus_tokens(corpus, tokenizer, kind, "val")
        train = corpus_tokens(corpus, tokenizer, kind, "train")
        counts = np.bincount(train, minlength=tokenizer.vocab_size).astype(np.float64) + 0.5
        log_unigram = np.log(counts / counts.sum())
        n = min(n_windows, len(val) // model.n_ctx)
        starts = np.linspace(0, len(val) - model.n_ctx, n).astype(np.int64)
        total, unigram, count = 0.0, 0.0, 0
        for i in range(0, n, batch_size):
            inp, tgt = windows(val, starts[i:i + batch_size], model.n_ctx, _bos(tokenizer))
            logits = model(inp)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                     reduction="sum").item()
            unigram -= log_unigram[tgt.numpy()].sum()
            count += tgt.numel()
        results[kind] = {"val_loss": total / count, "unigram_loss": unigram / count, "tokens": count}
    return results


def corpus_batch(rng: np.random.Generator, streams: dict[str, np.ndarray], weights: np.ndarray, n: int,
                 n_ctx: int, bos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training windows, kinds drawn with ``weights`` (in ``streams``' order), inputs and targets."""
    kinds = list(streams)
    choice = rng.choice(len(kinds), size=n, p=weights)
    inputs, targets = [], []
    for k, kind in enumerate(kinds):
        m = int((choice == k).sum())
        if m:
            inp, tgt = windows(streams[kind], rng.integers(0, len(streams[kind]) - n_ctx, size=m), n_ctx, bos)
            inputs.append(inp)
            targets.append(tgt)
    return torch.cat(inputs), torch.cat(targets)


def adamw(model: Transformer, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on the weight matrices (``W_*``) only."""
    decay = [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1].startswith("W_")]
    no_decay = [p for n, p in model.named_parameters() if not n.rsplit(".", 1)[-1].startswith("W_")]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def optimizer_step(model: Transformer, opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float,
                   grad_clip: float) -> None:
    """One AdamW step on ``loss`` at learning rate ``lr``, gradients clipped to norm ``grad_clip``."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()


def restore_checkpoint(path: Path, model: Transformer, opt: torch.optim.Optimizer, resume: bool) -> tuple[int, float]:
    """Steps done and seconds spent, after loading ``path`` into ``model``/``opt`` if resuming from it."""
    if not (resume and path.exists()):
        return 0, 0.0
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    return state["step"], state["elapsed"]


def save_checkpoint(path: Path, model: Transformer, opt: torch.optim.Optimizer, step: int, elapsed: float) -> None:
    """Bytes first, then one atomic write: a failing disk is a LowprobError naming ``path``."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed}, buffer)
    atomic_write(path, buffer.getvalue())


def save_trained(model: Transformer, out: Path, checkpoint: Path, card: dict[str, Any], training: dict[str, Any],
                 wall: float, corpus: Path, tokenizer: Tokenizer, eval_windows: int) -> dict[str, Any]:
    """Write a trained model with its card — ``card``, then the run (``training`` with its seconds, torch version
    and machine), the held-out losses and the corpus — and drop the checkpoint the run resumed from."""
    card = {**card,
            "training": {**training, "wall_time_s": round(wall, 1), "torch": torch.__version__,
                         "machine": f"{platform.machine()}, {os.cpu_count()} cpus"},
            "validation": evaluate(model, corpus, tokenizer, eval_windows),
            "corpus": manifest_summary(corpus)}
    card = save_model(model, out, card)
    checkpoint.unlink(missing_ok=True)
    return card


@contextmanager
def training_output(out: str | Path, resume: bool, force: bool) -> Iterator[None]:
    """Claim the model directory ``out`` for a training run, before any work (the corpus) starts.

    A model or a checkpoint already in ``out`` is hours of work: it is continued only with ``resume``
    and trained over only with ``force``, so a forgotten flag never replaces it. The run holds
    ``out``'s lock, so a second run into it fails at once instead of both writing one checkpoint.
    """
    if resume and force:
        raise LowprobError("--resume continues the run in OUT and --force starts over: give one of them")
    out = prepare_output(out, kind="directory")
    with output_lock(out, "lowprob train"):
        held = [name for name in (*FILES, CHECKPOINT) if (out / name).exists()]
        if held and not (resume or force):
            raise LowprobError(f"{out} already holds a model ({', '.join(held)}): pass --resume to continue "
                               f"that run, --force to start over, or choose another --out")
        if held and resume and not (out / CHECKPOINT).exists():
            raise LowprobError(f"{out} holds a finished model (no {CHECKPOINT} to resume): pass --force to "
                               f"train it again, or choose another --out")
        if force:
            (out / CHECKPOINT).unlink(missing_ok=True)  # starting over: a later --resume must not pick it up
        yield


def train(name: str, cfg: TransformerConfig, out: Path, corpus: Path, tokenizer: Tokenizer,
          train_cfg: TrainConfig = TrainConfig(), resume: bool = False,
          progress: bool = True) -> dict[str, Any]:
    """Train on a built corpus (see ``build_corpus``), write the model directory ``out``, return its card."""
    torch.set_num_threads(train_cfg.threads)
    if tokenizer.vocab_size != cfg.d_vocab:
        raise LowprobError(f"tokenizer has {tokenizer.vocab_size} tokens, config wants {cfg.d_vocab}")
    streams = {k: corpus_tokens(corpus, tokenizer, k, "train") for k in train_cfg.mix}
    weights = np.array(list(train_cfg.mix.values())) / sum(train_cfg.mix.values())

    model = Transformer(cfg, seed=train_cfg.seed, tokenizer=tokenizer)
    opt = adamw(model, train_cfg.lr, train_cfg.weight_decay)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT
    step, elapsed = restore_checkpoint(ckpt, model, opt, resume)

    model.train()
    bar = tqdm(total=train_cfg.steps, initial=step, desc=f"train {name}", disable=not progress)
    t0 = time.perf_counter() - elapsed
    while step < train_cfg.steps:
        rng = np.random.default_rng([train_cfg.seed, step])
        inp, tgt = corpus_batch(rng, streams, weights, train_cfg.batch_size, cfg.n_ctx, _bos(tokenizer))
        logits = model(inp)
        loss = F.cross_entropy(logits.reshape(-1, cfg.d_vocab), tgt.reshape(-1))
        optimizer_step(model, opt, loss, train_cfg.lr_at(step), train_cfg.grad_clip)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % train_cfg.checkpoint_every == 0 or step == train_cfg.steps:
            save_checkpoint(ckpt, model, opt, step, time.perf_counter() - t0)
    bar.close()
    wall = time.perf_counter() - t0

    model.eval()
    return save_trained(model, out, ckpt, {"name": name, "n_params": model.n_params()},
                        {**asdict(train_cfg), "tokens_seen": train_cfg.steps * train_cfg.batch_size * cfg.n_ctx},
                        wall, corpus, tokenizer, train_cfg.eval_windows)
