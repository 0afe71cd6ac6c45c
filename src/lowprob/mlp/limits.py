"""The bounds ``lowprob.mlp`` holds its arguments to up front: arrays that cannot fit, loops that would
not end, numbers that are not finite.

Without them numpy answers a width of 2^70 with "Maximum allowed dimension exceeded", a width of 10^5
dies in the allocator, and 2^70 Monte Carlo samples never return. Each is refused here,
before any work, with what it would need and the ceiling. Numpy-free, so that the CLI reads the limits
without loading numpy.
"""

from __future__ import annotations

import math
import os
import sys
from decimal import Decimal
from numbers import Real
from typing import Any

from lowprob.checks import MAX_BUDGET, integer_in
from lowprob.errors import LowprobError

if sys.platform != "win32":  # Windows has no resource module, so no ulimit -v
    import resource

# Every estimator steps through the layers one at a time in Python; 10,000 layers already take minutes.
MAX_DEPTH = 10_000
# 2^40 samples take 12 days even at a million samples a second (lowprob's budget ceiling, for the same reason).
MAX_SAMPLES = MAX_BUDGET
# torch keeps its thread count in a C int (2^70 overflows it); past the cores a machine has, more threads
# only slow it down, and no machine this runs on has 1024.
MAX_THREADS = 1024


def memory_ceiling() -> tuple[int, str]:
    """(bytes, why): half the memory this process may use, the machine's or a lower ``ulimit -v``. One
    array past it leaves no room for the copies and temporaries the steps around it make."""
    try:
        total, where = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): assume a 32 GiB machine
        total, where = 32 << 30, "32 GiB of memory"
    if sys.platform != "win32":
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY and limit < total:
            total, where = limit, "this process's ulimit -v"
    return total // 2, f"half of {where}, {_gib(total)}"


def _gib(n_bytes: int) -> str:
    return f"{Decimal(n_bytes) / (1 << 30):.3g} GiB"  # Decimal: a width of 10^200 still formats


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"{Decimal(n):.3g}"


def check_array(what: str, shape: tuple[int, ...], itemsize: int = 8, fix: str = "") -> None:
    """Refuse, before allocating it, an array of ``shape`` that cannot fit (see :func:`memory_ceiling`);
    ``what`` names it and ``fix`` says which argument to lower."""
    n_bytes = math.prod(shape) * itemsize
    ceiling, why = memory_ceiling()
    if n_bytes > ceiling:
        dims = " x ".join(map(_count, shape))
        raise LowprobError(f"{what} would need {_gib(n_bytes)} ({dims} numbers of {itemsize} bytes), past the "
                           f"{_gib(ceiling)} one array may take ({why}){': ' + fix if fix else ''}")


def finite(value: Any, name: str) -> float:
    """A real number that is not NaN or infinite, as a float: a NaN would pass every comparison downstream."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise LowprobError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_samples(value: Any, name: str = "n_samples") -> int:
    """A sample count in 2 .. :data:`MAX_SAMPLES` as a plain int: one sample has no variance, and a
    count past the ceiling would loop for days."""
    return integer_in(value, name, 2, MAX_SAMPLES, " (12 days even at a million samples a second)")
