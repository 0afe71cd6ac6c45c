import copy
import itertools
import math
import re

import pytest
import torch
from scipy import stats

from lowprob import LowprobError, Transformer
from lowprob.distributions.tiny import tiny_distribution
from lowprob.truth import GroundTruth, ground_truth
from lowprob.truth.compute import JobSpec, argmax_function, shard_totals

from .conftest import TINY


@pytest.fixture(scope="module")
def model():
    return Transformer(TINY, seed=0)


@pytest.fixture(scope="module")
def dist():
    return tiny_distribution("tiny-constants", vocab_size=TINY.d_vocab)


@pytest.fixture(scope="module")
def exact(model, dist):
    return ground_truth(model, dist, exact=True, shard_size=1000)


def test_exact_agrees_with_brute_force(model, dist, exact):
    supports = [list(zip(*(t.tolist() for t in dist.support(i)), strict=True)) for i in range(len(dist))]
    seqs, probs = [], []
    for combo in itertools.product(*supports):
        seqs.append([tok for tok, _ in combo])
        probs.append(math.prod(p for _, p in combo))
    with torch.no_grad():
        argmax = model.logits(torch.tensor(seqs)).argmax(-1).tolist()
    brute = [0.0] * model.d_vocab
    for a, p in zip(argmax, probs, strict=True):
        brute[a] += p
    torch.testing.assert_close(exact.probabilities, torch.tensor(brute, dtype=torch.float64), rtol=0, atol=1e-12)
    assert exact.probabilities.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert exact.exact and exact.n_samples == dist.support_size() == 8000 and exact.counts is None
    assert (exact.probabilities > 0).sum() > 3  # not degenerate: several argmax tokens


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square goodness of fit, cells with < 5 expected pooled; 0 if a count hits an impossible token."""
    if (counts[probs == 0] > 0).any():
        return 0.0
    n = counts.sum().item()
    expected = probs * n
    big = expected >= 5
    obs, exp = counts[big].double(), expected[big]
    if expected[~big].sum() > 0:
        obs = torch.cat([obs, counts[~big].sum(0, keepdim=True).double()])
        exp = torch.cat([exp, expected[~big].sum(0, keepdim=True)])
    return stats.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue


def test_sampled_counts_are_consistent_with_exact(model, dist, exact):
    sampled = ground_truth(model, dist, samples=50_000, seed=0, shard_size=1 << 13)
    assert sampled.counts.sum().item() == 50_000 and not sampled.exact
    torch.testing.assert_close(sampled.probabilities, sampled.counts.double() / 50_000)
    assert chi_square_p(sampled.counts, exact.probabilities) > 1e-3
    # the check has power: the same counts are rejected against another model's ground truth
    other = ground_truth(Transformer(TINY, seed=1), dist, exact=True)
    assert chi_square_p(sampled.counts, other.probabilities) < 1e-6


def test_sampled_totals_do_not_depend_on_shard_scheduling(model, dist):
    whole = ground_truth(model, dist, samples=10_000, seed=7, shard_size=3000)
    spec = JobSpec("m", "d", exact=False, n=10_000, seed=7, shard_size=3000)
    argmax = argmax_function(model, dist)
    shuffled = sum(shard_totals(argmax, dist, model.d_vocab, spec, i) for i in (3, 1, 0, 2))
    assert torch.equal(whole.counts, shuffled)
    again = ground_truth(model, dist, samples=10_000, seed=7, shard_size=3000)
    assert torch.equal(whole.counts, again.counts)
    assert not torch.equal(whole.counts, ground_truth(model, dist, samples=10_000, seed=8, shard_size=3000).counts)


def test_file_round_trip_and_hash_checks(model, dist, exact, tmp_path):
    path = tmp_path / "gt.safetensors"
    exact.save(path)
    back = GroundTruth.load(path, model, dist)
    assert torch.equal(back.probabilities, exact.probabilities)
    assert (back.exact, back.n_samples, back.model_sha256) == (True, 8000, exact.model_sha256)
    sampled = ground_truth(model, dist, samples=100, seed=3)
    sampled.save(path)
    assert torch.equal(GroundTruth.load(path).counts, sampled.counts)
    with pytest.raises(LowprobError, match="another model"):
        GroundTruth.load(path, Transformer(TINY, seed=1), dist)
    with pytest.raises(LowprobError, match="another distribution"):
        GroundTruth.load(path, model, tiny_distribution("tiny-uniform", vocab_size=TINY.d_vocab))
    path.write_bytes(b"junk")
    with pytest.raises(LowprobError, match="cannot read ground-truth file"):
        GroundTruth.load(path)


def test_a_template_table_loads_against_the_plain_model_and_the_template(tiny_lm, tmp_path):
    """The README's call: the file holds the model seen through the template; the user holds both apart."""
    from lowprob.distributions.slots import SlotDistribution

    slots = {"who": {"values": [" fox", " dog", " quick"], "weights": [0.5, 0.3, 0.2]},
             "what": {"values": [" jumps", " RUN", " lazy"]}}
    template = SlotDistribution.from_spec("The{who} said{what}", slots, tiny_lm.tokenizer)
    path = tmp_path / "template.safetensors"
    ground_truth(tiny_lm, template, exact=True).save(path)
    back = GroundTruth.load(path, tiny_lm, template)
    assert torch.equal(back.probabilities, GroundTruth.load(path).probabilities)
    other_values = SlotDistribution.from_spec("The{who} said{what}", {**slots, "what": {"values": [" a", " b", " c"]}},
                                              tiny_lm.tokenizer)
    other_weights = SlotDistribution.from_spec(
        "The{who} said{what}", {**slots, "who": {**slots["who"], "weights": [0.2, 0.3, 0.5]}}, tiny_lm.tokenizer)
    other_model = Transformer(tiny_lm.cfg, seed=1, tokenizer=tiny_lm.tokenizer)
    for lm, dist, message in ((tiny_lm, other_values, "another model or template"),
                              (tiny_lm, other_weights, "another distribution"),
                              (other_model, template, "another model or template"),
                              (None, template, "needs the model too")):
        with pytest.raises(LowprobError, match=message):
            GroundTruth.load(path, lm, dist)


def test_public_api_call(model, dist, exact):
    import lowprob

    gt = lowprob.ground_truth(model, dist, exact=True, shard_size=1000)
    assert torch.equal(gt.probabilities, exact.probabilities)


def test_bad_requests_are_clear_errors(model, dist):
    with pytest.raises(LowprobError, match="exactly one of"):
        ground_truth(model, dist)
    with pytest.raises(LowprobError, match="exactly one of"):
        ground_truth(model, dist, exact=True, samples=10)
    with pytest.raises(LowprobError, match="samples must be >= 1"):
        ground_truth(model, dist, samples=0)
    wide = tiny_distribution("tiny-wide", vocab_size=TINY.d_vocab)
    from lowprob.distributions.base import TokenDistribution

    huge = TokenDistribution.from_positions([wide.support(1)] * 8)
    with pytest.raises(LowprobError, match="more than exact mode's 2\\^36"):
        ground_truth(model, huge, exact=True)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_fast_path_argmax_equals_plain_on_toy_models(n_layers):
    import dataclasses

    from lowprob.models.argmax import FastArgmax

    model = Transformer(dataclasses.replace(TINY, n_layers=n_layers), seed=n_layers)
    for name in ("tiny-zipf", "tiny-constants"):
        d = tiny_distribution(name, vocab_size=TINY.d_vocab)
        tokens = d.sample(4000, torch.Generator().manual_seed(0))
        fast = FastArgmax(model, d.support_ids())
        torch.testing.assert_close(fast.last_resid(tokens), model.final_residual(model.W_E[tokens]),
                                   rtol=1e-5, atol=1e-5)
        assert torch.equal(fast.argmax(tokens), model.logits(tokens).argmax(-1))


@pytest.mark.parametrize("name, dist_name", [("gelu-1l", "english"), ("gelu-2l", "icl"), ("gelu-4l", "hex")])
def test_fast_path_argmax_equals_plain_on_shipped_models(name, dist_name):
    import lowprob
    from lowprob.models.argmax import FastArgmax

    model = lowprob.load_model(name)
    d = lowprob.load_distribution(dist_name, model)
    tokens = d.sample(4096, torch.Generator().manual_seed(1))
    assert torch.equal(FastArgmax(model, d.support_ids()).argmax(tokens), model.logits(tokens).argmax(-1))


def test_fast_path_resolves_exact_and_near_ties_like_the_plain_model(dist):
    from lowprob.models.argmax import FastArgmax

    model = Transformer(TINY, seed=0)
    tokens = dist.sample(4000, torch.Generator().manual_seed(0))
    winners = model.logits(tokens).argmax(-1)
    with torch.no_grad():  # give every usual winner an exact twin and a near twin
        for w in winners.unique()[:4].tolist():
            twin, near = (w + 1) % TINY.d_vocab, (w + 2) % TINY.d_vocab
            model.W_U[:, twin] = model.W_U[:, w]
            model.W_U[:, near] = model.W_U[:, w] * (1 + 1e-7)
    fast = FastArgmax(model, dist.support_ids())
    expected = model.logits(tokens).argmax(-1)
    top = model.logits(tokens).topk(2).values
    close = top[:, 0] - top[:, 1] <= 1e-3
    expected[close] = copy.deepcopy(model).double().logits(tokens[close]).argmax(-1)  # the float64 rule
    assert torch.equal(fast.argmax(tokens), expected)
    assert fast.n_recomputed > 100


def test_the_argmax_of_near_ties_does_not_depend_on_the_batch(dist):
    """float32 logits of one sequence move with the batch it is in; the settled argmax must not."""
    from lowprob.truth.compute import argmax_function

    model = Transformer(TINY, seed=0)
    tokens = dist.sample(600, torch.Generator().manual_seed(3))
    with torch.no_grad():  # near twins of the usual winners, 1e-7 apart: float32 cannot order them stably
        for w in model.logits(tokens).argmax(-1).unique()[:4].tolist():
            model.W_U[:, (w + 2) % TINY.d_vocab] = model.W_U[:, w] * (1 + 1e-7)
    for fast in (True, False):
        argmax = argmax_function(model, dist, fast=fast)
        whole = argmax(tokens)
        one_by_one = torch.cat([argmax(tokens[i:i + 1]) for i in range(len(tokens))])
        assert torch.equal(whole, one_by_one), fast


def _layouts(vocab: int) -> dict[str, object]:
    """Tiny families plus layouts with constants before, between and after the variable positions."""
    from lowprob.distributions.base import TokenDistribution

    gen = torch.Generator().manual_seed(3)

    def var(n):
        return torch.randperm(vocab - 1, generator=gen)[:n] + 1, torch.rand(n, generator=gen, dtype=torch.float64)

    layouts = {name: tiny_distribution(name, vocab) for name in ("tiny-constants", "tiny-uniform")}
    for name, positions in {"variable first, constants last": [var(5), 3, var(4), 7, 9],
                            "constant prefix, adjacent variables": [2, 3, var(6), var(5), 4, 5, 6],
                            "no constants": [var(3), var(4), var(5)],
                            "one variable position": [1, var(30)]}.items():
        layouts[name] = TokenDistribution.from_positions(positions, normalize=True, name=name)
    return layouts


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_prefix_shared_enumeration_equals_plain_enumeration(n_layers):
    import dataclasses

    from lowprob.models.prefix_tree import PrefixTree
    from lowprob.truth.compute import enumeration_argmax

    # a larger init than the default 0.02 makes attention and logits sharp, so a wrong key or
    # mask changes winners instead of being lost in near-uniform attention
    model = Transformer(dataclasses.replace(TINY, n_layers=n_layers, init_std=0.5), seed=n_layers)
    recomputed = 0
    for name, d in _layouts(TINY.d_vocab).items():
        tokens, _ = next(d.enumerate(d.support_size()))
        with torch.no_grad():
            plain = model.logits(tokens).argmax(-1)
        tree = PrefixTree(model, d.support_ids())
        assert torch.equal(tree.argmax(0, len(tokens)), plain), name
        # any range, node-aligned or not, on its own: what a shard or a resumed run evaluates
        a, b = 7, len(tokens) - 3
        assert torch.equal(tree.argmax(a, b), plain[a:b]), name
        assert torch.equal(enumeration_argmax(model, d)(a, tokens[a:b]), plain[a:b]), name
        # the table: bit-identical to the plain path's, with shards cutting across prefix blocks
        kw = dict(exact=True, shard_size=997, max_seconds=None)
        assert torch.equal(ground_truth(model, d, **kw).probabilities,
                           ground_truth(model, d, fast=False, **kw).probabilities), name
        recomputed += tree.n_recomputed
    assert recomputed > 0  # near-ties on random toy models do reach the plain path


def test_prefix_shared_enumeration_on_a_shipped_model():
    import lowprob
    from lowprob.distributions.base import TokenDistribution
    from lowprob.models.prefix_tree import PrefixTree

    model = lowprob.load_model("gelu-2l")
    english = lowprob.load_distribution("english", model)
    positions = []
    for p in range(len(english)):  # the 6 most likely tokens at 4 spread positions, the mode elsewhere
        ids, probs = english.support(p)
        top = probs.argsort(descending=True)[:6]
        positions.append((ids[top], probs[top]) if p in (1, 7, 13, 14) else int(ids[top[0]]))
    d = TokenDistribution.from_positions(positions, normalize=True)
    tokens, _ = next(d.enumerate(d.support_size()))
    with torch.no_grad():
        plain = torch.cat([model.logits(t).argmax(-1) for t in tokens.split(512)])
    assert torch.equal(PrefixTree(model, d.support_ids()).argmax(0, len(tokens)), plain)


def test_exact_refuses_a_run_estimated_past_the_limit_before_starting(model, tmp_path):
    from lowprob.truth.compute import duration

    d = tiny_distribution("tiny-zipf", TINY.d_vocab)  # 331,776 sequences: probed
    with pytest.raises(LowprobError, match=r"would take about [0-9.]+ (s|min) here \([0-9,]+ sequences/s, measured "
                                           r"by a timed probe of [0-9,]+ sequences\), more than the limit of 0\.001 s"):
        ground_truth(model, d, exact=True, max_seconds=1e-3, checkpoint=tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    assert [duration(s) for s in (0.5, 90, 5400, 3 * 86_400, 40 * 86_400)] == \
        ["0.5 s", "1.5 min", "1.5 h", "3 days", "40 days"]


def crash_after_checkpoint(monkeypatch, shards: int):
    """Make the run die right after writing its ``shards``-th checkpoint; returns a function that undoes it."""
    from lowprob.truth import compute

    real_save = compute._save_checkpoint

    def save_then_crash(path, spec, totals, shards_done):
        real_save(path, spec, totals, shards_done)
        if shards_done == shards:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(compute, "_save_checkpoint", save_then_crash)
    return lambda: monkeypatch.setattr(compute, "_save_checkpoint", real_save)


@pytest.mark.parametrize("mode", [dict(exact=True), dict(samples=20_000, seed=5)])
def test_resume_after_a_crash_is_bit_identical(model, dist, mode, tmp_path, monkeypatch):
    whole = ground_truth(model, dist, shard_size=1500, **mode)
    undo = crash_after_checkpoint(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        ground_truth(model, dist, shard_size=1500, checkpoint=tmp_path / "ck", **mode)
    undo()
    resumed = ground_truth(model, dist, shard_size=1500, checkpoint=tmp_path / "ck", **mode)
    assert torch.equal(resumed.probabilities, whole.probabilities)
    with pytest.raises(LowprobError, match="belongs to another job"):
        ground_truth(model, dist, shard_size=1000, checkpoint=tmp_path / "ck", **mode)
    (tmp_path / "ck").write_bytes(b"garbage")
    with pytest.raises(LowprobError, match="is unreadable"):
        ground_truth(model, dist, shard_size=1500, checkpoint=tmp_path / "ck", **mode)


def test_cli_exact_refuses_a_run_past_max_hours(tiny_lm, tmp_path):
    import subprocess
    import sys

    from lowprob.models import save_model

    save_model(tiny_lm, tmp_path / "m", {"name": "tiny"})
    out = tmp_path / "gt.safetensors"
    refused = subprocess.run([sys.executable, "-m", "lowprob", "ground-truth", "--model", str(tmp_path / "m"),
                              "--dist", "tiny-zipf", "--exact", "--max-hours", "1e-7", "--out", str(out)],
                             capture_output=True, text=True)
    assert refused.returncode == 2, refused.stderr
    assert "would take about" in refused.stderr and "timed probe" in refused.stderr
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_a_plain_path_checkpoint_resumes_on_the_prefix_path_bit_identically(model, dist, tmp_path, monkeypatch):
    """Shards are enumeration ranges whichever path runs them, so the job spec did not change."""
    whole = ground_truth(model, dist, exact=True, shard_size=700, fast=False)
    undo = crash_after_checkpoint(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        ground_truth(model, dist, exact=True, shard_size=700, fast=False, checkpoint=tmp_path / "ck")
    undo()
    resumed = ground_truth(model, dist, exact=True, shard_size=700, checkpoint=tmp_path / "ck")
    assert torch.equal(resumed.probabilities, whole.probabilities)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--samples", "1000000", "--shard-size", "2000", "--seed", "4"],
                                  ["--exact", "--shard-size", "1000"]])
def test_cli_kill_minus_9_then_resume_equals_an_uninterrupted_run(tiny_lm, tmp_path, mode):
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors import safe_open

    from lowprob.models import save_model

    save_model(tiny_lm, tmp_path / "m", {"name": "tiny"})
    out = tmp_path / "gt.safetensors"
    partial = tmp_path / "gt.safetensors.partial"
    args = [sys.executable, "-m", "lowprob", "ground-truth", "--model", str(tmp_path / "m"), "--dist", "tiny-zipf",
            *mode, "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = 0
    deadline = time.time() + 120
    while done < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
        try:
            with safe_open(str(partial), framework="pt") as f:
                done = int(f.metadata()["shards_done"])
        except Exception:  # not written yet, or replaced while we read it
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= done < 300 and not out.exists(), "the run was not interrupted mid-way"
    refused = subprocess.run(args, capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = subprocess.run([*args, "--resume"], check=True, capture_output=True, text=True)
    assert not partial.exists()
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", resumed.stderr)  # tqdm's elapsed<remaining (the ETA)
    d = tiny_distribution("tiny-zipf", tiny_lm.d_vocab)
    if "--exact" in mode:
        assert "probe estimate" in resumed.stderr
        expected = ground_truth(tiny_lm, d, exact=True, shard_size=1000, fast=False)
        assert torch.equal(GroundTruth.load(out, tiny_lm).probabilities, expected.probabilities)
    else:
        expected = ground_truth(tiny_lm, d, samples=1_000_000, seed=4, shard_size=2000)
        assert torch.equal(GroundTruth.load(out, tiny_lm).counts, expected.counts)
