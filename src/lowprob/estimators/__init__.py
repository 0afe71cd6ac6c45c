"""Estimators behind one API; importing this package registers the built-in methods."""

from lowprob.estimators import ceis, extrapolation, itgis, mhis, mtis, naive  # noqa: F401  (registration side effects)
from lowprob.estimators.base import METHODS, Cost, Estimate, estimate

__all__ = ["METHODS", "Cost", "Estimate", "estimate"]
