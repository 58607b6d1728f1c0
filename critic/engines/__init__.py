"""Engines that run the judge.  Each backend is imported only when asked for, so ``import critic`` needs no vLLM,
sglang or outlines; a missing optional dependency raises an error naming the extra to install.

    engine = load_engine("transformers", "path/or/hub-id", device="cuda", batch_size=16)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from critic.engines.base import (
    ChatPrompt,
    Completion,
    Engine,
    EngineCapabilities,
    GenerationRequest,
    SamplingConfig,
)


def _transformers(model: str, **options: Any) -> Engine:
    from critic.engines.hf import TransformersEngine

    return TransformersEngine.from_pretrained(model, **options)


def _vllm(model: str, **options: Any) -> Engine:
    from critic.engines.vllm_engine import VLLMEngine

    return VLLMEngine.from_pretrained(model, **options)


def _openai(model: str, **options: Any) -> Engine:
    from critic.engines.openai_engine import OpenAIEngine

    return OpenAIEngine.from_pretrained(model, **options)


def _sglang(model: str, **options: Any) -> Engine:
    from critic.engines.sglang_engine import SGLangEngine

    return SGLangEngine.from_pretrained(model, **options)


#: backend name → factory(model, **options).  Factories import their engine lazily.
BACKENDS: dict[str, Callable[..., Engine]] = {
    "transformers": _transformers,
    "vllm": _vllm,
    "openai": _openai,
    "sglang": _sglang,
}


def load_engine(backend: str, model: str, **options: Any) -> Engine:
    """Build the engine ``backend`` for ``model`` (a local folder or a Hub id)."""
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}") from None
    return factory(model, **options)


__all__ = [
    "BACKENDS",
    "ChatPrompt",
    "Completion",
    "Engine",
    "EngineCapabilities",
    "GenerationRequest",
    "SamplingConfig",
    "load_engine",
]
