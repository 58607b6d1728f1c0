"""Bradley–Terry strengths with ties (Davidson's model), fitted by Newton's method.

Round-robin and Swiss tournaments rank candidates by the strengths that best explain their match results, rather
than by raw points, so that beating a strong candidate counts more than beating a weak one.  Each candidate ``i``
has a strength ``π_i = exp(θ_i)``; with Davidson's (1970) tie parameter ``ν``::

    P(i beats j) = π_i / D,   P(j beats i) = π_j / D,   P(tie) = ν √(π_i π_j) / D,
    D = π_i + π_j + ν √(π_i π_j)

The log-likelihood is concave in ``(θ, log ν)`` (``log D`` is a log-sum-exp of linear functions), so Newton's method
with a backtracking line search converges from the all-equal start.  Strengths are only defined up to a common
factor; they are reported normalised so that the log-strengths sum to 0 (geometric mean 1).

``prior`` adds an L2 penalty ``prior/2 · Σ θ_i²`` (a Gaussian prior on log-strengths).  With ``prior=0`` the fit is
the exact maximum-likelihood estimate, which does not exist (strengths run off to infinity, ``converged`` is False)
when a candidate never lost or never won: common in short tournaments.  Strategies therefore pass a small value
(0.1), which keeps every strength finite while barely moving well-determined ones.

``ties="half"`` instead uses the plain Bradley–Terry model with a tie counted as half a win for each side (ν = 0).

    fit = fit_bradley_terry(2, [(0, 1, 1.0)] * 3 + [(0, 1, 0.0)] + [(0, 1, 0.5)] * 2)
    fit.strengths[0] / fit.strengths[1], fit.tie_parameter      # 3.0, 2/√3
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Outcome = tuple[int, int, float]
"""(i, j, result): result 1.0 when i won, 0.0 when j won, 0.5 for a tie."""


@dataclass(frozen=True)
class BradleyTerryFit:
    """Fitted strengths of ``n_players``."""

    strengths: list[float]
    """π_i = exp(θ_i), normalised so that the log-strengths sum to 0."""
    log_strengths: list[float]
    """θ_i, summing to 0."""
    tie_parameter: float
    """Davidson's ν (0 without ties or with ``ties="half"``; ``inf`` when every outcome was a tie)."""
    iterations: int
    converged: bool
    """False when the iteration limit was reached, or (``prior=0``) when the MLE does not exist or is not unique
    because some group of players never lost to (or never beat) the rest."""


def fit_bradley_terry(
    n_players: int,
    outcomes: Sequence[Outcome],
    ties: Literal["davidson", "half"] = "davidson",
    prior: float = 0.0,
    *,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> BradleyTerryFit:
    """Maximum (penalised) likelihood strengths of ``n_players`` from ``outcomes`` (see the module docstring)."""
    if n_players < 1:
        raise ValueError(f"n_players must be >= 1, got {n_players}")
    if ties not in ("davidson", "half"):
        raise ValueError(f"ties must be 'davidson' or 'half', not {ties!r}")
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    wins, losses, draws, first, second = _pair_counts(n_players, outcomes)
    if ties == "half":  # a tie is half a win for each side, and there is no tie parameter
        wins, losses, draws = wins + 0.5 * draws, losses + 0.5 * draws, np.zeros_like(draws)
    if len(first) == 0 or (wins.sum() + losses.sum() == 0):
        # No outcomes: nothing distinguishes anyone.  Only ties: equal strengths and ν → ∞ (the tie MLE).
        tie = math.inf if draws.sum() > 0 else 0.0
        return BradleyTerryFit([1.0] * n_players, [0.0] * n_players, tie, 0, True)

    with_tie = bool(draws.sum() > 0)  # without observed ties the MLE of ν is 0: drop the parameter
    size = n_players + int(with_tie)
    x = np.zeros(size)  # [θ_0 .. θ_{n-1}, log ν]
    value, grad, hess = _objective(x, n_players, with_tie, prior, wins, losses, draws, first, second)
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):
        # The Hessian is singular along θ + c (strengths are relative) when prior is 0; lstsq gives the
        # minimum-norm step, which has no component along that direction.
        step = np.linalg.lstsq(-hess, grad, rcond=None)[0]
        scale = 1.0
        while True:  # backtracking: halve the step until the objective improves (Armijo condition)
            trial = x + scale * step
            trial[:n_players] -= trial[:n_players].mean()
            new = _objective(trial, n_players, with_tie, prior, wins, losses, draws, first, second)
            if new[0] >= value + 1e-4 * scale * float(grad @ step) or scale < 1e-10:
                break
            scale *= 0.5
        moved = float(np.max(np.abs(trial - x)))
        x, (value, grad, hess) = trial, new
        if moved < tol or float(np.max(np.abs(grad))) < tol:
            converged = True
            break
    if prior == 0 and not _mle_exists(n_players, with_tie, wins, losses, draws, first, second):
        # The gradient vanishes as strengths run off to infinity, which can look like convergence; it is not.
        converged = False
    theta = x[:n_players] - x[:n_players].mean()
    tie = float(math.exp(x[n_players])) if with_tie else 0.0
    return BradleyTerryFit([float(v) for v in np.exp(theta)], [float(v) for v in theta], tie, iterations, converged)


def _pair_counts(n_players: int, outcomes: Sequence[Outcome]) -> tuple[np.ndarray, ...]:
    """Aggregate outcomes per unordered pair (i < j): wins of i, wins of j, ties, and the index arrays i, j."""
    counts: dict[tuple[int, int], list[float]] = {}
    for i, j, result in outcomes:
        if not (0 <= i < n_players and 0 <= j < n_players) or i == j:
            raise ValueError(f"bad outcome ({i}, {j}, {result}) for {n_players} players")
        if result not in (0.0, 0.5, 1.0):
            raise ValueError(f"an outcome's result must be 1.0, 0.0 or 0.5, not {result!r}")
        if i > j:  # store each pair once, from the lower index's point of view
            i, j, result = j, i, 1.0 - result
        row = counts.setdefault((i, j), [0.0, 0.0, 0.0])
        row[0 if result == 1.0 else 1 if result == 0.0 else 2] += 1.0
    pairs = sorted(counts)
    table = np.array([counts[p] for p in pairs], dtype=float).reshape(-1, 3)
    first = np.array([p[0] for p in pairs], dtype=int)
    second = np.array([p[1] for p in pairs], dtype=int)
    return table[:, 0], table[:, 1], table[:, 2], first, second


def _mle_exists(n: int, with_tie: bool, wins: np.ndarray, losses: np.ndarray, draws: np.ndarray,
               first: np.ndarray, second: np.ndarray) -> bool:
    """Whether the unpenalised likelihood has a finite, unique maximiser.

    It does not when some direction d = (δ, μ) of (θ, log ν), other than shifting every θ alike, never lowers the
    likelihood, which happens in one of two ways:

    * μ = 0 (Ford's condition): in the graph with an edge i → j when i beat j, and both ways when they tied, some
      player cannot reach some other (a group never lost to the rest: its strengths can grow without end);
    * μ > 0 (only with a tie parameter): every win can be given a gap δ_w − δ_l ≥ 1 while every tie keeps
      |δ_i − δ_j| ≤ 1 (e.g. 3 wins and 2 ties, no loss: ν and the ratio grow together).  These are difference
      constraints, feasible exactly when their constraint graph has no negative cycle (Bellman–Ford).
    """
    edges: list[tuple[int, int, float]] = []  # (u, v, w) for the constraint δ_v <= δ_u + w
    reach: list[set[int]] = [set() for _ in range(n)]
    for i, j, w, lost, t in zip(first.tolist(), second.tolist(), wins.tolist(), losses.tolist(), draws.tolist()):
        if w > 0:
            edges.append((i, j, -1.0))
            reach[i].add(j)
        if lost > 0:
            edges.append((j, i, -1.0))
            reach[j].add(i)
        if t > 0:
            edges += [(i, j, 1.0), (j, i, 1.0)]
            reach[i].add(j)
            reach[j].add(i)
    for start in range(n):  # strong connectivity: every player reaches every other
        seen, stack = {start}, [start]
        while stack:
            for nxt in reach[stack.pop()] - seen:
                seen.add(nxt)
                stack.append(nxt)
        if len(seen) < n:
            return False
    if not with_tie:
        return True
    distance = [0.0] * n  # Bellman–Ford from a virtual source joined to every node
    for _ in range(n):
        changed = False
        for u, v, w in edges:
            if distance[u] + w < distance[v]:
                distance[v] = distance[u] + w
                changed = True
        if not changed:
            return False  # feasible constraints: the likelihood keeps rising along a direction with μ > 0
    return True  # still relaxing after n rounds: a negative cycle, the constraints are infeasible


def _objective(
    x: np.ndarray, n: int, with_tie: bool, prior: float,
    wins: np.ndarray, losses: np.ndarray, draws: np.ndarray, first: np.ndarray, second: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Penalised log-likelihood, its gradient and Hessian at ``x`` = [θ, log ν]."""
    size = x.shape[0]
    a, b = x[first], x[second]                     # (P,) log-strengths of each pair's players
    lam = x[n] if with_tie else -np.inf
    # Each pair's three outcomes are a softmax over these logits: i wins, j wins, tie.
    logits = np.stack([a, b, lam + 0.5 * (a + b)], axis=1)  # (P, 3)
    log_d = np.logaddexp.reduce(logits, axis=1)             # (P,)
    q = np.exp(logits - log_d[:, None])                     # (P, 3) outcome probabilities
    total = wins + losses + draws
    loglik = wins * a + losses * b + draws * (0.5 * (a + b)) - total * log_d
    if with_tie:
        loglik = loglik + draws * lam
    value = float(loglik.sum()) - 0.5 * prior * float(np.sum(x[:n] ** 2))

    # Feature vectors of the three logits over the local coordinates (θ_i, θ_j, log ν).
    features = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 1.0]])      # (3, 3)
    observed = np.stack([wins + 0.5 * draws, losses + 0.5 * draws, draws], axis=1)  # (P, 3)
    mean = q @ features                                                             # (P, 3) E[feature]
    local_grad = observed - total[:, None] * mean
    # Hessian of log D: Cov[feature] = Σ_k q_k f_k f_kᵀ − mean meanᵀ, per pair.
    second_moment = np.einsum("pk,ku,kv->puv", q, features, features)
    local_hess = -total[:, None, None] * (second_moment - np.einsum("pu,pv->puv", mean, mean))  # (P, 3, 3)

    index = np.stack([first, second, np.full_like(first, n)], axis=1)  # (P, 3) global coordinate of each local one
    used = 3 if with_tie else 2
    grad = np.zeros(size)
    hess = np.zeros((size, size))
    for u in range(used):
        np.add.at(grad, index[:, u], local_grad[:, u])
        for v in range(used):
            np.add.at(hess, (index[:, u], index[:, v]), local_hess[:, u, v])
    grad[:n] -= prior * x[:n]
    hess[np.arange(n), np.arange(n)] -= prior
    return value, grad, hess


__all__ = ["BradleyTerryFit", "Outcome", "fit_bradley_terry"]
