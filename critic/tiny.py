"""Tiny random-weight vision-language models, built offline from config.

Tests, benchmarks and the from-scratch demo judge need real VLM checkpoints that load in transformers and vLLM
without touching a model hub. This module makes them: it trains a byte-level BPE tokenizer on a built-in corpus,
builds a Qwen2-VL, Qwen2.5-VL or LLaVA (CLIP + Llama) model of the sizes in a `TinySpec` with random weights
(deterministic for a seed), and saves model, tokenizer, processor and generation config with `save_pretrained`.

    python -m critic.tiny OUT_DIR --arch qwen2_vl --seed 0
    python -m critic.tiny OUT_DIR --arch llava --preset wide --num-layers 4

In code, `build_tiny_model(out_dir, arch, seed, spec)` writes a folder and `tiny_model_dir(arch, seed, spec)`
builds once into a cache (`$CRITIC_CACHE/tiny/...`, default `~/.cache/critic/tiny/...`) and reuses it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from transformers import PretrainedConfig, PreTrainedTokenizerFast, ProcessorMixin

Arch = Literal["qwen2_vl", "qwen2_5_vl", "llava"]
ARCHS: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "llava")

PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2

# Attention head sizes vLLM's CPU backend accepts (CPUAttentionBackend.get_supported_head_sizes in vLLM 0.32).
VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

# Bump when the factory changes what it writes, so cached folders from older code are not reused.
FACTORY_VERSION = 1

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>")
LLAVA_SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<image>")

# Qwen-style chat layout. Content is a string or a list of parts; image/video parts become placeholders that the
# processor expands to one pad token per merged visual patch.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] in ('image', 'image_url') or 'image' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# LLaVA-1.5-style layout: "USER: <image>\n... \nASSISTANT:".
LLAVA_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] != 'system' -%}{{- message['role'] | upper + ': ' -}}{%- endif -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] in ('image', 'image_url') or 'image' in part -%}{{- '<image>\\n' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a generated model. The defaults give ~0.5M parameters and a forward pass of milliseconds on CPU."""

    vocab_size: int = field(default=2000, metadata={"help": "BPE vocabulary (256 bytes + merges), before specials"})
    hidden_size: int = field(default=64, metadata={"help": "text model width"})
    intermediate_size: int = field(default=128, metadata={"help": "text MLP width"})
    num_layers: int = field(default=2, metadata={"help": "text decoder layers"})
    num_heads: int = field(default=2, metadata={"help": "text attention heads; head_dim = hidden_size / num_heads"})
    num_kv_heads: int = field(default=1, metadata={"help": "text key/value heads (grouped-query attention)"})
    vision_depth: int = field(default=2, metadata={"help": "vision transformer blocks"})
    vision_width: int = field(default=64, metadata={"help": "vision transformer width"})
    vision_heads: int = field(default=2, metadata={"help": "vision attention heads"})
    vision_mlp_ratio: int = field(default=2, metadata={"help": "vision MLP width / vision width"})
    min_pixels: int = field(default=56 * 56, metadata={"help": "Qwen image processor: fewest pixels after resize"})
    max_pixels: int = field(default=28 * 28 * 48, metadata={"help": "Qwen image processor: most pixels after resize "
                                                                     "(default: 224x224 becomes 168x168, 36 tokens)"})
    llava_image_size: int = field(default=84, metadata={"help": "LLaVA/CLIP crop size; (size/14)^2 image tokens"})
    max_position_embeddings: int = field(default=4096, metadata={"help": "longest sequence the text model supports"})
    rope_theta: float = field(default=10000.0, metadata={"help": "rotary base frequency"})
    tie_word_embeddings: bool = field(default=False, metadata={"help": "share input embedding and LM head"})
    dtype: str = field(default="float32", metadata={"help": "dtype the weights are saved in (float32 or bfloat16)"})

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
        if self.head_dim not in VLLM_CPU_HEAD_DIMS:
            raise ValueError(f"head_dim {self.head_dim} (hidden_size / num_heads) must be one of {VLLM_CPU_HEAD_DIMS}: "
                             "vLLM's CPU attention rejects other sizes")
        if self.vision_width % self.vision_heads or (self.vision_width // self.vision_heads) % 4:
            raise ValueError("vision_width / vision_heads must be a multiple of 4 (2-D rotary embedding)")
        if self.vision_depth < 1 or self.num_layers < 1:
            raise ValueError("vision_depth and num_layers must be >= 1")
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError("need 0 < min_pixels <= max_pixels")
        if self.llava_image_size % PATCH_SIZE:
            raise ValueError(f"llava_image_size must be a multiple of the patch size {PATCH_SIZE}")
        if self.vocab_size < 300:
            raise ValueError("vocab_size must be >= 300 (256 byte tokens plus some merges)")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"unknown dtype {self.dtype!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def fingerprint(self) -> str:
        """Short hash of the sizes and factory version, used to name cache folders."""
        blob = json.dumps({"v": FACTORY_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


PRESETS: dict[str, TinySpec] = {
    # Unit tests: milliseconds per forward, ~36 image tokens per image.
    "tiny": TinySpec(),
    # Benchmarks: still cheap weights but 256-512 image tokens per image, so vision/prefill costs show.
    "wide": TinySpec(hidden_size=128, intermediate_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
                     vision_depth=2, vision_width=128, vision_heads=4,
                     min_pixels=28 * 28 * 256, max_pixels=28 * 28 * 512, llava_image_size=336),
    # GPU: Qwen2-VL-2B shapes (~1.9B parameters with the small vocabulary), bf16 weights.
    "2b": TinySpec(hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12, num_kv_heads=2,
                   vision_depth=32, vision_width=1280, vision_heads=16, vision_mlp_ratio=4,
                   min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 1280, llava_image_size=336,
                   max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True, dtype="bfloat16"),
}


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer


def builtin_corpus(n_sentences: int = 6000, seed: int = 0) -> list[str]:
    """English-ish sentences in the judge's own vocabulary (questions about images, critiques, verdicts)."""
    rng = random.Random(seed)
    colours = "red green blue yellow orange purple pink brown black white grey gold silver".split()
    shapes = "circle square triangle rectangle star hexagon oval diamond line arrow cross heart".split()
    things = ("cat dog car tree house person bird boat chart table sign clock cup ball book phone bus bike flower "
              "road sky river mountain window door plate apple banana pizza horse cow train plane").split()
    places = "left right top bottom middle centre corner background foreground edge".split()
    adjectives = ("small large big tiny bright dark tall short round sharp blurry clear empty full old new wooden "
                  "metal striped correct incorrect accurate vague detailed wrong helpful harmless honest").split()
    numbers = "zero one two three four five six seven eight nine ten eleven twelve twenty hundred".split()
    qwords = "What Which Where How Why Who When Is Are Does Do Can Count Describe Identify".split()
    verbs = ("shows contains depicts holds describes mentions misses ignores claims identifies counts names "
             "confuses invents answers explains states").split()
    judge = ["Critique:", "Verdict:", "Score:", "Response A", "Response B", "tie", "Question:", "Answer:",
             "The image", "the question", "Both responses", "Neither response", "is better", "is worse",
             "hallucinates", "is grounded in the image", "out of 10", "Reasoning:", "Final answer:"]

    def pick(words: Sequence[str]) -> str:
        return rng.choice(words)

    # Made-up English-ish words (onset + vowel + coda syllables) give the BPE enough variety to fill its merges.
    onsets = "b c d f g h j k l m n p r s t v w y st tr pl ch sh th br gr cl fl sp wh qu".split()
    vowels = "a e i o u ea ou ai oo ie ee".split()
    codas = ["", "", "n", "r", "s", "t", "l", "nd", "ng", "st", "ck", "m", "rt", "ll", "sh", "ght"]

    def made_up() -> str:
        return "".join(pick(onsets) + pick(vowels) + pick(codas) for _ in range(rng.randint(1, 3)))

    templates = [
        lambda: f"{pick(qwords)} {pick(colours)} {pick(shapes)} is in the {pick(places)} of the image?",
        lambda: f"How many {pick(things)}s are there? There are {rng.randint(0, 120)} {pick(things)}s.",
        lambda: f"The image {pick(verbs)} a {pick(adjectives)} {pick(colours)} {pick(things)} near the {pick(places)}.",
        lambda: f"Response {pick('AB')} {pick(verbs)} the {pick(colours)} {pick(shapes)} but {pick(verbs)} the "
                f"{pick(adjectives)} {pick(things)}.",
        lambda: f"Critique: Response A is {pick(adjectives)} and Response B is {pick(adjectives)}. "
                f"Verdict: {pick(['A', 'B', 'tie'])}",
        lambda: f"Score: {rng.randint(1, 10)} out of 10. {pick(judge)} {pick(judge)}.",
        lambda: f"Question: {pick(qwords)} the {pick(things)} {pick(colours)}? Answer: {pick(['yes', 'no'])}, "
                f"it is {pick(numbers)} {pick(adjectives)} {pick(shapes)}s.",
        lambda: " ".join(pick(judge + colours + shapes + things + numbers) for _ in range(rng.randint(4, 12))),
        lambda: f"The {made_up()} {pick(verbs)} {made_up()} {made_up()}, {pick(['and', 'but', 'or', 'so'])} "
                f"{made_up()} {pick(things)}s are {pick(adjectives)}.",
        lambda: " ".join(made_up().capitalize() if rng.random() < 0.2 else made_up() for _ in range(8)) + ".",
        lambda: f"{pick(numbers).capitalize()} {pick(things)}s, {rng.randint(0, 9999)} pixels, "
                f"{rng.random():.3f} confidence; ({pick(places)}, {pick(places)}).",
    ]
    return [rng.choice(templates)() for _ in range(n_sentences)]


def train_tokenizer(
    corpus: Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] = QWEN_SPECIAL_TOKENS,
    *,
    bos_token: str | None = None,
    eos_token: str | None = "<|im_end|>",
    pad_token: str | None = "<|endoftext|>",
    chat_template: str | None = QWEN_CHAT_TEMPLATE,
    model_max_length: int = 4096,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (Qwen-style: single digits, full byte alphabet, so any text encodes).

    `vocab_size` counts the 256 byte tokens and the learned merges; `special_tokens` are appended after them,
    so the full vocabulary is `vocab_size + len(special_tokens)` (fewer merges if the corpus is too small).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens(list(special_tokens))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
        chat_template=chat_template, model_max_length=model_max_length, clean_up_tokenization_spaces=False,
    )


@functools.cache
def _default_bpe_json(vocab_size: int) -> str:
    """The built-in-corpus BPE (no special tokens), trained once per process and vocabulary size."""
    return train_tokenizer(builtin_corpus(), vocab_size, (), chat_template=None, eos_token=None,
                           pad_token=None).backend_tokenizer.to_str()


def default_tokenizer(arch: Arch = "qwen2_vl", vocab_size: int = 2000,
                      model_max_length: int = 4096) -> PreTrainedTokenizerFast:
    """Tokenizer trained on `builtin_corpus`, with the special tokens and chat template for `arch`."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(_default_bpe_json(vocab_size))
    if arch == "llava":
        tok.add_special_tokens(list(LLAVA_SPECIAL_TOKENS))
        kwargs = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", chat_template=LLAVA_CHAT_TEMPLATE)
    else:
        tok.add_special_tokens(list(QWEN_SPECIAL_TOKENS))
        kwargs = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN_CHAT_TEMPLATE)
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False,
                                   model_max_length=model_max_length, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Model, processor, folder


def _token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    idx = tokenizer.convert_tokens_to_ids(token)
    if idx is None or idx == tokenizer.unk_token_id or not 0 <= idx < len(tokenizer):
        raise ValueError(f"tokenizer has no token {token!r}")
    return idx


def _text_kwargs(spec: TinySpec, vocab: int) -> dict:
    return dict(vocab_size=vocab, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
                num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
                num_key_value_heads=spec.num_kv_heads, max_position_embeddings=spec.max_position_embeddings,
                tie_word_embeddings=spec.tie_word_embeddings)


@dataclass
class _Parts:
    """What `build_tiny_model` saves besides the weights."""

    config: PretrainedConfig
    processor: ProcessorMixin
    special_ids: dict[str, int]
    """bos/eos/pad token ids, for the generation config."""


def _config_and_processor(arch: Arch, spec: TinySpec, tokenizer: PreTrainedTokenizerFast) -> _Parts:
    vocab = len(tokenizer)
    if arch == "llava":
        from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor

        ids = dict(bos_token_id=_token_id(tokenizer, tokenizer.bos_token),
                   eos_token_id=_token_id(tokenizer, tokenizer.eos_token),
                   pad_token_id=_token_id(tokenizer, tokenizer.pad_token))
        image_id = _token_id(tokenizer, "<image>")
        text = LlamaConfig(**_text_kwargs(spec, vocab), head_dim=spec.head_dim, rope_theta=spec.rope_theta, **ids)
        size = spec.llava_image_size
        vision = CLIPVisionConfig(hidden_size=spec.vision_width, num_hidden_layers=spec.vision_depth,
                                  intermediate_size=spec.vision_width * spec.vision_mlp_ratio,
                                  num_attention_heads=spec.vision_heads, image_size=size, patch_size=PATCH_SIZE, projection_dim=spec.hidden_size)
        config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                             image_seq_length=(size // PATCH_SIZE) ** 2,
                             vision_feature_layer=-2 if spec.vision_depth > 1 else -1,
                             tie_word_embeddings=spec.tie_word_embeddings, **ids)
        image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=tokenizer.chat_template or LLAVA_CHAT_TEMPLATE)
        return _Parts(config, processor, ids)

    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    pad = _token_id(tokenizer, "<|endoftext|>")
    ids = dict(bos_token_id=pad, eos_token_id=_token_id(tokenizer, "<|im_end|>"), pad_token_id=pad)
    # mrope splits the rotary half-dimensions between (time, height, width): Qwen's [16, 24, 24] of 64, scaled.
    half = spec.head_dim // 2
    section = [half // 4, half * 3 // 8, half - half // 4 - half * 3 // 8]
    rope = {"rope_type": "default", "rope_theta": spec.rope_theta, "mrope_section": section}
    text = dict(**_text_kwargs(spec, vocab), rope_parameters=rope, **ids)
    patch = dict(patch_size=PATCH_SIZE, spatial_merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE)
    mm_ids = dict(image_token_id=_token_id(tokenizer, "<|image_pad|>"),
                  video_token_id=_token_id(tokenizer, "<|video_pad|>"),
                  vision_start_token_id=_token_id(tokenizer, "<|vision_start|>"),
                  vision_end_token_id=_token_id(tokenizer, "<|vision_end|>"))
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = dict(depth=spec.vision_depth, embed_dim=spec.vision_width, hidden_size=spec.hidden_size,
                      num_heads=spec.vision_heads, mlp_ratio=spec.vision_mlp_ratio, **patch)
        config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=spec.tie_word_embeddings,
                               **mm_ids)
    elif arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        # Window attention except in every 8th block (as in the real model), and always in the last.
        full = sorted({i for i in range(spec.vision_depth) if i % 8 == 7} | {spec.vision_depth - 1})
        vision = dict(depth=spec.vision_depth, hidden_size=spec.vision_width, out_hidden_size=spec.hidden_size,
                      intermediate_size=spec.vision_width * spec.vision_mlp_ratio, num_heads=spec.vision_heads,
                      window_size=112, fullatt_block_indexes=full, tokens_per_second=2, **patch)
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                  tie_word_embeddings=spec.tie_word_embeddings, **mm_ids)
    else:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    pixels = dict(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels, patch_size=PATCH_SIZE,
                  merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE)
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor(**pixels),
                                 chat_template=tokenizer.chat_template or QWEN_CHAT_TEMPLATE)
    return _Parts(config, processor, ids)


def build_tiny_model(
    out_dir: str | os.PathLike[str],
    arch: Arch = "qwen2_vl",
    seed: int = 0,
    spec: TinySpec | None = None,
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> Path:
    """Build a random-weight `arch` model of `spec` sizes and save it, with processor, to `out_dir`.

    The weights depend only on `seed` and `spec`. `tokenizer` defaults to `default_tokenizer(arch)`; a custom one
    must contain the arch's special tokens (`QWEN_SPECIAL_TOKENS` or `LLAVA_SPECIAL_TOKENS`).
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    spec = spec or TinySpec()
    tokenizer = tokenizer or default_tokenizer(arch, spec.vocab_size, spec.max_position_embeddings)
    parts = _config_and_processor(arch, spec, tokenizer)
    ids = parts.special_ids

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(parts.config, dtype=getattr(torch, spec.dtype)).eval()
    eos = [ids["eos_token_id"]] + ([ids["pad_token_id"]] if arch != "llava" else [])
    model.generation_config = GenerationConfig(bos_token_id=ids["bos_token_id"], eos_token_id=eos,
                                               pad_token_id=ids["pad_token_id"])

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if arch == "llava":
        _restore_clip_prefix(out)
    parts.processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "tiny_spec.json").write_text(json.dumps(
        {"arch": arch, "seed": seed, "factory_version": FACTORY_VERSION, "spec": dataclasses.asdict(spec),
         "num_parameters": model.num_parameters()}, indent=2) + "\n")
    return out


def _restore_clip_prefix(out: Path) -> None:
    """Write LLaVA's CLIP weights as `vision_tower.vision_model.*`, the layout of published checkpoints.

    transformers 5 drops CLIPVisionModel's `vision_model.` prefix when saving; it reads both layouts back, but
    vLLM's LLaVA loader only knows the published one ("no module or parameter named 'vision_tower.embeddings'").
    """
    from safetensors.torch import load_file, save_file

    def rename(key: str) -> str:
        if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
            return "vision_tower.vision_model." + key.removeprefix("vision_tower.")
        return key

    for path in out.glob("*.safetensors"):
        save_file({rename(k): v for k, v in load_file(path).items()}, path, metadata={"format": "pt"})
    index = out / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {rename(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2) + "\n")


def cache_root() -> Path:
    """Where `tiny_model_dir` keeps its builds: `$CRITIC_CACHE/tiny`, else `~/.cache/critic/tiny`."""
    base = os.environ.get("CRITIC_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "critic") / "tiny"


def tiny_model_dir(arch: Arch = "qwen2_vl", seed: int = 0, spec: TinySpec | None = None) -> Path:
    """Folder of a tiny model, built on first use and reused after (keyed by arch, seed and spec hash).

    The build goes to a temporary sibling folder that is renamed into place, so a killed build leaves no
    half-written model behind, and two processes racing both end up with one complete folder.
    """
    spec = spec or TinySpec()
    final = cache_root() / f"{arch}-s{seed}-{spec.fingerprint()}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build_tiny_model(tmp, arch, seed, spec)
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m critic.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the model to")
    parser.add_argument("--arch", choices=ARCHS, default="qwen2_vl")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for the random weights")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="starting sizes")
    for f in dataclasses.fields(TinySpec):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=None, help=f.metadata["help"] + " (overrides preset)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TinySpec)
                 if getattr(args, f.name) is not None}
    try:
        spec = dataclasses.replace(PRESETS[args.preset], **overrides)
    except ValueError as err:
        print(f"python -m critic.tiny: invalid sizes: {err}", file=sys.stderr)
        return 2
    out = build_tiny_model(args.out_dir, args.arch, args.seed, spec)
    info = json.loads((out / "tiny_spec.json").read_text())
    print(f"{args.arch} (seed {args.seed}, {info['num_parameters']:,} parameters) -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
