"""CEIS: cross-entropy importance sampling over a growing mixture of per-position proposals.

Every proposal is a mixture of product distributions ("components") over the positions' supports,
and every sample is weighted by w = D(x) / q_mix(x) for the whole mixture it was drawn from (the
balance heuristic), computed in log space. Nothing is tuned on targets; everything is fitted inside
the call from the budget:

1. **Gradient tilts.** One forward and backward pass on ``budget/16`` sequences (half from D, half
   from the first tilts) gives g_i(v), the one-hot gradient of the margin (target logit − largest
   other logit) at position i; the components D_i exp(g_i / T) for a few fixed T join D itself.
   With ``scan_fraction`` > 0 (an experiment, off by default) the last variable positions are also
   measured instead of guessed: an **exact scan** (``position_scan.py``) scores every value there with
   the rest of ``scan_bases`` sequences from D held fixed, and a second set of tilts uses their mean
   margins at those positions. It finds tokens the gradient misses (gelu-2l/spanish 2086, the `cpu`
   target CEIS fails most: at two seeds 2e-8 and 2e-7 of the truth without, 3e-3 and 4e-2 with) and
   cuts estimates more than two decades low by a quarter over all 24 `cpu` pairs, but the misses left
   fall on targets the default finds and decide the per-model means, so the default does not scan
   (``benchmarks/results/issue13/README.md``).
2. **Multilevel cross-entropy.** Each stage draws from the mixture (forward passes), with the
   newest component holding half the share. The level is the (1 − ρ)-quantile of the margins, or
   the event itself once a ρ share of the stage hits; the elites' weighted token frequencies give a
   new categorical per position, shrunk towards the previous component as a Dirichlet posterior mean
   (prior strength ``prior_strength`` × support size, in effective-sample units). The prior is strong
   (1 × support size: the elites' effective sample size is usually far smaller, so a stage moves the
   fit only part way): at 0.1 the fits followed a few heavy elites, concentrated, and the estimates'
   weights degenerated (on 191 cpu targets, estimates more than a decade off: 28 at 0.1, 16 at 1,
   14 at 3, 17 at 10; ``benchmarks/results/issue13/README.md``). The new component
   joins the mixture; earlier ones stay, so mass that a narrowing fit stops visiting stays covered.
   Before it joins, the new fit is tilted by exp(g), g the one-hot gradient of the margin averaged
   over the stage's ``elite_gradient`` best samples (one backward pass each, at most a quarter of a
   stage): a first-order step from where the elites are towards the event, at a natural scale (one
   logit of predicted margin multiplies a token's odds by e). Without it the levels stalled at -2 to
   -3 logits on some targets and those returned 0 or 1e-3 of the truth.
3. **Estimation.** The rest of the budget is drawn in batches from the mixture of all components,
   whose shares are re-fitted between batches by EM to all hits seen so far (each weighted by its w),
   with a floor per component and a fixed defensive share for D (so w ≤ 1 / defensive).

The estimate is the mean of w·1[event] over every sample after the gradient phase (``pool=True``;
``pool=False`` keeps the estimation phase only). Each sample's mixture is fixed before it is drawn and
the number of samples averaged is fixed in advance, so either estimate is **unbiased** (a martingale
argument: every term has conditional mean p given the past). Cost: a backward pass counts as 2
forwards; at ``budget`` B CEIS spends exactly 3B forward-equivalents, what ITGIS and MHIS spend
(B forwards and B backwards each).

**Rao–Blackwellisation** (``rao_blackwell``, on by default; ``rao_blackwell.py``). A share ``rb_share`` (0.5) of
the estimation phase's work goes, after its plain samples, to samples whose last variable position j
is summed out exactly: the term is w_{-j}(x) Σ_v D_j(v) 1[event(x_j = v)], w_{-j} the weight of the
other positions under the mixture's marginal. A sample costs its prefix once and every completion's
own segment (shared keys/values, ``PrefixTree.completion_residuals``), priced in FLOPs and charged as
that many forward-equivalents rounded up, so the total stays exactly 3B. Each such term enters the
average counted as the forwards it cost (``rb_work / n_prefixes`` samples' worth): the estimate is
(Σ plain terms + rb_work × mean of the summed-out terms) / (plain samples + rb_work), unbiased like
the plain one. The cross-entropy stages keep plain samples (their levels need margins).

Hyper-parameters (declared in ``estimators.catalog``) are fixed defaults, not tuned per problem.
``reuse`` (elites from all stages), ``refit_every`` (components fitted to the hits during
estimation) and ``temperatures`` are experiment switches; their defaults are the configuration
measured in ``benchmarks/results/issue13``.

Interval: ITGIS's compound-Poisson interval on the averaged terms, with the upper end raised
to p̂ + 3.69 w_near / N, w_near the largest weight among the averaged samples within ``NEAR_MISS`` logits
of the event: a hit that was not drawn could weigh that much (3.69 is Garwood's 95% bound on a Poisson
count after none). It is a heuristic for mass the proposal visits too rarely, which no importance
sampler can bound. On all 24 cpu pairs (722 estimates, seed 0) it covers 94.7% with a median upper end
of 3.9 p, against 72% for the compound-Poisson interval alone (upper end 1.4 p); the 0.5-logit threshold
was chosen on 89 estimates of an earlier version, so this is not a clean hold-out. On the targets CEIS
misses by decades it covers far less (73% on ``benchmarks/ceis_hard_targets.py``'s 30). The plain
compound-Poisson and a CLT interval are in the diagnostics. With no hit at all, the upper end is at most
3.69 / (defensive · n): every mixture keeps D at the defensive share, so each of the n samples hits with
probability at least defensive · p — a proved bound, what that many plain draws from D would give.
For events other than ``ArgmaxIs`` the "margin" is the event's score.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lowprob.attribution import Hits, hits_of
from lowprob.distributions.base import TokenDistribution
from lowprob.estimators.base import (
    RawEstimate,
    effective_sample_size,
    one_hot_scores,
    outcomes,
    poisson_upper,
    score_and_gradient,
)
from lowprob.estimators.itgis import compound_poisson_interval
from lowprob.estimators.position_scan import PositionScan
from lowprob.estimators.rao_blackwell import LastPositionSums
from lowprob.events import ArgmaxIs, MarginAtLeast

NEG_INF = -math.inf
EM_ITERATIONS = 30
NEAR_MISS = 0.5  # logits: a sample whose margin is this close to the event is a near miss


def margin_of(event) -> Callable[[torch.Tensor], torch.Tensor]:
    """What CEIS climbs: target logit − largest other logit for ``ArgmaxIs``; otherwise the event's score."""
    return MarginAtLeast(event.token, 0.0).score if isinstance(event, ArgmaxIs) else event.score


class _Supports:
    """All positions' supports padded to one width; proposals are [T, width] float64 tables."""

    def __init__(self, dist: TokenDistribution, d_vocab: int) -> None:
        self.sizes = torch.tensor(dist.support_sizes(), dtype=torch.float64)
        width = max(dist.support_sizes())
        self.ids = torch.zeros(len(dist), width, dtype=torch.long)
        self.prior = torch.zeros(len(dist), width, dtype=torch.float64)
        self.column = torch.zeros(len(dist), d_vocab, dtype=torch.long)  # token id -> column
        for pos in range(len(dist)):
            ids, probs = dist.support(pos)
            self.ids[pos, : len(ids)] = ids
            self.prior[pos, : len(ids)] = probs
            self.column[pos, ids] = torch.arange(len(ids))
        self.mask = self.prior > 0
        self.log_prior = torch.where(self.mask, self.prior.log(), torch.tensor(-math.inf, dtype=torch.float64))

    def columns(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T] column of each token in its position's support."""
        return self.column.gather(1, tokens.T.contiguous()).T

    def log_prob(self, table: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """log Π_i table[i, cols_i] for each sequence, float64 [B]."""
        logs = torch.where(self.mask, table.clamp_min(1e-300).log(), torch.tensor(-math.inf, dtype=torch.float64))
        return logs.gather(1, cols.T.contiguous()).sum(0)

    def sample(self, table: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """[n, T] columns drawn from the product of the rows of ``table``."""
        return torch.multinomial(table, n, replacement=True, generator=generator).T.contiguous()

    def tokens(self, cols: torch.Tensor) -> torch.Tensor:
        return self.ids.gather(1, cols.T.contiguous()).T.contiguous()




class Mixture:
    """Product components over the padded supports; density and sampling of their mixture."""

    def __init__(self, sup: _Supports) -> None:
        self.sup = sup
        self.tables: list[torch.Tensor] = []
        self.log_tables: list[torch.Tensor] = []

    def add(self, table: torch.Tensor) -> None:
        table = torch.where(self.sup.mask, table, torch.zeros_like(table))
        table = table / table.sum(1, keepdim=True)
        self.tables.append(table)
        self.log_tables.append(torch.where(self.sup.mask, table.clamp_min(1e-300).log(),
                                           torch.tensor(NEG_INF, dtype=torch.float64)))

    def __len__(self) -> int:
        return len(self.tables)

    def component_log_probs(self, cols: torch.Tensor, skip: int | None = None) -> torch.Tensor:
        """[B, K]: log q_k(x) for every component; over the positions other than ``skip`` if given."""
        idx = cols.T.contiguous()
        keep = slice(None) if skip is None else torch.arange(idx.shape[0]) != skip
        return torch.stack([lt.gather(1, idx)[keep].sum(0) for lt in self.log_tables], 1)

    def sample(self, shares: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        which = torch.multinomial(shares, n, replacement=True, generator=generator)
        cols = torch.empty(n, self.sup.ids.shape[0], dtype=torch.long)
        for k in range(len(shares)):
            rows = torch.nonzero(which == k).flatten()
            if len(rows):
                cols[rows] = self.sup.sample(self.tables[k], len(rows), generator)
        return cols


def _posterior_table(sup: _Supports, prior: torch.Tensor, cols: torch.Tensor, log_w: torch.Tensor,
                     prior_strength: float) -> torch.Tensor:
    """Dirichlet posterior mean per position: weighted elite counts (effective-sample units) + prior."""
    n_eff = effective_sample_size(log_w)
    w = (log_w - log_w.max()).exp()
    w = w / w.sum() * n_eff
    counts = torch.zeros_like(prior)
    counts.scatter_add_(1, cols.T.contiguous(), w.expand(cols.shape[1], -1).contiguous())
    kappa = (prior_strength * sup.sizes)[:, None]
    return (counts + kappa * prior) / (n_eff + kappa)


def _em_shares(comp: torch.Tensor, log_w: torch.Tensor, defensive: float, floor: float) -> torch.Tensor:
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


def _near_miss_log_weights(s: torch.Tensor, log_w: torch.Tensor) -> dict[str, float]:
    """Largest log-weight among samples whose margin is close to the event: what one more hit could weigh
    (-inf where none came that close)."""
    out = {}
    for name, keep in (("m05", s >= -NEAR_MISS), ("m1", s >= -1.0), ("m2", s >= -2.0)):
        out[name] = float(log_w[keep].max()) if keep.any() else NEG_INF
    return out


@torch.no_grad()
def ceis(model, dist: TokenDistribution, event, budget: int, generator: torch.Generator, rho: float,
         defensive: float, floor: float, prior_strength: float, gradient_fraction: float, stage_fraction: float,
         adapt_fraction: float, reuse: bool, refit_every: int, temperatures,
         pool: bool, elite_gradient: int, rao_blackwell: bool, rb_share: float, scan_fraction: float,
         scan_bases: int) -> RawEstimate:
    work = 3 * budget  # forward-equivalents: what ITGIS/MHIS spend at this budget
    sup = _Supports(dist, model.d_vocab)
    n_grad = max(2, int(budget * gradient_fraction))
    m = max(16, int(work * stage_fraction))
    max_components = int(1 / floor) - 1
    neg_inf = torch.tensor(NEG_INF, dtype=torch.float64)
    follow = margin_of(event)

    def margin_gradient(tokens: torch.Tensor) -> torch.Tensor:
        """d margin / d token embeddings [B, T, d_model], on the model's device."""
        return score_and_gradient(model, event, tokens, follow)[2]

    def tilts(grad_mean: torch.Tensor) -> Mixture:
        """D, then D_i exp(g_i / T) for each temperature; with scans, also each with the scanned rows."""
        g = one_hot_scores(model, sup.ids, grad_mean)
        g = torch.where(sup.mask, g, torch.zeros_like(g))
        scores = [g]
        if scanned:  # the last positions measured instead of guessed, next to (not instead of) the guess
            exact = g.clone()
            for pos, row in scanned.items():
                exact[pos] = row
            scores.append(exact)
        mix = Mixture(sup)
        mix.add(sup.prior)
        for score in scores:
            for t in temperatures:
                mix.add(torch.softmax(sup.log_prior + score / t, 1))
        return mix

    def even_shares(k: int, newest: float = 0.0) -> torch.Tensor:
        """D at the defensive share, ``newest`` for the last component, the rest split evenly."""
        rest = (1 - defensive - newest) / (k - 1 - (newest > 0))
        shares = torch.full((k,), rest, dtype=torch.float64)
        shares[0] = defensive
        if newest > 0:
            shares[-1] = newest
        return shares

    def draw(mix: Mixture, shares: torch.Tensor, n: int):
        cols = mix.sample(shares, n, generator)
        comp = mix.component_log_probs(cols)
        log_w = comp[:, 0] - (comp + shares.log()).logsumexp(1)
        s, hit = outcomes(model, event, sup.tokens(cols), follow)
        return cols, log_w, s, hit

    # 1. gradient tilts: half the gradient samples from D, half from the first tilts
    half = n_grad // 2
    from_d = dist.sample(half, generator)
    scanned, scan_work = _scanned_rows(model, event, follow, sup, from_d[:scan_bases], scan_fraction * work)
    grad_sum = margin_gradient(from_d).sum(0)
    mix = tilts(grad_sum / half)
    cols = mix.sample(even_shares(len(mix)), n_grad - half, generator)
    grad_sum = grad_sum + margin_gradient(sup.tokens(cols)).sum(0)
    mix = tilts(grad_sum / n_grad)
    spent = 3 * n_grad + scan_work
    extra_backward = 0  # gradient passes at elites, each also one forward

    # 2. multilevel cross-entropy: each stage adds one categorical component
    levels, hit_cols, hit_logw = [], [], []
    shares = even_shares(len(mix))
    prior = sum(s * t for s, t in zip(shares.tolist(), mix.tables, strict=True))
    seen_cols, seen_logw, seen_s, seen_terms, seen_hits = [], [], [], [], []
    adapt_work = work * adapt_fraction + scan_work  # scans come out of the estimation phase, not the stages
    while spent + m <= adapt_work and len(mix) < max_components:
        cols, log_w, s, hit = draw(mix, shares, m)
        spent += m
        hit_cols.append(cols[hit])
        hit_logw.append(log_w[hit])
        seen_cols.append(cols)
        seen_logw.append(log_w)
        seen_s.append(s)
        seen_terms.append(torch.where(hit, log_w, neg_inf))
        seen_hits.append(hits_of(sup.tokens(cols), log_w, hit))
        reached = int(hit.sum()) >= rho * m
        level = 0.0 if reached else float(torch.quantile(s, 1 - rho))
        levels.append(level)
        if reuse:  # every sample so far is weighted for D, so all of them above the level are elites
            all_cols, all_logw, all_s = torch.cat(seen_cols), torch.cat(seen_logw), torch.cat(seen_s)
            elite = (all_s > 0) | (all_s >= level) if not reached else all_s >= 0
            elite_cols, elite_logw = all_cols[elite], all_logw[elite]
            if reached:
                elite_cols, elite_logw = torch.cat(hit_cols), torch.cat(hit_logw)
        else:
            elite = hit if reached else s >= level
            elite_cols, elite_logw = cols[elite], log_w[elite]
        prior = _posterior_table(sup, prior, elite_cols, elite_logw, prior_strength)
        k = min(elite_gradient, m // 4)
        if k and not reached and spent + 3 * k + m <= adapt_work:
            # tilt the new fit by the margin's gradient at this stage's best samples (T = 1 logit)
            top = torch.topk(s, k).indices
            grad = margin_gradient(sup.tokens(cols[top])).mean(0)
            g = one_hot_scores(model, sup.ids, grad)
            logits = torch.where(sup.mask, prior.clamp_min(1e-300).log() + g, neg_inf)
            prior = torch.softmax(logits, 1)
            spent += 3 * len(top)
            extra_backward += len(top)
        mix.add(prior)
        shares = even_shares(len(mix), newest=0.5)
        if reached:
            break

    # 3. estimation: the mixture of all components, shares refitted to the hits seen so far. With
    # rao_blackwell, a share rb_share of this phase's work goes, after the plain samples, to samples
    # whose last variable position is summed out exactly (each then counts as the forwards it cost)
    n_est, rb, n_prefixes, rb_work = work - spent, None, 0, 0
    if rao_blackwell:
        rb = LastPositionSums(model, dist, event, follow)
        per_call = model.flops_per_sequence(len(dist))
        n_prefixes = int((rb_share * n_est * per_call - rb.fixed_flops) // rb.prefix_flops)
        if n_prefixes >= 2:
            rb_work = min(n_est, math.ceil((rb.fixed_flops + n_prefixes * rb.prefix_flops) / per_call))
            rb_batch = max(1, math.ceil(n_prefixes * m / (rb_share * n_est)))  # as many batches as plain ones
            n_est -= rb_work
        else:  # not even two prefixes fit: plain estimation
            rb, n_prefixes = None, 0
    log_terms, log_ws, est_s, est_hits = [], [], [], []
    done = 0
    shares, fitted_on = even_shares(len(mix)), 0
    while done < n_est:
        all_cols = torch.cat(hit_cols)
        if refit_every and len(all_cols) >= fitted_on + refit_every and len(mix) < max_components:
            # a component fitted to every hit so far (weighted), added before the next batch is drawn
            prior = _posterior_table(sup, prior, all_cols, torch.cat(hit_logw), prior_strength)
            mix.add(prior)
            fitted_on = -1
        if len(all_cols) > fitted_on:  # refit the shares only when new hits came in
            shares = _em_shares(mix.component_log_probs(all_cols), torch.cat(hit_logw), defensive, floor)
            fitted_on = len(all_cols)
        n = min(m, n_est - done)
        cols, log_w, s, hit = draw(mix, shares, n)
        done += n
        log_ws.append(log_w)
        est_s.append(s)
        log_terms.append(torch.where(hit, log_w, neg_inf))
        est_hits.append(hits_of(sup.tokens(cols), log_w, hit))
        hit_cols.append(cols[hit])
        hit_logw.append(log_w[hit])
    if pool:  # every sample since the gradient phase, weighted for the mixture it was drawn from
        log_terms = seen_terms + log_terms
        log_ws, est_s, est_hits = seen_logw + log_ws, seen_s + est_s, seen_hits + est_hits
    n_used = n_plain = sum(len(t) for t in log_terms)
    log_terms_all = torch.cat(log_terms) if log_terms else torch.zeros(0, dtype=torch.float64)
    log_w_all = torch.cat(log_ws) if log_ws else torch.zeros(0, dtype=torch.float64)
    hits = int(torch.isfinite(log_terms_all).sum())
    near = _near_miss_log_weights(torch.cat(est_s) if est_s else log_w_all, log_w_all)
    plain_p = float(log_terms_all.exp().mean()) if n_used else 0.0
    var_sum = float(log_terms_all.exp().var()) * n_used if n_used > 1 else 0.0  # n × var of one term
    rb_diag = {}
    if rb is not None:  # each prefix's term stands for the rb_work / n_prefixes forwards it cost
        log_t, log_w_rb, log_near, shares, rb_diag, rb_hits = _rao_blackwell_terms(
            mix, sup, rb, n_prefixes, rb_batch, hit_cols, hit_logw, shares,
            defensive, floor, generator)
        scale = math.log(rb_work / n_prefixes)
        var_sum += float(log_t.exp().var()) * rb_work ** 2 / n_prefixes
        rb_diag.update(forward_equivalents=rb_work, plain_estimate=plain_p, plain_samples=n_used,
                       estimate=float(log_t.exp().mean()), prefix_forward_equivalents=rb.prefix_flops / per_call)
        log_terms_all, log_w_all = torch.cat([log_terms_all, log_t + scale]), torch.cat([log_w_all, log_w_rb + scale])
        near["m05"] = max(near["m05"], float(log_near.max()) + scale)
        hits += int(torch.isfinite(log_t).sum())
        n_used += rb_work
        est_hits.append(Hits(rb_hits.tokens, rb_hits.log_weight + scale, rb_hits.unit))
    p = float(log_terms_all.exp().sum()) / n_used
    interval, n_eff = compound_poisson_interval(log_terms_all[torch.isfinite(log_terms_all)], n_used,
                                                float(log_w_all.max()))
    # a hit we did not draw could weigh as much as the heaviest near miss: widen the upper end by
    # Garwood's no-event bound at that weight (the compound-Poisson interval alone covered ~66%)
    upper = max(interval[1], p + poisson_upper(0) * math.exp(near["m05"]) / n_used)
    if hits == 0 and n_plain + n_prefixes:
        # every mixture keeps D at the defensive share, so each sample (or summed-out prefix) hits with
        # probability >= defensive · p whatever was drawn before it: none in n bounds p by 3.69 / (defensive · n)
        # at 95%, the bound plain sampling would give from its defensive · n draws from D
        upper = min(upper, poisson_upper(0) / (defensive * (n_plain + n_prefixes)))
    compound = interval
    interval = (interval[0], upper)
    near_json = {k: v if v > NEG_INF else None for k, v in near.items()}  # strict JSON: no -Infinity
    half_width = 1.96 * math.sqrt(var_sum) / n_used if n_used > 1 else math.inf
    forwards = work - 2 * (n_grad + extra_backward)
    return RawEstimate(p, interval, forwards, n_grad + extra_backward,
                       {"hits": hits, "effective_hits": n_eff, "stages": len(levels),
                        "levels": [round(x, 3) for x in levels], "components": len(mix),
                        "final_shares": [round(x, 4) for x in shares.tolist()], "estimation_samples": n_used,
                        "clt_interval": [max(0.0, p - half_width), p + half_width], "near_miss_log_w": near_json,
                        "compound_poisson_interval": list(compound), "scanned_positions": sorted(scanned),
                        "scan_forward_equivalents": scan_work, **({"rao_blackwell": rb_diag} if rb_diag else {}),
                        "note": "unbiased: mean of w·1[event] over the averaged samples (rao_blackwell: with "
                                "w_{-j}·P(event | other positions) terms, each counted as the forwards it cost)"},
                       hits=Hits.cat(est_hits, len(dist), _HITS_NOTE if rb is None else _HITS_NOTE + _RB_NOTE))


_HITS_NOTE = "importance weights D/q_mix of the averaged samples"
_RB_NOTE = ("; each summed-out prefix enters as its hitting completions, weighted w_{-j} D_j(v) and pooled "
            "per prefix")


def _rao_blackwell_terms(mix: Mixture, sup: _Supports, rb: LastPositionSums, n_prefixes: int, batch: int,
                        hit_cols: list, hit_logw: list, shares: torch.Tensor, defensive: float, floor: float,
                        generator: torch.Generator):
    """Log-terms w_{-j}(x) h(x) of ``n_prefixes`` samples whose last variable position j is summed out.

    Samples are drawn in batches of ``batch`` from the mixture of all components; w_{-j} = D_{-j} / q_mix,{-j}
    is the balance-heuristic weight of the positions other than j and h(x) = Σ_v D_j(v) 1[event(x_j = v)],
    so every term has mean p given the past. Before each batch the shares are refitted by EM to every
    hit so far (plain hits weighted w, prefixes with h > 0 weighted w_{-j} h) under the components'
    marginals over the positions other than j. Also returns each sample's log w_{-j}, the log of
    w_{-j}(x) Σ_v D_j(v) 1[margin(x_j = v) ≥ −NEAR_MISS] (what one more near miss could add), the
    last shares, diagnostics, and the hitting completions as hits: prefix x with x_j = v weighs
    w_{-j}(x) D_j(v), the prefix's share of the term that came from v, and each prefix is one unit.
    """
    j, neg_inf = rb.position, torch.tensor(NEG_INF, dtype=torch.float64)
    fitted_on, done, completion_hits = -1, 0, 0
    log_terms, log_ws, log_near, completions = [], [], [], []
    while done < n_prefixes:
        all_cols = torch.cat(hit_cols)
        if len(all_cols) > max(fitted_on, 0):
            shares = _em_shares(mix.component_log_probs(all_cols, skip=j), torch.cat(hit_logw), defensive, floor)
            fitted_on = len(all_cols)
        n = min(batch, n_prefixes - done)
        cols = mix.sample(shares, n, generator)
        comp = mix.component_log_probs(cols, skip=j)
        log_w = comp[:, 0] - (comp + shares.log()).logsumexp(1)
        s, hit = rb(sup.tokens(cols))
        h = hit.double() @ rb.probs
        near = (s >= -NEAR_MISS).double() @ rb.probs
        completion_hits += int(hit.sum())
        log_t = torch.where(h > 0, log_w + h.log(), neg_inf)
        log_terms.append(log_t)
        log_ws.append(log_w)
        log_near.append(torch.where(near > 0, log_w + near.log(), neg_inf))
        hit_cols.append(cols[h > 0])
        hit_logw.append(log_t[h > 0])
        row, value = hit.nonzero(as_tuple=True)
        tokens = sup.tokens(cols)[row]
        tokens[:, j] = rb.ids[value]
        completions.append(Hits(tokens, log_w[row] + rb.probs[value].log(), row))
        done += n
    log_t = torch.cat(log_terms)
    diag = {"position": j, "support": rb.n, "prefixes": n_prefixes, "prefix_hits": int(torch.isfinite(log_t).sum()),
            "completion_hits": completion_hits, "shared_prefix": rb.tree is not None}
    return log_t, torch.cat(log_ws), torch.cat(log_near), shares, diag, Hits.cat(completions, sup.ids.shape[0])


def _scanned_rows(model, event, score, sup: _Supports, bases: torch.Tensor, work: float) -> tuple[dict, int]:
    """Mean exact scores of every value at the last variable positions over ``bases`` (``position_scan``),
    walking back from the last while ``work`` forward-equivalents last, the bases' own forwards included;
    also what it spent, in forward-equivalents rounded up."""
    scan = PositionScan(model, event, score)
    if work <= 0 or not scan.available:  # off (the default), or no cached segments
        return {}, 0
    T = bases.shape[1]
    per_call = model.flops_per_sequence(T)
    flops, rows, columns = len(bases) * per_call, {}, None
    for j in reversed(range(1, T)):
        n = int(sup.sizes[j])
        if n == 1:  # a constant: nothing to choose
            continue
        more = scan.flops(len(bases), j, n, T)
        if flops + more > work * per_call:
            break
        columns = scan.columns(bases) if columns is None else columns
        rows[j] = torch.zeros(sup.ids.shape[1], dtype=torch.float64)
        rows[j][:n] = scan(bases, columns, j, sup.ids[j, :n])
        flops += more
    return rows, math.ceil(flops / per_call) if rows else 0
