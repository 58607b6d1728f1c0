"""Position-bias control: judge a pair in both orders and combine, written once for every engine and strategy.

A judge that prefers whatever it sees first looks perfect on data whose better answer comes first.  So a pair
(A, B) is also judged as (B, A); the second judgment's probabilities are mapped back to the caller's labels
("un-swapped"), the two distributions are averaged, and the result records whether the two orders agreed.

    swapped = swap_labels(probs_ba)            # {'A': p_ba['B'], 'B': p_ba['A'], 'tie': p_ba['tie']}
    combined = combine_orders(probs_ab, 'A', probs_ba, 'B', labels=('A', 'B', 'tie'))
    combined.verdict, combined.consistent  # 'A', True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from critic.spec import TIE

_SWAP = {"A": "B", "B": "A", TIE: TIE}


def swap_label(label: str) -> str:
    """The caller's label for a label given in the swapped order."""
    try:
        return _SWAP[label]
    except KeyError:
        raise ValueError(f"not a pairwise label: {label!r}") from None


def swap_labels(probabilities: Mapping[str, float]) -> dict[str, float]:
    """Map a distribution over labels in the swapped order back to the caller's order."""
    return {swap_label(label): p for label, p in probabilities.items()}


def argmax_label(probabilities: Mapping[str, float], labels: Sequence[str]) -> str:
    """The most probable label; an exact tie between A and B becomes 'tie' when allowed, else the first in order.

    Exact ties are common after averaging two perfectly position-biased judgments (A: 1.0 then B: 1.0 → 0.5/0.5),
    and picking 'A' there would reintroduce the very bias the swap removes.
    """
    best = max(probabilities[label] for label in labels)
    winners = [label for label in labels if probabilities[label] == best]
    if len(winners) > 1 and TIE in labels:
        return TIE
    return winners[0]


@dataclass(frozen=True)
class CombinedVerdict:
    """The verdict of a pair judged in both orders, in the caller's order."""

    probabilities: dict[str, float]
    """Mean of the (A,B) distribution and the un-swapped (B,A) distribution."""
    verdict: str
    """The most probable label of ``probabilities`` (see :func:`argmax_label`)."""
    consistent: bool
    """Whether the two orders' generated verdicts agree after un-swapping."""


def combine_orders(
    probs_ab: Mapping[str, float], label_ab: str, probs_ba: Mapping[str, float], label_ba: str,
    labels: Sequence[str],
) -> CombinedVerdict:
    """Combine the judgment of order (A,B) with that of order (B,A)."""
    unswapped = swap_labels(probs_ba)
    combined = {label: 0.5 * (probs_ab.get(label, 0.0) + unswapped.get(label, 0.0)) for label in labels}
    return CombinedVerdict(
        probabilities=combined,
        verdict=argmax_label(combined, labels),
        consistent=swap_label(label_ba) == label_ab,
    )
