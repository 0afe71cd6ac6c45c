"""Benchmark scales: which (model, distribution) problems, at what budget, against what ground truth.

* ``tiny``: two random toy transformers (256 tokens) x three tiny enumerable families; exact ground truth computed
  on the fly. Minutes on a laptop; the test suite runs it.
* ``cpu``: the 3 shipped models x the 8 paper distributions at ``cpu`` length, budget 2^12, against
  the shipped reference ground truth. The reference run (``benchmarks/results/cpu``).
* ``paper``: the paper's setting, budget 2^16 at ``paper`` length with 256 targets per pair, against
  ground truth you supply (2^32 samples per pair — a GPU/cluster job, see the README).
* ``exact``: the 3 shipped models x the 8 kinds at ``exact`` length (~2^24 sequences each, enumerated:
  shipped exact tables), budget 2^12, up to 32 targets spread evenly in log p over [1e-12, 1e-5] —
  the rare end the sampled tables cannot resolve.
* ``trigger``: the planted-trigger models, each with its own recipe's four distributions: the *weights*
  family (``year-name``: gelu-2l/4l-trigger, trigger probability 1e-4 .. 1e-10 set by slot weights) and the
  *conjunction* family (``conj3`` on gelu-2l/4l-conj3, ``conj4`` on gelu-2l-conj4: uniform slots, 1e-4 ..
  1e-7 by the supports' sizes). Budget 2^12, one target per pair — the planted one — and 8 seeds, against
  each pair's exact argmax table (shipped, from one scan of the model over its recipe's whole space). With
  one target per pair, the report fits across a model's distributions (``planted``); ITGIS and MHIS run at
  temperature 1 only, which keeps 8 seeds of 20 pairs affordable on 2 cores.
* ``generation``: the 3 shipped models, prompts from ``english`` (cpu length), events "this text within 20
  tokens sampled at temperature 1" for texts the models rarely write (a Spanish word, a code keyword, a name,
  places: p ~3e-3 … 1e-7, chosen from one tilted estimate each), against sampled truth
  — plain sampling where it reaches, a pooled tilted reference below (``bench/generation.py``, its own runner).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from lowprob.distributions import PAPER_DISTRIBUTIONS, TRIGGER_DISTRIBUTIONS, TokenDistribution, load_distribution
from lowprob.distributions.slots import SlotDistribution
from lowprob.distributions.tiny import tiny_distribution
from lowprob.errors import LowprobError
from lowprob.models import LanguageModel, Transformer, TransformerConfig, load_model
from lowprob.models.zoo import SHIPPED_CONFIGS
from lowprob.truth import GroundTruth, ground_truth
from lowprob.truth.reference import load_reference
from lowprob.truth.trigger import load_trigger_problem, load_trigger_table, model_recipe

TEMPERATURES = (0.3, 0.45, 0.67, 1.0, 1.5, 2.24, 3.34, 5.0)  # the paper's grid, ~1.5x steps

TOY_MODELS = {
    "toy-1l": TransformerConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=128, n_ctx=8, d_vocab=256),
    "toy-2l": TransformerConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=128, n_ctx=8, d_vocab=256),
}
# the families whose exact ground truth takes well under a second (4,096 / 8,000 / 65,025 sequences)
TINY_DISTRIBUTIONS = ("tiny-uniform", "tiny-constants", "tiny-wide")


TRIGGER_MODELS = ("gelu-2l-trigger", "gelu-4l-trigger", "gelu-2l-conj3", "gelu-4l-conj3", "gelu-2l-conj4")

ADDED_FIELDS = ("spread", "planted")  # Scale fields newer than the committed benchmark runs


@dataclass(frozen=True)
class Scale:
    name: str
    budget: int
    n_targets: int  # per (model, distribution), at most
    seeds: tuple[int, ...]
    temperatures: tuple[float, ...]
    models: tuple[str, ...]
    distributions: tuple[str, ...]
    length: str | None  # paper-distribution length variant; None for the tiny families
    spread: tuple[float, float] | None = None  # targets spread evenly in log p over this span (exact truth)
    planted: bool = False  # each model's planted trigger (its card's recipe) gives its pair's one target, truth shipped

    def grid(self, param: str) -> tuple:
        """The values a tuned hyper-parameter is run at (the scale's one place that names them)."""
        grids = {"temperature": self.temperatures}
        if param not in grids:
            raise LowprobError(f"the {self.name} scale has no grid for the tuned hyper-parameter {param!r}")
        return grids[param]

    def pairs(self) -> list[tuple[str, str]]:
        """Every (model, distribution); on a planted scale, each model with its own recipe's distributions."""
        if self.planted:
            return [(m, d) for m in self.models for d in self.distributions
                    if TRIGGER_DISTRIBUTIONS[d][0] == model_recipe(m)]
        return [(m, d) for m in self.models for d in self.distributions]

    def to_json(self) -> dict:
        """The definition a resumed run must match. Fields added since runs were committed are left out
        while at their default (None), so those runs still match."""
        return {k: v for k, v in asdict(self).items() if not (k in ADDED_FIELDS and v in (None, False))}


@dataclass(frozen=True)
class GenerationScale:
    """Events over generated text: per model, target texts; their truth is sampled (``bench/generation.py``)."""

    name: str
    models: tuple[str, ...]
    distribution: str
    length: str
    steps: int
    temperature: float
    targets: tuple[tuple[str, tuple[str, ...]], ...]  # (model, its target texts)
    budget: int
    seeds: tuple[int, ...]
    sampled: int  # plain-sampled continuations per model for the sampled truth
    chunk: int  # continuations per truth checkpoint
    reference_runs: int  # tilted estimates pooled into the "tilted reference" of each target
    reference_budget: int

    def targets_of(self, model: str) -> tuple[str, ...]:
        return dict(self.targets)[model]

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


GENERATION = GenerationScale(
    "generation", models=tuple(SHIPPED_CONFIGS), distribution="english", length="cpu", steps=20, temperature=1.0,
    targets=(("gelu-1l", (" que", " elif", " John", " Paris", " Spain")),
             ("gelu-2l", (" que", " elif", " John", " Paris", " Spain")),
             ("gelu-4l", (" que", " elif", " John", " Paris", " whale"))),
    budget=1 << 10, seeds=tuple(range(8)), sampled=1 << 18, chunk=1 << 12, reference_runs=8,
    reference_budget=1 << 12)


SCALES: dict[str, Scale | GenerationScale] = {
    "tiny": Scale("tiny", budget=256, n_targets=6, seeds=(0, 1), temperatures=TEMPERATURES,
                  models=tuple(TOY_MODELS), distributions=TINY_DISTRIBUTIONS, length=None),
    "cpu": Scale("cpu", budget=1 << 12, n_targets=32, seeds=(0,), temperatures=TEMPERATURES,
                 models=tuple(SHIPPED_CONFIGS), distributions=tuple(PAPER_DISTRIBUTIONS), length="cpu"),
    "paper": Scale("paper", budget=1 << 16, n_targets=256, seeds=(0,), temperatures=TEMPERATURES,
                   models=tuple(SHIPPED_CONFIGS), distributions=tuple(PAPER_DISTRIBUTIONS), length="paper"),
    "exact": Scale("exact", budget=1 << 12, n_targets=32, seeds=(0,), temperatures=TEMPERATURES,
                   models=tuple(SHIPPED_CONFIGS), distributions=tuple(PAPER_DISTRIBUTIONS), length="exact",
                   spread=(1e-12, 1e-5)),
    "trigger": Scale("trigger", budget=1 << 12, n_targets=1, seeds=tuple(range(8)), temperatures=(1.0,),
                     models=TRIGGER_MODELS, distributions=tuple(TRIGGER_DISTRIBUTIONS), length=None, planted=True),
    "generation": GENERATION,
}




def get_scale(name: str) -> Scale | GenerationScale:
    if name not in SCALES:
        raise LowprobError(f"unknown scale {name!r}: choose one of {', '.join(SCALES)}")
    return SCALES[name]


def hyper_key(hyper: dict) -> str:
    """A hashable, order-independent identity for one hyper-parameter setting (rows, grids, resume)."""
    return json.dumps(hyper, sort_keys=True)


def target_seed(model_name: str, dist_name: str) -> int:
    """The seed of a pair's target draw: stable across runs, processes and Python versions."""
    return zlib.crc32(f"{model_name}/{dist_name}".encode())


def load_problem(scale: Scale, model_name: str, dist_name: str, ground_truth_dir: Path | None = None
                 ) -> tuple[LanguageModel, TokenDistribution | SlotDistribution, GroundTruth]:
    """Model, distribution and ground truth of one pair of ``scale``.

    ``ground_truth_dir`` holds ``{model}/{dist}.safetensors`` files (from ``lowprob ground-truth``);
    it replaces the shipped tables and is required at ``paper`` scale. A planted-trigger scale's
    distribution is a slot distribution (``estimate`` binds it to the model) and its table is shipped.
    """
    if scale.planted:
        if ground_truth_dir is not None:
            raise LowprobError(f"the {scale.name} scale scores against its shipped exact tables; drop --ground-truth")
        model, dist, _, _ = load_trigger_problem(model_name, dist_name)
        return model, dist, load_trigger_table(model_name, dist_name, model, dist)
    if scale.length is None:
        model = Transformer(TOY_MODELS[model_name], seed=0).eval()
        dist = tiny_distribution(dist_name, model.d_vocab)
        return model, dist, ground_truth(model, dist, exact=True)
    model = load_model(model_name)
    dist = load_distribution(dist_name, model, scale.length)
    if ground_truth_dir is not None:
        path = Path(ground_truth_dir) / model_name / f"{dist_name}.safetensors"
        if not path.exists():
            raise LowprobError(f"{path} is missing: compute it with `lowprob ground-truth --model {model_name} "
                               f"--dist {dist_name} --length {scale.length} --samples N --out {path}`")
        return model, dist, GroundTruth.load(path, model, dist)
    return model, dist, load_reference(model_name, dist_name, model, dist, scale.length)
