"""The transformers engine: batched, constrained generation with any ``AutoModelForImageTextToText`` model.

* Prompts go through the model's own processor and chat template; batches are left-padded.
* The constraint is the spec's regex, validated and compiled once per spec for this tokenizer with llguidance
  and cached; each ``generate`` call only creates cheap per-sequence matchers over it.
* Verdict probabilities are read from the *raw* logits (a logits processor placed before the constraint and the
  sampling warpers records the log-probabilities of the few label tokens at every step), so they are the model's
  own distribution, not the masked or temperature-scaled one.  Trie nodes off the generated path (``10`` when the
  judge wrote ``7``) are scored with one extra batched forward pass.
* Greedy by default; sampling takes a seed (``torch.manual_seed`` per batch, so results also depend on batch size).

Usage::

    engine = TransformersEngine.from_pretrained("Qwen/Qwen2-VL-2B-Instruct", device="cuda", batch_size=16)
    completions = engine.generate(requests, SamplingConfig())
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from critic.engines.base import (
    ChatPrompt,
    Completion,
    EngineCapabilities,
    GenerationRequest,
    SamplingConfig,
)
from critic.engines.hf_prefix import (
    continuation_inputs,
    gather_rows,
    media_key,
    media_token_ids,
    plan_prefixes,
    prefix_inputs,
    select_rows,
)
from critic.engines.tokenizer_utils import (
    LocalModelEngine,
    MissingNode,
    VerdictTokens,
    trie_probabilities,
    trie_token_ids,
    verdict_boundary,
)
from critic.spec import OutputSpec

try:  # torch and transformers are core dependencies; llguidance is imported lazily below.
    import torch
    from transformers import (
        AutoModelForImageTextToText,
        AutoProcessor,
        LogitsProcessor,
        LogitsProcessorList,
    )
except ImportError as exc:  # pragma: no cover - exercised only in broken installs
    raise ImportError("the transformers engine needs torch and transformers: pip install critic-judge") from exc


def _import_llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf
    except ImportError as exc:
        raise ImportError(
            "constrained decoding on the transformers engine needs llguidance: pip install 'critic-judge[hf]'"
        ) from exc
    return llguidance


class _LabelLogprobRecorder(LogitsProcessor):
    """Records log-softmax of the raw logits at a few token ids, at every generation step.

    Placed first in the processor list, so it sees the model's logits before the constraint mask and before
    temperature/top-p (those are appended after custom processors by ``generate``).
    """

    def __init__(self, token_ids: Sequence[int]) -> None:
        self.token_ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long)
        self.steps: list[torch.Tensor] = []  # each [batch, len(token_ids)] on CPU

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.token_ids.device != scores.device:
            self.token_ids = self.token_ids.to(scores.device)
        # log-softmax at a few columns only: gather, then subtract the row's log-normaliser (no [batch, vocab] copy)
        picked = scores.index_select(1, self.token_ids).float()
        self.steps.append((picked - torch.logsumexp(scores.float(), dim=-1, keepdim=True)).cpu())
        return scores


class _ConstraintProcessor(LogitsProcessor):
    """Masks every token the regex does not allow next, with one llguidance matcher per sequence.

    llguidance builds the automaton lazily, so a regex with a large bounded repetition (the critique budget)
    costs nothing up front; outlines-core's eager index took over a minute for an 80-character budget here.
    """

    def __init__(self, ll_tokenizer: Any, grammar: str, stop_token_ids: Sequence[int]) -> None:
        self.llg = _import_llguidance()
        self.ll_tokenizer = ll_tokenizer
        self.grammar = grammar
        self.stop_token_ids = set(stop_token_ids)
        self.matchers: list[Any] | None = None
        self.ended: list[bool] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import llguidance.torch as llg_torch

        batch, width = scores.shape
        if self.matchers is None:
            self.matchers = [self.llg.LLMatcher(self.ll_tokenizer, self.grammar) for _ in range(batch)]
            self.ended = [False] * batch
            self.bitmask = llg_torch.allocate_token_bitmask(batch, self.ll_tokenizer.vocab_size)
        else:
            for row, matcher in enumerate(self.matchers):
                if self.ended[row]:
                    continue  # finished rows receive padding tokens; their matcher is done
                last = int(input_ids[row, -1])
                matcher.consume_token(last)
                self.ended[row] = last in self.stop_token_ids
        for row, matcher in enumerate(self.matchers):
            llg_torch.fill_next_token_bitmask(matcher, self.bitmask, row)
        # Unpack the 32-bit words into one boolean per token (bit k of word w is token 32*w + k).
        bits = self.bitmask.view(torch.uint8).numpy()
        allowed = torch.from_numpy(np.unpackbits(bits, axis=1, bitorder="little").astype(bool))
        allowed = allowed[:, : min(width, allowed.shape[1])]
        for row in range(batch):
            if self.ended[row] or not allowed[row].any():
                allowed[row] = False  # keep the row finite: a finished row may only repeat an end token
                allowed[row, min(self.stop_token_ids)] = True
        mask = torch.zeros_like(scores, dtype=torch.bool)
        mask[:, : allowed.shape[1]] = allowed.to(scores.device)
        return scores.masked_fill(~mask, float("-inf"))


@dataclass
class _Cache:
    """The KV cache a generate call left behind, kept to score off-path trie nodes without a second prefill."""

    past: Any  # transformers Cache over [prompt | generated[:-1]] of every row
    prompt_mask: torch.Tensor  # [batch, prompt width] attention mask of the cached prompt part


@dataclass
class _Row:
    """Bookkeeping of one request inside a batch."""

    index: int  # position in the caller's request list
    request: GenerationRequest
    prompt_ids: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    steps: list[dict[int, float]] = field(default_factory=list)  # label-token logprobs per generated step
    text: str = ""


class TransformersEngine(LocalModelEngine):
    """Engine over a transformers vision-language model and its processor."""

    name = "transformers"
    capabilities = EngineCapabilities(label_probabilities=True, video=True, prefix_reuse=True, seeded_sampling=True)

    def __init__(self, model: Any, processor: Any, *, batch_size: int = 8, max_model_len: int | None = None,
                 prefix_reuse: bool = True) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"
        self.batch_size = batch_size
        self.prefix_reuse = prefix_reuse
        self._media_tokens = media_token_ids(model)
        text_config = getattr(model.config, "text_config", model.config)
        self.max_model_len = int(max_model_len or getattr(text_config, "max_position_embeddings", 32768))
        self.eos_token_id = self._pick_eos()
        stop = model.generation_config.eos_token_id
        stop_ids = [stop] if isinstance(stop, int) else list(stop or [])
        self.stop_token_ids = sorted({self.eos_token_id, *stop_ids})
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_token_id
        self._lock = threading.Lock()
        self._grammars: dict[OutputSpec, str] = {}

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        prefix_reuse: bool = True,
    ) -> TransformersEngine:
        """Load a model folder or Hub id.  ``device='auto'`` picks CUDA when present; ``dtype='auto'`` picks
        bfloat16 on CUDA and float32 on CPU."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        net = AutoModelForImageTextToText.from_pretrained(model, **kwargs).to(device)
        processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
        return cls(net, processor, batch_size=batch_size, max_model_len=max_model_len, prefix_reuse=prefix_reuse)

    # ------------------------------------------------------------------ tokenizer facts
    def _pick_eos(self) -> int:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            stop = self.model.generation_config.eos_token_id
            eos = stop if isinstance(stop, int) else (stop or [None])[0]
        if eos is None:
            raise ValueError("the tokenizer and generation config define no end-of-sequence token")
        return int(eos)

    @functools.cached_property
    def _ll_tokenizer(self) -> Any:
        """The tokenizer as llguidance sees it (built once; special tokens are never allowed inside text)."""
        return _import_llguidance().hf.from_tokenizer(self.tokenizer, n_vocab=None, eos_token=self.eos_token_id)

    def _grammar(self, spec: OutputSpec) -> str:
        """The spec's constraint compiled once per spec and cached; each generate call only makes matchers."""
        with self._lock:
            if spec not in self._grammars:
                llg = _import_llguidance()
                grammar = llg.LLMatcher.grammar_from_regex(spec.regex())
                is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, self._ll_tokenizer)
                if is_error:
                    raise ValueError(f"invalid constraint for {spec}: {'; '.join(messages)}")
                self._grammars[spec] = grammar
            return self._grammars[spec]

    # ------------------------------------------------------------------ prompts
    def _model_inputs(self, prompts: Sequence[ChatPrompt]) -> dict[str, Any]:
        texts = [self._render(p) for p in prompts]
        images = [img for p in prompts for img in p.images]
        videos = [list(p.video) for p in prompts if p.video]
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        if videos:
            kwargs["videos"] = videos
        return dict(self.processor(**kwargs))

    # ------------------------------------------------------------------ generation
    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[Completion]:
        out: list[Completion | None] = [None] * len(requests)
        by_spec: dict[OutputSpec, list[int]] = {}
        for i, request in enumerate(requests):
            by_spec.setdefault(request.spec, []).append(i)
        for spec, indices in by_spec.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = [_Row(index=i, request=requests[i]) for i in indices[start : start + self.batch_size]]
                for row, completion in zip(chunk, self._generate_chunk(spec, chunk, sampling)):
                    out[row.index] = completion
        return [c if c is not None else Completion(error="internal: no completion", error_kind="engine") for c in out]

    def _generate_chunk(self, spec: OutputSpec, rows: list[_Row], sampling: SamplingConfig) -> list[Completion]:
        cap = sampling.max_new_tokens or spec.max_new_tokens
        results: dict[int, Completion] = {}
        try:
            inputs = self._model_inputs([r.request.prompt for r in rows])
        except Exception as exc:  # one bad prompt must not sink the batch: retry the rows one by one
            if len(rows) == 1:
                return [Completion(error=f"processor failed: {exc}", error_kind="engine")]
            return [c for r in rows for c in self._generate_chunk(spec, [r], sampling)]
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        fitting = []
        for row, n in zip(rows, lengths):
            if n + cap > self.max_model_len:
                results[row.index] = Completion(
                    error=f"prompt is {n} tokens and the output may need {cap}; the model's context is "
                    f"{self.max_model_len} (shorten the inputs or lower the critique budget)",
                    error_kind="context_length",
                    prompt_tokens=int(n),
                )
            else:
                fitting.append(row)
        if fitting and len(fitting) < len(rows):
            inputs = self._model_inputs([r.request.prompt for r in fitting])
        if fitting:
            try:
                cache = self._run_generate(spec, fitting, inputs, sampling, cap)
                for row, completion in zip(fitting, self._finish(spec, fitting, cache)):
                    results[row.index] = completion
            except Exception as exc:
                if len(fitting) == 1:
                    results[fitting[0].index] = Completion(error=f"generation failed: {exc}", error_kind="engine")
                else:  # isolate the failing request
                    for row in fitting:
                        results[row.index] = self._generate_chunk(spec, [_Row(row.index, row.request)], sampling)[0]
        return [results[r.index] for r in rows]

    def _run_generate(
        self, spec: OutputSpec, rows: list[_Row], inputs: dict[str, Any], sampling: SamplingConfig, cap: int
    ) -> _Cache | None:
        trie = self._trie(spec)
        recorder = _LabelLogprobRecorder(sorted(trie_token_ids(trie)))
        constraint = _ConstraintProcessor(self._ll_tokenizer, self._grammar(spec), self.stop_token_ids)
        device = self.model.device
        inputs = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in inputs.items()}
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": cap,
            "do_sample": not sampling.greedy,
            "num_beams": 1,
            # Neutral settings so that the model's own generation_config (e.g. a repetition penalty) cannot
            # change the scores the recorder sees.
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "eos_token_id": self.stop_token_ids,
            "pad_token_id": self.pad_token_id,
            "logits_processor": LogitsProcessorList([recorder, constraint]),
            "return_dict_in_generate": True,
            "use_cache": True,
        }
        if sampling.greedy:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        with torch.inference_mode():
            model_inputs = self._with_shared_prefixes(rows, inputs) if self.prefix_reuse and len(rows) > 1 else inputs
            if not sampling.greedy and sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            output = self.model.generate(**model_inputs, **gen_kwargs)
        prompt_width = model_inputs["input_ids"].shape[1]
        sequences = output.sequences[:, prompt_width:].cpu()
        steps = torch.stack(recorder.steps, dim=1) if recorder.steps else torch.empty(len(rows), 0, 0)
        mask = inputs["attention_mask"].cpu()
        for r, row in enumerate(rows):
            row.prompt_ids = inputs["input_ids"][r][mask[r].bool()].cpu().tolist()
            generated = sequences[r].tolist()
            stop = next((k for k, t in enumerate(generated) if t in self.stop_token_ids), len(generated))
            row.generated = generated[:stop]
            ids = recorder.token_ids.cpu().tolist()
            row.steps = [dict(zip(ids, steps[r, k].tolist())) for k in range(min(stop + 1, steps.shape[1]))]
            row.text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        past = getattr(output, "past_key_values", None)
        if past is None or past.get_seq_length() != prompt_width + sequences.shape[1] - 1:
            return None  # an unexpected cache layout: off-path nodes are then scored by recomputing the prompt
        return _Cache(past=past, prompt_mask=model_inputs["attention_mask"].cpu())

    def _with_shared_prefixes(self, rows: list[_Row], inputs: dict[str, Any]) -> dict[str, Any]:
        """Generation inputs that continue from a KV cache of each distinct prefix, encoded once (see
        :mod:`critic.engines.hf_prefix`); the plain inputs when no two rows share media."""
        mask = inputs["attention_mask"].bool().cpu()
        ids = [inputs["input_ids"][r].cpu()[mask[r]].tolist() for r in range(len(rows))]
        plan = plan_prefixes(ids, [media_key(row.request.prompt) for row in rows], self._media_tokens)
        if plan.n_groups == len(rows):
            return inputs
        device = self.model.device
        prefill = prefix_inputs(self._model_inputs([rows[r].request.prompt for r in plan.representatives]),
                                plan.prefix_lengths, self.pad_token_id)
        # One greedy step fills the cache with exactly the prefixes (the sampled token is not cached) and lets the
        # model set up its own position state, through the same public path as any generate call.
        prefilled = self.model.generate(
            **{k: (v.to(device) if hasattr(v, "to") else v) for k, v in prefill.items()},
            max_new_tokens=1, do_sample=False, temperature=None, top_p=None, top_k=None,
            pad_token_id=self.pad_token_id, return_dict_in_generate=True, use_cache=True,
        )
        cache = prefilled.past_key_values
        gather_rows(self.model, cache, plan)
        full_ids, full_mask = continuation_inputs(ids, plan, self.pad_token_id)
        return {"input_ids": full_ids.to(device), "attention_mask": full_mask.to(device), "past_key_values": cache}

    # ------------------------------------------------------------------ verdict probabilities
    def _finish(self, spec: OutputSpec, rows: list[_Row], cache: _Cache | None) -> list[Completion]:
        decode = functools.partial(self.tokenizer.decode, skip_special_tokens=True)
        items = [VerdictTokens(pos, spec, row.text, row.generated, row.steps) for pos, row in enumerate(rows)]

        def score_missing(missing: list[MissingNode]) -> dict[tuple[int, tuple[int, ...]], dict[int, float]]:
            scored = self._score_from_cache(rows, missing, cache) if cache is not None else {}
            rest = [node for node in missing if (node[0], node[2]) not in scored]
            if rest:
                scored.update(self._score_paths(rows, rest))
            return scored

        probabilities = trie_probabilities(items, self._trie, decode, score_missing)
        return [
            Completion(text=row.text, label_probabilities=probabilities.get(pos), prompt_tokens=len(row.prompt_ids),
                       completion_tokens=len(row.generated) + 1)
            for pos, row in enumerate(rows)
        ]

    def _score_from_cache(
        self, rows: list[_Row], needed: list[MissingNode], cache: _Cache
    ) -> dict[tuple[int, tuple[int, ...]], dict[int, float]]:
        """Next-token logprobs after prompt + generated context + path, continuing from the generation's own cache.

        Row r's cache holds its prompt and generated tokens; the query masks out the generated tokens after the
        verdict context (the same gap trick as prefix reuse), re-feeds the context's last token and the path, and
        reads the raw logits of one ``generate`` step: a few tokens per query instead of a second prefill.
        Queries whose context is not a token prefix of the generation are left to :meth:`_score_paths`.
        """
        decode = functools.partial(self.tokenizer.decode, skip_special_tokens=True)
        prompt_width = cache.prompt_mask.shape[1]
        cached = cache.past.get_seq_length()
        queries = []
        for pos, context_text, path in needed:
            row = rows[pos]
            boundary = verdict_boundary(row.generated, row.text, context_text, decode)
            if boundary is None or boundary < 1 or prompt_width + boundary > cached:
                continue
            queries.append((pos, path, boundary, [row.generated[boundary - 1], *path]))
        if not queries:
            return {}
        width = max(len(q[3]) for q in queries)
        ids = torch.full((len(queries), cached + width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for q, (pos, _path, boundary, fed) in enumerate(queries):
            mask[q, :prompt_width] = cache.prompt_mask[pos]
            mask[q, prompt_width: prompt_width + boundary - 1] = 1  # context without its last token (re-fed)
            ids[q, cached + width - len(fed):] = torch.tensor(fed, dtype=torch.long)
            mask[q, cached + width - len(fed):] = 1
        select_rows(self.model, cache.past, [q[0] for q in queries], len(rows))
        device = self.model.device
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=cache.past,
                max_new_tokens=1, do_sample=False, temperature=None, top_p=None, top_k=None,
                pad_token_id=self.pad_token_id, output_logits=True, return_dict_in_generate=True,
            )
        logprobs = torch.log_softmax(output.logits[0].float(), dim=-1).cpu()
        return {
            (pos, path): {token: float(logprobs[q, token])
                          for token in trie_token_ids(self._trie(rows[pos].request.spec))}
            for q, (pos, path, _boundary, _fed) in enumerate(queries)
        }

    def _score_paths(self, rows: list[_Row], needed: list[MissingNode]) -> dict[tuple[int, tuple[int, ...]], dict[int, float]]:
        """Teacher-forced forward pass: next-token logprobs after prompt + verdict context + path.

        The context is the generated tokens when the verdict starts on a token boundary (exactly what the model
        saw), else the context text re-encoded.
        """
        inputs = self._model_inputs([rows[pos].request.prompt for pos, _, _ in needed])
        mask = inputs["attention_mask"]
        decode = functools.partial(self.tokenizer.decode, skip_special_tokens=True)
        sequences = []
        for q, (pos, context_text, path) in enumerate(needed):
            row = rows[pos]
            prompt = inputs["input_ids"][q][mask[q].bool()].tolist()
            boundary = verdict_boundary(row.generated, row.text, context_text, decode)
            context = (row.generated[:boundary] if boundary is not None
                       else self.tokenizer.encode(context_text, add_special_tokens=False))
            sequences.append(prompt + list(context) + list(path))
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for q, seq in enumerate(sequences):
            ids[q, width - len(seq) :] = torch.tensor(seq)
            attention[q, width - len(seq) :] = 1
        extra = {}
        for key, value in inputs.items():
            if key in ("input_ids", "attention_mask"):
                continue
            if torch.is_tensor(value) and value.dim() >= 2 and value.shape[:2] == mask.shape:
                # Per-token side inputs (e.g. token type ids) are re-laid out like the ids; appended tokens are text.
                grown = torch.zeros((len(sequences), width, *value.shape[2:]), dtype=value.dtype)
                for q in range(len(sequences)):
                    own = value[q][mask[q].bool()]
                    grown[q, width - len(sequences[q]) : width - len(sequences[q]) + len(own)] = own
                value = grown
            extra[key] = value
        device = self.model.device
        with torch.inference_mode():
            logits = self.model(
                input_ids=ids.to(device),
                attention_mask=attention.to(device),
                **{k: (v.to(device) if hasattr(v, "to") else v) for k, v in extra.items()},
            ).logits[:, -1, :]
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        return {
            (pos, path): {token: float(logprobs[q, token])
                          for token in trie_token_ids(self._trie(rows[pos].request.spec))}
            for q, (pos, _context, path) in enumerate(needed)
        }
