"""The strategy protocol and the pieces every best-of-N strategy shares.

A strategy takes items, N candidates per item and a judge, and returns one :class:`~scaling.types.Selection` per
item::

    selections = strategy.select(items, candidates, judge, max_calls=1000)

``judge`` may be a plain :class:`critic.core.Judge` (it is wrapped in a :class:`~scaling.calls.JudgeCalls`), a
``JudgeCalls`` (to share its cache and budget across strategy runs) or a
:class:`~scaling.self_consistency.SampledJudge` (K sampled judgments per comparison).  ``max_calls`` is a budget for
this one ``select`` call; going past it raises :class:`~scaling.calls.BudgetExceeded` before the offending batch is
sent.  Strategies batch across items: one judge call covers every item's comparisons of a round.

Rules every strategy follows:

* a candidate with ``error`` set is never judged and never selected; its score and rank are None;
* an item without any valid candidate gets a selection with ``chosen=None`` and an ``error``;
* ``Selection.judge_calls`` is what the judge spent on that item (cache hits cost 0).

The registry of named strategies is :mod:`scaling.registry` (it imports the strategy modules, which import this).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Union

from critic.core import Judge
from critic.types import JudgeResult
from scaling.calls import CountingJudge, JudgeCalls
from scaling.types import Candidate, Item, Selection

JudgeLike = Union[Judge, CountingJudge]
"""What ``select`` accepts: a Judge, a JudgeCalls or a SampledJudge."""


class Strategy(Protocol):
    """Picks the best of N candidates per item."""

    name: str

    def select(
        self,
        items: Sequence[Item],
        candidates: Sequence[Sequence[Candidate]],
        judge: JudgeLike,
        *,
        max_calls: int | None = None,
    ) -> list[Selection]: ...


def counting(judge: JudgeLike, max_calls: int | None = None) -> CountingJudge:
    """The counting judge a strategy run talks to: a budgeted view when ``max_calls`` is given."""
    if isinstance(judge, Judge):
        return JudgeCalls(judge, max_calls=max_calls)
    if not isinstance(judge, CountingJudge):
        raise TypeError(f"expected a Judge, JudgeCalls or SampledJudge, got {type(judge).__name__}")
    return judge.scoped(max_calls) if max_calls is not None else judge


def check_shapes(items: Sequence[Item], candidates: Sequence[Sequence[Candidate]]) -> None:
    """Items and candidate lists must be aligned; a mismatch is a caller bug, not an item error."""
    if len(items) != len(candidates):
        raise ValueError(f"{len(items)} items but {len(candidates)} candidate lists")


def valid_indices(candidates: Sequence[Candidate]) -> list[int]:
    """Positions of the candidates that have a response (``error`` is None)."""
    return [i for i, candidate in enumerate(candidates) if candidate.error is None]


def no_valid_candidate(item: Item, strategy: str, candidates: Sequence[Candidate]) -> Selection:
    """The selection of an item none of whose candidates has a response."""
    reason = "no candidates" if not candidates else f"all {len(candidates)} candidates failed"
    return Selection(id=item.id, strategy=strategy, chosen=None, candidates=list(candidates),
                     scores=[None] * len(candidates), ranks=[None] * len(candidates), error=reason)


def competition_ranks(keys: Sequence[tuple | None]) -> list[int | None]:
    """Rank by key, higher is better: 1 + how many candidates are strictly better ("1, 2, 2, 4"); None stays None."""
    ranked = [key for key in keys if key is not None]
    return [None if key is None else 1 + sum(other > key for other in ranked) for key in keys]


def best_index(keys: Sequence[tuple | None]) -> int | None:
    """The candidate with the highest key; among equal keys the lowest index (the earliest sample)."""
    best: int | None = None
    for i, key in enumerate(keys):
        if key is not None and (best is None or key > keys[best]):
            best = i
    return best


def describe_error(result: JudgeResult) -> str | None:
    """A one-line account of a failed judgment for ``Match.error`` / ``Selection.error``."""
    if result.error is None:
        return None
    return f"{result.error.kind}: {result.error.message}"


def round_key(value: float) -> float:
    """Scores compared for ranking are rounded, so float noise (1.0000000001 vs 1.0) is not a difference."""
    return round(value, 9)


__all__ = [
    "JudgeLike",
    "Strategy",
    "best_index",
    "check_shapes",
    "competition_ranks",
    "counting",
    "describe_error",
    "no_valid_candidate",
    "round_key",
    "valid_indices",
]
