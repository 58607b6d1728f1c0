"""From a :class:`~critic.types.JudgeItem` to the engine-neutral :class:`~critic.engines.base.ChatPrompt`.

This is where untrusted text is made safe and bounded before it reaches a template:

* delimiter tags of our templates (``<response_a>``, ``</question>`` …) inside a question or response are
  defused, so a response cannot close its own block and pose as another field;
* strings the engine's tokenizer reads as control tokens (``<|im_end|>``, ``<image>`` …) get a zero-width joiner
  inside them, so a response cannot end the user turn or smuggle in an image slot;
* responses longer than the budget are cut (the result lists which fields were cut).

Media are loaded defensively by :mod:`critic.media`; a bad image is that item's error, nothing else's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from critic.engines.base import ChatPrompt
from critic.media import load_image, load_video
from critic.spec import OutputSpec
from critic.types import JudgeItem
from prompts import render

_TAG = re.compile(r"<(/?)(question|prompt|criteria|reference_answer|response|response_a|response_b)>", re.IGNORECASE)
_ZWJ = "\u200d"


class InputError(ValueError):
    """An item that cannot be judged as given (missing fields, wrong types)."""


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are built.  Defaults suit the bundled templates."""

    system_template: str = field(default="system", metadata={"help": "template name or .jinja path"})
    pairwise_template: str = field(default="pairwise", metadata={"help": "template name or .jinja path"})
    pointwise_template: str = field(default="pointwise", metadata={"help": "template name or .jinja path"})
    image_pairwise_template: str = field(default="image_pairwise", metadata={"help": "text-to-image pairwise"})
    image_pointwise_template: str = field(default="image_pointwise", metadata={"help": "text-to-image pointwise"})
    rubric: str | None = field(default=None, metadata={"help": "extra judging instructions for every item"})
    max_response_chars: int = field(default=8000, metadata={"help": "longer responses are cut to this length"})
    max_question_chars: int = field(default=8000, metadata={"help": "longer questions are cut to this length"})
    num_frames: int = field(default=8, metadata={"help": "frames sampled from a video"})
    max_pixels: int = field(default=64_000_000, metadata={"help": "images above this many pixels are refused"})

    def __post_init__(self) -> None:
        if self.max_response_chars < 1 or self.max_question_chars < 1:
            raise ValueError("character budgets must be positive")
        if self.num_frames < 1:
            raise ValueError("num_frames must be >= 1")


def neutralise(text: str, reserved: Iterable[str] = ()) -> str:
    """Defuse template delimiters and tokenizer control strings inside untrusted text."""
    text = _TAG.sub(lambda m: f"<{_ZWJ}{m.group(1)}{m.group(2)}>", text)
    for token in sorted(set(reserved), key=len, reverse=True):
        if len(token) > 1 and token in text:
            text = text.replace(token, token[0] + _ZWJ + token[1:])
    return text


def _bounded(name: str, value: str | None, limit: int, truncated: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        truncated.append(name)
        return value[:limit] + " […]"
    return value


@dataclass
class PreparedItem:
    """An item's prompt(s): one for pointwise, (A,B) and optionally (B,A) for pairwise."""

    prompts: list[ChatPrompt]
    orders: list[str | None]
    truncated: list[str]


def prepare(
    item: JudgeItem, spec: OutputSpec, config: PromptConfig, *, swap: bool, reserved: Iterable[str] = ()
) -> PreparedItem:
    """Build the chat prompt(s) for one item.  Raises :class:`InputError` or :class:`critic.media.MediaError`."""
    if not isinstance(item.question, str) or not item.question.strip():
        raise InputError("question is missing or empty")
    truncated: list[str] = []
    reserved = tuple(reserved)

    def clean(name: str, value: str | None, limit: int) -> str | None:
        bounded = _bounded(name, value, limit, truncated)
        return None if bounded is None else neutralise(bounded, reserved)

    question = clean("question", item.question, config.max_question_chars)
    criteria = clean("criteria", item.criteria, config.max_question_chars)
    reference = clean("reference", item.reference, config.max_response_chars)
    images = tuple(load_image(src, max_pixels=config.max_pixels) for src in _as_list(item.images))
    video = tuple(load_video(item.video, num_frames=config.num_frames, max_pixels=config.max_pixels)) if item.video is not None else ()
    subject = item.subject
    system = render(
        config.system_template,
        mode=spec.mode,
        subject=subject,
        allow_tie=spec.allow_tie,
        scale_min=spec.scale_min,
        scale_max=spec.scale_max,
        rubric=config.rubric,
        format_instructions=spec.format_instructions(subject),
    )
    common = {"question": question, "criteria": criteria, "reference": reference}

    if spec.mode == "pointwise":
        if subject == "images":
            raise InputError("pointwise text-to-image items give the image in 'images', not image_a/image_b")
        if item.response is None and not images:
            raise InputError("pointwise items need 'response'")
        response = clean("response", item.response or "", config.max_response_chars)
        template = config.pointwise_template if item.response is not None else config.image_pointwise_template
        text = render(template, response=response, **common)
        return PreparedItem([ChatPrompt(system, text, images, video)], [None], truncated)

    if subject == "images":
        if item.image_a is None or item.image_b is None:
            raise InputError("text-to-image pairwise items need both 'image_a' and 'image_b'")
        first = load_image(item.image_a, max_pixels=config.max_pixels)
        second = load_image(item.image_b, max_pixels=config.max_pixels)
        text = render(config.image_pairwise_template, **common)
        prompts = [ChatPrompt(system, text, images + (first, second), video)]
        if swap:
            prompts.append(ChatPrompt(system, text, images + (second, first), video))
    else:
        if item.response_a is None or item.response_b is None:
            raise InputError("pairwise items need both 'response_a' and 'response_b'")
        a = clean("response_a", item.response_a, config.max_response_chars)
        b = clean("response_b", item.response_b, config.max_response_chars)
        prompts = [ChatPrompt(system, render(config.pairwise_template, response_a=a, response_b=b, **common), images, video)]
        if swap:
            prompts.append(
                ChatPrompt(system, render(config.pairwise_template, response_a=b, response_b=a, **common), images, video)
            )
    return PreparedItem(prompts, ["AB", "BA"][: len(prompts)], truncated)


def _as_list(value: object) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]
