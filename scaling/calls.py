"""Counting, budgeting and caching the judge calls a test-time scaling strategy spends.

A best-of-N strategy is judged by what it costs, so every strategy talks to the judge through a
:class:`JudgeCalls`, which wraps a :class:`critic.core.Judge` and

* counts **judge calls** = engine generations: a pairwise item costs 2 with ``swap`` (both orders), 1 without; a
  pointwise item costs 1; an item that failed before reaching the engine (``input`` or ``media`` error) costs 0;
* enforces an optional budget ``max_calls``: a batch whose worst-case cost would take the total past the budget is
  refused with :class:`BudgetExceeded` *before* anything is sent (the check assumes every uncached item reaches the
  engine, so it never lets a batch overspend);
* caches greedy results only (as lm-evaluation-harness does): a sampled judgment is a draw from a distribution and
  serving it again would silently turn K samples into one.  The key is the judge configuration, the mode, the
  question, the responses, criteria, reference, a content hash of every image and video frame, and the token cap;
  a hit costs 0 calls.  Only valid results are cached, so a transient engine error is retried next time.

Per-item counts come back with the results (:class:`CountedResults`), so strategies can fill
``Selection.judge_calls`` exactly even when one batch mixes many items::

    calls = JudgeCalls(judge, max_calls=1000)
    batch = calls.judge_counted([JudgeItem(question="...", response_a="...", response_b="...")])
    batch.results[0].verdict, batch.calls[0], calls.spent      # 'A', 2, 2

Views made with :meth:`JudgeCalls.scoped` (a smaller budget for one strategy run) or :meth:`JudgeCalls.with_config`
(e.g. ``swap=False``) share the cache and report their spending to the parent, whose budget still holds.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from critic.core import Judge, JudgeConfig
from critic.engines.base import SamplingConfig
from critic.media import MediaSource
from critic.types import JudgeItem, JudgeResult

# Errors raised while preparing an item, before any request reaches the engine: such items cost nothing.
_PRE_ENGINE_ERRORS = ("input", "media")


class BudgetExceeded(RuntimeError):
    """A batch would take the judge calls past the budget; raised before the batch is sent."""

    def __init__(self, spent: int, asked: int, budget: int) -> None:
        super().__init__(f"judge call budget exceeded: {spent} spent, this batch asks for up to {asked} more, "
                         f"the budget is {budget}")
        self.spent = spent
        self.asked = asked
        self.budget = budget


@dataclass
class CountedResults:
    """Judge results with what each one cost, aligned with the items of the call."""

    results: list[JudgeResult]
    calls: list[int]
    """Generations spent on each item in this call (0 for cache hits and items that never reached the engine)."""
    cached: list[bool]
    """Whether each result was served from the cache (or from an identical item earlier in the same batch)."""

    @property
    def total(self) -> int:
        return sum(self.calls)


@runtime_checkable
class CountingJudge(Protocol):
    """What strategies call: :class:`JudgeCalls` and :class:`scaling.self_consistency.SampledJudge` both fit."""

    @property
    def spent(self) -> int: ...

    @property
    def config(self) -> JudgeConfig: ...

    def judge(self, items: Sequence[JudgeItem], sampling: SamplingConfig | None = None) -> list[JudgeResult]: ...

    def judge_counted(self, items: Sequence[JudgeItem], sampling: SamplingConfig | None = None) -> CountedResults: ...

    def scoped(self, max_calls: int | None) -> CountingJudge: ...

    def with_config(self, **changes: Any) -> CountingJudge: ...


class JudgeCalls:
    """A :class:`~critic.core.Judge` that counts its calls, enforces a budget and caches greedy results."""

    def __init__(self, judge: Judge, *, max_calls: int | None = None, cache: bool = True,
                 parent: JudgeCalls | None = None) -> None:
        if max_calls is not None and max_calls < 0:
            raise ValueError(f"max_calls must be >= 0, got {max_calls}")
        self.inner = judge
        self.max_calls = max_calls
        self.parent = parent
        # A view shares its parent's cache, so a strategy run with its own budget still reuses earlier judgments.
        self._cache: dict[tuple, JudgeResult] | None = parent._cache if parent is not None else ({} if cache else None)
        self._spent = 0
        self.hits = 0
        """Results served from the cache (each cost 0 calls)."""

    # ------------------------------------------------------------------ accounting
    @property
    def spent(self) -> int:
        """Generations spent through this object (and its views)."""
        return self._spent

    @property
    def config(self) -> JudgeConfig:
        return self.inner.config

    @property
    def remaining(self) -> int | None:
        """Calls left before the tightest budget on the chain of views; None when there is no budget."""
        left = None if self.max_calls is None else self.max_calls - self._spent
        if self.parent is not None:
            above = self.parent.remaining
            left = above if left is None else (left if above is None else min(left, above))
        return left

    def cost(self, item: JudgeItem) -> int:
        """Generations judging ``item`` would take if it reaches the engine."""
        pairwise = isinstance(item, JudgeItem) and item.mode == "pairwise"
        return 2 if pairwise and self.config.swap else 1

    def ensure_budget(self, asked: int) -> None:
        """Raise :class:`BudgetExceeded` if ``asked`` more calls would pass this view's or any parent's budget."""
        node: JudgeCalls | None = self
        while node is not None:
            if node.max_calls is not None and node._spent + asked > node.max_calls:
                raise BudgetExceeded(node._spent, asked, node.max_calls)
            node = node.parent

    def _charge(self, calls: int) -> None:
        node: JudgeCalls | None = self
        while node is not None:
            node._spent += calls
            node = node.parent

    # ------------------------------------------------------------------ views
    def scoped(self, max_calls: int | None) -> JudgeCalls:
        """A view with its own budget (e.g. one strategy run), sharing the cache and charging this object too."""
        return JudgeCalls(self.inner, max_calls=max_calls, parent=self)

    def with_config(self, **changes: Any) -> JudgeCalls:
        """A view of the same engine with some :class:`JudgeConfig` fields changed (e.g. ``swap=False``)."""
        if not changes:
            return self
        return JudgeCalls(self.inner.with_config(**changes), parent=self)

    # ------------------------------------------------------------------ judging
    def planned_calls(self, items: Sequence[JudgeItem], sampling: SamplingConfig | None = None) -> int:
        """Worst-case cost of judging ``items`` now: every item not served by the cache reaches the engine."""
        sampling = self._effective(sampling)
        keys = [self._key(item, sampling) for item in items]
        return sum(self.cost(items[i]) for i in self._to_send(keys).values())

    def judge(self, items: Sequence[JudgeItem], sampling: SamplingConfig | None = None) -> list[JudgeResult]:
        """Like :meth:`critic.core.Judge.judge`, counted, budgeted and cached."""
        return self.judge_counted(items, sampling).results

    def judge_counted(self, items: Sequence[JudgeItem], sampling: SamplingConfig | None = None) -> CountedResults:
        """Judge ``items`` in one engine call; results and per-item costs are aligned with ``items``."""
        sampling = self._effective(sampling)
        keys = [self._key(item, sampling) for item in items]
        send = self._to_send(keys)  # the item to send for every key that must be judged
        asked = sum(self.cost(items[i]) for i in send.values())
        self.ensure_budget(asked)
        order = list(send.values())
        fresh = dict(zip(order, self.inner.judge([items[i] for i in order], sampling))) if order else {}

        results: list[JudgeResult] = []
        calls: list[int] = []
        cached: list[bool] = []
        for i, (item, key) in enumerate(zip(items, keys)):
            if i in fresh:
                result = fresh[i]
                spent = self._reached_engine(result) * self.cost(item)
                if key is not None and self._cache is not None and result.ok:
                    self._cache[key] = result
                results.append(result)
                calls.append(spent)
                cached.append(False)
                continue
            # A cache hit, or a duplicate of an item judged earlier in this same (greedy) batch.
            source = self._cache.get(key) if (key is not None and self._cache is not None) else None
            if source is None:
                source = fresh[send[key]]
            self.hits += 1
            results.append(_copy_for(source, item))
            calls.append(0)
            cached.append(True)
        counted = CountedResults(results, calls, cached)
        self._charge(counted.total)
        return counted

    # ------------------------------------------------------------------ internals
    def _effective(self, sampling: SamplingConfig | None) -> SamplingConfig:
        return sampling or self.config.sampling

    def _to_send(self, keys: Sequence[tuple | None]) -> dict[Any, int]:
        """Map each distinct key not in the cache to the first item carrying it (uncacheable items are distinct)."""
        send: dict[Any, int] = {}
        for i, key in enumerate(keys):
            if key is None:
                send[("uncached", i)] = i
            elif not (self._cache is not None and key in self._cache) and key not in send:
                send[key] = i
        return send

    def _key(self, item: JudgeItem, sampling: SamplingConfig) -> tuple | None:
        """The cache key, or None when the result must not be cached (sampling, no cache, not a JudgeItem)."""
        if self._cache is None or not sampling.greedy or not isinstance(item, JudgeItem):
            return None
        try:
            media = (tuple(media_hash(source) for source in _as_list(item.images)),
                     _video_hash(item.video), _optional_hash(item.image_a), _optional_hash(item.image_b))
        except TypeError:  # an unhashable kind of source: judge it, do not cache it
            return None
        # The judge config is frozen (hashable); it decides swap, templates and scale, so it belongs in the key.
        return (self.config, sampling.max_new_tokens, item.mode, item.question, item.response_a, item.response_b,
                item.response, item.criteria, item.reference, media)

    @staticmethod
    def _reached_engine(result: JudgeResult) -> bool:
        return result.error is None or result.error.kind not in _PRE_ENGINE_ERRORS


def _copy_for(result: JudgeResult, item: JudgeItem) -> JudgeResult:
    # A deep copy, so a caller that edits one result cannot change the cached one or its duplicates.
    return replace(copy.deepcopy(result), id=None if item.id is None else str(item.id))


# ---------------------------------------------------------------------------------------------------------------
# Content hashes of media (critic.media has no hashing helper)
# ---------------------------------------------------------------------------------------------------------------

# Every candidate of an item shows the same image, so a round-robin over N candidates would hash the same file
# N(N-1)/2 times; file hashes are memoised by (path, size, modification time).
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def media_hash(source: MediaSource) -> str:
    """A content hash of an image source: file contents for paths, pixels for PIL images, the bytes otherwise.

    Strings that are not existing files (data URLs, base64, missing paths) are hashed as text: a missing file fails
    the item with a media error anyway, and failures are never cached.  Raises TypeError for other kinds."""
    if isinstance(source, Image.Image):
        digest = hashlib.sha256(f"{source.mode}:{source.size}".encode())
        digest.update(source.tobytes())
        return "pil:" + digest.hexdigest()
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "bytes:" + hashlib.sha256(bytes(source)).hexdigest()
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if isinstance(path, str) and (len(path) < 4096 and os.path.isfile(path)):
            return "file:" + _file_hash(path)
        return "text:" + hashlib.sha256(str(path).encode()).hexdigest()
    raise TypeError(f"cannot hash a media source of type {type(source).__name__}")


def _file_hash(path: str) -> str:
    stat = os.stat(path)
    memo = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_HASHES[memo] = digest.hexdigest()
    return _FILE_HASHES[memo]


def _optional_hash(source: MediaSource | None) -> str | None:
    return None if source is None else media_hash(source)


def _video_hash(video: MediaSource | list[MediaSource] | None) -> tuple[str, ...] | str | None:
    if video is None:
        return None
    if isinstance(video, (list, tuple)):
        return tuple(media_hash(frame) for frame in video)
    return media_hash(video)


def _as_list(value: object) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


__all__ = ["BudgetExceeded", "CountedResults", "CountingJudge", "JudgeCalls", "media_hash"]
