"""Named best-of-N strategies, for configuration files and the command line.

    strategy = make_strategy("swiss", rounds=4)
    selections = strategy.select(items, candidates, judge, max_calls=2000)

Every entry is a callable that takes the strategy's options as keyword arguments and returns a
:class:`~scaling.strategy.Strategy`.  This lives apart from :mod:`scaling.strategy` because it imports every strategy
module, and those import the shared pieces from there.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from scaling.pointwise import PointwiseBestOfN
from scaling.self_consistency import MajorityVote
from scaling.strategy import Strategy
from scaling.tournament import Knockout, RoundRobin, Swiss

STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "pointwise": PointwiseBestOfN,
    "pointwise_weighted": partial(PointwiseBestOfN, weighted=True),
    "knockout": Knockout,
    "round_robin": RoundRobin,
    "swiss": Swiss,
    "self_consistency": MajorityVote,
}


def make_strategy(name: str, **options: Any) -> Strategy:
    """The strategy registered as ``name``, built with ``options`` (e.g. ``rounds=4`` for Swiss)."""
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None
    return factory(**options)


__all__ = ["STRATEGIES", "make_strategy"]
