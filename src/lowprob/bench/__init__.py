"""The benchmark: scales of (model, distribution) problems, a resumable runner, and its report."""

from lowprob.bench.runner import run_bench
from lowprob.bench.scales import SCALES, Scale, get_scale

__all__ = ["SCALES", "Scale", "get_scale", "run_bench"]
