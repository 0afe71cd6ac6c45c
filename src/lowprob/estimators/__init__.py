"""Estimators behind one API: ``estimate`` and the catalog of methods it dispatches to.

``catalog`` is torch-free; ``estimate``, ``Estimate`` and ``Cost`` load on first use (PEP 562), so
that reading the catalog (the CLI's ``--help``) does not import torch.
"""

from __future__ import annotations

import importlib

from lowprob.estimators.catalog import DEFAULT_METHOD, METHODS

__all__ = ["DEFAULT_METHOD", "METHODS", "Cost", "Estimate", "estimate"]


def __getattr__(name: str):
    if name in ("Cost", "Estimate", "estimate"):
        return getattr(importlib.import_module("lowprob.estimators.base"), name)
    raise AttributeError(f"module 'lowprob.estimators' has no attribute {name!r}")
