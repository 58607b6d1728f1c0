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
from typing import Any

from critic.labels import LabelTrie, label_token_ids
from critic.spec import OutputSpec


def reserved_strings(tokenizer: Any) -> tuple[str, ...]:
    """Special and added tokens of a transformers tokenizer (e.g. ``<|im_end|>``, ``<image>``)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    strings = {tok.content for tok in added.values()} | set(getattr(tokenizer, "all_special_tokens", []))
    return tuple(sorted(s for s in strings if s))


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
