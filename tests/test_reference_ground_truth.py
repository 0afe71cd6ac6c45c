"""The shipped reference ground truth: tied to today's models and distributions, and a fresh random
slice of samples agrees with each table (chi-square, cells with < 5 expected counts pooled)."""

import pytest

import lowprob
from lowprob.truth import GroundTruth
from lowprob.truth.compute import MAX_EXACT
from lowprob.truth.reference import REFERENCE_DIR, REFERENCE_SAMPLES

from .test_ground_truth import chi_square_p

TABLES = sorted((REFERENCE_DIR / "cpu").glob("*/*.safetensors"))


@pytest.mark.skipif(not TABLES, reason="no reference table has been computed yet")
@pytest.mark.parametrize("path", TABLES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_reference_table_matches_a_fresh_slice(path):
    model = lowprob.load_model(path.parent.name)
    dist = lowprob.load_distribution(path.stem, model, "cpu")
    gt = GroundTruth.load(path, model, dist)  # refuses a table of another model or distribution
    assert gt.exact == (dist.support_size() <= MAX_EXACT)
    assert gt.probabilities.sum().item() == pytest.approx(1.0, abs=1e-9)
    if not gt.exact:
        assert int(gt.counts.sum()) == gt.n_samples == REFERENCE_SAMPLES[path.parent.name]
    fresh = lowprob.ground_truth(model, dist, samples=1 << 14, seed=12345)  # shard seeds unlike the table's
    # a sampled table's zero counts are not impossibilities: smooth them (add-1/2) before the test
    expected = gt.probabilities if gt.exact else (gt.counts.double() + 0.5) / (gt.n_samples + 0.5 * len(gt.counts))
    assert chi_square_p(fresh.counts, expected) > 1e-4
