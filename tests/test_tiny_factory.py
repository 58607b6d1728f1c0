"""The tiny-model factory: saved folders load with transformers (and vLLM), deterministic per seed, offline."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from critic.tiny import TinySpec, build_tiny_model, train_tokenizer

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [
    {"role": "system", "content": [{"type": "text", "text": "You judge answers."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the circle?"}]},
]


@pytest.mark.parametrize("fixture", ["tiny_qwen2_vl_dir", "tiny_qwen2_5_vl_dir", "tiny_llava_dir"])
def test_loads_with_auto_classes_and_generates(fixture: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(fixture)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    text = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.new("RGB", (224, 224), "red")], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 5
    assert sum(p.numel() for p in model.parameters()) < 5_000_000


@pytest.mark.parametrize("fixture", ["tiny_qwen2_vl_dir", "tiny_qwen2_5_vl_dir", "tiny_llava_dir"])
def test_special_token_ids_are_inside_the_vocabulary(fixture: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(fixture)
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    vocab = config.get("text_config", config).get("vocab_size") or config["vocab_size"]
    ids = []
    for source in (config, config.get("text_config", {}), generation):
        for key, value in source.items():
            if key.endswith("token_id") or key.endswith("token_index"):
                ids.extend(value if isinstance(value, list) else [value])
    assert ids and all(value is None or 0 <= value < vocab for value in ids), (ids, vocab)


def test_tokenizer_round_trips_any_text(tiny_qwen2_vl_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_vl_dir)
    for text in ["Critique: A is wrong.\nVerdict: B", "ünïcødé 漢字 🙂 tabs\tand  spaces", "Score: 10"]:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    digits = tokenizer.encode(" 10", add_special_tokens=False)
    assert len(digits) >= 2  # digits are split individually, like Qwen's tokenizer


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path, tiny_qwen2_vl_dir: Path) -> None:
    again = build_tiny_model(tmp_path / "again", "qwen2_vl", seed=0)
    other = build_tiny_model(tmp_path / "other", "qwen2_vl", seed=1)
    base = load_file(tiny_qwen2_vl_dir / "model.safetensors")
    same = load_file(again / "model.safetensors")
    different = load_file(other / "model.safetensors")
    assert base.keys() == same.keys()
    assert all(torch.equal(base[k], same[k]) for k in base)
    assert any(not torch.equal(base[k], different[k]) for k in base)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="head_dim"):
        TinySpec(hidden_size=32, num_heads=2)  # head_dim 16: vLLM's CPU attention rejects it


def test_train_tokenizer_on_own_corpus() -> None:
    tokenizer = train_tokenizer(["the red circle is left of the blue square"] * 50, vocab_size=300)
    assert tokenizer.decode(tokenizer.encode("the red circle")) == "the red circle"


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli-model"
    result = subprocess.run([sys.executable, "-m", "critic.tiny", str(out), "--arch", "llava", "--seed", "3"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()


_VLLM_SCRIPT = r"""
import sys
from PIL import Image
from transformers import AutoProcessor
from vllm import LLM, SamplingParams
from vllm.sampling_params import StructuredOutputsParams

if __name__ == "__main__":
    folder = sys.argv[1]
    llm = LLM(model=folder, gpu_memory_utilization=0.1, max_model_len=2048, seed=0, enforce_eager=True)
    processor = AutoProcessor.from_pretrained(folder)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which is better?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompts = [{"prompt": text, "multi_modal_data": {"image": Image.new("RGB", (64 + 16 * i, 64), (40 * i, 0, 0))}}
               for i in range(4)]
    params = SamplingParams(max_tokens=80, temperature=0,
                            structured_outputs=StructuredOutputsParams(regex=r"Critique: [^\n]{1,30}\nVerdict: (A|B|tie)"))
    for output in llm.generate(prompts, params):
        print("OUT", repr(output.outputs[0].text))
"""


@pytest.mark.vllm
@pytest.mark.slow
def test_loads_in_vllm_with_constrained_multimodal_generation(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed")
    script = tmp_path / "run_vllm.py"
    script.write_text(_VLLM_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(tiny_qwen2_vl_dir)], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = [line for line in result.stdout.splitlines() if line.startswith("OUT ")]
    assert len(outputs) == 4
    for line in outputs:
        assert re.fullmatch(r"Critique: [^\n]{1,30}\nVerdict: (A|B|tie)", ast.literal_eval(line[4:]))
