"""The `trigger` bench scale: its planted targets and exact truth, a small run end to end, and the attribution check."""

import dataclasses
import json
from pathlib import Path

import pytest

from lowprob.attribution import Attribution
from lowprob.bench import SCALES, get_scale, run_bench
from lowprob.bench.report import write_report
from lowprob.bench.rows import plan_pair
from lowprob.bench.score import CONSTANT, load_rows, score_rows
from lowprob.bench.trigger_report import found_it
from lowprob.distributions.planted import planted_trigger
from lowprob.truth.trigger import load_trigger_problem, trigger_problems, trigger_ranks_first

ROOT = Path(__file__).resolve().parents[1]
# budget 1024: CEIS's probe takes a quarter of the work, and at 384 what is left finds no trigger
SMALL = dataclasses.replace(get_scale("trigger"), budget=1024, seeds=(0,), models=("gelu-2l-trigger",),
                            distributions=("trigger-p4", "trigger-p6", "trigger-p8", "trigger-p10"))


def test_the_scale_plans_the_planted_target_with_the_references_exact_probability(tmp_path):
    scale = get_scale("trigger")
    problems = {(p.model, p.distribution): p for p in trigger_problems()}
    assert set(scale.pairs()) == set(problems) and len(problems) == 20  # 5 models x their recipe's 4
    for model_name, dist_name in scale.pairs():
        plan = plan_pair(scale, model_name, dist_name, tmp_path, ["naive", "itgis"], None)
        problem = problems[(model_name, dist_name)]
        _, _, event, figures = load_trigger_problem(model_name, dist_name)
        assert plan.meta["targets"] == [problem.target_id] == [event.token]
        truth = plan.truth[problem.target_id]
        largest = {"trigger": 245_760, "conj3": 150 ** 3, "conj4": 40 ** 4}[model_name.rsplit("-", 1)[1]]
        assert truth["ground_truth_exact"] and truth["ground_truth_n"] == largest
        assert truth["ground_truth"] == pytest.approx(problem.event_probability, rel=1e-12)
        assert plan.meta["trigger_probability"] == figures["trigger_probability"]
        assert len(plan.jobs) == (1 + len(scale.temperatures)) * len(scale.seeds)


def test_existing_scales_keep_their_definitions():
    """A field added for the trigger scale stays out of the others, so their committed runs still resume."""
    for name in ("cpu", "exact"):
        committed = json.loads((ROOT / "benchmarks" / "results" / name / "bench.json").read_text())
        assert json.loads(json.dumps(SCALES[name].to_json())) == committed
    assert SCALES["trigger"].to_json()["planted"] is True


@pytest.mark.slow
def test_a_small_trigger_run_writes_rows_that_the_report_scores(tmp_path):
    out = run_bench(SMALL, tmp_path / "run", ["naive", "ceis"], progress=False)
    rows = load_rows(out)
    assert len(rows) == 2 * 4 and {r["target_text"] for r in rows} == {" Windows"}
    for r in rows:
        summary = r["attribution"]
        assert set(summary["trigger_first"]) == {"year", "name"}
        if summary["hits"] == 0:  # no hits, nothing ranks first
            assert not any(summary["trigger_first"].values()) and summary["top"] == {}
    # CEIS finds the 1e-4 trigger at this small budget, and its hits point at it
    found = [r for r in rows if r["method"] == "ceis" and r["distribution"] == "trigger-p4"]
    assert found[0]["attribution"]["top"]["year"][0] == " 2032"
    assert all(found[0]["attribution"]["trigger_first"].values())
    assert run_bench(SMALL, out, ["naive", "ceis"], resume=True, progress=False) == out
    assert len(load_rows(out)) == len(rows)  # resume finds nothing left to do
    _, notes = score_rows(rows)
    assert len(notes) == 2 * 4 and all("1 target(s), too few to fit" in n for n in notes)  # one target per pair
    records, notes = score_rows(rows, pool_distributions=True)  # a model's four pairs make one unit
    assert not notes
    assert {(r["method"], r["distribution"]) for r in records} == {
        (m, d) for m in ("naive", "ceis", CONSTANT) for d in SMALL.distributions}
    assert all(r["loss"] >= 0 for r in records)
    paths = write_report(out)
    report = (out / "report.md").read_text()
    assert "## The planted trigger, recipe `year-name`" in report and "## Attribution: do the hits point" in report
    plot = out / "found_it-year-name.png"
    assert plot in paths and plot.stat().st_size > 10_000
    naive_table = report.split("### naive")[1].split("###")[0]
    assert naive_table.count("| gelu-2l-trigger |") == 4


def test_found_it_means_within_a_factor_3():
    assert found_it(1e-8, 2.9e-8) and found_it(1e-8, 1e-8 / 2.9)
    assert not found_it(1e-8, 3.1e-8) and not found_it(1e-8, 0.0)


def _attribution(first: dict[str, str]) -> Attribution:
    rows = []
    for position, (slot, text) in enumerate(first.items()):
        for rank, value in enumerate((text, " other")):
            rows.append({"position": position, "name": slot, "value": rank, "text": value, "prior": 0.1,
                         "conditional": 0.6 - 0.3 * rank, "interval": [0.0, 1.0], "rise": 0.5 - 0.3 * rank,
                         "lift": 6.0, "shift": 0.5})
    return Attribution(rows, hits=10, effective_hits=4.0)


def test_the_trigger_ranks_first_check():
    planted = planted_trigger("year-name")
    assert trigger_ranks_first(_attribution({"year": " 2032", "name": " Boris", "place": " Lisbon"}), planted) == {
        "year": True, "name": True}
    assert trigger_ranks_first(_attribution({"year": " 2031", "name": " Chen"}), planted) == {
        "year": False, "name": True}
    assert trigger_ranks_first(_attribution({"name": " Dave"}), planted) == {"year": False, "name": False}
    assert trigger_ranks_first(Attribution([], 0, 0.0), planted) == {"year": False, "name": False}
