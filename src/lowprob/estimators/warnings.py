"""When an estimate cannot be trusted, say so: sentences read from what the run itself saw.

A stalled importance sampler looks like any other estimate: a number and an interval. Its own draws
still show the stall — no hit at all, one sample carrying the whole estimate, or samples a little short
of the event weighing far more than the estimate (a hit there would have moved it by that much: the
proposal has not reached where the event's mass is) while few effective hits carry the estimate.
``warnings_for`` turns those signs into sentences
(``Estimate.warnings``); an empty list means none was seen, not that the estimate is right.

The thresholds were chosen on CEIS's rows of the `cpu` and `exact` scales and checked on other seeds
(``benchmarks/rare_end.py warnings``; figures in RESULTS.md, "The rare end"). Near misses alone do not
suffice: every weight is at most 1 / defensive, so below p ~ 1e-6 any sample from D within 2 logits of the
event weighs thousands of times the estimate, and good estimates there rest on many hits.
"""

from __future__ import annotations

import math
from typing import Any

ONE_SAMPLE = 1.2  # effective hits below this: one weight is the estimate
NEAR_RATIO = 1000.0  # a near miss weighing this many times the estimate ...
NEAR_LOGITS = 2  # ... within this many logits of the event (CEIS's near_miss_log_w "m2") ...
FEW_HITS = 5.0  # ... where the estimate rests on fewer effective hits: the proposal stalled short of the event


def warnings_for(method: str, probability: float, diagnostics: dict[str, Any]) -> list[str]:
    """The warnings an estimate of ``probability`` by ``method`` with these ``diagnostics`` carries."""
    said = []
    hits = diagnostics.get("hits", diagnostics.get("matched"))
    if probability == 0 or hits == 0:
        said.append("no sample reached the event: an estimate of 0 says only that p is below the interval's upper "
                    "end; raise the budget, or try another method")
        return said
    eff = diagnostics.get("effective_hits")
    if eff is not None and eff < ONE_SAMPLE:
        said.append(f"one sample carries the estimate (effective hits {eff:.2f}): it may be far off either way")
    near = (diagnostics.get("near_miss_log_w") or {}).get(f"m{NEAR_LOGITS}")
    n = diagnostics.get("estimation_samples")
    if near is not None and n and eff is not None and eff < FEW_HITS and math.exp(near) / n > NEAR_RATIO * probability:
        said.append(f"a sample within {NEAR_LOGITS} logits of the event weighs {math.exp(near) / n / probability:.2g}× "
                    f"the estimate, which rests on {eff:.1f} effective hits: the proposal has not reached where the "
                    f"event's mass is, so the estimate is likely low")
    return said
