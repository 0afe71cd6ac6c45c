"""One FLOP-accounting rule book, charged identically by every estimator, sampling included.

Rules (frozen; a benchmark row is only comparable with rows counted under the same rules):

* matrix product (m x k) @ (k x n): ``2 m n k``;
* elementwise arithmetic and special functions (exp, log, Phi, phi, sqrt, ...): 1 per output
  element and per operation;
* reduction of r numbers to one: ``r - 1``;
* random-number generation, copies, indexing and reshapes: free (this flatters sampling, as in
  ARC's accounting).

Each estimator charges its work through :class:`FlopCounter` next to the code doing the work, so
that the count and the computation cannot drift apart silently; ``charge`` keeps per-region totals
for the benchmark tables.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class FlopCounter:
    """Accumulates FLOPs per named region (e.g. ``"linear"``, ``"nonlinear"``, ``"forward"``)."""

    by_region: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def total(self) -> float:
        return float(sum(self.by_region.values()))

    def charge(self, region: str, flops: float) -> None:
        self.by_region[region] += float(flops)

    def matmul(self, region: str, m: int, k: int, n: int) -> None:
        """(m x k) @ (k x n)."""
        self.charge(region, 2.0 * m * k * n)

    def elementwise(self, region: str, size: int, ops: int = 1) -> None:
        """``ops`` elementwise operations, each producing ``size`` outputs."""
        self.charge(region, float(ops) * size)

    def reduce(self, region: str, r: int, count: int = 1) -> None:
        """``count`` reductions of ``r`` numbers each."""
        self.charge(region, float(max(r - 1, 0)) * count)


def forward_flops(widths: list[int]) -> float:
    """FLOPs of one forward pass through linear layers ``widths[0] -> widths[1] -> ...``.

    Per layer: the matrix-vector product, the bias add and the activation, each under the rules
    above. Used both by Monte Carlo (charged per sample) and by the sampling-efficiency ratio.
    """
    fc = FlopCounter()
    for n_in, n_out in itertools.pairwise(widths):
        fc.matmul("forward", n_out, n_in, 1)
        fc.elementwise("forward", n_out, ops=2)  # bias add, activation
    return fc.total
