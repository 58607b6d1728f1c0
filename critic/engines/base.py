"""The engine protocol: one required method, ``generate``; everything else has a default.

An engine turns :class:`GenerationRequest` objects (a chat prompt with media plus the judge's :class:`OutputSpec`)
into :class:`Completion` objects: the constrained text, and the verdict-label probabilities when the engine can
read log-probabilities.  Each engine translates the one spec into its own constraint mechanism in its own module.
A request that cannot be served (a prompt longer than the context, a server error) becomes that completion's
``error``; it never fails the other requests of the batch.

Optional capabilities are declared in :class:`EngineCapabilities`, not discovered with ``hasattr``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from critic.spec import OutputSpec


@dataclass(frozen=True)
class ChatPrompt:
    """An engine-neutral chat prompt, laid out shared-prefix first: system, media, then the text.

    The text itself puts the shared question before the candidates, so several requests for the same media and
    question share a long token prefix (engines with prefix caching reuse it).
    """

    system: str
    text: str
    images: tuple[Image.Image, ...] = ()
    video: tuple[Image.Image, ...] = ()
    """Frames of one video, already sampled."""

    def messages(self) -> list[dict[str, Any]]:
        """OpenAI/transformers-style messages with typed content parts (media as placeholders)."""
        content: list[dict[str, Any]] = [{"type": "image"} for _ in self.images]
        if self.video:
            content.append({"type": "video"})
        content.append({"type": "text", "text": self.text})
        return [
            {"role": "system", "content": [{"type": "text", "text": self.system}]},
            {"role": "user", "content": content},
        ]


@dataclass(frozen=True)
class GenerationRequest:
    """One constrained generation: the prompt, and the spec of what must come out."""

    prompt: ChatPrompt
    spec: OutputSpec


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings shared by every engine.  Greedy unless ``temperature > 0``."""

    temperature: float = field(default=0.0, metadata={"help": "0 means greedy"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass (sampling only)"})
    seed: int | None = field(default=None, metadata={"help": "seed for sampling; greedy ignores it"})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "token cap; None derives a cap from the spec that never cuts the verdict"}
    )

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    """What an engine returns for one request."""

    text: str | None = None
    """The generated text (special tokens removed); None when the request failed."""
    label_probabilities: dict[str, float] | None = None
    """Probability of each label of the spec at the verdict position; None if the engine cannot read them."""
    error: str | None = None
    """Why the request failed, for the item's error record."""
    error_kind: Literal["context_length", "engine"] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class EngineCapabilities:
    """What an engine can do beyond ``generate``."""

    label_probabilities: bool = False
    """Completions carry verdict-label probabilities read from log-probabilities."""
    video: bool = False
    """Requests may carry video frames."""
    prefix_reuse: bool = False
    """Shared prompt prefixes are encoded once (automatic prefix caching or an explicit KV cache)."""
    seeded_sampling: bool = False
    """``SamplingConfig.seed`` makes sampling reproducible."""


_CONTEXT_HINTS = ("maximum context length", "maximum model length", "max_model_len", "context length",
                  "too long", "ran out before the verdict")


def is_context_length_message(message: str) -> bool:
    """Whether an engine's or server's error text says the prompt does not fit the model's context."""
    lowered = message.lower()
    return any(hint in lowered for hint in _CONTEXT_HINTS)


class Engine(abc.ABC):
    """Base class of every engine.  Subclasses implement :meth:`generate` and declare their capabilities."""

    capabilities: EngineCapabilities = EngineCapabilities()
    name: str = "engine"

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[Completion]:
        """Return one completion per request, in order.  Per-request failures go in ``Completion.error``."""

    def reserved_strings(self) -> tuple[str, ...]:
        """Strings that the engine's tokenizer would read as control tokens (e.g. ``<|im_end|>``).

        The prompt builder neutralises them inside untrusted text, so a response cannot close the user turn.
        """
        return ()

    def close(self) -> None:
        """Release resources (processes, GPU memory).  Safe to call twice."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
