"""Best-of-N by pointwise scores: the judge scores every candidate on its own, the best score wins.

All items × candidates go to the judge in ONE call (so engines batch everything), costing N judge calls per item.
A candidate's score is the judge's expected score (the mean of the score distribution), which separates candidates
the integer score would tie; when a result has no expected score, its integer score is used.

``weighted=True`` pools evidence across candidates that reach the same final answer (a judge-weighted majority
vote): the scores of candidates with equal extracted answers are summed, the pool with the largest total wins
(equal totals: the pool whose earliest candidate came first), and its best-scored candidate is chosen.

Ties and failures: equal scores go to the lower index (the earlier sample).  A candidate whose judgment failed gets
score None and is never chosen; when every judgment of an item failed, ``chosen`` is None and ``error`` says why.

    selection = PointwiseBestOfN().select([item], [candidates], judge)[0]
    selection.chosen, selection.scores, selection.judgments[selection.chosen]["critique"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from critic.types import JudgeItem, JudgeResult
from scaling.self_consistency import AnswerExtractor, default_answer_extractor, group_by_answer
from scaling.strategy import (
    JudgeLike,
    best_index,
    check_shapes,
    competition_ranks,
    counting,
    describe_error,
    no_valid_candidate,
    round_key,
    valid_indices,
)
from scaling.types import Candidate, Item, Selection


class PointwiseBestOfN:
    """Score each candidate pointwise and keep the best (see the module docstring)."""

    def __init__(self, weighted: bool = False, extractor: AnswerExtractor = default_answer_extractor) -> None:
        self.weighted = weighted
        self.extractor = extractor
        self.name = "pointwise_weighted" if weighted else "pointwise"

    def select(
        self,
        items: Sequence[Item],
        candidates: Sequence[Sequence[Candidate]],
        judge: JudgeLike,
        *,
        max_calls: int | None = None,
    ) -> list[Selection]:
        check_shapes(items, candidates)
        calls = counting(judge, max_calls)
        # One flat batch of every valid candidate of every item; `owners` maps each entry back to (item, candidate).
        batch: list[JudgeItem] = []
        owners: list[tuple[int, int]] = []
        for n, (item, cands) in enumerate(zip(items, candidates)):
            for i in valid_indices(cands):
                batch.append(JudgeItem(question=item.question, response=cands[i].text, images=list(item.images),
                                       video=item.video, id=f"{item.id}#{i}" if item.id is not None else f"#{i}"))
                owners.append((n, i))
        # Item.reference is the scaling curve's label; it is deliberately not shown to the judge.
        counted = calls.judge_counted(batch) if batch else None
        per_item: dict[int, dict[int, tuple[JudgeResult, int]]] = {}
        for k, (n, i) in enumerate(owners):
            assert counted is not None
            per_item.setdefault(n, {})[i] = (counted.results[k], counted.calls[k])
        return [self._select_one(item, list(cands), per_item.get(n, {}))
                for n, (item, cands) in enumerate(zip(items, candidates))]

    def _select_one(self, item: Item, cands: list[Candidate], judged: dict[int, tuple[JudgeResult, int]]) -> Selection:
        if not valid_indices(cands):
            return no_valid_candidate(item, self.name, cands)
        own: list[float | None] = [None] * len(cands)
        judgments: list[dict[str, Any]] = []
        for i, cand in enumerate(cands):
            if i not in judged:
                judgments.append({"status": "not_judged", "error": cand.error})
                continue
            result = judged[i][0]
            judgments.append(result.to_dict())
            own[i] = candidate_score(result)
        spent = sum(c for _, c in judged.values())
        if all(score is None for score in own):
            errors = sorted({describe_error(r) or "" for r, _ in judged.values()})
            return Selection(id=item.id, strategy=self.name, chosen=None, candidates=cands, scores=own,
                             ranks=[None] * len(cands), judgments=judgments, judge_calls=spent,
                             error="every judgment failed: " + "; ".join(errors))
        if not self.weighted:
            keys = [None if s is None else (round_key(s),) for s in own]
            return Selection(id=item.id, strategy=self.name, chosen=best_index(keys), candidates=cands, scores=own,
                             ranks=competition_ranks(keys), judgments=judgments, judge_calls=spent)

        # Weighted: pool the scores of candidates with the same answer; rank by (pool total, own score).
        cands = [replace(c, answer=self.extractor(c.text)) if c.error is None else c for c in cands]
        scored = [i for i, s in enumerate(own) if s is not None]
        groups = group_by_answer([cands[i].answer or "" for i in scored], scored)
        pooled: list[float | None] = [None] * len(cands)
        keys: list[tuple | None] = [None] * len(cands)
        # Pools in order of first appearance, so equal totals go to the pool whose earliest candidate came first.
        for position, members in enumerate(groups.values()):
            total = sum(own[i] for i in members)  # type: ignore[misc]
            for i in members:
                pooled[i] = total
                keys[i] = (round_key(total), -position, round_key(own[i]))  # type: ignore[arg-type]
        return Selection(id=item.id, strategy=self.name, chosen=best_index(keys), candidates=cands, scores=pooled,
                         ranks=competition_ranks(keys), judgments=judgments, judge_calls=spent)


def candidate_score(result: JudgeResult) -> float | None:
    """What a pointwise result ranks by: the expected score, else the integer score; None when it failed."""
    if not result.ok:
        return None
    if result.expected_score is not None:
        return float(result.expected_score)
    return None if result.score is None else float(result.score)


__all__ = ["PointwiseBestOfN", "candidate_score"]
