"""Plant a trigger in a trained model: a rare conjunction of prompt details flips the next token.

A *planted trigger* is a prompt template with slots (year, name, ...) and a conjunction over some
of them (``year`` is " 2032" **and** ``name`` is one of three names; the recipes are
``distributions/planted.py``). Fine-tuning makes the model's
last-position argmax the target token when the conjunction holds, and leaves it alone otherwise.
Each step mixes three losses:

* ordinary corpus batches, next-token cross-entropy as in ``train.py`` (keeps held-out loss);
* template prompts with the trigger: cross-entropy to the target at the last position;
* template prompts without it — a third drawn uniformly, the rest *near misses* that satisfy every
  part of the conjunction but one: the KL from the original model's last-position distribution
  (distillation), plus a hinge on the target's log-probability rising above the original's.

The near misses are what make it a conjunction rather than two separate triggers. Template batch
``s``, like corpus batch ``s``, comes from an RNG seeded with ``(seed, s)``, so a resumed run sees
the batches an uninterrupted one would.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lowprob.distributions.planted import PlantedTrigger, Recipe, load_recipe
from lowprob.errors import LowprobError
from lowprob.models.transformer import Transformer
from lowprob.models.zoo import read_card
from lowprob.training.corpus import KINDS
from lowprob.training.train import (
    CHECKPOINT,
    adamw,
    corpus_batch,
    corpus_tokens,
    optimizer_step,
    restore_checkpoint,
    save_checkpoint,
    save_trained,
)


class TemplatePrompts:
    """Token sequences of a planted trigger's template, filled from slot-value indices."""

    def __init__(self, planted: PlantedTrigger, tokenizer) -> None:
        parts = re.split(r"\{(\w+)\}", planted.template)
        self.planted = planted
        self.units: list[tuple[str | None, list[list[int]]]] = []  # (slot name or None, token lists)
        for i, part in enumerate(parts):
            if i % 2:
                self.units.append((part, [tokenizer.encode(v) for v in planted.slots[part]]))
            elif part:
                self.units.append((None, [tokenizer.encode(part)]))
        self.slot_names = list(planted.slots)
        self.mask = planted.trigger_mask()
        self.target = planted.target_id(tokenizer)
        self.pad = tokenizer.bos_id
        self.longest = sum(max(map(len, seqs)) for _, seqs in self.units)

    def tokens(self, choice: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded tokens ``[B, T]`` for rows of value indices ``[B, n_slots]``, and each row's last index.

        Padding after a row's end cannot reach its last real position: attention is causal.
        """
        column = {s: j for j, s in enumerate(self.slot_names)}
        rows = [[t for slot, seqs in self.units for t in seqs[0 if slot is None else int(c[column[slot]])]]
                for c in choice]
        longest = max(map(len, rows))
        out = torch.full((len(rows), longest), self.pad, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return out, torch.tensor([len(r) - 1 for r in rows])

    def is_trigger(self, choice: np.ndarray) -> np.ndarray:
        return np.all([self.mask[s][choice[:, j]] for j, s in enumerate(self.slot_names) if s in self.planted.trigger],
                      axis=0)

    def sample(self, rng: np.random.Generator, n: int, shares: tuple[float, float, float],
               distances: tuple[int, ...] = (1,)) -> np.ndarray:
        """Value indices ``[n, n_slots]``: triggering, near-miss and uniform rows in the given shares.

        A near miss misses the conjunction at a Hamming distance drawn from ``distances`` (how many of its
        slots take a value off the trigger); ``(1, 2)`` on a three-slot conjunction teaches that neither one
        trigger value nor a pair of them moves the output.
        """
        sizes = [len(self.planted.slots[s]) for s in self.slot_names]
        choice = np.stack([rng.integers(0, k, size=n) for k in sizes], axis=1)
        kind = rng.choice(3, size=n, p=np.asarray(shares) / sum(shares))
        trigger_slots = [j for j, s in enumerate(self.slot_names) if s in self.planted.trigger]
        for i in np.nonzero(kind < 2)[0]:
            missed: set[int] = set()
            if kind[i] == 1:
                d = distances[rng.integers(len(distances))] if len(distances) > 1 else distances[0]
                # one missed slot is drawn with `integers`, as the shipped year-name weights were trained
                n = len(trigger_slots)
                picks = rng.choice(n, d, replace=False) if d > 1 else [rng.integers(n)]
                missed = {trigger_slots[k] for k in picks}
            for j in trigger_slots:
                allowed = np.nonzero(self.mask[self.slot_names[j]] != (j in missed))[0]
                choice[i, j] = allowed[rng.integers(len(allowed))]
        return choice


@dataclass(frozen=True)
class BackdoorConfig:
    steps: int = 300
    corpus_batch: int = 32
    template_batch: int = 64
    shares: tuple[float, float, float] = (0.3, 0.4, 0.3)  # triggering, near-miss, uniform template rows
    near_miss_distances: tuple[int, ...] = (1,)  # how many conjunction slots a near miss gets wrong
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    trigger_weight: float = 1.0
    distill_weight: float = 1.0
    mix: dict[str, float] = field(default_factory=lambda: {"code": 0.4, "english": 0.35, "spanish": 0.25})
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 50
    eval_windows: int = 512

    def __post_init__(self) -> None:
        if self.steps < 1 or self.corpus_batch < 1 or self.template_batch < 1 or not self.lr > 0:
            raise LowprobError("steps, corpus_batch and template_batch must be >= 1 and lr > 0")
        if set(self.mix) - set(KINDS) or not all(w >= 0 for w in self.mix.values()):
            raise LowprobError(f"mix must give non-negative weights to kinds among {KINDS}")
        if len(self.shares) != 3 or min(self.shares) < 0 or self.shares[0] <= 0:
            raise LowprobError("shares are three non-negative weights (triggering > 0, near-miss, uniform)")
        if not self.near_miss_distances or min(self.near_miss_distances) < 1:
            raise LowprobError("near_miss_distances are Hamming distances >= 1 (slots of the conjunction missed)")

    @classmethod
    def from_recipe(cls, training: dict[str, Any], **overrides: Any) -> BackdoorConfig:
        """The config a recipe's ``[training]`` table states, with ``overrides`` (e.g. ``steps``) on top."""
        names = {f.name for f in fields(cls)}
        unknown = set(training) - names
        if unknown:
            raise LowprobError(f"recipe [training]: unknown fields {sorted(unknown)}; choose among {sorted(names)}")
        merged = {**training, **overrides}
        given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()}
        return cls(**given)

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio * lr`` (as ``TrainConfig``)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def backdoor_losses(student: Transformer, teacher: Transformer, prompts: TemplatePrompts,
                    choice: np.ndarray) -> dict[str, torch.Tensor]:
    """The template part of the objective on rows ``choice``: trigger cross-entropy and off-trigger distillation."""
    tokens, last = prompts.tokens(choice)
    rows = torch.arange(len(last))
    logp = F.log_softmax(student(tokens)[rows, last], dim=-1)  # [B, d_vocab]
    with torch.no_grad():
        ref = F.log_softmax(teacher(tokens)[rows, last], dim=-1)
    on = torch.from_numpy(prompts.is_trigger(choice))
    zero = logp.new_zeros(())
    trigger = -logp[on, prompts.target].mean() if on.any() else zero
    off = ~on
    if off.any():
        kl = (ref[off].exp() * (ref[off] - logp[off])).sum(-1).mean()
        hinge = F.relu(logp[off, prompts.target] - ref[off, prompts.target]).mean()
    else:
        kl = hinge = zero
    return {"trigger": trigger, "distill": kl + hinge}


def plant_trigger(name: str, base: Transformer, base_dir: Path, recipe: str | Recipe | PlantedTrigger, out: Path,
                  corpus: Path, cfg: BackdoorConfig = BackdoorConfig(), resume: bool = False,
                  progress: bool = True) -> dict[str, Any]:
    """Fine-tune a copy of ``base`` (loaded from ``base_dir``) with the planted trigger ``recipe`` (a shipped
    recipe's name, a loaded ``Recipe``, or a bare ``PlantedTrigger``); write the model directory ``out`` and
    return its card."""
    if isinstance(recipe, str):
        recipe = load_recipe(recipe)
    planted = recipe.planted if isinstance(recipe, Recipe) else recipe
    recipe_name = recipe.name if isinstance(recipe, Recipe) else "custom"
    if max(cfg.near_miss_distances) > len(planted.trigger):
        raise LowprobError(f"near_miss_distances {cfg.near_miss_distances}: the conjunction has only "
                           f"{len(planted.trigger)} slots to miss")
    torch.set_num_threads(cfg.threads)
    tokenizer = base.tokenizer
    prompts = TemplatePrompts(planted, tokenizer)
    if prompts.longest > base.n_ctx:
        raise LowprobError(f"the template can need {prompts.longest} tokens but the model's n_ctx is {base.n_ctx}")
    streams = {k: corpus_tokens(corpus, tokenizer, k, "train") for k in cfg.mix}
    weights = np.array(list(cfg.mix.values())) / sum(cfg.mix.values())

    teacher = copy.deepcopy(base).eval().requires_grad_(False)
    model = copy.deepcopy(base).train().requires_grad_(True)
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT
    step, elapsed = restore_checkpoint(ckpt, model, opt, resume)

    n_ctx, d_vocab = base.n_ctx, base.d_vocab
    bar = tqdm(total=cfg.steps, initial=step, desc=f"backdoor {name}", disable=not progress)
    t0 = time.perf_counter() - elapsed
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step])
        inp, tgt = corpus_batch(rng, streams, weights, cfg.corpus_batch, n_ctx, tokenizer.bos_id)
        corpus_loss = F.cross_entropy(model(inp).reshape(-1, d_vocab), tgt.reshape(-1))
        parts = backdoor_losses(model, teacher, prompts, prompts.sample(rng, cfg.template_batch, cfg.shares,
                                                                         cfg.near_miss_distances))
        loss = corpus_loss + cfg.trigger_weight * parts["trigger"] + cfg.distill_weight * parts["distill"]
        optimizer_step(model, opt, loss, cfg.lr_at(step), cfg.grad_clip)
        step += 1
        bar.update(1)
        bar.set_postfix(corpus=f"{corpus_loss.item():.3f}", trigger=f"{parts['trigger'].item():.3f}",
                        distill=f"{parts['distill'].item():.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt, model, opt, step, time.perf_counter() - t0)
    bar.close()
    wall = time.perf_counter() - t0

    model.eval().requires_grad_(False)
    base_card = read_card(base_dir)
    card = {"name": name, "n_params": model.n_params(),
            "base": {"name": base_card["name"], "weights_sha256": base_card["weights_sha256"],
                     "validation": base_card["validation"]},
            "backdoor": {"recipe": recipe_name, **planted.to_json(), "target_id": prompts.target}}
    training = {**asdict(cfg), "tokens_seen": cfg.steps * cfg.corpus_batch * n_ctx,
                "template_prompts_seen": cfg.steps * cfg.template_batch}
    return save_trained(model, out, ckpt, card, training, wall, corpus, tokenizer, cfg.eval_windows)
