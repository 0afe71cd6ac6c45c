"""``GroundTruth``: the probability of every argmax token, tied to its model and distribution.

One file per (model, distribution): safetensors with ``probabilities`` (float64, sums to 1) and, when
sampled, ``counts`` (int64), plus metadata (mode, n, seed, model and distribution sha256, lowprob
version). Loading checks the hashes against the model and distribution in hand, because a table
computed for another model or distribution gives silently wrong losses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

from lowprob.distributions.base import TokenDistribution
from lowprob.errors import LowprobError
from lowprob.files import atomic_write, dumps_json
from lowprob.models.protocol import LanguageModel, model_sha256

FORMAT = "lowprob.GroundTruth/1"


@dataclass(frozen=True)
class GroundTruth:
    probabilities: Tensor  # float64 [d_vocab]
    counts: Tensor | None  # int64 [d_vocab] when sampled
    exact: bool
    n_samples: int  # sequences enumerated (exact) or sampled
    seed: int | None
    model_sha256: str
    distribution_sha256: str
    version: str

    def probability(self, event) -> float:
        """P(event) from this table, for events an argmax table answers (``ArgmaxIs``, ``ArgmaxIn``)."""
        p = event.probability_from_argmax(self.probabilities)
        if p is None:
            raise LowprobError(f"a ground-truth table holds argmax-token probabilities, which cannot tell "
                               f"P({event.describe()['label']}); use lowprob.truth.exact_probability on an "
                               f"enumerable distribution")
        return p

    def save(self, path: str | Path) -> None:
        tensors = {"probabilities": self.probabilities.contiguous()}
        if self.counts is not None:
            tensors["counts"] = self.counts.contiguous()
        meta = {"format": FORMAT, "exact": dumps_json(self.exact), "n_samples": str(self.n_samples),
                "seed": dumps_json(self.seed), "model_sha256": self.model_sha256,
                "distribution_sha256": self.distribution_sha256, "version": self.version}
        atomic_write(path, save(tensors, metadata=meta))  # a failed write is a LowprobError naming path

    @classmethod
    def load(cls, path: str | Path, model: LanguageModel | None = None, dist=None) -> GroundTruth:
        """Read a ground-truth file; with ``model``/``dist``, refuse one computed for others.

        ``dist`` may be a template: with ``model`` it is bound as ``ground_truth`` bound it, so the
        file's hashes (the model seen through the template, the slot choices) are checked against the
        model and the template a user holds.
        """
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, FileNotFoundError, OSError) as exc:
            raise LowprobError(f"cannot read ground-truth file {path}: {exc}") from None
        if meta.get("format") != FORMAT or "probabilities" not in tensors:
            raise LowprobError(f"{path} is not a lowprob ground-truth file")
        gt = cls(tensors["probabilities"], tensors.get("counts"), json.loads(meta["exact"]),
                 int(meta["n_samples"]), json.loads(meta["seed"]), meta["model_sha256"],
                 meta["distribution_sha256"], meta["version"])
        held = "model"
        if dist is not None and not isinstance(dist, TokenDistribution):  # a template
            if model is None:
                raise LowprobError(f"checking {path} against a template needs the model too: pass both")
            model, dist = dist.bind(model)  # the pair ground_truth hashed; this model's hash covers the template
            held = "model or template"
        if model is not None and model_sha256(model) != gt.model_sha256:
            raise LowprobError(f"{path} was computed for another {held} (sha256 {gt.model_sha256[:12]}…); "
                               f"recompute it for this one")
        if dist is not None and dist.content_hash() != gt.distribution_sha256:
            raise LowprobError(f"{path} was computed for another distribution (sha256 "
                               f"{gt.distribution_sha256[:12]}…); recompute it for this one")
        return gt
