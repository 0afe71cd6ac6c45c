"""Ground truth: exact enumeration or sampled counts of the argmax token, stored with their hashes;
and exact P(event) for any event on an enumerable space."""

from lowprob.models.protocol import model_sha256
from lowprob.truth.compute import ground_truth
from lowprob.truth.exact_event import exact_conditionals, exact_probability
from lowprob.truth.result import GroundTruth

__all__ = ["GroundTruth", "exact_conditionals", "exact_probability", "ground_truth", "model_sha256"]
