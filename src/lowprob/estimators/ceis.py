"""CEIS, the default estimator: cross-entropy importance sampling over a growing mixture of proposals.

**Method.** Every proposal is a ``proposals.Mixture`` of product distributions over the positions'
supports, D itself always among them at the ``defensive`` share, and every sample x is weighted
w = D(x) / q_mix(x) for the whole mixture it was drawn from. CEIS climbs the *margin*: for ``ArgmaxIs``
the target logit minus the largest other logit (positive exactly on the event), for any other event
its score. Everything is fitted inside the call from the budget, in three phases:

1. **Gradient tilts** (``gradient_tilts``). A forward and backward pass on ``gradient_fraction`` of the
   budget, half from D and half from the first tilts, gives g, the margin's one-hot gradient; the
   components D·e^{g/T}, one per T in ``TEMPERATURES``, join D.
   **White-box probe** (``white_box_components``; on template distributions by default, ``probe``): where
   it fits in ``probe_fraction`` of the work, a swap scan (``swap_scan``) puts every value of every slot
   into ``probe_bases`` inputs from D (by default as many as half the share buys, 2 .. 16) and ranks the
   values by how far they move the margin and the units that write the target. Two components join: the
   uniform law on each support (flattened: a value D makes rare but the event needs is as likely as any
   other) and the scan's candidates (each slot's values ∝ 1 / their rank by evidence). The rest of the
   share runs every combination of the slots' top-k candidates (``candidate_product``: a conjunction of
   candidates is tried whole) and, where none hit and there is room, every neighbour of the two with the
   best margins (``neighbours``: a scan conditioned on near-hits); where some hit, a component fitted to
   them joins. The probe's passes are charged, and none of them enters the estimate.
2. **Cross-entropy stages** (``cross_entropy_stages``). Each stage draws ``stage_fraction`` of the work
   from the mixture, the newest component at half the share. Its elites (the hits once a ``rho`` share
   hits, else the samples above the margin's (1 − ρ)-quantile) give a categorical per position: their
   weighted frequencies shrunk toward the previous fit as a Dirichlet posterior mean (``prior_strength``
   × support size, in effective-sample units), tilted by e^g at the stage's ``elite_gradient`` best
   samples. The fit joins the mixture and earlier components stay, so mass a narrowing fit stops
   visiting stays covered. Stages end when the event is reached, when ``adapt_fraction`` of the work is
   spent or when the mixture is full (every component keeps at least ``floor``).
   **Climb** (``climb``). Where the stages drew no hit at all, up to ``climb_fraction`` of the work ascends the
   margin by exact scans from the stages' best distinct samples: every input one position away
   (``neighbours``, a subset of a position's values where the supports are wide) is run and the best becomes
   the next sample, until a scan hits or no neighbour does better (then the next start). Where the event
   needs specific values at two or more positions, a product fitted to elites puts little mass on their
   combination and the margin's gradient does not point to the missing part; a scan scores it given the parts
   the sample already holds. The scans' hits give one more component, half on the values they hold and half
   on the stages' last fit (``found_table``). The scans' passes are charged and none enters the estimate.
3. **Estimation** (``estimation``, ``summed_out``). The rest is drawn from the mixture of all components,
   its shares refitted by EM to every hit so far (each weighted by w) between batches; D keeps the
   defensive share, every other component at least ``floor``. With ``rao_blackwell``, ``rb_share`` of
   this work goes to samples whose last variable position j is summed out exactly
   (``rao_blackwell.LastPositionSums``): the term is w_{-j}(x) Σ_v D_j(v) 1[event(x_j = v)], w_{-j} the
   weight of the other positions, and it counts as the forward passes it cost.

**Unbiased.** The estimate is a weighted sum of w·1[event] over every sample of the stages and the
estimation phase, and of the summed-out terms. Each sample's mixture is fixed before the sample is drawn,
so every term has mean p given the past; each weight is fixed before its term is drawn too, and the
weights sum to 1 (``_phase_weights``: a stage sample weighs 1 / work, the estimation phase shares the rest),
so the sum has mean p (a martingale argument). An equal share of the total would not do: how many samples
the stages draw depends on what they drew.

**Cost.** At ``budget`` B, at most ``GRADIENT_CALL`` × B forward-equivalents (``lowprob.cost``), what ITGIS
and MHIS execute: a backward pass costs a forward, a summed-out sample its FLOPs in forwards, rounded up.

**Interval.** The compound-Poisson interval on the averaged terms, its upper end raised to
p̂ + 3.69 w_near / N, w_near the largest weight among samples within ``NEAR_MISS`` logits of the event:
a hit not drawn could weigh that much. That is a heuristic for mass the proposal visits too rarely,
which no importance sampler can bound. With no hit at all the upper end is at most 3.69 / (defensive · n),
n the samples and summed-out prefixes: each hits with probability at least defensive · p whatever came
before it, a proved bound. The plain compound-Poisson and a CLT interval are in the diagnostics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lowprob.attribution import Hits, hits_of
from lowprob.cost import GRADIENT_CALL
from lowprob.distributions.base import TokenDistribution
from lowprob.estimators.base import RawEstimate, outcomes, score_and_gradient
from lowprob.estimators.intervals import compound_poisson, normal_quantile, poisson_upper
from lowprob.estimators.proposals import (
    NEG_INF,
    Mixture,
    Supports,
    effective_sample_size,
    gradient_tilt,
    one_hot_scores,
)
from lowprob.estimators.rao_blackwell import LastPositionSums
from lowprob.estimators.swap_scan import (
    SwapScan,
    candidate_product,
    found_table,
    neighbours,
    run_exactly,
    scan_cost,
    scan_positions,
    swap_scan,
)
from lowprob.events import ArgmaxIs, Event, MarginAtLeast
from lowprob.models.protocol import LanguageModel

TEMPERATURES = (0.3, 0.67, 1.5, 3.34)  # of the gradient-tilt components
MIN_STAGE = 16  # samples per stage and per estimation batch, at least
EM_ITERATIONS = 30
MIN_BASES, MAX_BASES = 2, 16  # base inputs of the swap scan, when chosen from the work
NEAR_HIT_BASES = 2  # the candidate combinations with the best margins, whose neighbours are run when none hit
CLIMB_STEPS = 4  # a climbing step scores at most 1/CLIMB_STEPS of its share of the work ...
CLIMB_VALUES = 4  # ... but at least this many values of each position
CLIMB_STARTS = 4  # the stages' best samples a climb may start from
CLIMB_SHARE = 0.5  # of the climbs' component on the values their hits hold, the rest on the stages' last fit
NEAR_MISS = 0.5  # logits: a sample whose margin is this close to the event is a near miss
_NEG_INF64 = torch.tensor(NEG_INF, dtype=torch.float64)


def margin_of(event: Event) -> Callable[[Tensor], Tensor]:
    """What CEIS climbs: target logit − largest other logit for ``ArgmaxIs``; otherwise the event's score."""
    return MarginAtLeast(event.token, 0.0).score if isinstance(event, ArgmaxIs) else event.score


@dataclass(frozen=True)
class _Setting:
    """What every phase of one call reads: the problem, the margin it climbs, the sizes and hyper-parameters."""

    model: LanguageModel
    event: Event
    margin: Callable[[Tensor], Tensor]
    sup: Supports
    generator: torch.Generator
    stage: int  # samples per stage and per estimation batch
    rho: float
    defensive: float
    floor: float
    prior_strength: float
    elite_gradient: int


@dataclass
class _Draws:
    """Plain samples in the order drawn, each weighted w = D/q_mix for the mixture it came from."""

    log_w: list[Tensor] = field(default_factory=list)
    margin: list[Tensor] = field(default_factory=list)
    log_term: list[Tensor] = field(default_factory=list)  # log w·1[event]: -inf for a miss
    hits: list[Hits] = field(default_factory=list)

    def add(self, tokens: Tensor, log_w: Tensor, margin: Tensor, hit: Tensor) -> None:
        self.log_w.append(log_w)
        self.margin.append(margin)
        self.log_term.append(torch.where(hit, log_w, _NEG_INF64))
        self.hits.append(hits_of(tokens, log_w, hit))


@dataclass
class _Found:
    """Every hit so far as support columns and its log-weight (a summed-out prefix: its log term), what the
    mixture's shares are refitted to."""

    cols: list[Tensor] = field(default_factory=list)
    log_w: list[Tensor] = field(default_factory=list)
    count: int = 0

    def add(self, cols: Tensor, log_w: Tensor) -> None:
        self.cols.append(cols)
        self.log_w.append(log_w)
        self.count += len(cols)

    def shares(self, mix: Mixture, s: _Setting, skip: int | None = None) -> Tensor:
        """Mixture shares fitted by EM to the hits (under the marginals without position ``skip`` if given)."""
        return _em_shares(mix.component_log_probs(torch.cat(self.cols), skip), torch.cat(self.log_w), s.defensive,
                          s.floor)


@dataclass(frozen=True)
class _Stages:
    levels: list[float]  # each stage's level of the margin (0: the event itself)
    spent: int  # forward-equivalents since the call began
    best: Tensor  # [k, T] columns of the distinct samples with the best margins the stages drew, best first
    fit: Tensor  # the last fitted table


@dataclass(frozen=True)
class _SummedOutPlan:
    """How many summed-out samples the estimation phase's ``rb_share`` buys, what they are charged, in what batches."""

    sums: LastPositionSums
    prefixes: int
    work: int  # forward-equivalents charged for them
    batch: int


@dataclass(frozen=True)
class _SummedOut:
    log_terms: Tensor  # [prefixes] log w_{-j}(x) h(x)
    log_w: Tensor  # [prefixes] log w_{-j}(x)
    log_near: Tensor  # [prefixes] log w_{-j}(x) Σ_v D_j(v) 1[margin(x_j = v) >= -NEAR_MISS]
    shares: Tensor  # the last shares drawn with
    completion_hits: int
    hits: Hits


@torch.no_grad()
def ceis(model: LanguageModel, dist: TokenDistribution, event: Event, budget: int, generator: torch.Generator,
         rho: float, defensive: float, floor: float, prior_strength: float, gradient_fraction: float,
         stage_fraction: float, adapt_fraction: float, elite_gradient: int, rao_blackwell: bool,
         rb_share: float, probe: str, probe_fraction: float, probe_bases: int | None, climb_fraction: float
         ) -> RawEstimate:
    """P(event) from ``GRADIENT_CALL × budget`` forward-equivalents: gradient tilts, cross-entropy stages,
    estimation."""
    work = GRADIENT_CALL * budget  # forward-equivalents: what ITGIS/MHIS execute at this budget
    s = _Setting(model, event, margin_of(event), Supports(dist, model.d_vocab), generator,
                 max(MIN_STAGE, int(work * stage_fraction)), rho, defensive, floor, prior_strength, elite_gradient)
    n_grad = max(2, int(budget * gradient_fraction))
    draws, found = _Draws(), _Found()
    mix = gradient_tilts(s, dist, n_grad)
    scan, scan_notes = white_box_components(s, mix, dist, work, probe, probe_fraction, probe_bases)
    spent = GRADIENT_CALL * n_grad + scan_notes.get("forward_passes", 0)
    stages = cross_entropy_stages(s, mix, spent, work * adapt_fraction, draws, found)
    staged = sum(len(t) for t in draws.log_term)
    climbed = climb(s, mix, stages, work * climb_fraction) if climb_fraction and not found.count else {}
    n_est = work - stages.spent - climbed.get("forward_passes", 0)
    plan = _plan_summed_out(s, dist, n_est, rb_share) if rao_blackwell else None
    shares = estimation(s, mix, n_est - (plan.work if plan else 0), draws, found)
    summed = summed_out(s, mix, plan, found, shares) if plan else None
    return _result(s, len(dist), draws, staged, work, (plan, summed) if plan and summed else None,
                   {"stages": len(stages.levels), "levels": [round(x, 3) for x in stages.levels],
                    "components": len(mix), **({"climb": climbed} if climbed else {}),
                    "final_shares": [round(x, 4) for x in (summed.shares if summed else shares).tolist()],
                    **({"swap_scan": {**scan_notes, **(scan.summary(s.sup) if scan else {})}} if scan_notes else {})})


# --- 1. gradient tilts ----------------------------------------------------------------------------------------


def gradient_tilts(s: _Setting, dist: TokenDistribution, n_grad: int) -> Mixture:
    """D and D·e^{g/T} for each T in ``TEMPERATURES``, g the margin's one-hot gradient averaged over ``n_grad``
    sequences: half from D, half from the tilts the first half gives."""
    half = n_grad // 2
    grad_sum = _margin_gradient(s, dist.sample(half, s.generator)).sum(0)
    first = _tilts(s, grad_sum / half)
    cols = first.sample(_even_shares(len(first), s.defensive), n_grad - half, s.generator)
    grad_sum = grad_sum + _margin_gradient(s, s.sup.tokens(cols)).sum(0)
    return _tilts(s, grad_sum / n_grad)


def _margin_gradient(s: _Setting, tokens: Tensor) -> Tensor:
    """d margin / d token embeddings [B, T, d_model], on the model's device (a forward and a backward each)."""
    return score_and_gradient(s.model, s.event, tokens, s.margin)[2]


def _tilts(s: _Setting, grad_mean: Tensor) -> Mixture:
    g = one_hot_scores(s.model, s.sup.ids, grad_mean)
    g = torch.where(s.sup.mask, g, torch.zeros_like(g))
    mix = Mixture(s.sup)
    for t in TEMPERATURES:
        mix.add(gradient_tilt(s.sup.log_prior, g, t))
    return mix


def _even_shares(k: int, defensive: float, newest: float = 0.0) -> Tensor:
    """D at the defensive share, ``newest`` for the last component, the rest split evenly."""
    rest = (1 - defensive - newest) / (k - 1 - (newest > 0))
    shares = torch.full((k,), rest, dtype=torch.float64)
    shares[0] = defensive
    if newest > 0:
        shares[-1] = newest
    return shares


def white_box_components(s: _Setting, mix: Mixture, dist: TokenDistribution, work: int, when: str, fraction: float,
                         bases: int | None) -> tuple[SwapScan | None, dict]:
    """Where the probe runs (``when``: "templates", "always" or "never") and its swap scan fits in ``fraction``
    of the work (with ``bases`` None, as many bases as half of it buys, ``MIN_BASES`` .. ``MAX_BASES``): scan, run
    the product of the candidates and the near-hits' neighbours in the rest of that share, and add the uniform law
    on every support (flattened, model-blind: it reaches values D makes rare), the candidates and, where the
    product hit, a fit to its hits. Returns the scan (None where it did not run) and what the diagnostics say of it:
    its counts (forward passes spent in all), why it was skipped, or nothing where it does not apply."""
    if when == "never" or (when == "templates" and not dist.of_template):
        return None, {}
    per_base = scan_cost(s.sup, 1)
    bases = bases or min(MAX_BASES, max(MIN_BASES, int(fraction * work / 2 / per_base)))
    if bases * per_base > fraction * work:
        return None, {"skipped": f"the scan needs {bases * per_base} forward passes, more than probe_fraction × "
                                 f"the work ({int(fraction * work)}): raise the budget or probe_fraction"}
    target = s.event.token if isinstance(s.event, ArgmaxIs) else None
    base = s.sup.sample(s.sup.prior, bases, s.generator)
    probe = swap_scan(s.model, s.sup, s.margin, base, target)
    candidates = probe.candidates(s.sup)
    mix.add(s.sup.mask.double())  # flattened: add normalises the supports' indicator to the uniform law
    mix.add(candidates)
    room = int(fraction * work) - probe.forward_passes
    near_cost = NEAR_HIT_BASES * per_base
    rescan = room >= 2 * near_cost  # else the product takes all the room
    cols = candidate_product(s.sup, probe, base[0], room - near_cost if rescan else room)
    margin, hit = run_exactly(s.model, s.sup, s.event, s.margin, cols)
    if rescan and not hit.any():  # the best near-hits, one swap from every neighbour
        near = neighbours(s.sup, cols[torch.topk(margin, min(NEAR_HIT_BASES, len(cols))).indices])
        cols = torch.cat([cols, near])
        hit = torch.cat([hit, run_exactly(s.model, s.sup, s.event, s.margin, near)[1]])
    if hit.any():
        mix.add(found_table(s.sup, cols[hit], candidates))
    return probe, {"bases": bases, "forward_passes": probe.forward_passes + len(cols), "exact_runs": len(cols),
                   "exact_hits": int(hit.sum())}


# --- 2. cross-entropy stages ----------------------------------------------------------------------------------


def cross_entropy_stages(s: _Setting, mix: Mixture, spent: int, limit: float, draws: _Draws, found: _Found
                         ) -> _Stages:
    """Add one fitted component per stage to ``mix`` while a stage fits in ``limit`` forward-equivalents."""
    max_components = int(1 / s.floor) - 1
    shares = _even_shares(len(mix), s.defensive)
    fit = sum(c * t for c, t in zip(shares.tolist(), mix.tables, strict=True))
    levels = []
    best, best_margin = torch.zeros(0, s.sup.ids.shape[0], dtype=torch.long), torch.zeros(0, dtype=torch.float64)
    while spent + s.stage <= limit and len(mix) < max_components:
        cols, log_w, margin, hit = _draw(s, mix, shares, s.stage, draws, found)
        spent += s.stage
        best, best_margin = _best_distinct(torch.cat([best, cols]), torch.cat([best_margin, margin]), CLIMB_STARTS)
        reached = int(hit.sum()) >= s.rho * s.stage
        level = 0.0 if reached else float(torch.quantile(margin, 1 - s.rho))
        levels.append(level)
        elite = hit if reached else margin >= level
        fit = _posterior_table(s.sup, fit, cols[elite], log_w[elite], s.prior_strength)
        k = min(s.elite_gradient, s.stage // 4)
        if k and not reached and spent + GRADIENT_CALL * k + s.stage <= limit:
            fit = _tilted_by_elites(s, fit, cols[torch.topk(margin, k).indices])
            spent += GRADIENT_CALL * k
        mix.add(fit)
        shares = _even_shares(len(mix), s.defensive, newest=0.5)
        if reached:
            break
    return _Stages(levels, spent, best, fit)


def _best_distinct(cols: Tensor, margin: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` distinct inputs of ``cols`` with the best margins, best first, and their margins."""
    cols, first = torch.unique(cols, dim=0, return_inverse=True)
    best = torch.full((len(cols),), -math.inf, dtype=torch.float64).scatter_reduce(0, first, margin, "amax")
    order = torch.argsort(best, descending=True)[:k]
    return cols[order], best[order]


def _draw(s: _Setting, mix: Mixture, shares: Tensor, n: int, draws: _Draws, found: _Found
          ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``n`` samples from the mixture, recorded in ``draws`` and their hits in ``found``: their columns, log w,
    margin and indicator."""
    cols = mix.sample(shares, n, s.generator)
    log_w = mix.log_weights(cols, shares)
    tokens = s.sup.tokens(cols)
    margin, hit = outcomes(s.model, s.event, tokens, s.margin)
    draws.add(tokens, log_w, margin, hit)
    found.add(cols[hit], log_w[hit])
    return cols, log_w, margin, hit


def _posterior_table(sup: Supports, prior: Tensor, cols: Tensor, log_w: Tensor, prior_strength: float) -> Tensor:
    """Dirichlet posterior mean per position: weighted elite counts (effective-sample units) + prior."""
    n_eff = effective_sample_size(log_w)
    w = (log_w - log_w.max()).exp()
    w = w / w.sum() * n_eff
    counts = torch.zeros_like(prior)
    counts.scatter_add_(1, cols.T.contiguous(), w.expand(cols.shape[1], -1).contiguous())
    kappa = (prior_strength * sup.sizes)[:, None]
    return (counts + kappa * prior) / (n_eff + kappa)


def _tilted_by_elites(s: _Setting, fit: Tensor, elite_cols: Tensor) -> Tensor:
    """``fit`` tilted by e^g, g the margin's one-hot gradient averaged over the elites: a first-order step from
    where they are toward the event. Without it the levels stalled a few logits short on some targets."""
    grad = _margin_gradient(s, s.sup.tokens(elite_cols)).mean(0)
    g = one_hot_scores(s.model, s.sup.ids, grad)
    return gradient_tilt(s.sup.log(fit), g)


def climb(s: _Setting, mix: Mixture, stages: _Stages, limit: float) -> dict:
    """Where the stages drew no hit: ascend the margin by exact scans from the best samples they drew.

    Each step scores the inputs one position away from the current sample (``neighbours``; a position with more
    values than a ``CLIMB_STEPS``-th of ``limit`` shared over the positions allows, a uniform subset of them) and
    moves to the best. At a local maximum (no neighbour does better) it starts again from the next of the stages'
    ``CLIMB_STARTS`` best distinct samples, and a climb whose scan hits ends there too; all while a step fits in
    ``limit`` forward passes. The hits of every climb give one component (``found_table``): ``CLIMB_SHARE`` on
    the values they hold, the rest on the stages' last fit, because a component all on them draws the
    estimation phase's shares to the few easy hits the climbs found, away from the rest of the event's mass.
    Returns what the diagnostics say: forward passes spent, hits, the margins climbed through; nothing where
    no scan fit."""
    most = max(CLIMB_VALUES, int(limit / CLIMB_STEPS / len(scan_positions(s.sup))))
    passes, margins, found = 0, [], []
    for start in stages.best:
        base, level = start[None], -math.inf
        while True:
            near = neighbours(s.sup, base, most, s.generator)
            if passes + len(near) > limit:
                break
            margin, hit = run_exactly(s.model, s.sup, s.event, s.margin, near)
            passes += len(near)
            if hit.any():
                found.append(near[hit])
                break
            if float(margin.max()) <= level:  # a local maximum
                break
            level = float(margin.max())
            margins.append(round(level, 3))
            base = near[int(margin.argmax())][None]
        if passes + len(near) > limit:
            break
    if found:
        mix.add(found_table(s.sup, torch.cat(found), stages.fit, CLIMB_SHARE))
    return {"forward_passes": passes, "hits": sum(len(f) for f in found), "margins": margins} if passes else {}


# --- 3. estimation --------------------------------------------------------------------------------------------


def estimation(s: _Setting, mix: Mixture, n: int, draws: _Draws, found: _Found) -> Tensor:
    """Draw ``n`` samples in batches from the mixture of all components, refitting its shares to the hits
    whenever new ones came in; return the last shares."""
    shares, fitted, done = _even_shares(len(mix), s.defensive), 0, 0
    while done < n:
        if found.count > fitted:
            shares, fitted = found.shares(mix, s), found.count
        batch = min(s.stage, n - done)
        _draw(s, mix, shares, batch, draws, found)
        done += batch
    return shares


def _plan_summed_out(s: _Setting, dist: TokenDistribution, n_est: int, rb_share: float) -> _SummedOutPlan | None:
    """``rb_share`` of the estimation phase's ``n_est`` forward-equivalents in summed-out samples, drawn in as
    many batches as the plain ones; None where not even two fit (then the phase is plain)."""
    sums = LastPositionSums(s.model, dist, s.event, s.margin)
    per_call = s.model.flops_per_sequence(len(dist))
    prefixes = int((rb_share * n_est * per_call - sums.fixed_flops) // sums.prefix_flops)
    if prefixes < 2:
        return None
    work = min(n_est, math.ceil((sums.fixed_flops + prefixes * sums.prefix_flops) / per_call))
    batch = max(1, math.ceil(prefixes * s.stage / (rb_share * n_est)))
    return _SummedOutPlan(sums, prefixes, work, batch)


def summed_out(s: _Setting, mix: Mixture, plan: _SummedOutPlan, found: _Found, shares: Tensor) -> _SummedOut:
    """Terms w_{-j}(x) h(x) of ``plan.prefixes`` samples whose last variable position j is summed out.

    w_{-j} = D_{-j} / q_mix,{-j} is the balance-heuristic weight of the positions other than j and
    h(x) = Σ_v D_j(v) 1[event(x_j = v)], so every term has mean p given the past. Before each batch the
    shares are refitted to every hit so far under the components' marginals without j. A hitting
    completion x_j = v becomes a hit weighing w_{-j}(x) D_j(v); the completions of one prefix are one unit.
    """
    sums, j = plan.sums, plan.sums.position
    fitted, done, completion_hits = 0, 0, 0
    log_terms, log_ws, log_near, completions = [], [], [], []
    while done < plan.prefixes:
        if found.count > fitted:
            shares, fitted = found.shares(mix, s, skip=j), found.count
        cols = mix.sample(shares, min(plan.batch, plan.prefixes - done), s.generator)
        log_w = mix.log_weights(cols, shares, skip=j)
        tokens = s.sup.tokens(cols)
        margin, hit = sums(tokens)
        h = hit.double() @ sums.probs
        near = (margin >= -NEAR_MISS).double() @ sums.probs
        log_t = torch.where(h > 0, log_w + h.log(), _NEG_INF64)
        found.add(cols[h > 0], log_t[h > 0])
        row, value = hit.nonzero(as_tuple=True)
        completed = tokens[row]
        completed[:, j] = sums.ids[value]
        completions.append(Hits(completed, log_w[row] + sums.probs[value].log(), row))
        log_terms.append(log_t)
        log_ws.append(log_w)
        log_near.append(torch.where(near > 0, log_w + near.log(), _NEG_INF64))
        completion_hits += int(hit.sum())
        done += len(cols)
    return _SummedOut(torch.cat(log_terms), torch.cat(log_ws), torch.cat(log_near), shares, completion_hits,
                      Hits.cat(completions, s.sup.ids.shape[0]))


def _em_shares(comp: Tensor, log_w: Tensor, defensive: float, floor: float) -> Tensor:
    """Mixture shares maximising Σ w_j log Σ_k c_k q_k(x_j) over the hits (comp [H, K]), floored.

    Component 0 (D) keeps the defensive share; every other one keeps at least ``floor``.
    """
    K = comp.shape[1]
    free = 1 - defensive - floor * (K - 1)
    w = (log_w - log_w.max()).exp()
    w = w / w.sum()
    c = torch.full((K - 1,), 1.0 / (K - 1), dtype=torch.float64)
    for _ in range(EM_ITERATIONS):
        shares = torch.cat([torch.tensor([defensive], dtype=torch.float64), floor + free * c])
        r = (comp + shares.log()).softmax(1)[:, 1:]  # responsibilities of the non-D components
        new = (w[:, None] * r).sum(0)
        new = new / new.sum() if new.sum() > 0 else torch.full_like(new, 1.0 / (K - 1))
        converged = float((new - c).abs().max()) < 1e-4
        c = new
        if converged:
            break
    return torch.cat([torch.tensor([defensive], dtype=torch.float64), floor + free * c])


# --- the estimate, its interval and diagnostics ---------------------------------------------------------------


@dataclass(frozen=True)
class _Average:
    """Every averaged term and weight (log), the number of samples they stand for, and what the interval reads."""

    log_terms: Tensor
    log_w: Tensor
    n: int  # plain samples plus the summed-out samples' forward-equivalents
    var_sum: float  # n × the variance of one term, for the CLT diagnostic
    near: dict[str, float]  # largest log-weights of near misses (``_near_miss_log_weights``)
    hits: list[Hits]


def _phase_weights(staged: int, rest: float, work: float) -> tuple[float, float]:
    """Log multipliers of the equal weight 1/(staged + rest) for the stages' samples and the estimation phase's
    (``rest``: its plain samples plus its summed-out samples' forward-equivalents), so that each stage sample
    weighs 1/``work`` and the phase shares what is left. How many samples the stages drew depends on what they
    drew (they end at the event, and a stall buys a climb); weights fixed before each sample is drawn and
    summing to 1 keep the average unbiased, where an equal share of a random total would not."""
    if rest <= 0:
        return 0.0, 0.0
    n = staged + rest
    return math.log(n / work), math.log(n * (1 - staged / work) / rest)


def _plain_average(draws: _Draws, staged: int, stage_log: float, rest_log: float) -> _Average:
    n = sum(len(t) for t in draws.log_term)
    scale = torch.cat([torch.full((staged,), stage_log), torch.full((n - staged,), rest_log)]).double()
    log_terms = torch.cat(draws.log_term) + scale if draws.log_term else torch.zeros(0, dtype=torch.float64)
    log_w = torch.cat(draws.log_w) + scale if draws.log_w else torch.zeros(0, dtype=torch.float64)
    near = _near_miss_log_weights(torch.cat(draws.margin) if draws.margin else log_w, log_w)
    var_sum = float(log_terms.exp().var()) * n if n > 1 else 0.0  # n × var of one term
    hits, seen = [], 0  # the stages add whole batches, so a batch's hits take its phase's weight
    for batch, h in zip(draws.log_term, draws.hits, strict=True):
        hits.append(Hits(h.tokens, h.log_weight + (stage_log if seen < staged else rest_log), h.unit, h.note))
        seen += len(batch)
    return _Average(log_terms, log_w, n, var_sum, near, hits)


def _with_summed_out(plain: _Average, plan: _SummedOutPlan, summed: _SummedOut, rest_log: float) -> _Average:
    """Each summed-out term enters standing for the ``plan.work / plan.prefixes`` forwards it cost."""
    scale = math.log(plan.work / plan.prefixes) + rest_log
    var_sum = plain.var_sum + float(summed.log_terms.exp().var()) * plan.work ** 2 / plan.prefixes
    near = {**plain.near, "m05": max(plain.near["m05"], float(summed.log_near.max()) + scale)}
    hits = Hits(summed.hits.tokens, summed.hits.log_weight + scale, summed.hits.unit)
    return _Average(torch.cat([plain.log_terms, summed.log_terms + scale]),
                    torch.cat([plain.log_w, summed.log_w + scale]), plain.n + plan.work, var_sum, near,
                    [*plain.hits, hits])


def _summed_out_diagnostics(plain: _Average, plan: _SummedOutPlan, summed: _SummedOut, per_call: float) -> dict:
    sums = plan.sums
    return {"position": sums.position, "support": sums.n, "prefixes": plan.prefixes,
            "prefix_hits": int(torch.isfinite(summed.log_terms).sum()), "completion_hits": summed.completion_hits,
            "shared_prefix": sums.tree is not None, "forward_equivalents": plan.work,
            "plain_estimate": float(plain.log_terms.exp().mean()) if plain.n else 0.0, "plain_samples": plain.n,
            "estimate": float(summed.log_terms.exp().mean()),
            "prefix_forward_equivalents": sums.prefix_flops / per_call}


def _near_miss_log_weights(margin: Tensor, log_w: Tensor) -> dict[str, float]:
    """Largest log-weight among samples whose margin is close to the event: what one more hit could weigh
    (-inf where none came that close)."""
    out = {}
    for name, keep in (("m05", margin >= -NEAR_MISS), ("m1", margin >= -1.0), ("m2", margin >= -2.0)):
        out[name] = float(log_w[keep].max()) if keep.any() else NEG_INF
    return out


_HITS_NOTE = "importance weights D/q_mix of the averaged samples"
_RB_NOTE = ("; each summed-out prefix enters as its hitting completions, weighted w_{-j} D_j(v) and pooled "
            "per prefix")


def _result(s: _Setting, width: int, draws: _Draws, staged: int, work: int,
            rb: tuple[_SummedOutPlan, _SummedOut] | None, phases: dict) -> RawEstimate:
    """``staged``: the samples the stages drew (the first of ``draws``), of ``work`` forward-equivalents in all;
    ``rb``: the summed-out plan and its terms, when Rao-Blackwellised."""
    rest = sum(len(t) for t in draws.log_term) - staged + (rb[0].work if rb else 0)
    stage_log, rest_log = _phase_weights(staged, rest, work)
    plain = _plain_average(draws, staged, stage_log, rest_log)
    avg = plain if rb is None else _with_summed_out(plain, *rb, rest_log)
    p = float(avg.log_terms.exp().sum()) / avg.n
    hit = torch.isfinite(avg.log_terms)
    compound, n_eff = compound_poisson(avg.log_terms[hit], avg.n, float(avg.log_w.max()))
    # a hit we did not draw could weigh as much as the heaviest near miss
    upper = max(compound[1], p + poisson_upper(0) * math.exp(avg.near["m05"]) / avg.n)
    drawn = plain.n + (rb[0].prefixes if rb else 0)
    if not hit.any() and drawn:  # each drawn sample or prefix hits with probability >= defensive · p
        upper = min(upper, poisson_upper(0) / (s.defensive * drawn))
    half_width = normal_quantile() * math.sqrt(avg.var_sum) / avg.n if avg.n > 1 else math.inf
    rb_diagnostics = {} if rb is None else {
        "rao_blackwell": _summed_out_diagnostics(plain, *rb, s.model.flops_per_sequence(width))}
    diagnostics = {"hits": int(hit.sum()), "effective_hits": n_eff, **phases, "estimation_samples": avg.n,
                   "clt_interval": [max(0.0, p - half_width), p + half_width],
                   "near_miss_log_w": {k: v if v > NEG_INF else None for k, v in avg.near.items()},  # strict JSON
                   "compound_poisson_interval": list(compound), **rb_diagnostics,
                   "note": "unbiased: mean of w·1[event] over the averaged samples (rao_blackwell: with "
                           "w_{-j}·P(event | other positions) terms, each counted as the forwards it cost)"}
    note = _HITS_NOTE if rb is None else _HITS_NOTE + _RB_NOTE
    return RawEstimate(p, (compound[0], upper), diagnostics, hits=Hits.cat(avg.hits, width, note))
