"""Scoring estimates against ground truth: losses, leave-one-out fits, temperature selection, targets."""

from lowprob.evaluation.loss import (
    ZERO_FLOOR,
    fit_log_affine,
    is_loss,
    log_estimate,
    loo_constant_losses,
    loo_fitted,
    loo_losses,
)
from lowprob.evaluation.metrics import (
    abs_log10_error,
    covered,
    meets_truth,
    plain_sampling_wnrv,
    work_normalised_variance,
)
from lowprob.evaluation.selection import Selection, select
from lowprob.evaluation.targets import candidate_targets, select_targets, target_range

__all__ = [
    "ZERO_FLOOR", "Selection", "abs_log10_error", "candidate_targets", "covered", "fit_log_affine", "is_loss",
    "log_estimate", "loo_constant_losses", "loo_fitted", "loo_losses", "meets_truth",
    "plain_sampling_wnrv", "select", "select_targets", "target_range", "work_normalised_variance",
]
