"""Verdict probabilities: the distribution over allowed labels at the verdict position.

A label may span several tokens, and labels may share a first token (``1`` and ``10`` on tokenizers that split
digits).  Reading only the first token's probability would then merge them, so the distribution is computed on the
trie of the labels' token sequences: at every node where more than one continuation is allowed (a child token, or
the end of a label, which is the end-of-sequence token), the model's log-probabilities of those continuations are
renormalised, and a label's probability is the product along its path.  Under constrained decoding this is exactly
the probability that the constrained sampler picks that label.

Engines supply ``logprobs_at(path)`` – the log-probabilities of the next token after the verdict context plus
``path`` – and this module does the rest.  It is written once and shared by every engine.

    trie = LabelTrie.build({"1": [16], "10": [16, 15], "2": [17]}, end_token_id=0)
    trie.queries()          # [(), (16,)]: the root, and the node after "1"
    trie.distribution(lambda path: {...})  # {"1": p1, "10": p10, "2": p2}, summing to 1
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

Path = tuple[int, ...]
END = -1  # stands for "the label ends here" among a node's options


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    label: str | None = None  # set when a label ends at this node

    def options(self) -> list[int]:
        return list(self.children) + ([END] if self.label is not None else [])


@dataclass
class LabelTrie:
    """Trie of label token sequences; see the module docstring."""

    root: _Node
    end_token_id: int | None
    labels: tuple[str, ...]

    @classmethod
    def build(cls, label_tokens: Mapping[str, Sequence[int]], end_token_id: int | None) -> LabelTrie:
        """``label_tokens`` maps each label to its token ids; ``end_token_id`` is what follows a complete label."""
        root = _Node()
        for label, tokens in label_tokens.items():
            if not tokens:
                raise ValueError(f"label {label!r} has no tokens")
            node = root
            for token in tokens:
                node = node.children.setdefault(int(token), _Node())
            if node.label is not None:
                raise ValueError(f"labels {node.label!r} and {label!r} have the same tokens {list(tokens)}")
            node.label = label
        trie = cls(root=root, end_token_id=end_token_id, labels=tuple(label_tokens))
        if end_token_id is None and any(n.label is not None and n.children for n in trie._nodes()):
            raise ValueError("a label is a prefix of another; an end token id is needed to tell them apart")
        return trie

    def _nodes(self) -> list[_Node]:
        stack, out = [self.root], []
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.children.values())
        return out

    def queries(self) -> list[Path]:
        """Paths at which next-token log-probabilities are needed: the nodes with more than one option."""
        out: list[Path] = []

        def visit(node: _Node, path: Path) -> None:
            if len(node.options()) > 1:
                out.append(path)
            for token, child in node.children.items():
                visit(child, path + (token,))

        visit(self.root, ())
        return out

    def first_tokens(self) -> set[int]:
        return set(self.root.children)

    def distribution(self, logprobs_at: Callable[[Path], Mapping[int, float]]) -> dict[str, float]:
        """Probability of each label (in ``self.labels`` order), summing to 1.

        ``logprobs_at(path)`` returns log-probabilities of next tokens after the context plus ``path``; tokens it
        leaves out (an engine that only returns its top-k) count as impossible.  Raises ``ValueError`` when a
        node's options all have zero probability, since no distribution can be formed then.
        """
        probs: dict[str, float] = {label: 0.0 for label in self.labels}

        def visit(node: _Node, path: Path, mass: float) -> None:
            options = node.options()
            if len(options) == 1:
                weights = {options[0]: 1.0}
            else:
                logprobs = logprobs_at(path)
                raw = {
                    opt: logprobs.get(self.end_token_id if opt == END else opt, -math.inf)  # type: ignore[arg-type]
                    for opt in options
                }
                top = max(raw.values())
                if top == -math.inf:
                    raise ValueError(f"no allowed verdict continuation has any probability after tokens {path}")
                exp = {opt: math.exp(v - top) for opt, v in raw.items()}
                total = sum(exp.values())
                weights = {opt: v / total for opt, v in exp.items()}
            for opt, w in weights.items():
                if opt == END:
                    probs[node.label] += mass * w  # type: ignore[index]
                else:
                    visit(node.children[opt], path + (opt,), mass * w)

        visit(self.root, (), 1.0)
        return probs


def label_token_ids(encode: Callable[[str], list[int]], context: str, continuations: Mapping[str, str]) -> dict[str, list[int]]:
    """Token ids of each label's continuation as the tokenizer writes it after ``context``.

    Encodes ``context + continuation`` and removes the context's tokens when they are a prefix of it (true for
    byte-level BPE and sentencepiece alike once the context ends in punctuation); otherwise falls back to encoding
    the continuation alone.
    """
    base = encode(context)
    out: dict[str, list[int]] = {}
    for label, text in continuations.items():
        full = encode(context + text)
        out[label] = full[len(base) :] if full[: len(base)] == base and len(full) > len(base) else encode(text)
    return out


def expected_score(probabilities: Mapping[str, float]) -> float:
    """Pointwise: the mean score under the verdict distribution (labels are integer strings)."""
    return float(sum(int(label) * p for label, p in probabilities.items()))


def normalise(probabilities: Mapping[str, float]) -> dict[str, float]:
    """Rescale non-negative weights to sum to 1 (used when combining judgments)."""
    total = sum(probabilities.values())
    if not total > 0:
        raise ValueError("cannot normalise an all-zero distribution")
    return {k: v / total for k, v in probabilities.items()}
