"""Curricula over a difficulty (the warm-up judge's entropy): the ``blocks`` order (every epoch easy to hard), the
``expanding`` pool (easiest block first, all examples after the ramp), the ``Trainer`` sampler that serves either,
``train_sft`` and ``python -m training.sft`` with each, and the demonstration's argument checks."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from critic import JudgeConfig
from critic.preferences import read_preferences
from critic.prompting import PromptConfig
from training.entropy import CurriculumSampler, SampleEntropy, curriculum_order, expanding_order
from training.synthetic import write_dataset

CONFIG = JudgeConfig(critique_max_chars=120, prompt=PromptConfig(system_template="compact_system"))
DIFFICULTY = [float(v) for v in [9, 3, 7, 1, 5, 8, 2, 6, 4, 0, math.nan, 10]]
"""Twelve examples: the easiest third is 9, 3, 6, 1 (values 0-3), the middle 8, 4, 7, 2 (4-7), the hardest 0, 5, 11
and the unscored 10."""


# ------------------------------------------------------------------------------------------------------- blocks
def test_curriculum_goes_from_low_to_high_entropy_in_blocks_shuffled_inside() -> None:
    difficulty = DIFFICULTY
    order = curriculum_order(difficulty, stages=3, seed=0)
    assert sorted(order) == list(range(len(difficulty)))
    blocks = [order[0:4], order[4:8], order[8:12]]
    values = [[difficulty[i] for i in block] for block in blocks]
    assert max(values[0]) < min(values[1]) and max(values[1]) < min(v for v in values[2] if not math.isnan(v))
    assert 10 in blocks[2]  # NaN (unscored) goes to the last block
    # shuffled inside blocks: some seed gives a within-block order that is not sorted
    assert any(curriculum_order(difficulty, 3, seed)[:4] != sorted(order[:4], key=lambda i: difficulty[i])
               for seed in range(5))
    sampler = CurriculumSampler(difficulty, 3)
    assert len(sampler) == 12 and sorted(list(sampler)) == list(range(12))


# ---------------------------------------------------------------------------------------------------- expanding
def test_expanding_pool_grows_from_the_easiest_block_to_every_example() -> None:
    easiest, easier = {9, 3, 6, 1}, {9, 3, 6, 1, 8, 4, 7, 2}
    draws = expanding_order(DIFFICULTY, stages=3, draws=120, ramp=0.5, seed=0)
    assert len(draws) == 120
    # The ramp is the first 60 draws, three stages of 20: the easiest 4, then the easiest 8, then all 12.
    assert set(draws[:20]) == easiest and set(draws[20:40]) == easier and set(draws[40:]) == set(range(12))
    # Within a pool every example comes once before any comes twice: 20 draws of 4 is five times each.
    assert set(Counter(draws[:20]).values()) == {5}
    assert all(sorted(draws[k:k + 4]) == sorted(easiest) for k in range(0, 20, 4))
    # The unscored example (NaN) only joins with the last block.
    assert 10 not in draws[:40] and 10 in draws[40:]
    # No ramp: every draw from every example; a full ramp: the hardest block only in the last third.
    assert set(expanding_order(DIFFICULTY, 3, 24, ramp=0.0)[:12]) == set(range(12))
    assert set(expanding_order(DIFFICULTY, 3, 120, ramp=1.0)[:80]) == easier
    assert expanding_order(DIFFICULTY, 3, 120, seed=1) != draws  # the seed shuffles
    for bad in ({"stages": 0}, {"ramp": 1.5}, {"draws": -1}):
        with pytest.raises(ValueError):
            expanding_order(DIFFICULTY, **{"stages": 3, "draws": 12, **bad})  # type: ignore[arg-type]


def test_expanding_sampler_serves_the_draws_an_epoch_at_a_time_then_random_order() -> None:
    sampler = CurriculumSampler(DIFFICULTY, 3, seed=0, schedule="expanding", draws=30, ramp=0.5)
    epochs = [list(sampler) for _ in range(4)]
    assert all(len(e) == len(sampler) == 12 for e in epochs)  # Trainer counts steps from the epoch's length
    assert sum(epochs[:2], []) + epochs[2][:6] == expanding_order(DIFFICULTY, 3, 30, 0.5, seed=0)
    assert set(epochs[0][:5]) <= {9, 3, 6, 1}  # draws 0-4: the first stage's five (30 * 0.5 / 3)
    assert len(set(epochs[2][6:])) == 6 and sorted(epochs[3]) == list(range(12))  # past the run: a permutation
    with pytest.raises(ValueError, match="draws"):
        CurriculumSampler(DIFFICULTY, 3, schedule="expanding")
    with pytest.raises(ValueError, match="schedule"):
        CurriculumSampler(DIFFICULTY, 3, schedule="spiral")


def test_sft_config_checks_the_schedule_and_ramp() -> None:
    from training.sft import SFTConfig

    assert SFTConfig(curriculum_schedule="expanding", curriculum_ramp=1.0).curriculum_ramp == 1.0
    with pytest.raises(ValueError, match="curriculum_schedule"):
        SFTConfig(curriculum_schedule="spiral")
    with pytest.raises(ValueError, match="curriculum_ramp"):
        SFTConfig(curriculum_ramp=-0.1)


# ---------------------------------------------------------------------------------------------------- training
def seen_in_training(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     difficulty_of: Callable[[int, int], float], steps_per_epoch: float,
                     **config: Any) -> tuple[list[float], int]:
    """Train a tiny model on 12 pairs' pairwise examples (24) in batches of 4 for ``steps_per_epoch`` epochs' worth of
    steps, example ``k`` of ``n`` having difficulty ``difficulty_of(k, n)``; the difficulties of the examples in the
    order the collator saw them, and ``n``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from training import sft
    from training.sft_data import build_examples

    pairs = read_preferences(write_dataset(tmp_path / "syn", n=12, seed=0, max_objects=1)).pairs
    examples, _ = build_examples(pairs, CONFIG, modes=("pairwise",))
    difficulty = [difficulty_of(k, len(examples)) for k in range(len(examples))]
    rank = {e.id: difficulty[k] for k, e in enumerate(examples)}
    seen: list[float] = []
    original = sft.SFTCollator.__call__

    def spy(self: sft.SFTCollator, batch: list) -> dict:
        seen.extend(rank[e.id] for e in batch)
        return original(self, batch)

    monkeypatch.setattr(sft.SFTCollator, "__call__", spy)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    settings = sft.SFTConfig(max_steps=int(steps_per_epoch * len(examples) / 4), per_device_train_batch_size=4,
                             learning_rate=1e-3, **config)
    sft.train_sft(model, processor, examples, settings, tmp_path / "trainer", progress=False, difficulty=difficulty)
    return seen, len(examples)


def test_train_sft_with_a_difficulty_feeds_examples_easy_to_hard(tiny_qwen2_vl_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seen, _ = seen_in_training(tiny_qwen2_vl_dir, tmp_path, monkeypatch, lambda k, n: float(n - k), 1.0,
                               curriculum_stages=2)  # the last example is the easiest
    first, second = seen[: len(seen) // 2], seen[len(seen) // 2:]
    assert max(first) < min(second)


def test_train_sft_with_the_expanding_schedule_starts_on_the_easiest_examples(tiny_qwen2_vl_dir: Path,
                                                                             tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Two epochs: 2n draws, the ramp is the first n, and its first stage (of two) the first n / 2.
    seen, n = seen_in_training(tiny_qwen2_vl_dir, tmp_path, monkeypatch, lambda k, n: float(k % 6), 2.0,
                               curriculum_stages=2, curriculum_schedule="expanding", curriculum_ramp=0.5)
    assert len(seen) == 2 * n and max(seen[: n // 2]) <= 2  # the easiest half: values 0-2
    assert max(seen[n // 2:]) == 5  # then the pool is every example


def test_sft_command_takes_a_curriculum(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    from training import sft

    data = write_dataset(tmp_path / "syn", n=4, seed=0, max_objects=1)
    scores_path = tmp_path / "entropy.jsonl"
    pairs = read_preferences(data).pairs
    scores_path.write_text("".join(json.dumps(SampleEntropy(id=p.id, label=p.preferred, token_entropy=k / 10)
                                              .to_dict()) + "\n" for k, p in enumerate(pairs[:3])))
    for schedule in ("blocks", "expanding"):
        assert sft.main(["--data", str(data), "--base", str(tiny_qwen2_vl_dir), "--out", str(tmp_path / schedule),
                         "--max-steps", "2", "--batch-size", "2", "--curriculum", str(scores_path),
                         "--curriculum-stages", "2", "--curriculum-schedule", schedule, "--no-progress"]) == 0
        assert (tmp_path / schedule / "judge_config.json").exists()
    with pytest.raises(SystemExit):
        sft.main(["--data", str(data), "--base", str(tiny_qwen2_vl_dir), "--out", str(tmp_path / "bad"),
                  "--curriculum", str(scores_path), "--curriculum-ramp", "2"])


# ---------------------------------------------------------------------------------------------- demonstration
def test_the_demonstration_refuses_the_held_out_scenes_for_training(tmp_path: Path) -> None:
    from training import judge_data_demo
    from training.demo_recipes import QUICK

    with pytest.raises(ValueError, match="heldout_seed"):
        replace(QUICK, train_seed=QUICK.heldout_seed)
    with pytest.raises(ValueError, match="heldout_seed"):
        replace(QUICK, train_seed=3, scene_seed=QUICK.heldout_seed)
    # The held-out seed may seed the draws when another seed's scenes are drawn (the replicates' setting).
    replicate = replace(QUICK, train_seed=QUICK.heldout_seed, scene_seed=0)
    assert (replicate.scene_owner, replicate.draw_seed) == (0, QUICK.heldout_seed)
    assert (QUICK.scene_owner, QUICK.draw_seed) == (0, None)  # the owner draws: rows as before scene_seed
    with pytest.raises(SystemExit):
        judge_data_demo.main(["egt", "--quick", "--out", str(tmp_path), "--seed", "-1"])
    with pytest.raises(ValueError, match="curriculum_schedule"):
        judge_data_demo.egt_demo(tmp_path, recipe="quick", curriculum_schedule="spiral")
