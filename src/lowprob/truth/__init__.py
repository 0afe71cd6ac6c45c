"""Ground truth: exact enumeration or sampled counts of the argmax token, stored with their hashes."""

from lowprob.truth.compute import ground_truth
from lowprob.truth.result import GroundTruth, model_sha256

__all__ = ["GroundTruth", "ground_truth", "model_sha256"]
