"""``Bounds``: a proved interval for P(event), what the proof closed, and what it cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DepthStats:
    """What the search did at one depth of the tree (the number of variable positions fixed)."""

    depth: int
    nodes: int = 0  # nodes taken from the queue at this depth
    bounded: int = 0  # of them, bounded through the network
    proved_free: int = 0  # closed by the network bound: the event fails for every input
    proved_certain: int = 0  # closed by the network bound: the event holds for every input
    evaluated: int = 0  # closed by running every completion (nodes with one open position)
    mass_free: float = 0.0  # the probability closed here, event-free ...
    mass_certain: float = 0.0  # ... and event-certain


@dataclass(frozen=True)
class Bounds:
    """``lower ≤ P(event) ≤ upper``, proved: every input's event is decided by running it, or by a sound bound
    over a set of inputs that holds for the model's float64 arithmetic, with float32 decisions
    within the tie tolerance recomputed in float64 as exact ground truth does.

    ``free + certain + open = 1`` up to float rounding; ``lower`` is the certain mass and ``upper`` adds the
    open mass, both widened outward by a relative ``1e-12`` for rounding in the sums of products.
    """

    lower: float
    upper: float
    free: float  # probability mass proved event-free
    certain: float  # probability mass proved event-certain
    open: float  # mass still undecided when the search stopped
    complete: bool  # the search decided every input (lower and upper then meet)
    flops: float
    seconds: float
    model: str = ""
    distribution: str = ""
    event: dict[str, Any] = field(default_factory=dict)
    depths: tuple[DepthStats, ...] = ()
    network_bound: str = ""  # which bound closed sets of inputs ("" where the model has none: every input runs)

    @property
    def exact(self) -> bool:
        """Every input decided: the bounds are P itself, up to their outward widening for rounding."""
        return self.complete

    @property
    def ratio(self) -> float:
        """upper / lower (inf while nothing is proved certain; 1 + 2e-12 when exact, from the widening)."""
        if self.upper == self.lower:
            return 1.0
        return self.upper / self.lower if self.lower > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["depths"] = [asdict(d) for d in self.depths]
        out["exact"] = self.exact
        return out

    def summary(self) -> str:
        label = self.event.get("label", "event")
        state = "exact" if self.exact else f"open mass {self.open:.3g}"
        return (f"P({label}) in [{self.lower:.6g}, {self.upper:.6g}] ({state}); proved event-free {self.free:.6g}, "
                f"event-certain {self.certain:.6g}; model {self.model or 'unnamed'}, distribution "
                f"{self.distribution or 'unnamed'}; {self.flops:.3g} FLOPs, {self.seconds:.1f} s")
