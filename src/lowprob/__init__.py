"""lowprob: estimate the probability of rare model outputs, and say how sure the estimate is.

The public API is loaded on first use (PEP 562): ``import lowprob`` itself is cheap, so the
``lowprob`` command answers ``--help`` and refuses bad arguments without importing torch.
"""

from __future__ import annotations

import importlib

from lowprob._version import __version__
from lowprob.errors import LowprobError

_EXPORTS = {
    "TokenDistribution": "lowprob.distributions", "load_distribution": "lowprob.distributions",
    "Estimate": "lowprob.estimators", "estimate": "lowprob.estimators",
    "ArgmaxIs": "lowprob.events", "ArgmaxIn": "lowprob.events", "Event": "lowprob.events",
    "InTopK": "lowprob.events", "MarginAtLeast": "lowprob.events", "ProbabilityAbove": "lowprob.events",
    "parse_event": "lowprob.events",
    "GroundTruth": "lowprob.truth", "exact_probability": "lowprob.truth", "ground_truth": "lowprob.truth",
    "Tokenizer": "lowprob.models", "Transformer": "lowprob.models", "TransformerConfig": "lowprob.models",
    "load_model": "lowprob.models",
    "Bounds": "lowprob.bounds", "bound": "lowprob.bounds",
}
__all__ = [
    "ArgmaxIn", "ArgmaxIs", "Bounds", "Estimate", "Event", "GroundTruth", "InTopK", "LowprobError", "MarginAtLeast",
    "ProbabilityAbove", "TokenDistribution", "Tokenizer", "Transformer", "TransformerConfig", "__version__",
    "bound", "estimate", "exact_probability", "ground_truth", "load_distribution", "load_model", "parse_event",
]


# subpackages and modules a user reaches as attributes (``lowprob.models.from_transformer_lens``), imported
# on first access like the names above: a plain ``import lowprob`` has not imported them yet
_SUBMODULES = ("attribution", "bench", "bounds", "continuations", "distributions", "estimators", "evaluation", "events",
               "files", "mlp", "models", "training", "truth")


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups are plain attribute reads
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"lowprob.{name}")  # the import sets the attribute for later look-ups
    raise AttributeError(f"module 'lowprob' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
