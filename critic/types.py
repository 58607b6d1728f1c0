"""Typed inputs and results of the judge.

A :class:`JudgeItem` is what a user asks about: media, a question, and one response (pointwise) or two (pairwise).
A :class:`JudgeResult` is either valid (``error is None``: a verdict with its probabilities) or invalid (``error``
says why, with the raw text when there was one).  There is no magic verdict like ``-1`` or ``"Failed"``.
Every result serialises to one JSON object with :meth:`JudgeResult.to_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from critic.media import MediaSource

ErrorKind = Literal["input", "media", "context_length", "engine", "parse"]


@dataclass
class JudgeItem:
    """One thing to judge.  Field names match the CLI flags and the JSONL input columns."""

    question: str
    """The question or instruction (for text-to-image assessment: the generation prompt)."""
    response_a: str | None = None
    """Pairwise: the first response."""
    response_b: str | None = None
    """Pairwise: the second response."""
    response: str | None = None
    """Pointwise: the one response."""
    images: list[MediaSource] = field(default_factory=list)
    """Images shown before the question (paths, PIL images, bytes or data URLs)."""
    video: MediaSource | list[MediaSource] | None = None
    """A video file, or a list of frames."""
    image_a: MediaSource | None = None
    """Text-to-image pairwise: the first generated image (responses are then not used)."""
    image_b: MediaSource | None = None
    """Text-to-image pairwise: the second generated image."""
    criteria: str | None = None
    """Optional rubric for this item."""
    reference: str | None = None
    """Optional reference answer."""
    id: str | None = None
    """Caller's identifier, repeated in the result."""

    @property
    def mode(self) -> Literal["pairwise", "pointwise"]:
        if self.image_a is not None or self.image_b is not None or self.response_b is not None or self.response_a is not None:
            return "pairwise"
        return "pointwise"

    @property
    def subject(self) -> Literal["responses", "images"]:
        return "images" if (self.image_a is not None or self.image_b is not None) else "responses"


@dataclass
class JudgeError:
    """Why an item has no verdict."""

    kind: ErrorKind
    """input (bad item), media (unreadable image/video), context_length, engine (backend failure), parse."""
    message: str
    """A sentence for the user."""
    raw: str | None = None
    """The generated text, when the failure came after generation."""


@dataclass
class Judgment:
    """One generation of the judge, in the order the candidates were shown to it."""

    order: Literal["AB", "BA"] | None
    """Pairwise: which order the candidates were shown in; None for pointwise."""
    text: str
    """The raw generated text."""
    critique: str
    """The critique with its framing removed."""
    label: str
    """The verdict as generated, in the shown order (for order BA, 'A' means the caller's B)."""
    probabilities: dict[str, float]
    """Probability of each allowed label at the verdict position, in the shown order, summing to 1."""


@dataclass
class JudgeResult:
    """The judge's answer for one item."""

    id: str | None
    mode: Literal["pairwise", "pointwise"]
    verdict: str | None = None
    """Pairwise: 'A', 'B' or 'tie' in the caller's order; pointwise: the score as text. None on error."""
    probabilities: dict[str, float] = field(default_factory=dict)
    """Probability of each allowed verdict in the caller's order (pairwise: averaged over both orders)."""
    critique: str | None = None
    """The critique of the first generation (the caller's order)."""
    score: int | None = None
    """Pointwise: the verdict as an integer."""
    expected_score: float | None = None
    """Pointwise: the mean score under ``probabilities``."""
    consistent: bool | None = None
    """Pairwise with swap: whether both orders gave the same verdict (after un-swapping)."""
    judgments: list[Judgment] = field(default_factory=list)
    """Every generation behind this result (two for a swapped pair)."""
    truncated: list[str] = field(default_factory=list)
    """Input fields shortened to the configured budget (e.g. ['response_b'])."""
    error: JudgeError | None = None
    """Set when there is no verdict; everything above but ``id``/``mode`` is then empty."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; pointwise-only fields are dropped for pairwise results and vice versa."""
        data = asdict(self)
        if self.mode == "pairwise":
            data.pop("score")
            data.pop("expected_score")
        else:
            data.pop("consistent")
        data["status"] = "ok" if self.ok else "error"
        return data

    @classmethod
    def failure(cls, item_id: str | None, mode: Literal["pairwise", "pointwise"], error: JudgeError,
                truncated: list[str] | None = None) -> JudgeResult:
        return cls(id=item_id, mode=mode, error=error, truncated=list(truncated or []))
