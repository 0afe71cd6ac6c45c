"""A progress meter for long estimates, fed by the shared forward helpers rather than by each estimator.

``estimate`` opens a meter (``metered``) around a run it predicts to be long; the helpers every
method pushes sequences through (``outcomes``, ``score_and_gradient``, ``continue_prompts`` and
the Rao–Blackwell sums) call ``advance`` with the work they did, in the units the run was priced
in (forward passes of one sequence, or continuations). The meter lives in a context variable, so
``advance`` is a no-op when none is open (the library's default) and nothing threads a callback
through the estimators' signatures.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tqdm import tqdm

_BAR: ContextVar[tqdm | None] = ContextVar("lowprob_progress", default=None)


def advance(work: int) -> None:
    """Report ``work`` units done (forward passes of one sequence, or continuations) to the open meter, if any."""
    bar = _BAR.get()
    if bar is not None:
        bar.update(work)


@contextmanager
def metered(total: int, unit: str, desc: str, note: str) -> Iterator[None]:
    """A bar on stderr counting ``total`` units while the body runs; completed when the body returns, since
    work the helpers do not see (SMC's own decoding, gld's and qld's activations) is done by then too."""
    with tqdm(total=total, unit=unit, unit_scale=True, desc=desc, postfix=note, file=sys.stderr) as bar:
        token = _BAR.set(bar)
        try:
            yield
        finally:
            _BAR.reset(token)
        bar.update(max(0, total - bar.n))
