"""A progress bar for long estimates, driven by the cost meter rather than by each estimator.

``estimate`` opens a bar (``progress_bar``) around a run it predicts to be long and hands the cost meter
(``lowprob.cost``) a watcher that moves it: every place that runs the model already charges the meter, so
the bar sees all the work — forward passes' worth of FLOPs for an event on the logits, continuations for a
generation event — and nothing threads a callback through the estimators' signatures.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress_bar(total: int, unit: str, desc: str, note: str) -> Iterator[Callable[[float], None]]:
    """A bar on stderr counting ``total`` units; yields ``show(done)``, which moves it to ``done`` units. It is
    completed when the body returns."""
    with tqdm(total=total, unit=unit, unit_scale=True, desc=desc, postfix=note, file=sys.stderr) as bar:

        def show(done: float) -> None:
            bar.update(min(done, total) - bar.n)

        yield show
        bar.update(max(0, total - bar.n))
