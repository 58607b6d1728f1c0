"""Shared-prefix reuse for the transformers engine: each distinct (media, question) prefix is encoded once per batch.

Both orders of a pair, or N candidates for one image and question, differ only after the question (prompts are laid
out shared-prefix first, see :class:`~critic.engines.base.ChatPrompt`).  Without reuse, ``generate`` runs the
vision tower and the prefill over the image tokens once per row.  With reuse, a batch whose rows fall into G prefix
groups is run in two steps:

1. one ``generate(max_new_tokens=1)`` call over the G distinct prefixes (left-padded, with their images) fills a
   KV cache of shape ``[G, heads, Lmax, head_dim]`` per layer;
2. the cache is gathered to one row per request (``reorder_cache``) and the real ``generate`` call continues from it.
   Row r of group g is laid out as::

       [pad × (Lmax − L_g)] [prefix_g : L_g tokens] [pad × (Smax − S_r)] [suffix_r : S_r tokens] → generated
       └───────────────── cached ─────────────────┘ └──────────── run by generate ────────────┘

The padding in the middle keeps the cache rectangular; it is masked out, and ``generate`` derives position ids from
the attention mask (cumulative sum), so the suffix gets the same positions it would have without the gap.  Models
with multimodal rotary positions (Qwen2-VL, Qwen2.5-VL) keep a per-row offset (``rope_deltas``) after the prefill; it
is gathered to the request rows the same way.  The suffix must hold no media tokens, so groups are formed by media
content first and the shared prefix must cover every media token.

Used by :class:`~critic.engines.hf.TransformersEngine`; tested against the plain path on every tiny model family.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from critic.engines.base import ChatPrompt


def media_key(prompt: ChatPrompt) -> Hashable:
    """A key equal for prompts whose images and video frames are pixel-identical (hashing is cheap next to a
    forward pass, and identity would miss N candidates that each loaded the same file)."""
    digest = hashlib.blake2b(digest_size=16)
    for kind, frames in (("image", prompt.images), ("video", prompt.video)):
        for frame in frames:
            digest.update(f"{kind}:{frame.mode}:{frame.size}".encode())
            digest.update(frame.tobytes())
    return (prompt.system, digest.hexdigest())


@dataclass(frozen=True)
class PrefixPlan:
    """How the rows of a batch share prefixes."""

    group_of_row: list[int]
    """For each row, the index of its prefix group."""
    representatives: list[int]
    """For each group, the row whose prompt (and media) encodes the prefix."""
    prefix_lengths: list[int]
    """For each group, the number of shared tokens L_g (always less than every member's prompt length)."""

    @property
    def n_groups(self) -> int:
        return len(self.representatives)


def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for k in range(n):
        token = first[k]
        if any(s[k] != token for s in sequences[1:]):
            return k
    return n


def plan_prefixes(ids: Sequence[Sequence[int]], keys: Sequence[Hashable], media_token_ids: set[int]) -> PrefixPlan:
    """Group rows by media key and find each group's shared token prefix.

    A group's prefix is the rows' longest common token prefix, cut to leave at least one token of every row to
    run (identical prompts, e.g. repeated samples, still need an uncached token).  A row whose media tokens would
    not all fall inside its group's prefix gets a group of its own (its prefix: all its tokens but the last).
    """
    by_key: dict[Hashable, list[int]] = {}
    for row, key in enumerate(keys):
        by_key.setdefault(key, []).append(row)
    group_of_row = [0] * len(ids)
    representatives: list[int] = []
    lengths: list[int] = []

    def add_group(members: list[int], length: int) -> None:
        for row in members:
            group_of_row[row] = len(representatives)
        representatives.append(members[0])
        lengths.append(length)

    for members in by_key.values():
        length = min(_common_prefix_length([ids[r] for r in members]), min(len(ids[r]) for r in members) - 1)
        fitting = [r for r in members if not media_token_ids.intersection(ids[r][length:])]
        if fitting:
            add_group(fitting, length)
        for row in members:
            if row not in fitting:
                add_group([row], len(ids[row]) - 1)
    return PrefixPlan(group_of_row=group_of_row, representatives=representatives, prefix_lengths=lengths)


def _left_pad(sequences: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for q, seq in enumerate(sequences):
        if seq:
            ids[q, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[q, width - len(seq):] = 1
    return ids, mask


def prefix_inputs(rep_inputs: dict[str, Any], lengths: Sequence[int], pad: int) -> dict[str, Any]:
    """Cut the processor outputs of the representatives' full prompts down to their prefixes, left-padded.

    Per-token side inputs (tensors shaped like the ids, e.g. ``mm_token_type_ids``) are cut the same way; media
    tensors (pixel values, grids) are kept whole, since the prefixes hold every media token.
    """
    full_mask = rep_inputs["attention_mask"].bool()
    own = [rep_inputs["input_ids"][q][full_mask[q]][: lengths[q]].tolist() for q in range(len(lengths))]
    ids, mask = _left_pad(own, pad)
    out: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    width = ids.shape[1]
    for key, value in rep_inputs.items():
        if key in out:
            continue
        if torch.is_tensor(value) and value.dim() >= 2 and value.shape[:2] == full_mask.shape:
            cut = torch.zeros((len(lengths), width, *value.shape[2:]), dtype=value.dtype)
            for q, n in enumerate(lengths):
                cut[q, width - n:] = value[q][full_mask[q]][:n]
            value = cut
        out[key] = value
    return out


def continuation_inputs(ids: Sequence[Sequence[int]], plan: PrefixPlan, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The full rows ``[pad][prefix][pad][suffix]`` (ids and attention mask) that ``generate`` continues from the
    gathered cache; the first ``max(L_g)`` columns are the cached part."""
    cached = max(plan.prefix_lengths)
    suffixes = [list(ids[r][plan.prefix_lengths[plan.group_of_row[r]]:]) for r in range(len(ids))]
    tail = max(len(s) for s in suffixes)
    width = cached + tail
    out = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, row_ids in enumerate(ids):
        length = plan.prefix_lengths[plan.group_of_row[r]]
        out[r, cached - length: cached] = torch.tensor(list(row_ids[:length]), dtype=torch.long)
        mask[r, cached - length: cached] = 1
        suffix = suffixes[r]
        out[r, width - len(suffix):] = torch.tensor(suffix, dtype=torch.long)
        mask[r, width - len(suffix):] = 1
    return out, mask


def gather_rows(model: Any, cache: Any, plan: PrefixPlan) -> None:
    """Turn the per-group cache (and per-group model state) into one row per request, in place."""
    select_rows(model, cache, plan.group_of_row, plan.n_groups)


def select_rows(model: Any, cache: Any, rows: Sequence[int], n_rows: int) -> None:
    """Re-index the batch dimension of a KV cache (and of the model's per-row state) in place: new row q is old
    row ``rows[q]``; rows may repeat."""
    index = torch.tensor(list(rows), dtype=torch.long)
    cache.reorder_cache(index.to(_cache_device(cache)))
    # Multimodal-RoPE models keep each row's position offset after a prefill and add it to the mask-derived
    # positions of later tokens; it must follow the rows.
    base = getattr(model, "base_model", model)
    deltas = getattr(base, "rope_deltas", None)
    if torch.is_tensor(deltas) and deltas.shape[0] == n_rows:
        base.rope_deltas = deltas.index_select(0, index.to(deltas.device))


def _cache_device(cache: Any) -> torch.device:
    for layer in getattr(cache, "layers", []):
        keys = getattr(layer, "keys", None)
        if torch.is_tensor(keys):
            return keys.device
    return torch.device("cpu")


def media_token_ids(model: Any) -> set[int]:
    """Ids of the placeholder tokens that stand for image or video features in this model's prompts."""
    config = model.config
    ids = set()
    for name in ("image_token_id", "video_token_id", "image_token_index", "video_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            ids.add(value)
    return ids
