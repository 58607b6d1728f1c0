"""Self-consistency on both sides: majority vote over the policy's answers, and K sampled judgments per comparison.

**Answer side.** :class:`MajorityVote` is the judge-free baseline every judge strategy must beat: extract each
candidate's final answer (:func:`default_answer_extractor`), group equal answers, and pick the largest group.  It
costs 0 judge calls::

    [selection] = MajorityVote().select([item], [candidates], judge=None)

**Judge side.** :class:`SampledJudge` asks the judge K times with sampling (distinct seeds) and combines the K
verdicts of every item, by the mean of their probabilities or by majority.  It has the judge interface strategies
use (:class:`~scaling.calls.CountingJudge`), so any strategy can run on it::

    Knockout().select(items, candidates, SampledJudge(judge, k=5))

One engine call carries one :class:`~critic.engines.base.SamplingConfig`, hence one seed; engines that seed per
request (vLLM, sglang, OpenAI-compatible servers) would return K identical samples of K identical prompts sent
under one seed.  So the K samples are K judge calls (each batched across every item), with seeds
``seed, seed + 1, ..., seed + K - 1``.  Sampled calls are never cached (see :mod:`scaling.calls`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

from critic.combine import argmax_label
from critic.core import Judge, JudgeConfig
from critic.engines.base import SamplingConfig
from critic.types import JudgeError, JudgeItem, JudgeResult
from scaling.calls import CountedResults, JudgeCalls
from scaling.strategy import (
    JudgeLike,
    check_shapes,
    competition_ranks,
    no_valid_candidate,
    valid_indices,
)
from scaling.types import Candidate, Item, Selection

# ---------------------------------------------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------------------------------------------

# The last "answer is ..." / "Answer: ..." wins, as the judge's own parser takes the last verdict field.
_ANSWER_MARKER = re.compile(r"\banswer\s*(?:is\b|:)", re.IGNORECASE)
# A sentence ends at . ! ? followed by whitespace or the end; "3.5" is not split.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Leading "it is" / "this is" / "there are" ...: "It is a red circle." must agree with "a red circle".
_COPULA = re.compile(r"^(?:(?:it|this|that|there|they)\s+(?:is|are|was|were)|it's|that's|there's|they're)\s+")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
# Punctuation is removed, except a decimal point or separator between digits ("3.5" stays "3.5").
_PUNCT = re.compile(r"(?<!\d)[" + re.escape(string.punctuation) + r"]|[" + re.escape(string.punctuation)
                    + r"](?!\d)")

AnswerExtractor = Callable[[str], str]


def default_answer_extractor(text: str) -> str:
    """The normalised final answer of a short response.

    Takes the text after the last "answer is" / "Answer:" when there is one (up to the end of its sentence),
    otherwise the last sentence of the last non-empty line; then lowercases, drops a leading "it is"-style phrase,
    punctuation (not between digits) and the articles a/an/the, and collapses whitespace.
    ``"It is a red circle."`` and ``"a red circle"`` both give ``"red circle"``.
    """
    text = text.strip()
    markers = list(_ANSWER_MARKER.finditer(text))
    if markers:
        tail = text[markers[-1].end():].strip()
        tail = tail.splitlines()[0] if tail else ""
        answer = _SENTENCE_END.split(tail, maxsplit=1)[0] if tail else ""
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        sentences = [s for s in _SENTENCE_END.split(lines[-1]) if s.strip()] if lines else []
        answer = sentences[-1] if sentences else ""
    answer = answer.lower().strip()
    answer = _COPULA.sub("", answer)
    answer = _PUNCT.sub(" ", answer)
    answer = _COPULA.sub("", answer.strip())  # again, for answers that started with punctuation ("(It is ...")
    answer = _ARTICLES.sub(" ", answer)
    return " ".join(answer.split())


# ---------------------------------------------------------------------------------------------------------------
# Majority vote over answers
# ---------------------------------------------------------------------------------------------------------------


class MajorityVote:
    """Pick the most frequent final answer; 0 judge calls.

    Groups the valid candidates by extracted answer and picks the largest group; between equally large groups, the
    one whose earliest candidate comes first.  The chosen candidate is the earliest of that group.  A candidate's
    score is its group's vote share; ranks order groups by size (then first appearance), and candidates inside a
    group by index.  Each selection's candidates carry their extracted ``answer``.
    """

    name = "self_consistency"

    def __init__(self, extractor: AnswerExtractor = default_answer_extractor) -> None:
        self.extractor = extractor

    def select(
        self,
        items: Sequence[Item],
        candidates: Sequence[Sequence[Candidate]],
        judge: JudgeLike | None = None,
        *,
        max_calls: int | None = None,
    ) -> list[Selection]:
        """One selection per item; ``judge`` and ``max_calls`` are accepted for the common interface and unused."""
        check_shapes(items, candidates)
        return [self._select_one(item, list(cands)) for item, cands in zip(items, candidates)]

    def _select_one(self, item: Item, cands: list[Candidate]) -> Selection:
        valid = valid_indices(cands)
        if not valid:
            return no_valid_candidate(item, self.name, cands)
        answered = [replace(c, answer=self.extractor(c.text)) if c.error is None else c for c in cands]
        groups = group_by_answer([answered[i].answer or "" for i in valid], valid)
        # Largest group first; equal sizes: the group whose earliest member came first.
        order = sorted(groups.values(), key=lambda members: (-len(members), members[0]))
        scores: list[float | None] = [None] * len(cands)
        keys: list[tuple | None] = [None] * len(cands)
        for position, members in enumerate(order):
            for i in members:
                scores[i] = len(members) / len(valid)
                keys[i] = (-position, -i)  # higher is better: earlier group, then earlier candidate
        return Selection(id=item.id, strategy=self.name, chosen=order[0][0], candidates=answered, scores=scores,
                         ranks=competition_ranks(keys))


def group_by_answer(answers: Sequence[str], indices: Sequence[int]) -> dict[str, list[int]]:
    """Candidate indices by answer, each list in index order, groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for answer, i in sorted(zip(answers, indices), key=lambda pair: pair[1]):
        groups.setdefault(answer, []).append(i)
    return groups


# ---------------------------------------------------------------------------------------------------------------
# K sampled judgments per item
# ---------------------------------------------------------------------------------------------------------------


class SampledJudge:
    """K sampled judgments per item, combined into one result (see the module docstring).

    ``combine="mean"``: the result's probabilities are the mean of the valid samples' probabilities and the verdict
    is their argmax (:func:`critic.combine.argmax_label`: an exact A/B tie is 'tie' when allowed).
    ``combine="majority"``: the probabilities are the samples' vote shares and the verdict the most voted one
    (an exact tie of votes: 'tie' when allowed, otherwise the first label in the spec's order).  Pointwise results
    carry the mean of the samples' expected scores in either case.  Failed samples are dropped; an item whose K
    samples all failed gets an error result.  The result's ``judgments`` hold every generation of every sample.
    """

    def __init__(
        self,
        judge: Judge | JudgeCalls,
        k: int,
        temperature: float = 0.7,
        combine: Literal["mean", "majority"] = "mean",
        seed: int = 0,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not temperature > 0:
            raise ValueError("a sampled judge needs temperature > 0 (greedy samples would all be the same)")
        if combine not in ("mean", "majority"):
            raise ValueError(f"combine must be 'mean' or 'majority', not {combine!r}")
        self.calls: JudgeCalls = judge if isinstance(judge, JudgeCalls) else JudgeCalls(judge)
        self.k = k
        self.temperature = temperature
        self.combine = combine
        self.seed = seed

    # The CountingJudge interface, delegated to the wrapped JudgeCalls.
    @property
    def spent(self) -> int:
        return self.calls.spent

    @property
    def config(self) -> JudgeConfig:
        return self.calls.config

    def scoped(self, max_calls: int | None) -> SampledJudge:
        return self._rewrap(self.calls.scoped(max_calls))

    def with_config(self, **changes: Any) -> SampledJudge:
        return self._rewrap(self.calls.with_config(**changes))

    def _rewrap(self, calls: JudgeCalls) -> SampledJudge:
        return SampledJudge(calls, self.k, self.temperature, self.combine, self.seed)

    def judge(self, items: Sequence[JudgeItem], sampling: SamplingConfig | None = None) -> list[JudgeResult]:
        return self.judge_counted(items, sampling).results

    def judge_counted(self, items: Sequence[JudgeItem], sampling: SamplingConfig | None = None) -> CountedResults:
        """K sampled judge calls over all ``items``; per-item calls are the sum over the K samples.

        ``sampling`` (optional) sets temperature, top-p and token cap; its seed is replaced by the K seeds."""
        base = sampling or SamplingConfig(temperature=self.temperature)
        if base.greedy:
            raise ValueError("a sampled judge cannot run greedy (temperature 0)")
        first_seed = self.seed if base.seed is None else base.seed
        # Check the whole K-sample cost up front, so a budget failure happens before the first sample is spent.
        self.calls.ensure_budget(self.k * self.calls.planned_calls(items, base))
        samples = [self.calls.judge_counted(items, replace(base, seed=first_seed + s)) for s in range(self.k)]
        results = [self._combine(item, [sample.results[i] for sample in samples]) for i, item in enumerate(items)]
        calls = [sum(sample.calls[i] for sample in samples) for i in range(len(items))]
        return CountedResults(results, calls, [False] * len(items))

    def _combine(self, item: JudgeItem, samples: list[JudgeResult]) -> JudgeResult:
        good = [r for r in samples if r.ok]
        if not good:
            first = samples[0].error
            assert first is not None
            message = f"all {len(samples)} samples failed; first: {first.message}"
            return JudgeResult.failure(samples[0].id, samples[0].mode, JudgeError(first.kind, message, first.raw),
                                       samples[0].truncated)
        mode = good[0].mode
        labels = self.config.spec(mode).labels
        if self.combine == "mean":
            probabilities = {label: sum(r.probabilities.get(label, 0.0) for r in good) / len(good) for label in labels}
        else:
            probabilities = {label: sum(r.verdict == label for r in good) / len(good) for label in labels}
        verdict = argmax_label(probabilities, labels)
        consistency = [r.consistent for r in good]
        result = JudgeResult(
            id=good[0].id, mode=mode, verdict=verdict, probabilities=probabilities, critique=good[0].critique,
            judgments=[j for r in good for j in r.judgments], truncated=list(good[0].truncated),
            consistent=None if None in consistency else all(consistency),
        )
        if mode == "pointwise":
            result.score = int(verdict)
            scores = [r.expected_score if r.expected_score is not None else float(r.score or 0) for r in good]
            result.expected_score = sum(scores) / len(scores)
        return result


__all__ = ["AnswerExtractor", "MajorityVote", "SampledJudge", "default_answer_extractor", "group_by_answer"]
