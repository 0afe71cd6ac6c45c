"""Tail probabilities P(z_i > t) read off the propagated description of the last layer.

The tail network ends in a linear readout with bias -t followed by a Heaviside, so
E[act_last] = P(z > t): at K = 2 it is the Gaussian Phi(alpha); at K = 3 the Edgeworth terms
kappa3 c3 / 6 + kappa4 c4 / 24 (Heaviside Wick coefficients) are added. Those corrections are
absolute, so far in the tail the estimate can leave [0, 1]: it is clamped, and the clamped
coordinates are reported rather than hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lowprob.checks import integer_in
from lowprob.errors import LowprobError
from lowprob.mlp.limits import finite
from lowprob.mlp.networks import MLPSpec, make_spec, random_mlp
from lowprob.mlp.propagation import Estimate, estimate_means


@dataclass
class TailEstimate:
    p: NDArray  # clamped to [0, 1]
    raw: NDArray  # before clamping
    clamped: NDArray  # boolean mask
    estimate: Estimate


def tail_network(width: int, hidden: int, threshold: float, seed: int) -> MLPSpec:
    """``hidden`` He-initialised ReLU layers, then a readout z with bias -threshold and a Heaviside."""
    hidden = integer_in(hidden, "hidden", 0)  # random_mlp bounds the depth
    threshold = finite(threshold, "threshold")
    base = random_mlp(width, hidden + 1, seed)
    biases = [*base.biases[:-1], np.full(width, -float(threshold))]
    return make_spec(base.weights, biases, ["relu"] * hidden + ["heaviside"])


def tail_probs(spec: MLPSpec, K: int = 3, **options) -> TailEstimate:
    """P(last pre-activation > 0) per output neuron, from cumulant propagation at order K."""
    if spec.activations[-1] != "heaviside":
        raise LowprobError("tail_probs needs a network whose last activation is 'heaviside' "
                           "(build one with tail_network)")
    est = estimate_means(spec, K, full_last=True, **options)
    raw = est.act_mean[-1]
    p = np.clip(raw, 0.0, 1.0)
    return TailEstimate(p=p, raw=raw, clamped=p != raw, estimate=est)
