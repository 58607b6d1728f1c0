"""Shared-prefix reuse in the transformers engine: the plan (pure), and equality with the plain path on real tiny models."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from itemgen import random_image, random_items, sentence

from critic import Judge, JudgeConfig, JudgeItem
from critic.engines.base import ChatPrompt
from critic.engines.hf import TransformersEngine
from critic.engines.hf_prefix import continuation_inputs, media_key, media_token_ids, plan_prefixes

IMG = 99  # a media placeholder token id in the pure tests


def test_rows_with_the_same_media_share_their_longest_common_prefix() -> None:
    ids = [[1, IMG, IMG, 5, 6, 7], [1, IMG, IMG, 5, 8], [1, IMG, IMG, 4, 4, 4, 4]]
    plan = plan_prefixes(ids, ["x", "x", "y"], {IMG})
    assert plan.group_of_row == [0, 0, 1]
    assert plan.representatives == [0, 2]
    assert plan.prefix_lengths == [4, 6]  # a lone row keeps all but its last token cached


def test_identical_prompts_still_leave_one_token_to_run() -> None:
    ids = [[1, IMG, 5, 6], [1, IMG, 5, 6]]
    plan = plan_prefixes(ids, ["k", "k"], {IMG})
    assert plan.n_groups == 1 and plan.prefix_lengths == [3]


def test_a_row_whose_media_falls_outside_the_shared_prefix_gets_its_own_group() -> None:
    # Same media key but the text before the image differs (e.g. another system prompt): the image tokens would
    # land in the uncached suffix, which has no pixel values, so the row must not join the group.
    ids = [[1, 2, IMG, 5, 6], [1, 3, IMG, 5, 7], [1, 2, IMG, 5, 8]]
    plan = plan_prefixes(ids, ["k", "k", "k"], {IMG})
    assert plan.n_groups >= 2
    for row, group in enumerate(plan.group_of_row):
        assert IMG not in ids[row][plan.prefix_lengths[group]:]


def test_continuation_rows_put_padding_between_prefix_and_suffix() -> None:
    ids = [[1, 2, 3, 4], [1, 2, 3, 9, 9, 9], [7, 7, 7, 7, 7, 1]]
    plan = plan_prefixes(ids, ["a", "a", "b"], set())
    out, mask = continuation_inputs(ids, plan, pad=0)
    cached = max(plan.prefix_lengths)
    for r, row in enumerate(ids):
        kept = out[r][mask[r].bool()].tolist()
        assert kept == row  # the unmasked tokens are the row, in order
        length = plan.prefix_lengths[plan.group_of_row[r]]
        assert out[r, cached - length:cached].tolist() == row[:length]  # prefix right-aligned in the cached part


def test_media_key_compares_pixels_not_objects() -> None:
    rng = random.Random(0)
    image = random_image(rng)
    same = ChatPrompt(system="s", text="a", images=(image.copy(),))
    assert media_key(ChatPrompt(system="s", text="b", images=(image,))) == media_key(same)
    other = image.copy()
    other.putpixel((0, 0), (1, 2, 3) if image.getpixel((0, 0)) != (1, 2, 3) else (4, 5, 6))
    assert media_key(ChatPrompt(system="s", text="a", images=(other,))) != media_key(same)


def _mixed_items() -> list[JudgeItem]:
    """Pairs (both orders share a prefix), four candidates for one image, and lone pointwise items."""
    rng = random.Random(5)
    image = random_image(rng)
    items = random_items("pairwise", 5, seed=3)
    items += [JudgeItem(question="What is shown?", images=[image.copy()], response=sentence(rng, 8), id=f"c{i}")
              for i in range(4)]
    items += random_items("pointwise", 3, seed=9)
    return items


def _count_encoded_media_tokens(engine: TransformersEngine) -> tuple[list[int], Any]:
    """Media placeholder tokens in forward passes that carry image inputs (pixel values, or the image features
    that recent transformers' generate encodes just before the first forward): the image work actually done."""
    counts: list[int] = []
    placeholders = torch.tensor(sorted(media_token_ids(engine.model)))

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        if kwargs.get("pixel_values") is not None or kwargs.get("mm_encoder_outputs"):  # {} when no media
            counts.append(int(torch.isin(kwargs["input_ids"].cpu(), placeholders).sum()))

    return counts, engine.model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "llava"])
def test_prefix_reuse_gives_the_plain_paths_verdicts_while_encoding_each_image_once(
    family: str, request: pytest.FixtureRequest
) -> None:
    model_dir: Path = request.getfixturevalue(f"tiny_{family}_dir")
    items = _mixed_items()
    config = JudgeConfig(critique_max_chars=60)
    results, encoded = {}, {}
    for reuse in (False, True):
        engine = TransformersEngine.from_pretrained(str(model_dir), batch_size=8, prefix_reuse=reuse)
        counts, handle = _count_encoded_media_tokens(engine)
        results[reuse] = Judge(engine, config).judge(items)
        handle.remove()
        encoded[reuse] = sum(counts)
    for plain, reused in zip(results[False], results[True]):
        assert plain.ok and reused.ok, (plain.error, reused.error)
        assert [j.text for j in plain.judgments] == [j.text for j in reused.judgments]
        for label, p in plain.probabilities.items():
            assert reused.probabilities[label] == pytest.approx(p, abs=2e-3)
    # Four pairs with images (two orders each), four candidates for one image and one lone item: encoding each
    # distinct prefix once does about half the image work of encoding every generation.
    assert encoded[False] > 0
    assert encoded[True] < 0.6 * encoded[False]
