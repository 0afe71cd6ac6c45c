"""The shipped reference ground truth: the 3 shipped models x 8 paper distributions at ``cpu`` length.

Exact where the product space allows (``icl``), else sampled with seed 0: 2^24 samples for gelu-1l
and 2^22 for the deeper, slower models — what fits ~6 CPU-hours on 2 cores (see RESULTS.md).
Regenerate with ``python benchmarks/reference_ground_truth.py``.
"""

from __future__ import annotations

from pathlib import Path

from lowprob.errors import LowprobError
from lowprob.truth.result import GroundTruth

REFERENCE_DIR = Path(__file__).parent / "reference"
REFERENCE_SAMPLES = {"gelu-1l": 1 << 24, "gelu-2l": 1 << 22, "gelu-4l": 1 << 22}


def reference_path(model_name: str, dist_name: str, length: str = "cpu") -> Path:
    return REFERENCE_DIR / length / model_name / f"{dist_name}.safetensors"


def load_reference(model_name: str, dist_name: str, model=None, dist=None, length: str = "cpu") -> GroundTruth:
    """The shipped table for (model, distribution), checked against ``model``/``dist`` when given."""
    path = reference_path(model_name, dist_name, length)
    if not path.exists():
        raise LowprobError(f"no shipped reference ground truth for {model_name}/{dist_name} at {length} length; "
                           f"compute it with `lowprob ground-truth --model {model_name} --dist {dist_name} ...` "
                           f"or `python benchmarks/reference_ground_truth.py`")
    return GroundTruth.load(path, model, dist)
