"""Tokenizer facts every local engine needs, written once: control strings, the label trie, the verdict boundary.

* :func:`reserved_strings` – strings the tokenizer reads as control tokens, which the prompt builder neutralises
  inside untrusted text.
* :func:`label_trie` – the trie of the spec's label continuations as this tokenizer writes them after the marker.
* :func:`verdict_boundary` – how many generated tokens precede the label, so that the log-probabilities recorded at
  that step are the ones at the verdict position.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from critic.engines.base import ChatPrompt, Engine
from critic.labels import LabelTrie, label_token_ids
from critic.spec import OutputSpec


def reserved_strings(tokenizer: Any) -> tuple[str, ...]:
    """Special and added tokens of a transformers tokenizer (e.g. ``<|im_end|>``, ``<image>``)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    strings = {tok.content for tok in added.values()} | set(getattr(tokenizer, "all_special_tokens", []))
    return tuple(sorted(s for s in strings if s))


def render_prompt(processor: Any, prompt: ChatPrompt) -> str:
    """The prompt as the model's chat template renders it, ending with the assistant turn's opening (the text the
    engines feed the model, and the prefix of every training example)."""
    return processor.apply_chat_template(prompt.messages(), add_generation_prompt=True, tokenize=False)


def label_trie(spec: OutputSpec, tokenizer: Any, end_token_id: int) -> LabelTrie:
    """Trie of the spec's labels, tokenised in context (after the marker) by ``tokenizer``."""
    encode = functools.partial(tokenizer.encode, add_special_tokens=False)
    continuations = {label: spec.label_continuation(label) for label in spec.labels}
    ids = label_token_ids(encode, spec.opening + "…" + spec.closing + spec.marker, continuations)
    return LabelTrie.build(ids, end_token_id=end_token_id)


def verdict_boundary(
    generated: Sequence[int], text: str, context: str, decode: Callable[[Sequence[int]], str], max_tail: int = 12
) -> int | None:
    """Number of generated tokens that decode exactly to ``context``; None when the label does not start on a
    token boundary (then the caller re-encodes the context and scores the verdict separately)."""
    tail = text[len(context) :]
    for k in range(1, min(len(generated), max_tail) + 1):
        start = len(generated) - k
        if decode(generated[start:]) == tail:
            return start
    return None


def trie_token_ids(trie: LabelTrie) -> set[int]:
    """Every token id that appears in the trie, plus the end token: the only ids whose log-probabilities matter."""
    ids = {trie.end_token_id} if trie.end_token_id is not None else set()
    stack = [trie.root]
    while stack:
        node = stack.pop()
        ids.update(node.children)
        stack.extend(node.children.values())
    return ids


@dataclass
class VerdictTokens:
    """One generation as an engine with token ids and per-step top log-probabilities returns it."""

    key: int
    """The caller's index of the request."""
    spec: OutputSpec
    text: str
    generated: list[int]
    """Generated token ids, without the end token."""
    step_logprobs: list[dict[int, float]]
    """Per generated position: token id → log-probability (the engine's top-k at that step)."""


MissingNode = tuple[int, str, tuple[int, ...]]
"""(key, verdict context text, trie path) of a trie node whose log-probabilities the generation did not record."""


def trie_probabilities(
    items: Sequence[VerdictTokens],
    trie_for: Callable[[OutputSpec], LabelTrie],
    decode: Callable[[Sequence[int]], str],
    score_missing: Callable[[list[MissingNode]], dict[tuple[int, tuple[int, ...]], dict[int, float]]],
) -> dict[int, dict[str, float]]:
    """Label distributions for engines that return token ids with top-k log-probabilities per step (vLLM, sglang).

    Nodes on the generated path read the recorded step; the others are collected and scored in one batch by
    ``score_missing`` (a forward pass, or the engine's one-token constrained requests).  When the verdict does not
    start on a token boundary, every node is scored that way.  Items whose text does not parse get no entry (the
    judge turns them into parse errors).
    """
    plans: dict[int, tuple[VerdictTokens, LabelTrie, int | None]] = {}
    missing: list[MissingNode] = []
    for item in items:
        try:
            context = item.spec.parse(item.text).context
        except ValueError:
            continue
        boundary = verdict_boundary(item.generated, item.text, context, decode)
        trie = trie_for(item.spec)
        plans[item.key] = (item, trie, boundary)
        for path in trie.queries():
            if boundary is None:
                missing.append((item.key, context, path))
                continue
            step = boundary + len(path)
            if tuple(item.generated[boundary:step]) != path or step >= len(item.step_logprobs):
                missing.append((item.key, context, path))
    scored = score_missing(missing) if missing else {}
    out: dict[int, dict[str, float]] = {}
    for key, (item, trie, boundary) in plans.items():
        def logprobs_at(path: tuple[int, ...], key: int = key, item: VerdictTokens = item,
                        boundary: int | None = boundary) -> dict[int, float]:
            if (key, path) in scored:
                return scored[(key, path)]
            return item.step_logprobs[boundary + len(path)]  # type: ignore[operator]

        try:
            out[key] = trie.distribution(logprobs_at)
        except (ValueError, KeyError, IndexError):
            continue
    return out


def node_options_regex(trie: LabelTrie, path: tuple[int, ...], decode: Callable[[Sequence[int]], str]) -> str:
    """Regex allowing exactly one of the options at a trie node (a child token's text, or nothing when a label
    ends there): the constraint of a one-token scoring request."""
    from critic.spec import regex_escape

    node = trie.root
    for token in path:
        node = node.children[token]
    options = "|".join(regex_escape(decode([t])) for t in node.children)
    return f"({options})" + ("?" if node.label is not None else "")


class LocalModelEngine(Engine):
    """Base of the engines that hold the model's own processor and tokenizer (transformers, vLLM, sglang).

    Subclasses set ``processor``, ``tokenizer`` and ``eos_token_id``; this class renders chat prompts with the
    model's template, lists the tokenizer's control strings, and caches each spec's label trie.
    """

    processor: Any
    tokenizer: Any
    eos_token_id: int

    def reserved_strings(self) -> tuple[str, ...]:
        return reserved_strings(self.tokenizer)

    def _render(self, prompt: ChatPrompt) -> str:
        return render_prompt(self.processor, prompt)

    def _trie(self, spec: OutputSpec) -> LabelTrie:
        tries: dict[OutputSpec, LabelTrie] = self.__dict__.setdefault("_tries", {})
        if spec not in tries:
            tries[spec] = label_trie(spec, self.tokenizer, self.eos_token_id)
        return tries[spec]
