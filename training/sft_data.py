"""Preference pairs in, critique-SFT examples out: the target is exactly what the judge decodes.

Every example is a (prompt, target) pair where

* the prompt is built by the judge's own :func:`critic.prompting.prepare` (same templates, same neutralisation of
  control strings, same media loading), so training and inference see identical inputs;
* the target is :meth:`critic.spec.OutputSpec.format` of a critique and a label, so it is a string the judge's
  constrained decoding can produce (``Critique: …\\nVerdict: B``), never a near miss.

Pairwise examples come in both orders, (A, B) with the gold label and (B, A) with the swapped label, so a judge
trained on them has no reason to prefer a position.  Critiques, in order of preference:

1. a teacher judge's critique for that order (:func:`teacher_critiques`), kept only where the teacher's verdict for
   that order matches the gold label;
2. the data's per-response critiques (MM-RLHF's reasons, the synthetic task's checks), composed as
   ``"{observation} Response A: {critique of the first shown} Response B: {critique of the second}"`` — per-response
   critiques never name a position, so the same two texts serve both orders;
3. a template that states the preference, when the data has no critique.

Pointwise examples (one per response) use the data's scores, or the scale's ends for preferred/rejected responses.

    examples, problems = build_examples(read_preferences("pairs.jsonl").pairs, JudgeConfig(critique_max_chars=200))
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from critic.combine import swap_label
from critic.core import Judge, JudgeConfig
from critic.engines.base import ChatPrompt
from critic.media import MediaError
from critic.preferences import PreferencePair
from critic.prompting import InputError, prepare
from critic.spec import TIE, OutputSpec
from critic.types import JudgeItem

Mode = Literal["pairwise", "pointwise"]


@dataclass(frozen=True)
class SFTExample:
    """One supervised example."""

    id: str
    """``{pair id}/{AB|BA}`` for pairwise, ``{pair id}/{a|b}`` for pointwise."""
    prompt: ChatPrompt
    """Exactly the chat prompt the judge sends to its engine for this item and order."""
    target: str
    """Exactly the text the judge's constrained decoding would produce: critique, then the verdict."""
    mode: Mode
    label: str
    """The verdict in the target ('A', 'B', 'tie' or a score)."""
    category: str | None = None


@dataclass(frozen=True)
class ExampleProblem:
    """A pair (or one order of it) that gave no example, and why."""

    id: str
    message: str


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def fit_critique(text: str, spec: OutputSpec) -> str:
    """Make a critique fit the spec: one line for the critique style, and within the character budget (cut at the
    last sentence end, else the last word, that fits — a cut critique is better than a dropped example)."""
    text = _one_line(text) if spec.style == "critique" else text.replace("<", "(").strip()
    if len(text) <= spec.critique_max_chars:
        return text
    head = text[: spec.critique_max_chars]
    for boundary in (head.rfind(". ") + 1, head.rfind(" ")):
        if boundary > spec.critique_max_chars // 2:
            return head[:boundary].rstrip()
    return head.rstrip()


def compose_pairwise(observation: str | None, first: str | None, second: str | None) -> str | None:
    """The pairwise critique from per-response critiques, in the shown order."""
    if first is None or second is None:
        return None
    lead = f"{_one_line(observation)} " if observation else ""
    return f"{lead}Response A: {_one_line(first)} Response B: {_one_line(second)}"


def template_pairwise(label: str) -> str:
    if label == TIE:
        return "Both responses are equally good."
    other = "B" if label == "A" else "A"
    return f"Response {label} answers the question more accurately than Response {other}."


def _scores(pair: PreferencePair, spec: OutputSpec) -> tuple[int, int]:
    if pair.score_a is not None and pair.score_b is not None:
        return (min(max(round(pair.score_a), spec.scale_min), spec.scale_max),
                min(max(round(pair.score_b), spec.scale_min), spec.scale_max))
    middle = (spec.scale_min + spec.scale_max) // 2
    high, low = spec.scale_max, spec.scale_min
    return {"A": (high, low), "B": (low, high), TIE: (middle, middle)}[pair.preferred]


def build_examples(
    pairs: Iterable[PreferencePair],
    config: JudgeConfig,
    *,
    modes: Sequence[Mode] = ("pairwise",),
    reserved: Sequence[str] = (),
    teacher: dict[tuple[str, str], str] | None = None,
) -> tuple[list[SFTExample], list[ExampleProblem]]:
    """Examples for every pair in ``modes``; a pair that cannot be converted becomes a problem, the rest go on.

    ``reserved`` are the tokenizer's control strings (``engine.reserved_strings()``), neutralised in the prompt the
    way the judge does it; ``teacher`` maps (pair id, 'AB'|'BA') to a critique (see :func:`teacher_critiques`).
    """
    examples: list[SFTExample] = []
    problems: list[ExampleProblem] = []
    for pair in pairs:
        for mode in modes:
            try:
                examples.extend(_pair_examples(pair, config, mode, reserved, teacher or {}))
            except (InputError, MediaError, ValueError) as exc:
                problems.append(ExampleProblem(pair.id, f"{mode}: {exc}"))
    return examples, problems


def _pair_examples(pair: PreferencePair, config: JudgeConfig, mode: Mode, reserved: Sequence[str],
                   teacher: dict[tuple[str, str], str]) -> list[SFTExample]:
    spec = config.spec(mode)
    if mode == "pairwise":
        if pair.preferred == TIE and not spec.allow_tie:
            raise ValueError("a tie, but the judge is configured without ties")
        ready = prepare(pair.to_item(), spec, config.prompt, swap=True, reserved=reserved)
        shown = {"AB": (pair.critique_a, pair.critique_b), "BA": (pair.critique_b, pair.critique_a)}
        out = []
        for prompt, order in zip(ready.prompts, ready.orders):
            label = pair.preferred if order == "AB" else swap_label(pair.preferred)
            critique = (teacher.get((pair.id, order)) or compose_pairwise(pair.observation, *shown[order])
                        or template_pairwise(label))
            out.append(SFTExample(f"{pair.id}/{order}", prompt, spec.format(fit_critique(critique, spec), label),
                                  "pairwise", label, pair.category))
        return out
    out = []
    for side, response, critique, score in zip("ab", (pair.response_a, pair.response_b),
                                              (pair.critique_a, pair.critique_b), _scores(pair, spec)):
        item = JudgeItem(question=pair.question, response=response, images=list(pair.images), video=pair.video,
                         id=f"{pair.id}/{side}")
        ready = prepare(item, spec, config.prompt, swap=False, reserved=reserved)
        if critique is None:
            critique = "The response is accurate." if score > (spec.scale_min + spec.scale_max) / 2 else \
                "The response is inaccurate."
        text = f"{_one_line(pair.observation)} {critique}" if pair.observation else critique
        out.append(SFTExample(item.id, ready.prompts[0], spec.format(fit_critique(text, spec), str(score)),  # type: ignore[arg-type]
                              "pointwise", str(score), pair.category))
    return out


def teacher_critiques(judge: Judge, pairs: Sequence[PreferencePair], *, chunk_size: int = 16
                      ) -> dict[tuple[str, str], str]:
    """A teacher judge's critique for each order of each pair, kept only where that order's verdict is right.

    The teacher judges both orders (its position bias cannot leak into the kept critiques: an order it got wrong
    is dropped, and the other order's critique then falls back to the data or the template)."""
    teacher = judge.with_config(swap=True, mode="pairwise")
    kept: dict[tuple[str, str], str] = {}
    for start in range(0, len(pairs), chunk_size):
        chunk = pairs[start: start + chunk_size]
        for pair, result in zip(chunk, teacher.judge([p.to_item() for p in chunk])):
            for judgment in result.judgments if result.ok else []:
                gold = pair.preferred if judgment.order == "AB" else swap_label(pair.preferred)
                if judgment.label == gold and judgment.order is not None:
                    kept[(pair.id, judgment.order)] = judgment.critique
    return kept
