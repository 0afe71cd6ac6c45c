"""SMC over partial continuations: splitting toward a pattern, with an unbiased product estimator.

Particles are (prompt, partial continuation) pairs; each step extends every unfinished particle by
one token (through the decoding cache) drawn from the tilted law of ``tilted`` — its β fitted by
the same cross-entropy pilot on ``adapt_fraction`` of the budget; 0 keeps the model's own law —
with p/q in the weights. A particle's level is how far
it has got into a pattern (``Patterns.progress``; a match is the top level, absorbing), and its
potential V = e^{growth × level}: particles that get closer gain weight, those that fall back lose
it. When the weights' effective sample size drops below ``resample_below`` × N, particles are
resampled in proportion to their weights (promising prefixes are copied, their caches with them)
and the mean weight joins the running product Ẑ. With V_T the final potentials,
p̂ = Ẑ × mean(w 1[match] / V_T) is unbiased for P(match) whatever ``growth`` is (the Feynman–Kac
normalising-constant estimator); growth only moves its variance. A finished particle needs no more
model calls.

The interval comes from ``replicates`` independent runs of budget / replicates particles each:
their mean is the estimate, and the interval a Student-t interval on log p̂ (delta method), which
is multiplicative: replicate estimates are positive and right-skewed, and a symmetric interval on p̂
covered 86–94% on the toy problems of the tests (200 seeds) where this one covers 95.5–98%, and 94 of
120 on the shipped models' ``generation`` scale where this one covers 100. Still declared sampling
error only: a spread over few replicates cannot show mass no replicate reached. With no match in any replicate
it is [0, Clopper–Pearson bound for 0 of budget], a heuristic: particles are not independent draws.
"""

from __future__ import annotations

import math

import torch

from lowprob import cost
from lowprob.attribution import Hits
from lowprob.continuations import Patterns, draw_tilted, flops_of
from lowprob.estimators.base import RawEstimate
from lowprob.estimators.intervals import clopper_pearson, student_half_width
from lowprob.estimators.proposals import Drawer, adapt, effective_sample_size
from lowprob.models.decoding import start_decoding


@torch.no_grad()
def smc_run(model, dist, event, n: int, generator: torch.Generator, growth: float, resample_below: float,
            beta: float, defensive: float) -> tuple[float, dict, Hits]:
    """One SMC run with ``n`` particles, steps drawn from the tilted law: (estimate, counts, hits).

    The hits are the matched particles' prompts, each weighing its share of the estimate; particles
    that descend from one initial particle (hence share its prompt) form one unit."""
    patterns = Patterns(event.patterns)
    top = max(len(p) for p in event.patterns)  # the level of a match
    prompts = dist.sample(n, generator)
    state = start_decoding(model, prompts)
    live = torch.arange(n)  # particles still running, in the order of the decoding state's rows
    level = torch.zeros(n, dtype=torch.long)
    matched = torch.zeros(n, dtype=torch.bool)
    log_w = torch.zeros(n, dtype=torch.float64)
    continuation = torch.zeros(n, event.steps, dtype=torch.long)
    root = torch.arange(n)  # each particle's initial ancestor, whose prompt it carries
    log_z, resamplings, rows, positions = 0.0, 0, 0, 0
    for t in range(event.steps):
        if len(live) == 0:  # every particle matched (resampling can copy matched ones over the rest)
            break
        step = draw_tilted(state.logits, event, patterns, continuation[live, :t], beta, defensive, generator)
        y = step.token
        continuation[live, t] = y
        seen = continuation[live, : t + 1]
        done = patterns.matched(seen)
        new_level = torch.where(done, top, patterns.progress(seen))
        log_w[live] += growth * (new_level - level[live]) - step.log_ratio
        level[live], matched[live[done]] = new_level, True
        if t == event.steps - 1 or bool(matched.all()):
            break
        going = (~done).nonzero()[:, 0]
        state.select(going)
        live = live[going]
        rows, positions = rows + len(going), positions + len(going) * state.positions_per_step()
        state.extend(y[going])
        if effective_sample_size(log_w) / n < resample_below:
            log_z += float(log_w.logsumexp(0)) - math.log(n)
            ancestors = torch.multinomial((log_w - log_w.max()).exp(), n, replacement=True, generator=generator)
            row_of = torch.full((n,), -1, dtype=torch.long)
            row_of[live] = torch.arange(len(live))
            level, matched, continuation = level[ancestors], matched[ancestors], continuation[ancestors]
            root = root[ancestors]
            log_w = torch.zeros(n, dtype=torch.float64)
            live = (~matched).nonzero()[:, 0]
            state.select(row_of[ancestors[live]])
            resamplings += 1
    terms = torch.where(matched, log_w - growth * top, -math.inf)
    estimate = math.exp(log_z + float(terms.logsumexp(0)) - math.log(n)) if matched.any() else 0.0
    hits = Hits(prompts[root[matched]], log_z + terms[matched] - math.log(n), root[matched])
    cost.charge(flops_of(model, n, prompts.shape[1], event, rows, positions), forwards=n)
    return estimate, {"resamplings": resamplings, "matched": int(matched.sum())}, hits


def smc(model, dist, event, budget: int, generator: torch.Generator, growth: float, resample_below: float,
        replicates: int, adapt_fraction: float, rounds: int, rho: float, defensive: float) -> RawEstimate:
    draw = Drawer(model, dist, event, generator, defensive)
    pilot = max(rounds, int(budget * adapt_fraction)) if adapt_fraction > 0 else 0
    beta, _ = adapt(draw, dist, pilot, rounds, rho, prompt_side=False) if pilot else (0.0, [])
    particles = budget - pilot
    replicates = min(replicates, particles)
    sizes = [particles // replicates + (r < particles % replicates) for r in range(replicates)]
    runs = [smc_run(model, dist, event, n, generator, growth, resample_below, beta, defensive) for n in sizes]
    values = torch.tensor([v for v, _, _ in runs], dtype=torch.float64)
    p = float(values.mean())
    if p == 0:
        interval = (0.0, clopper_pearson(0, budget)[1])
    elif replicates < 2:
        interval = (0.0, 1.0)
    else:
        # Student t on log p̂ (the delta method: se(log p̂) = se(p̂) / p̂), so the interval is multiplicative
        spread = student_half_width(float(values.std()), replicates) / p
        interval = (p * math.exp(-spread), p * math.exp(spread))
    return RawEstimate(p, interval,
                       {"replicate_estimates": values.tolist(), "matched": sum(i["matched"] for _, i, _ in runs),
                        "resamplings": sum(i["resamplings"] for _, i, _ in runs), "beta": round(beta, 3)},
                       hits=Hits.cat([h for _, _, h in runs], len(dist), "matched particles' prompts, each weighing "
                                     "its share of its replicate's estimate, pooled per initial ancestor"))
