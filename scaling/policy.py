"""Candidate generators for test-time scaling: a *policy* answers each :class:`~scaling.types.Item` N times.

One protocol, :class:`Policy`, with one required method::

    policy.sample(items, n, PolicySampling(temperature=1.0, seed=0)) -> list[list[Candidate]]

The answer is aligned with ``items`` and holds exactly ``n`` candidates per item, ``Candidate.index`` 0..n-1 and
``Candidate.seed == sampling.seed + index``.  An item that cannot be answered (an unreadable image, a prompt longer
than the context, a server error) gets ``n`` candidates with ``text == ""`` and ``error`` set; it never fails the
other items.  ``Candidate.logprob`` is the sum of the sampled tokens' log-probabilities under the model's own
distribution (raw logits: before temperature and top-p; the end-of-sequence token included when one was sampled),
where the backend reports them.

Three backends, named like the judge CLI's ``--backend`` (``--policy-backend`` uses the same names):

* :class:`TransformersPolicy` (``"transformers"``): batched ``generate`` over the model's own processor and chat
  template; every candidate draws its tokens from its own ``torch.Generator`` seeded with ``seed + index``.
* :class:`VLLMPolicy` (``"vllm"``): an in-process ``vllm.LLM``, which it can share with the judge::

      policy = VLLMPolicy.from_pretrained("Qwen/Qwen2-VL-2B-Instruct")
      judge = Judge(VLLMEngine(policy.llm, processor=policy.processor))   # one engine, two roles

* :class:`OpenAIPolicy` (``"openai"``): chat completions on an OpenAI-compatible server (``vllm serve``, sglang),
  one seeded request per candidate, through the judge's HTTP client (same retries and concurrency limit).

What each backend guarantees about reproducibility (declared in :class:`PolicyCapabilities`):

* **transformers** – candidate *k* depends only on the item, the sampling settings and ``seed + k``: not on ``n``,
  the batch size, or the other items of the call (each row samples with its own generator, by the exponential-race
  form of sampling, which is exactly sampling from the temperature/top-p distribution).  So the first *k* candidates
  of an ``n``-run are the candidates of a *k*-run.  "Depends only on" is up to floating-point differences between
  batch shapes (padding, kernel choice), which flip a token only at a near tie of the perturbed scores.
* **vllm** – one ``n=1`` request per candidate with ``SamplingParams(seed=seed + k)``; vLLM gives every seeded
  request its own generator, so the same holds, up to the same batch-shape numerics.  (The installed vLLM also
  seeds the children of an ``n=N`` request with ``seed + index``; explicit requests do not rely on that.)
* **openai** – one request per candidate with ``"seed": seed + k``.  Reproducible and prefix-stable exactly as far
  as the server honours per-request seeds: vLLM and sglang servers do; OpenAI's own API calls it best effort.

Greedy decoding (``temperature=0``) makes every candidate the argmax continuation.  Candidates with the same index
of different items share their seed, hence their random stream (on every backend): a model with near-uniform
outputs (random weights) then writes similar text for different items; a trained model's items differ anyway.

vLLM spawns worker processes: scripts that build a :class:`VLLMPolicy` need an ``if __name__ == "__main__":``
guard.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from critic.engines.base import ChatPrompt
from critic.media import MediaError, load_image, load_video
from scaling.types import Candidate, Item

__all__ = [
    "BACKENDS",
    "OpenAIPolicy",
    "Policy",
    "PolicyCapabilities",
    "PolicyPrompt",
    "PolicySampling",
    "TransformersPolicy",
    "VLLMPolicy",
    "build_prompt",
    "load_policy",
]


# ---------------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class PolicySampling:
    """How candidates are sampled; shared by every backend."""

    temperature: float = field(default=1.0, metadata={"help": "softmax temperature; 0 = greedy (all candidates equal)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass, in (0, 1]"})
    max_new_tokens: int = field(default=64, metadata={"help": "most tokens per candidate"})
    seed: int = field(default=0, metadata={"help": "candidate k samples with seed + k"})

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def seed_for(self, index: int) -> int:
        """The seed of candidate ``index``."""
        return self.seed + index


@dataclass(frozen=True)
class PolicyPrompt:
    """How an item becomes a chat prompt (the same layout for every backend)."""

    system: str = field(default="You are a helpful assistant.",
                        metadata={"help": "system message (Qwen-VL's own default when the template gets none)"})
    num_frames: int = field(default=8, metadata={"help": "frames sampled from a video"})
    max_pixels: int = field(default=64_000_000, metadata={"help": "images above this many pixels are refused"})

    def __post_init__(self) -> None:
        if not isinstance(self.system, str):
            raise ValueError("system must be a string")
        if self.num_frames < 1 or self.max_pixels < 1:
            raise ValueError("num_frames and max_pixels must be >= 1")


@dataclass(frozen=True)
class PolicyCapabilities:
    """What a policy guarantees beyond ``sample``."""

    logprobs: bool = False
    """Candidates carry ``logprob`` (the sum of their tokens' log-probabilities)."""
    seeded: bool = False
    """Re-running with the same sampling settings reproduces each candidate (``Candidate.seed``)."""
    prefix_stable: bool = False
    """Candidate k does not depend on ``n`` or on the other items, so the first k of an N-sample are a k-sample
    (a scaling curve can take prefixes of one run)."""


def build_prompt(item: Item, config: PolicyPrompt) -> ChatPrompt:
    """The chat prompt of one item: system message, its images (or video frames), then the question.

    Media go through :mod:`critic.media`; raises :class:`critic.media.MediaError` (or ``ValueError`` for an empty
    question), which the policies turn into that item's error candidates.  The question is the task itself and is
    passed as written (the judge, which reads untrusted responses, is where control strings are neutralised).
    """
    if not isinstance(item.question, str) or not item.question.strip():
        raise ValueError("question is missing or empty")
    sources = item.images if isinstance(item.images, (list, tuple)) else [item.images]
    images = tuple(load_image(src, max_pixels=config.max_pixels) for src in sources if src is not None)
    video = (tuple(load_video(item.video, num_frames=config.num_frames, max_pixels=config.max_pixels))
             if item.video is not None else ())
    return ChatPrompt(config.system, item.question, images, video)


def _error_message(exc: BaseException) -> str:
    """An exception as a candidate's error text (media errors already name their source)."""
    return str(exc) if isinstance(exc, MediaError) else f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------------- protocol
class Policy(abc.ABC):
    """Base class of every policy.  Subclasses implement :meth:`sample` and declare their capabilities."""

    name: str = "policy"
    capabilities: PolicyCapabilities = PolicyCapabilities()

    def __init__(self, prompt: PolicyPrompt | None = None) -> None:
        self.prompt = prompt or PolicyPrompt()

    @abc.abstractmethod
    def sample(self, items: Sequence[Item], n: int, sampling: PolicySampling | None = None) -> list[list[Candidate]]:
        """``n`` candidates per item, aligned with ``items``; candidate ``k`` has ``index == k`` and
        ``seed == sampling.seed + k``.  Per-item failures are error candidates, never exceptions."""

    def close(self) -> None:
        """Release resources (HTTP connections, the policy's reference to its engine).  Safe to call twice."""

    def __enter__(self) -> Policy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers for implementations
    @staticmethod
    def _check(n: int, sampling: PolicySampling | None) -> PolicySampling:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        return sampling or PolicySampling()

    @staticmethod
    def _failed(index: int, sampling: PolicySampling, reason: str) -> Candidate:
        return Candidate(text="", index=index, seed=sampling.seed_for(index), error=reason)

    def _prompts(self, items: Sequence[Item], n: int, sampling: PolicySampling,
                 out: list[list[Candidate | None]]) -> dict[int, ChatPrompt]:
        """Build every item's prompt; items that fail get their n error candidates in ``out``."""
        prompts: dict[int, ChatPrompt] = {}
        for i, item in enumerate(items):
            try:
                prompts[i] = build_prompt(item, self.prompt)
            except Exception as exc:  # noqa: BLE001 - a bad item is that item's error
                out[i] = [self._failed(k, sampling, _error_message(exc)) for k in range(n)]
        return prompts


def _complete(out: list[list[Candidate | None]], sampling: PolicySampling) -> list[list[Candidate]]:
    """Every slot filled (a slot left empty would be an internal error, reported rather than dropped)."""
    return [[c if c is not None else Policy._failed(k, sampling, "internal: no candidate")
             for k, c in enumerate(row)] for row in out]


# ---------------------------------------------------------------------------------------------------- transformers
class _SeededSampler:
    """Logits processor that samples each row with its own ``torch.Generator`` and records the model's
    log-probability of the chosen token.

    Rows are candidates; row ``r`` is seeded with ``seeds[r]`` and draws one vector of ``Exp(1)`` noise per step,
    so its tokens do not depend on the other rows.  The choice is ``argmax(log p_i - log E_i)`` over the
    temperature- and top-p-warped distribution ``p`` (the exponential race: exactly a draw from ``p``; vLLM samples
    the same way).  The processor returns scores that are ``-inf`` everywhere but the choice, so ``generate`` runs
    greedy and picks it.  It must be the only processor (``generate``'s own defaults are neutralised by the caller),
    so the scores it receives are the model's raw logits.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        self.seeds = list(seeds)
        self.temperature = temperature
        self.top_p = top_p
        self.generators: list[Any] | None = None
        self.logprobs: list[Any] = []  # per step: [rows] log-probability of the chosen token, on CPU

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float()  # [rows, vocab]
        logprobs = torch.log_softmax(logits, dim=-1)
        if self.temperature == 0:
            choice = logits.argmax(dim=-1)
        else:
            warped = logits / self.temperature
            if self.top_p < 1:
                from transformers import TopPLogitsWarper

                warped = TopPLogitsWarper(self.top_p)(input_ids, warped)
            if self.generators is None:
                self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
            noise = torch.stack([torch.empty(logits.shape[1], device=scores.device, dtype=torch.float32)
                                 .exponential_(generator=g) for g in self.generators])  # [rows, vocab]
            noise = noise.clamp_min(torch.finfo(torch.float32).tiny)
            choice = (torch.log_softmax(warped, dim=-1) - noise.log()).argmax(dim=-1)
        self.logprobs.append(logprobs.gather(1, choice[:, None])[:, 0].cpu())
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, choice[:, None], 0.0)


_Row = tuple[int, int]  # (item position, candidate index)


class TransformersPolicy(Policy):
    """Policy over a transformers vision-language model and its processor.

    ``batch_size`` is the number of candidate rows per ``generate`` call (an item's N candidates are consecutive
    rows).  The model can be the judge's: ``TransformersPolicy(engine.model, engine.processor)``.
    """

    name = "transformers"
    capabilities = PolicyCapabilities(logprobs=True, seeded=True, prefix_stable=True)

    def __init__(self, model: Any, processor: Any, *, batch_size: int = 8, max_model_len: int | None = None,
                 prompt: PolicyPrompt | None = None) -> None:
        super().__init__(prompt)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"
        self.batch_size = batch_size
        text_config = getattr(model.config, "text_config", model.config)
        self.max_model_len = int(max_model_len or getattr(text_config, "max_position_embeddings", 32768))
        configured = model.generation_config.eos_token_id
        stops = {configured} if isinstance(configured, int) else set(configured or [])
        if self.tokenizer.eos_token_id is not None:
            stops.add(int(self.tokenizer.eos_token_id))
        if not stops:
            raise ValueError("the tokenizer and generation config define no end-of-sequence token")
        self.stop_token_ids = sorted(stops)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else self.stop_token_ids[0]

    @classmethod
    def from_pretrained(cls, model: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                        max_model_len: int | None = None, trust_remote_code: bool = False,
                        attn_implementation: str | None = None, prompt: PolicyPrompt | None = None) -> TransformersPolicy:
        """Load a model folder or Hub id exactly as the judge's transformers engine does (``device='auto'``: CUDA
        when present; ``dtype='auto'``: bfloat16 on CUDA, float32 on CPU)."""
        from critic.engines.hf import TransformersEngine

        engine = TransformersEngine.from_pretrained(model, device=device, dtype=dtype,
                                                    trust_remote_code=trust_remote_code,
                                                    attn_implementation=attn_implementation)
        return cls(engine.model, engine.processor, batch_size=batch_size, max_model_len=max_model_len, prompt=prompt)

    def sample(self, items: Sequence[Item], n: int, sampling: PolicySampling | None = None) -> list[list[Candidate]]:
        from critic.engines.tokenizer_utils import render_prompt

        sampling = self._check(n, sampling)
        out: list[list[Candidate | None]] = [[None] * n for _ in items]
        prompts = self._prompts(items, n, sampling, out)
        texts: dict[int, str] = {}
        for i in list(prompts):
            try:
                texts[i] = render_prompt(self.processor, prompts[i])
            except Exception as exc:  # noqa: BLE001 - a template failure is this item's error
                out[i] = [self._failed(k, sampling, f"prompt rendering failed: {exc}") for k in range(n)]
                del prompts[i]
        rows = [(i, k) for i in sorted(texts) for k in range(n)]  # item-major: an item's candidates are adjacent
        for start in range(0, len(rows), self.batch_size):
            self._run_rows(rows[start:start + self.batch_size], prompts, texts, sampling, out)
        return _complete(out, sampling)

    # ------------------------------------------------------------------ internals
    def _inputs(self, rows: list[_Row], prompts: dict[int, ChatPrompt], texts: dict[int, str]) -> dict[str, Any]:
        images = [image for i, _ in rows for image in prompts[i].images]
        videos = [list(prompts[i].video) for i, _ in rows if prompts[i].video]
        kwargs: dict[str, Any] = {"text": [texts[i] for i, _ in rows], "padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        if videos:
            kwargs["videos"] = videos
        return dict(self.processor(**kwargs))

    def _per_item(self, rows: list[_Row], reason: str, retry: Callable[[list[_Row]], None],
                  sampling: PolicySampling, out: list[list[Candidate | None]]) -> None:
        """A failure of a batch: with one item in it, that item's rows fail; else each item is retried alone."""
        groups: dict[int, list[_Row]] = {}
        for row in rows:
            groups.setdefault(row[0], []).append(row)
        if len(groups) == 1:
            for i, k in rows:
                out[i][k] = self._failed(k, sampling, reason)
            return
        for group in groups.values():
            retry(group)

    def _run_rows(self, rows: list[_Row], prompts: dict[int, ChatPrompt], texts: dict[int, str],
                  sampling: PolicySampling, out: list[list[Candidate | None]]) -> None:
        retry = lambda group: self._run_rows(group, prompts, texts, sampling, out)  # noqa: E731
        try:
            inputs = self._inputs(rows, prompts, texts)
        except Exception as exc:  # noqa: BLE001 - one bad prompt must not sink the batch
            return self._per_item(rows, f"processor failed: {exc}", retry, sampling, out)
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        fitting = []
        for (i, k), length in zip(rows, lengths):
            if length + sampling.max_new_tokens > self.max_model_len:
                out[i][k] = self._failed(k, sampling, (
                    f"prompt is {int(length)} tokens and up to {sampling.max_new_tokens} new tokens were asked for; "
                    f"the model's context is {self.max_model_len} (maximum context length exceeded)"))
            else:
                fitting.append((i, k))
        if not fitting:
            return None
        try:
            if len(fitting) < len(rows):
                inputs = self._inputs(fitting, prompts, texts)
            for (i, k), candidate in zip(fitting, self._generate(fitting, inputs, sampling)):
                out[i][k] = candidate
        except Exception as exc:  # noqa: BLE001 - isolate the failing item
            return self._per_item(fitting, f"generation failed: {type(exc).__name__}: {exc}", retry, sampling, out)
        return None

    def _generate(self, rows: list[_Row], inputs: dict[str, Any], sampling: PolicySampling) -> list[Candidate]:
        import torch

        sampler = _SeededSampler([sampling.seed_for(k) for _, k in rows], sampling.temperature, sampling.top_p)
        device = self.model.device
        inputs = {key: (value.to(device) if hasattr(value, "to") else value) for key, value in inputs.items()}
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=sampling.max_new_tokens,
                # Greedy over the sampler's one-hot scores; neutral settings so that the model's own generation
                # config (temperature, top-k, a repetition penalty) adds no processor before the sampler.
                do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
                repetition_penalty=1.0, no_repeat_ngram_size=0,
                eos_token_id=self.stop_token_ids, pad_token_id=self.pad_token_id,
                logits_processor=[sampler], return_dict_in_generate=True, use_cache=True,
            )
        generated = output.sequences[:, inputs["input_ids"].shape[1]:].cpu()  # [rows, steps]
        step_logprobs = torch.stack(sampler.logprobs, dim=1)  # [rows, steps]
        stops = set(self.stop_token_ids)
        candidates = []
        for r, (_i, k) in enumerate(rows):
            tokens = generated[r].tolist()
            end = next((t for t, token in enumerate(tokens) if token in stops), None)
            counted = len(tokens) if end is None else end + 1  # the stop token's probability counts
            text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
            candidates.append(Candidate(text=text, index=k, seed=sampling.seed_for(k),
                                        logprob=float(step_logprobs[r, :counted].sum())))
        return candidates


# ---------------------------------------------------------------------------------------------------- vLLM
class VLLMPolicy(Policy):
    """Policy over an in-process ``vllm.LLM`` (pass one you built, e.g. the judge's, or use :meth:`from_pretrained`).

    Share the engine with the judge::

        policy = VLLMPolicy(llm)                       # or VLLMPolicy.from_pretrained(path)
        judge = Judge(VLLMEngine(policy.llm, processor=policy.processor), JudgeConfig())

    All candidates of all items go to vLLM in one ``llm.generate`` call (one seeded ``n=1`` request per candidate;
    prefix caching shares each item's prompt).  If vLLM rejects the batch (a prompt longer than the context), the
    items are retried one by one so that only the bad one fails.  ``logprob`` is vLLM's ``cumulative_logprob``, in
    the engine's ``logprobs_mode`` (raw log-probabilities unless the LLM was built otherwise).
    """

    name = "vllm"
    capabilities = PolicyCapabilities(logprobs=True, seeded=True, prefix_stable=True)

    def __init__(self, llm: Any, processor: Any = None, *, prompt: PolicyPrompt | None = None) -> None:
        from critic.engines.vllm_engine import _import_vllm

        super().__init__(prompt)
        self._vllm = _import_vllm()
        self.llm = llm
        if processor is None:
            from transformers import AutoProcessor

            model_config = llm.llm_engine.model_config
            processor = AutoProcessor.from_pretrained(model_config.model,
                                                      trust_remote_code=model_config.trust_remote_code)
        self.processor = processor

    @classmethod
    def from_pretrained(cls, model: str, *, prompt: PolicyPrompt | None = None, **llm_options: Any) -> VLLMPolicy:
        """Build the ``LLM`` exactly as the judge's vLLM engine does (same defaults: prefix caching, media limits,
        10% of RAM for the KV cache on the CPU build); ``llm_options`` are those of
        :meth:`critic.engines.vllm_engine.VLLMEngine.from_pretrained` (``dtype``, ``max_model_len``, …)."""
        from critic.engines.vllm_engine import VLLMEngine

        engine = VLLMEngine.from_pretrained(model, **llm_options)
        return cls(engine.llm, engine.processor, prompt=prompt)

    def _params(self, sampling: PolicySampling, index: int) -> Any:
        return self._vllm.SamplingParams(
            n=1, temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed_for(index),
            max_tokens=sampling.max_new_tokens, logprobs=0,  # 0: only the sampled token's log-probability
            skip_special_tokens=True,
        )

    def _generate(self, prompts: list[dict[str, Any]], params: list[Any]) -> list[Any]:
        return list(self.llm.generate(prompts, params, use_tqdm=False))

    def sample(self, items: Sequence[Item], n: int, sampling: PolicySampling | None = None) -> list[list[Candidate]]:
        from critic.engines.vllm_engine import vllm_prompt

        sampling = self._check(n, sampling)
        if self.llm is None:
            raise RuntimeError("this policy was closed")
        out: list[list[Candidate | None]] = [[None] * n for _ in items]
        requests: dict[int, dict[str, Any]] = {}
        for i, prompt in self._prompts(items, n, sampling, out).items():
            try:
                requests[i] = vllm_prompt(self.processor, prompt)
            except Exception as exc:  # noqa: BLE001 - a template failure is this item's error
                out[i] = [self._failed(k, sampling, f"prompt rendering failed: {exc}") for k in range(n)]
        params = [self._params(sampling, k) for k in range(n)]
        live = sorted(requests)

        def flat(indices: list[int]) -> tuple[list[dict[str, Any]], list[Any]]:
            return [dict(requests[i]) for i in indices for _ in range(n)], [p for _ in indices for p in params]

        answers: dict[int, list[Any]] = {}
        try:
            if len(live) > 1:
                outputs = self._generate(*flat(live))
                answers = {i: outputs[j * n:(j + 1) * n] for j, i in enumerate(live)}
        except Exception:  # noqa: BLE001 - vLLM rejected the batch (it aborts what it had added): find the bad item
            answers = {}
        for i in live:
            if i in answers:
                continue
            try:
                answers[i] = self._generate(*flat([i]))
            except Exception as exc:  # noqa: BLE001 - becomes this item's error
                out[i] = [self._failed(k, sampling, _error_message(exc)) for k in range(n)]
        for i, item_outputs in answers.items():
            for k, output in enumerate(item_outputs):
                choice = output.outputs[0]
                logprob = choice.cumulative_logprob
                out[i][k] = Candidate(text=choice.text, index=k, seed=sampling.seed_for(k),
                                      logprob=None if logprob is None else float(logprob))
        return _complete(out, sampling)

    def close(self) -> None:
        self.llm = None  # vLLM shuts its workers down once no one (e.g. a judge sharing it) holds the LLM


# ---------------------------------------------------------------------------------------------------- OpenAI
class OpenAIPolicy(Policy):
    """Policy over an OpenAI-compatible chat completions endpoint.

    Requests go through the judge's client (:class:`critic.engines.openai_engine.OpenAIEngine`): images as base64
    data URLs, at most ``max_concurrency`` in flight on a thread pool, retries with capped backoff on 429, 5xx,
    timeouts and connection errors.  One request per candidate, ``"seed": seed + k``, ``logprobs: true``
    (``logprob`` is the sum over the returned tokens, None when the server returns none).  A request that finally
    fails is that candidate's error.
    """

    name = "openai"
    capabilities = PolicyCapabilities(logprobs=True, seeded=True, prefix_stable=True)

    def __init__(self, model: str, base_url: str, api_key: str | None = None, *, max_concurrency: int = 8,
                 timeout: float = 120.0, max_retries: int = 5, backoff_initial: float = 0.5,
                 backoff_max: float = 20.0, prompt: PolicyPrompt | None = None) -> None:
        from critic.engines.openai_engine import OpenAIEngine

        super().__init__(prompt)
        self.model = model
        self.client = OpenAIEngine(base_url, model, api_key=api_key, max_concurrency=max_concurrency,
                                   timeout=timeout, max_retries=max_retries, backoff_initial=backoff_initial,
                                   backoff_max=backoff_max)

    @classmethod
    def from_pretrained(cls, model: str, *, base_url: str | None = None, **options: Any) -> OpenAIPolicy:
        """``model`` is the server's model name; ``base_url`` is required (e.g. ``http://host:8000/v1``)."""
        if not base_url:
            raise ValueError("the openai policy needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return cls(model, base_url, **options)

    def sample(self, items: Sequence[Item], n: int, sampling: PolicySampling | None = None) -> list[list[Candidate]]:
        from critic.engines.openai_engine import RequestFailed

        sampling = self._check(n, sampling)
        out: list[list[Candidate | None]] = [[None] * n for _ in items]
        keys: list[_Row] = []
        bodies: list[dict[str, Any]] = []
        for i, prompt in self._prompts(items, n, sampling, out).items():
            messages = self.client._messages(prompt)  # encoded once per item, shared by its n requests
            for k in range(n):
                keys.append((i, k))
                bodies.append({"model": self.model, "messages": messages, "max_tokens": sampling.max_new_tokens,
                               "temperature": sampling.temperature, "top_p": sampling.top_p,
                               "seed": sampling.seed_for(k), "logprobs": True})
        for (i, k), answer in zip(keys, self.client._map(bodies)):
            if isinstance(answer, RequestFailed):
                out[i][k] = self._failed(k, sampling, str(answer))
                continue
            try:
                choice = answer["choices"][0]
                text = choice["message"]["content"]
                if not isinstance(text, str):
                    raise TypeError("content is not a string")
                content = (choice.get("logprobs") or {}).get("content") or []
                logprob = sum(float(entry["logprob"]) for entry in content) if content else None
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                out[i][k] = self._failed(k, sampling, f"malformed server answer ({type(exc).__name__}: {exc}): "
                                                      f"{str(answer)[:300]}")
                continue
            out[i][k] = Candidate(text=text, index=k, seed=sampling.seed_for(k), logprob=logprob)
        return _complete(out, sampling)

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------------------------------- loading
def _transformers(model: str, **options: Any) -> Policy:
    return TransformersPolicy.from_pretrained(model, **options)


def _vllm(model: str, **options: Any) -> Policy:
    return VLLMPolicy.from_pretrained(model, **options)


def _openai(model: str, **options: Any) -> Policy:
    return OpenAIPolicy.from_pretrained(model, **options)


#: backend name → factory(model, **options); the names of the judge CLI's ``--backend``.  Each backend imports its
#: dependencies only when built (vLLM, httpx) and says which extra to install when they are missing.
BACKENDS: dict[str, Callable[..., Policy]] = {
    "transformers": _transformers,
    "vllm": _vllm,
    "openai": _openai,
}


def load_policy(backend: str, model: str, **options: Any) -> Policy:
    """Build the policy ``backend`` for ``model`` (a folder or Hub id; for ``openai`` the server's model name, with
    ``base_url=``).  ``options`` go to the backend's ``from_pretrained``."""
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown policy backend {backend!r}; available: {', '.join(sorted(BACKENDS))}") from None
    return factory(model, **options)
