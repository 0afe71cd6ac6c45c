"""Certified bounds: a proved [lower, upper] for P(event), by branch-and-bound over the input space."""

from __future__ import annotations

from lowprob.bounds.api import bound, bounded_estimate
from lowprob.bounds.result import Bounds, DepthStats

__all__ = ["Bounds", "DepthStats", "bound", "bounded_estimate"]
