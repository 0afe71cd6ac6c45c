"""Mechanistic estimation for MLPs: estimate behaviour from the weights, and compare with sampling.

Entry points:

* :func:`random_mlp`, :class:`MLPSpec`, :func:`load_spec` - networks (seeded, or user weights);
* :func:`estimate_means` - cumulant propagation (K = 1, 2, 3) of E[pre-activations] under x ~ N(0, I);
* :func:`tail_network`, :func:`tail_probs` - P(z > t) from the propagated description;
* :func:`orthant_prob` - P(W x + b > 0) by EP/ADF/pairwise (mechanistic), Genz, Botev or plain MC;
* :func:`mc_moments`, :func:`ground_truth` - sampling baselines (FLOP-counted, float64 accumulation);
* :class:`FlopCounter`, :func:`forward_flops` - the one FLOP rule book every method is charged by.
"""

from __future__ import annotations

import importlib

# Loaded on first use (PEP 562), so that ``lowprob mlp --help`` does not import numpy, scipy or torch.
_EXPORTS = {
    "FlopCounter": "flops", "forward_flops": "flops",
    "MCResult": "montecarlo", "ground_truth": "montecarlo", "mc_moments": "montecarlo",
    "MLPSpec": "networks", "load_spec": "networks", "make_spec": "networks", "random_mlp": "networks",
    "save_spec": "networks",
    "OrthantResult": "orthant", "orthant_prob": "orthant", "random_orthant_instance": "orthant",
    "Estimate": "propagation", "estimate_means": "propagation",
    "TailEstimate": "tails", "tail_network": "tails", "tail_probs": "tails",
    "wick_coefficients": "wick",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lowprob.mlp.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lowprob.mlp' has no attribute {name!r}")
