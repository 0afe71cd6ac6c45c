"""The shared proposal pieces against exact sums over tiny supports."""

import itertools

import torch

from lowprob.distributions.base import TokenDistribution
from lowprob.estimators.proposals import Mixture, Supports, gradient_tilt, log_gradient_tilt


def test_balance_heuristic_weights_average_to_one_under_the_mixture_exactly():
    """Σ_x q_mix(x) D(x) / q_mix(x) = Σ_x D(x) = 1 for any shares: what makes every weighted term unbiased."""
    dist = TokenDistribution.from_positions([0, ([2, 5, 7], [0.5, 0.3, 0.2]), ([1, 3], [0.9, 0.1])], normalize=True)
    sup = Supports(dist, d_vocab=8)
    mix = Mixture(sup)
    mix.add(torch.tensor([[1.0, 0, 0], [1, 2, 3], [3, 1, 0]], dtype=torch.float64))
    mix.add(gradient_tilt(sup.log_prior, torch.arange(9, dtype=torch.float64).view(3, 3), 0.5))
    shares = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    cols = torch.tensor(list(itertools.product(range(1), range(3), range(2))))
    comp = mix.component_log_probs(cols)
    q_mix = (comp + shares.log()).logsumexp(1).exp()
    assert torch.allclose(q_mix.sum(), torch.tensor(1.0, dtype=torch.float64))
    w = mix.log_weights(cols, shares).exp()
    assert torch.allclose((q_mix * w).sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(sup.column.gather(1, sup.tokens(cols).T).T, cols)


def test_the_gradient_tilt_keeps_the_support_and_its_log_form_agrees():
    log_prior = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64).log()
    scores = torch.tensor([1.0, -1.0, 5.0], dtype=torch.float64)
    q = gradient_tilt(log_prior, scores, 2.0)
    assert q[2] == 0 and torch.allclose(q[:2], torch.softmax(torch.tensor([0.5, -0.5], dtype=torch.float64), 0))
    assert torch.allclose(log_gradient_tilt(log_prior, scores, 2.0).exp(), q)
