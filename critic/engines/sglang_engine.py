"""The sglang engine (``--backend sglang``): the judge on an in-process ``sglang.Engine``, for GPU users.

sglang cannot be installed on this project's CPU machines, so this module is import-guarded and its request
translation (:func:`build_request`) and output reading (:func:`read_output`) are pure functions, unit-tested without
sglang; the engine itself is tested only where sglang is importable (mark ``sglang``).  sglang *servers* are
covered by the OpenAI-compatible engine (``--backend openai --constraint regex``).

* The spec's regex goes in ``sampling_params["regex"]``; ``max_new_tokens`` comes from the spec.
* Images are sent as base64 data URLs in ``image_data`` (one list per prompt); video frames likewise, as images.
* ``return_logprob=True`` with ``top_logprobs_num`` gives per-step top log-probabilities by token id, from which
  the verdict distribution is computed on the label trie exactly as for vLLM
  (:func:`critic.engines.tokenizer_utils.trie_probabilities`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from critic.engines.base import (
    ChatPrompt,
    Completion,
    EngineCapabilities,
    GenerationRequest,
    SamplingConfig,
)
from critic.engines.tokenizer_utils import (
    LocalModelEngine,
    MissingNode,
    VerdictTokens,
    node_options_regex,
    trie_probabilities,
)
from critic.media import image_to_data_url


@dataclass(frozen=True)
class SGLangOutput:
    """What :func:`read_output` extracts from one sglang result."""

    text: str
    token_ids: list[int]
    step_logprobs: list[dict[int, float]]
    prompt_tokens: int


def build_request(
    texts: Sequence[str], prompts: Sequence[ChatPrompt], regexes: Sequence[str], sampling: SamplingConfig,
    max_new_tokens: Sequence[int], top_logprobs: int,
) -> dict[str, Any]:
    """Keyword arguments of ``sglang.Engine.generate`` for a batch of rendered prompts."""
    params = []
    for regex, cap in zip(regexes, max_new_tokens):
        entry: dict[str, Any] = {"max_new_tokens": cap, "temperature": sampling.temperature, "top_p": sampling.top_p,
                                 "regex": regex, "skip_special_tokens": True}
        if sampling.seed is not None and not sampling.greedy:
            entry["sampling_seed"] = sampling.seed
        params.append(entry)
    images = [[image_to_data_url(img) for img in (*p.images, *p.video)] for p in prompts]
    request: dict[str, Any] = {"prompt": list(texts), "sampling_params": params, "return_logprob": True,
                               "top_logprobs_num": top_logprobs}
    if any(images):
        request["image_data"] = [imgs or None for imgs in images]
    return request


def read_output(output: dict[str, Any]) -> SGLangOutput:
    """Text, generated ids and per-step top log-probabilities of one sglang result.

    sglang reports log-probabilities as ``(logprob, token_id, token_text)`` tuples.
    """
    meta = output.get("meta_info") or {}
    tokens = meta.get("output_token_logprobs") or []
    ids = [int(entry[1]) for entry in tokens] or [int(t) for t in output.get("output_ids") or []]
    steps = [{int(entry[1]): float(entry[0]) for entry in step if entry[0] is not None}
             for step in (meta.get("output_top_logprobs") or [])]
    return SGLangOutput(text=str(output.get("text", "")), token_ids=ids, step_logprobs=steps,
                        prompt_tokens=int(meta.get("prompt_tokens") or 0))


class SGLangEngine(LocalModelEngine):
    """Engine over an in-process ``sglang.Engine`` (GPU)."""

    name = "sglang"
    capabilities = EngineCapabilities(label_probabilities=True, video=True, prefix_reuse=True, seeded_sampling=True)

    def __init__(self, engine: Any, processor: Any, *, top_logprobs: int = 20) -> None:
        self.engine = engine
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if self.tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer defines no end-of-sequence token")
        self.eos_token_id = int(self.tokenizer.eos_token_id)
        self.top_logprobs = top_logprobs

    @classmethod
    def from_pretrained(cls, model: str, *, trust_remote_code: bool = False, **engine_options: Any) -> SGLangEngine:
        try:
            import sglang
        except ImportError as exc:
            raise ImportError("the sglang engine needs sglang (GPU machines): pip install sglang; "
                              "or run an sglang server and use --backend openai --constraint regex") from exc
        from transformers import AutoProcessor

        engine = sglang.Engine(model_path=model, trust_remote_code=trust_remote_code, **engine_options)
        return cls(engine, AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code))

    def _call(self, texts: list[str], prompts: list[ChatPrompt], regexes: list[str], sampling: SamplingConfig,
              caps: list[int]) -> list[Any]:
        request = build_request(texts, prompts, regexes, sampling, caps, self.top_logprobs)
        try:
            outputs = self.engine.generate(**request)
            return list(outputs) if isinstance(outputs, list) else [outputs]
        except Exception:
            if len(texts) == 1:
                raise
        results: list[Any] = []
        for i in range(len(texts)):  # isolate the request that sglang rejected
            try:
                results += self._call([texts[i]], [prompts[i]], [regexes[i]], sampling, [caps[i]])
            except Exception as exc:  # noqa: BLE001 - that request's error
                results.append(exc)
        return results

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[Completion]:
        texts = [self._render(r.prompt) for r in requests]
        caps = [sampling.max_new_tokens or r.spec.max_new_tokens for r in requests]
        outputs = self._call(texts, [r.prompt for r in requests], [r.spec.regex() for r in requests], sampling, caps)
        completions: list[Completion] = []
        items = []
        for i, (request, output) in enumerate(zip(requests, outputs)):
            if isinstance(output, Exception):
                completions.append(Completion(error=f"{type(output).__name__}: {output}", error_kind="engine"))
                continue
            read = read_output(output)
            completions.append(Completion(text=read.text, prompt_tokens=read.prompt_tokens,
                                          completion_tokens=len(read.token_ids)))
            items.append(VerdictTokens(i, request.spec, read.text,
                                       [t for t in read.token_ids if t != self.eos_token_id], read.step_logprobs))
        decode = functools.partial(self.tokenizer.decode, skip_special_tokens=True)

        def score_missing(missing: list[MissingNode]) -> dict[tuple[int, tuple[int, ...]], dict[int, float]]:
            prompts = [requests[key].prompt for key, _, _ in missing]
            suffixed = [texts[key] + context + decode(list(path)) for key, context, path in missing]
            regexes = [node_options_regex(self._trie(requests[key].spec), path, decode) for key, _, path in missing]
            scored = {}
            for (key, _c, path), output in zip(missing, self._call(suffixed, prompts, regexes, SamplingConfig(),
                                                                   [1] * len(missing))):
                if not isinstance(output, Exception):
                    steps = read_output(output).step_logprobs
                    if steps:
                        scored[(key, path)] = steps[0]
            return scored

        for key, probabilities in trie_probabilities(items, self._trie, decode, score_missing).items():
            completions[key].label_probabilities = probabilities
        return completions

    def close(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if callable(shutdown):
            shutdown()
