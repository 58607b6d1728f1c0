"""The OpenAI-compatible server engine (``--backend openai``): the judge against ``vllm serve`` or sglang servers.

* Chat completions with images as base64 data URLs (a video as its frames), the spec's regex sent the way the
  server understands it: ``structured_outputs: {"regex": ...}`` for vLLM ≥ 0.12 (``--constraint structured_outputs``,
  the default) or a top-level ``regex`` for sglang (``--constraint regex``).
* ``logprobs`` / ``top_logprobs`` give the verdict probabilities.  Servers name tokens by their text, so the label
  trie is built from the token strings the server returns at the verdict position; a node off the generated path
  (``10`` when the judge wrote ``7``) is scored with a one-token request that continues the assistant message
  (``continue_final_message``).  When a server cannot do that, the item keeps its verdict without probabilities.
* A bounded number of requests in flight; per-request timeouts; retries with capped exponential backoff (and
  ``Retry-After``) on 429, 5xx, timeouts and connection errors, none on other 4xx.  A request that finally fails is
  that item's error record, with the server's message; a server that ignores the constraint gives a ``parse`` error
  with the raw text, never a guessed verdict.

    engine = OpenAIEngine(base_url="http://127.0.0.1:8000/v1", model="judge", max_concurrency=16)
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from critic.engines.base import (
    ChatPrompt,
    Completion,
    Engine,
    EngineCapabilities,
    GenerationRequest,
    SamplingConfig,
    is_context_length_message,
)
from critic.media import image_to_data_url
from critic.spec import regex_escape

ConstraintFormat = Literal["structured_outputs", "regex"]
_END = "\x00<end>"  # the trie's end-of-label option among token strings
_RETRY_STATUS = {408, 409, 429}


class RequestFailed(Exception):
    """A request that failed for good (after retries, or at once on a client error)."""

    def __init__(self, message: str, kind: Literal["engine", "context_length"] = "engine") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _Step:
    """One generated position: the token's text and the top alternatives' log-probabilities by text."""

    token: str
    top: dict[str, float]


class OpenAIEngine(Engine):
    """Engine over an OpenAI-compatible chat completions endpoint."""

    name = "openai"
    capabilities = EngineCapabilities(label_probabilities=True, video=True, prefix_reuse=True, seeded_sampling=True)

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        constraint: ConstraintFormat = "structured_outputs",
        max_concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 20.0,
        top_logprobs: int = 20,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise ImportError("the openai engine needs httpx: pip install 'critic-judge[openai]'") from exc
        if constraint not in ("structured_outputs", "regex"):
            raise ValueError("constraint must be 'structured_outputs' (vLLM) or 'regex' (sglang)")
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError("max_concurrency must be >= 1 and max_retries >= 0")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.constraint = constraint
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.top_logprobs = top_logprobs
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._httpx = httpx
        self._client = httpx.Client(timeout=timeout, headers=headers,
                                    limits=httpx.Limits(max_connections=max_concurrency))
        self._lock = threading.Lock()
        self.requests_sent = 0

    @classmethod
    def from_pretrained(cls, model: str, *, base_url: str | None = None, **options: Any) -> OpenAIEngine:
        """``model`` is the server's model name; ``base_url`` is required (e.g. ``http://host:8000/v1``)."""
        if not base_url:
            raise ValueError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return cls(base_url, model, **options)

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ request bodies
    def _messages(self, prompt: ChatPrompt, assistant_prefix: str | None = None) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": image_to_data_url(image)}} for image in prompt.images
        ]
        # Servers take a video most portably as its frames, in order.
        content += [{"type": "image_url", "image_url": {"url": image_to_data_url(frame)}} for frame in prompt.video]
        content.append({"type": "text", "text": prompt.text})
        messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": content}]
        if assistant_prefix is not None:
            messages.append({"role": "assistant", "content": assistant_prefix})
        return messages

    def _body(self, prompt: ChatPrompt, regex: str, sampling: SamplingConfig, max_tokens: int,
              assistant_prefix: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(prompt, assistant_prefix),
            "max_tokens": max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }
        if sampling.seed is not None and not sampling.greedy:
            body["seed"] = sampling.seed
        if self.constraint == "structured_outputs":
            body["structured_outputs"] = {"regex": regex}
        else:
            body["regex"] = regex
        if assistant_prefix is not None:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        return body

    # ------------------------------------------------------------------ transport
    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; returns the decoded JSON or raises :class:`RequestFailed`."""
        httpx = self._httpx
        last = "no attempt"
        last_retry_after: float | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, last_retry_after))
            last_retry_after = None
            with self._lock:
                self.requests_sent += 1
            try:
                response = self._client.post(self.url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError:
                    raise RequestFailed(f"server returned invalid JSON: {response.text[:300]!r}") from None
            message = _server_message(response)
            if response.status_code in _RETRY_STATUS or response.status_code >= 500:
                last = f"HTTP {response.status_code}: {message}"
                last_retry_after = _retry_after(response)
                continue
            kind = "context_length" if is_context_length_message(message) else "engine"
            raise RequestFailed(f"HTTP {response.status_code}: {message}", kind)  # 4xx: retrying cannot help
        raise RequestFailed(f"gave up after {self.max_retries + 1} attempts; last error: {last}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        capped = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return capped * (0.5 + random.random() / 2)  # jitter spreads a fleet's retries

    def _map(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any] | RequestFailed]:
        def one(body: dict[str, Any]) -> dict[str, Any] | RequestFailed:
            try:
                return self._post(body)
            except RequestFailed as exc:
                return exc

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(one, bodies))

    # ------------------------------------------------------------------ generation
    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[Completion]:
        bodies = [self._body(r.prompt, r.spec.regex(), sampling, sampling.max_new_tokens or r.spec.max_new_tokens)
                  for r in requests]
        answers = self._map(bodies)
        completions: list[Completion] = []
        pending: list[tuple[int, GenerationRequest, str, list[_Step]]] = []
        for i, (request, answer) in enumerate(zip(requests, answers)):
            if isinstance(answer, RequestFailed):
                completions.append(Completion(error=str(answer), error_kind=answer.kind))
                continue
            try:
                choice = answer["choices"][0]
                text = choice["message"]["content"]
                if not isinstance(text, str):
                    raise TypeError("content is not a string")
            except (KeyError, IndexError, TypeError) as exc:
                completions.append(Completion(error=f"malformed server answer ({exc}): {json.dumps(answer)[:300]}",
                                              error_kind="engine"))
                continue
            usage = answer.get("usage") or {}
            cap = bodies[i]["max_tokens"]
            cut_by_context = int(usage.get("completion_tokens") or cap) < cap
            # Stopped by length before our cap (which always reaches the verdict under the constraint): the
            # context ran out.  Stopped *at* our cap: the server ignored the constraint, a parse error below.
            if choice.get("finish_reason") == "length" and cut_by_context and not request.spec.parses(text):
                # The spec's token cap always reaches the verdict; only the server's context can stop it earlier.
                completions.append(Completion(error="the model's context ran out before the verdict "
                                              f"(prompt {usage.get('prompt_tokens', '?')} tokens); shorten the inputs "
                                              "or lower the critique budget", error_kind="context_length"))
                continue
            completions.append(Completion(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                          completion_tokens=int(usage.get("completion_tokens") or 0)))
            pending.append((i, request, text, _steps(choice)))
        for i, probabilities in self._probabilities(pending).items():
            completions[i].label_probabilities = probabilities
        return completions

    # ------------------------------------------------------------------ verdict probabilities
    def _probabilities(self, pending: list[tuple[int, GenerationRequest, str, list[_Step]]]) -> dict[int, dict[str, float]]:
        """Label distributions from the servers' token strings; missing nodes are fetched in batched rounds."""
        plans: dict[int, tuple[GenerationRequest, str, list[_Step], int]] = {}
        for i, request, text, steps in pending:
            try:
                context = request.spec.parse(text).context
            except ValueError:
                continue
            boundary = _string_boundary(steps, context)
            if boundary is not None:
                plans[i] = (request, context, steps, boundary)
        fetched: dict[tuple[int, str], dict[str, float] | None] = {}
        out: dict[int, dict[str, float]] = {}
        for _round in range(8):  # each round descends one level of the label trie; labels are short
            missing: list[tuple[int, str]] = []
            for i, (request, _context, steps, boundary) in plans.items():
                if i in out:
                    continue

                def top_at(prefix: str, i: int = i, steps: list[_Step] = steps, boundary: int = boundary) -> dict[str, float] | None:
                    on_path = _generated_step(steps, boundary, prefix)
                    return on_path if on_path is not None else fetched.get((i, prefix))

                continuations = {lb: request.spec.label_continuation(lb) for lb in request.spec.labels}
                needed: set[str] = set()
                result = string_label_distribution(continuations, top_at, needed)
                unreachable = [p for p in needed if (i, p) in fetched]  # asked before and the server failed
                if result is not None:
                    out[i] = result
                elif not unreachable:
                    missing.extend((i, prefix) for prefix in sorted(needed))
            if not missing:
                break
            fetched.update(self._fetch_nodes(plans, missing))
        return out

    def _fetch_nodes(self, plans: dict[int, Any], missing: list[tuple[int, str]]) -> dict[tuple[int, str], dict[str, float] | None]:
        """One-token requests continuing the assistant message at ``context + prefix``, constrained to what may
        follow there; their top log-probabilities are that node's distribution."""
        bodies = []
        for i, prefix in missing:
            request, context, _steps_, _boundary = plans[i]
            rests = [request.spec.label_continuation(lb)[len(prefix):] for lb in request.spec.labels
                     if request.spec.label_continuation(lb).startswith(prefix)]
            regex = "(" + "|".join(regex_escape(r) for r in rests if r) + ")" + ("?" if "" in rests else "")
            bodies.append(self._body(request.prompt, regex, SamplingConfig(), 1, assistant_prefix=context + prefix))
        fetched: dict[tuple[int, str], dict[str, float] | None] = {}
        for key, answer in zip(missing, self._map(bodies)):
            steps = None
            if not isinstance(answer, RequestFailed):
                try:
                    steps = _steps(answer["choices"][0])
                except (KeyError, IndexError, TypeError):
                    steps = None
            fetched[key] = steps[0].top if steps else None
        return fetched


def string_label_distribution(
    continuations: dict[str, str], top_at: Any, needed: set[str]
) -> dict[str, float] | None:
    """Label probabilities from next-token alternatives given as strings (what servers return).

    The label trie of :mod:`critic.labels` is over token ids known in advance; a server's tokens are only seen in
    its answers, so here the trie is walked over text: at prefix ``s`` of the label continuations, each returned
    alternative ``t`` either extends some continuations (``c.startswith(s + t)``), or, where a label ends at ``s``,
    ends it (EOS or anything else the constraint allowed); the alternatives are renormalised over those options and
    a label's probability is the product along its path.  ``top_at(s)`` returns the alternatives at ``s`` or None
    when unknown; unknown prefixes are added to ``needed`` and None is returned.
    """
    probs = {label: 0.0 for label in continuations}
    missing_before = len(needed)

    def visit(prefix: str, mass: float) -> None:
        live = {lb: c for lb, c in continuations.items() if c.startswith(prefix)}
        if len(live) == 1:
            probs[next(iter(live))] += mass
            return
        top = top_at(prefix)
        if top is None:
            needed.add(prefix)
            return
        ending = [lb for lb, c in live.items() if c == prefix]
        groups: dict[str, float] = {}
        end = -math.inf
        for token, logprob in top.items():
            if token and any(c.startswith(prefix + token) for c in live.values()):
                groups[token] = _logaddexp(groups.get(token, -math.inf), logprob)
            elif ending:
                end = _logaddexp(end, logprob)
        options = dict(groups)
        if ending and end > -math.inf:
            options[_END] = end
        if not options or max(options.values()) == -math.inf:
            raise ValueError(f"no allowed verdict continuation among the server's alternatives after {prefix!r}")
        top_lp = max(options.values())
        weights = {k: math.exp(v - top_lp) for k, v in options.items()}
        total = sum(weights.values())
        for option, weight in weights.items():
            if option == _END:
                probs[ending[0]] += mass * weight / total
            else:
                visit(prefix + option, mass * weight / total)

    try:
        visit("", 1.0)
    except ValueError:
        return None
    return probs if len(needed) == missing_before else None


# ---------------------------------------------------------------------- helpers on token strings

def _server_message(response: Any) -> str:
    try:
        data = response.json()
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else None
        return str(message or data)[:500]
    except ValueError:
        return response.text[:500]


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _text_of(entry: dict[str, Any]) -> str:
    raw = entry.get("bytes")
    if raw:
        return bytes(raw).decode("utf-8", errors="replace")
    return str(entry.get("token", ""))


def _steps(choice: dict[str, Any]) -> list[_Step]:
    content = ((choice.get("logprobs") or {}).get("content")) or []
    steps = []
    for entry in content:
        top: dict[str, float] = {}
        for alt in entry.get("top_logprobs") or []:
            text = _text_of(alt)
            top[text] = _logaddexp(top.get(text, -math.inf), float(alt.get("logprob", -math.inf)))
        steps.append(_Step(_text_of(entry), top))
    return steps


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high = max(a, b)
    return high + math.log(math.exp(a - high) + math.exp(b - high))


def _generated_step(steps: list[_Step], boundary: int, prefix: str) -> dict[str, float] | None:
    """The alternatives after ``context + prefix`` if the generated tokens reach exactly that point."""
    text = ""
    for k in range(boundary, len(steps)):
        if text == prefix:
            return steps[k].top
        if len(text) >= len(prefix):
            return None
        text += steps[k].token
    return None


def _string_boundary(steps: list[_Step], context: str) -> int | None:
    """Index of the first generated token after ``context``, if the tokens split exactly there."""
    length = 0
    for k, step in enumerate(steps):
        if length == len(context):
            return k
        length += len(step.token)
    return None


