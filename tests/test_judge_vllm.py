"""The judge on the vLLM engine (the CPU build in this project's environment), with a tiny Qwen2-VL."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from itemgen import random_items

from critic import Judge, JudgeConfig, JudgeItem, SamplingConfig

vllm = pytest.importorskip("vllm", reason="vLLM is not installed")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def llm(tiny_qwen2_vl_dir: Path):  # noqa: ANN201 - vllm.LLM
    # The caller builds the LLM itself and hands it to the engine (one engine can serve policy and judge).
    # float32 like the transformers engine (the CPU build would otherwise downcast to bfloat16).
    engine = vllm.LLM(model=str(tiny_qwen2_vl_dir), dtype="float32", gpu_memory_utilization=0.1, max_model_len=4096,
                      seed=0,
                      enforce_eager=True, limit_mm_per_prompt={"image": 4, "video": 1})
    yield engine
    del engine


@pytest.fixture(scope="module")
def vllm_judge(llm) -> Judge:  # noqa: ANN001
    from critic.engines.vllm_engine import VLLMEngine

    return Judge(VLLMEngine(llm), JudgeConfig(critique_max_chars=40))


@pytest.mark.parametrize("mode", ["pairwise", "pointwise"])
def test_every_verdict_parses_with_normalised_probabilities(vllm_judge: Judge, mode: str) -> None:
    results = vllm_judge.judge(random_items(mode, 20, seed=21))
    for result in results:
        assert result.ok, result.error
        assert math.isclose(sum(result.probabilities.values()), 1.0, abs_tol=1e-6)
        assert set(result.probabilities) == set(vllm_judge.config.spec(mode).labels)
        for judgment in result.judgments:
            assert math.isclose(sum(judgment.probabilities.values()), 1.0, abs_tol=1e-6)


def test_greedy_verdicts_agree_with_transformers(vllm_judge: Judge, tiny_qwen2_vl_dir: Path,
                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    from critic.engines.hf import TransformersEngine

    hf_judge = Judge(TransformersEngine.from_pretrained(str(tiny_qwen2_vl_dir), device="cpu"), vllm_judge.config)
    items = random_items("pairwise", 15, seed=31) + random_items("pointwise", 15, seed=32)
    theirs, ours = hf_judge.judge(items), vllm_judge.judge(items)
    agree = [a.verdict == b.verdict for a, b in zip(theirs, ours)]
    same_text = [a.judgments[0].text == b.judgments[0].text for a, b in zip(theirs, ours)]
    rate = sum(agree) / len(agree)
    report = {"items": len(items), "verdict_agreement": rate, "identical_first_generation": sum(same_text) / len(items)}
    (tmp_path_factory.getbasetemp() / "vllm_agreement.json").write_text(json.dumps(report))
    print(f"\nvLLM vs transformers greedy agreement: {report}")
    assert rate >= 0.9, report
    # Where both engines wrote the same text, the verdict distributions are the same up to numerics.
    for a, b, same in zip(theirs, ours, same_text):
        if same:
            for label, p in a.judgments[0].probabilities.items():
                assert b.judgments[0].probabilities[label] == pytest.approx(p, abs=0.02)


def test_seeded_sampling_is_reproducible(vllm_judge: Judge) -> None:
    items = random_items("pairwise", 3, seed=41)
    sample = lambda seed: [r.judgments[0].text for r in vllm_judge.judge(items, SamplingConfig(temperature=1.0, seed=seed))]  # noqa: E731
    first = sample(5)
    assert first == sample(5)
    assert first != sample(6)


def test_too_long_prompts_fail_only_their_items(vllm_judge: Judge) -> None:
    judge = vllm_judge.with_config(prompt=vllm_judge.config.prompt.__class__(max_response_chars=100_000))
    short, long = judge.judge([JudgeItem(id="short", question="Colour?", response="red"),
                               JudgeItem(id="long", question="Colour?", response="red " * 5000)])
    assert short.ok, short.error
    assert long.error is not None and long.error.kind == "context_length", long.error
    # A prompt that fits, with a critique budget whose token cap (4 x 1000 chars) cannot fit beside it: either
    # the verdict is reached anyway, or the item is a context_length error; never a truncated, unparseable verdict.
    [tight] = vllm_judge.with_config(critique_max_chars=1000).judge([JudgeItem(question="Colour?", response="red")])
    assert tight.ok or tight.error.kind == "context_length", tight.error
    print(f"\ntight item: {'ok' if tight.ok else tight.error.message}")


def test_video_frames(vllm_judge: Judge) -> None:
    import random

    from itemgen import random_image

    rng = random.Random(3)
    frames = [random_image(rng).resize((56, 56)) for _ in range(4)]
    [result] = vllm_judge.judge([JudgeItem(question="What happens?", video=frames, response_a="x", response_b="y")])
    assert result.ok, result.error
