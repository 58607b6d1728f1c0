"""The sglang engine: request translation and output reading without sglang, the engine's flow against a fake
``sglang.Engine``, and a real run where sglang is importable (GPU machines)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
from PIL import Image
from transformers import AutoProcessor

from critic import Judge, JudgeConfig, JudgeItem, SamplingConfig
from critic.engines.base import ChatPrompt
from critic.engines.sglang_engine import SGLangEngine, build_request, read_output


def test_build_request_translates_constraint_sampling_and_images() -> None:
    prompt = ChatPrompt(system="s", text="t", images=(Image.new("RGB", (4, 4), "red"),))
    request = build_request(["rendered"], [prompt], ["Verdict:( A| B)"], SamplingConfig(temperature=0.7, seed=3),
                            [99], top_logprobs=5)
    assert request["prompt"] == ["rendered"] and request["return_logprob"] and request["top_logprobs_num"] == 5
    params = request["sampling_params"][0]
    assert params["regex"] == "Verdict:( A| B)" and params["max_new_tokens"] == 99
    assert params["temperature"] == 0.7 and params["sampling_seed"] == 3
    assert request["image_data"][0][0].startswith("data:image/png;base64,")
    greedy = build_request(["x"], [ChatPrompt("s", "t")], ["r"], SamplingConfig(seed=3), [5], top_logprobs=5)
    assert "sampling_seed" not in greedy["sampling_params"][0] and "image_data" not in greedy


def test_read_output() -> None:
    output = {"text": "Verdict: A", "meta_info": {
        "prompt_tokens": 12,
        "output_token_logprobs": [(-0.1, 5, None), (-0.2, 6, None)],
        "output_top_logprobs": [[(-0.1, 5, None), (-2.5, 7, None)], [(-0.2, 6, None)]]}}
    read = read_output(output)
    assert read.text == "Verdict: A" and read.token_ids == [5, 6] and read.prompt_tokens == 12
    assert read.step_logprobs == [{5: -0.1, 7: -2.5}, {6: -0.2}]


class _FakeSGLang:
    """Stands in for ``sglang.Engine``: writes a fixed pointwise answer, with top log-probabilities at each step
    that make the verdict distribution known (scores 1 and 10 share their first token on this tokenizer)."""

    def __init__(self, tokenizer) -> None:  # noqa: ANN001
        self.tokenizer = tokenizer
        self.calls: list[dict] = []

    def generate(self, prompt, sampling_params, image_data=None, return_logprob=False, top_logprobs_num=0):  # noqa: ANN001, ANN201
        self.calls.append({"prompt": prompt, "sampling_params": sampling_params, "image_data": image_data})
        outputs = []
        for text, params in zip(prompt, sampling_params):
            if params["max_new_tokens"] == 1:  # a scoring request for the node after " 1": "0" vs the end
                zero = self.tokenizer.encode("0", add_special_tokens=False)[0]
                top = [(math.log(0.25), zero, None), (math.log(0.75), self.tokenizer.eos_token_id, None)]
                outputs.append({"text": "", "meta_info": {"output_token_logprobs": [top[1]],
                                                          "output_top_logprobs": [top]}})
                continue
            answer = "Critique: fine.\nScore: 7"
            ids = self.tokenizer.encode(answer, add_special_tokens=False)
            steps = [[(0.0, t, None)] for t in ids]
            # The last step picks the digit: '7' with 0.5, '1' (the start of 1 and of 10) with 0.5.
            one = self.tokenizer.encode("1", add_special_tokens=False)[0]
            steps[-1] = [(math.log(0.5), ids[-1], None), (math.log(0.5), one, None)]
            outputs.append({"text": answer, "meta_info": {"prompt_tokens": 10,
                                                          "output_token_logprobs": [(0.0, t, None) for t in ids],
                                                          "output_top_logprobs": steps}})
        return outputs


def test_engine_flow_with_a_fake_sglang(tiny_qwen2_vl_dir: Path) -> None:
    processor = AutoProcessor.from_pretrained(tiny_qwen2_vl_dir)
    fake = _FakeSGLang(processor.tokenizer)
    judge = Judge(SGLangEngine(fake, processor), JudgeConfig(critique_max_chars=40))
    [result] = judge.judge([JudgeItem(question="Q?", response="R", images=[Image.new("RGB", (32, 32), "blue")])])
    assert result.ok, result.error
    assert result.score == 7
    assert result.probabilities["7"] == pytest.approx(0.5)
    assert result.probabilities["1"] == pytest.approx(0.375) and result.probabilities["10"] == pytest.approx(0.125)
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    first = fake.calls[0]
    assert "regex" in first["sampling_params"][0] and first["image_data"][0]
    assert len(fake.calls) == 2  # the generation, then one batched scoring call for the node after "1"


@pytest.mark.sglang
@pytest.mark.skipif(importlib.util.find_spec("sglang") is None, reason="sglang is not installed (GPU machines only)")
def test_real_sglang_engine(tiny_qwen2_vl_dir: Path) -> None:
    judge = Judge.from_pretrained(str(tiny_qwen2_vl_dir), backend="sglang", config=JudgeConfig(critique_max_chars=30))
    [result] = judge.judge([JudgeItem(question="Q?", response_a="a", response_b="b")])
    assert result.ok and math.isclose(sum(result.probabilities.values()), 1.0, abs_tol=1e-6)
