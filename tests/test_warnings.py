"""An estimate says when it cannot be trusted: ``Estimate.warnings``, read from the run's own draws."""

import math

from lowprob import ArgmaxIs, estimate
from lowprob.estimators.warnings import FEW_HITS, NEAR_RATIO, ONE_SAMPLE, warnings_for

from .test_ceis import sharp as problem  # noqa: F401  (the fixture: a toy transformer with exact answers)


def _ceis_diagnostics(hits=40, eff=12.0, near_m2=None, n=8000):
    return {"hits": hits, "effective_hits": eff, "estimation_samples": n,
            "near_miss_log_w": {"m05": None, "m1": None, "m2": near_m2}}


def test_each_sign_gives_its_sentence_and_a_clean_run_none():
    assert warnings_for("ceis", 1e-6, _ceis_diagnostics()) == []
    zero = warnings_for("ceis", 0.0, _ceis_diagnostics(hits=0, eff=0.0))
    assert len(zero) == 1 and "no sample reached the event" in zero[0]
    one = warnings_for("ceis", 1e-6, _ceis_diagnostics(eff=ONE_SAMPLE - 0.1))
    assert len(one) == 1 and "one sample carries the estimate" in one[0]
    # a sample within 2 logits of the event weighing just over / under NEAR_RATIO x the estimate, per sample,
    # where fewer than FEW_HITS effective hits carry it; with more hits, no warning
    p, n = 1e-9, 8000
    heavy, light = math.log(1.01 * NEAR_RATIO * p * n), math.log(0.99 * NEAR_RATIO * p * n)
    over = warnings_for("ceis", p, _ceis_diagnostics(eff=FEW_HITS - 0.1, near_m2=heavy, n=n))
    under = warnings_for("ceis", p, _ceis_diagnostics(eff=FEW_HITS - 0.1, near_m2=light, n=n))
    many = warnings_for("ceis", p, _ceis_diagnostics(eff=FEW_HITS + 0.1, near_m2=heavy, n=n))
    assert len(over) == 1 and "likely low" in over[0] and under == [] and many == []
    assert warnings_for("naive", 0.0, {"hits": 0}) and warnings_for("smc", 0.0, {"matched": 0})


def test_a_run_that_never_hits_says_so_everywhere(problem):  # noqa: F811
    model, dist, exact = problem
    target = int((exact > 0).nonzero()[exact[exact > 0].argmin()])  # the rarest output: 8.8e-7
    est = estimate(model, dist, ArgmaxIs(target), method="naive", budget=64, seed=0)
    assert est.probability == 0 and len(est.warnings) == 1
    assert est.to_json()["warnings"] == est.warnings
    lines = est.summary().splitlines()
    assert len(lines) == 2 and lines[1] == f"warning: {est.warnings[0]}"


def test_a_good_estimate_carries_none(problem):  # noqa: F811
    model, dist, exact = problem
    est = estimate(model, dist, ArgmaxIs(2), budget=256, seed=0)  # p = 2.7e-3: the default finds it easily
    assert abs(math.log10(est.probability / exact[2].item())) < math.log10(3)
    assert est.warnings == [] and len(est.summary().splitlines()) == 1
