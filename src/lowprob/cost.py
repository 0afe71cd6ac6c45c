"""The cost meter: what an estimate executed, charged where the work is done and read once by ``estimate``.

The places that run the model charge the meter as they run it (the forward and gradient helpers of
``estimators.base``, the Rao–Blackwell sums, decoding continuations, the extrapolation methods' shared
activations); ``estimate`` opens a meter around a method and turns its totals into the estimate's
``Cost``. Nothing threads a counter through the estimators' signatures, and a method cannot report a
cost different from what it ran: the meter lives in a context variable, and charging with none open
(a helper called outside ``estimate``) does nothing.

The unit is executed FLOPs (2 per multiply-add), priced by the model (``flops_per_sequence``, or a
segment's own price where a prefix is shared). A backward pass with respect to the inputs executes the
same matrix products as the forward — each linear map's input gradient is one product of the same
size, and no weight gradient is formed — so it is charged ``BACKWARD_FORWARDS`` = 1 forward
(``benchmarks/executed_flops.py`` measures it with torch's ``FlopCounterMode``).

**What a budget buys** (the one definition): a method declared with ``work`` forward-equivalents per
model call (``estimators.catalog``) executes at most ``work × budget`` forwards' worth of FLOPs at the
input length. Gradient methods declare ``GRADIENT_CALL`` (a forward and a backward), so at equal budget
ITGIS, MHIS and CEIS execute equal FLOPs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

BACKWARD_FORWARDS = 1  # a backward pass w.r.t. the inputs, in forwards of the same sequences
GRADIENT_CALL = 1 + BACKWARD_FORWARDS  # forward-equivalents of one gradient-method model call


@dataclass
class Meter:
    """Running totals: whole-sequence forward passes, backward passes, and every executed FLOP (segments too)."""

    forward_passes: int = 0
    backward_passes: int = 0
    flops: float = 0.0
    watch: Callable[[Meter], None] | None = field(default=None, repr=False)  # told after every charge (a progress bar)


_METER: ContextVar[Meter | None] = ContextVar("lowprob_cost", default=None)


def charge(flops: float, forwards: int = 0, backwards: int = 0) -> None:
    """Charge ``flops`` executed FLOPs (and the whole-sequence passes they include) to the open meter, if any."""
    meter = _METER.get()
    if meter is not None:
        meter.forward_passes += forwards
        meter.backward_passes += backwards
        meter.flops += flops
        if meter.watch is not None:
            meter.watch(meter)


def charge_passes(per_sequence: float, n: int, backward: bool = False) -> None:
    """``n`` whole-sequence forwards (and as many backwards, if ``backward``) at ``per_sequence`` FLOPs each."""
    charge(n * per_sequence * (1 + BACKWARD_FORWARDS * backward), n, n if backward else 0)


@contextmanager
def metered(watch: Callable[[Meter], None] | None = None) -> Iterator[Meter]:
    """A fresh meter charged by everything the body runs (nested meters do not charge the outer one);
    ``watch`` is called with it after every charge."""
    meter = Meter(watch=watch)
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)
