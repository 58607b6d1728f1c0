"""The records test-time scaling passes around: items to answer, candidates, matches and selections.

An :class:`Item` is what the policy answers (media and a question, optionally a reference answer for the scaling
curve). A policy turns it into N :class:`Candidate` s; a strategy spends judge calls on them and returns one
:class:`Selection` per item, which keeps every candidate with its score or rank and every judgment behind the
choice, so that the choice can be audited and re-derived from the record alone. Everything serialises to JSON with
``to_dict`` and back with ``from_dict`` (the best-of-N CLI writes one selection per line and re-ranks from them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from critic.media import MediaSource


@dataclass
class Item:
    """One prompt to answer with N candidates."""

    question: str
    images: list[MediaSource] = field(default_factory=list)
    """Images shown before the question (paths, PIL images, bytes or data URLs), as for the judge."""
    video: MediaSource | list[MediaSource] | None = None
    """A video file, or a list of frames."""
    id: str | None = None
    reference: str | None = None
    """The correct final answer, when known (the scaling curve's labelled items)."""
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        known = {"question", "images", "video", "id", "reference", "answer", "meta"}
        if not isinstance(data.get("question"), str) or not data["question"].strip():
            raise ValueError("an item needs a non-empty 'question' string")
        images = data.get("images") or ([data["image"]] if data.get("image") else [])
        if isinstance(images, str):
            images = [images]
        meta = dict(data.get("meta") or {})
        meta.update({k: v for k, v in data.items() if k not in known and k != "image"})
        reference = data.get("reference", data.get("answer"))
        return cls(question=data["question"], images=list(images), video=data.get("video"),
                   id=None if data.get("id") is None else str(data["id"]),
                   reference=None if reference is None else str(reference), meta=meta)


@dataclass
class Candidate:
    """One sampled response of the policy."""

    text: str
    index: int
    """Position among the item's candidates (0..N-1): the order they were sampled in."""
    seed: int | None = None
    """The sampling seed, when the backend takes one (re-running with it reproduces the candidate)."""
    logprob: float | None = None
    """Sum of the response tokens' log-probabilities under the policy, when the backend reports them."""
    answer: str | None = None
    """The final answer extracted from ``text`` (filled by strategies that group by answer)."""
    error: str | None = None
    """Why there is no text (the policy failed for this sample); such candidates are never selected."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(**{k: data.get(k) for k in ("text", "index", "seed", "logprob", "answer", "error")})


@dataclass
class Match:
    """One pairwise comparison of two candidates (``a`` shown first in the caller's order)."""

    a: int
    b: int
    winner: int | None
    """The candidate index that won; None for a tie that the strategy keeps as a tie (round-robin, Swiss)."""
    verdict: str | None
    """The judge's verdict in the caller's order ('A', 'B', 'tie'), None when the judgment failed."""
    probabilities: dict[str, float] = field(default_factory=dict)
    decided_by: Literal["judge", "rule", "bye"] = "judge"
    """'judge': the verdict decided; 'rule': a tie or failed judgment was resolved by the strategy's documented
    rule; 'bye': ``b`` is -1 and ``a`` advanced without a match."""
    round: int = 0
    error: str | None = None
    calls: int = 0
    """Judge calls (generations) this match cost."""


@dataclass
class Selection:
    """A strategy's answer for one item."""

    id: str | None
    strategy: str
    chosen: int | None
    """Index of the selected candidate; None when no candidate could be selected (all failed)."""
    candidates: list[Candidate]
    scores: list[float | None] = field(default_factory=list)
    """Per candidate, what the strategy ranked by (expected score, Bradley-Terry strength, vote share, ...)."""
    ranks: list[int | None] = field(default_factory=list)
    """Per candidate, 1 = best; None for candidates the strategy could not rank."""
    matches: list[Match] = field(default_factory=list)
    """Pairwise strategies: every match, in the order played."""
    judgments: list[dict[str, Any]] = field(default_factory=list)
    """Pointwise strategies: each candidate's judge result (``JudgeResult.to_dict``)."""
    judge_calls: int = 0
    """Generations the judge made for this item (a pair judged in both orders counts 2)."""
    error: str | None = None

    @property
    def chosen_text(self) -> str | None:
        return None if self.chosen is None else self.candidates[self.chosen].text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["chosen_text"] = self.chosen_text
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Selection:
        return cls(id=data.get("id"), strategy=data["strategy"], chosen=data.get("chosen"),
                   candidates=[Candidate.from_dict(c) for c in data.get("candidates", [])],
                   scores=list(data.get("scores", [])), ranks=list(data.get("ranks", [])),
                   matches=[Match(**m) for m in data.get("matches", [])],
                   judgments=list(data.get("judgments", [])), judge_calls=int(data.get("judge_calls", 0)),
                   error=data.get("error"))
