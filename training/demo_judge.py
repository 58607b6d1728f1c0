"""Build the demo judge from nothing on a CPU: synthetic data, a tokenizer, a small Qwen2-VL, critique SFT.

    python -m training.demo_judge --out runs/demo_judge            # the recipe the shipped judge was built with
    python -m training.demo_judge --out /tmp/quick --quick         # a minute-long run that checks the plumbing

Steps (each with a progress bar or log line on stderr):

1. synthetic preference pairs (:mod:`training.synthetic`) for each curriculum stage from the training seed, and
   held-out pairs from a seed that owns disjoint scenes;
2. a byte-level BPE tokenizer trained on the task's own text, so the prompt and critique words are single tokens;
3. a random-weight Qwen2-VL from :mod:`critic.tiny` (so vLLM can serve it too) whose 28-pixel grid cells are one
   visual token each;
4. a text-only check primitive (:func:`check_examples`), vision pre-training with word, combination and cell codes
   (:mod:`training.vision_pretrain`), short answers, then critique SFT (:mod:`training.sft`) with a lower learning
   rate for the vision tower, evaluating held-out accuracy with and without the image as it goes;
5. the judge folder (weights, processor, ``judge_config.json``), ``demo_report.json`` (final metrics and the
   learning curve) and ``learning_curve.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from critic.core import Judge, JudgeConfig
from critic.engines.base import ChatPrompt
from critic.engines.hf import TransformersEngine
from critic.engines.tokenizer_utils import render_prompt
from critic.evaluate import evaluate
from critic.media import load_image
from critic.plotting import pyplot
from critic.preferences import PreferencePair, read_preferences
from critic.prompting import PromptConfig
from critic.tiny import QWEN_SPECIAL_TOKENS, TinySpec, build_tiny_model, builtin_corpus, train_tokenizer
from training.sft import SFTConfig, save_judge, train_sft
from training.sft_data import SFTExample, build_examples
from training.synthetic import FAMILIES, scene_questions, write_dataset
from training.vision_pretrain import VisionPretrainConfig, pretrain_vision


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: scenes with ``min_objects..max_objects`` objects for ``steps`` optimizer steps.

    ``describe`` is the share of scene-description examples ("Row 2, column 3: red circle. …") mixed into the
    critique examples (1.0: a description-only alignment stage): dense supervision that makes the model read every
    visual token, which the one-fact-per-pair critique signal alone did not teach in the time measured."""

    min_objects: int
    max_objects: int
    steps: int
    pairs: int
    describe: float = 0.0
    answer: float = 0.0
    """Share of short-answer examples (the question answered with the image's fact, "The circle is blue."; 1.0:
    an answer-only alignment stage): it teaches the language model to find the asked-about object among the
    visual tokens with a short target, before the critique has to do it."""
    questions: int = 1
    """Most questions per short-answer example: with k > 1 each example asks 1..k questions about its scene at
    once and the target states their facts in order (several retrievals per image instead of one)."""
    learning_rate: float | None = None
    """The stage's peak learning rate (a fresh linear schedule; the vision tower's scales with it); None: the
    recipe's."""
    families: tuple[str, ...] | None = None
    """Train on these question families only (the weak ones, late in training); None: all."""
    other_families: float = 0.0
    """With ``families``, the share of the other families' pairs kept anyway, so that what is learned is not
    forgotten."""

    def __post_init__(self) -> None:
        unknown = set(self.families or ()) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
        if not 0.0 <= self.other_families <= 1.0:
            raise ValueError("other_families must be in [0, 1]")


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that decides the demo judge."""

    stages: tuple[Stage, ...] = (
        Stage(1, 4, 3000, 40000, answer=1.0), Stage(1, 4, 1500, 24000, answer=0.25),
        # Run 12 stopped while still rising; as scripts on its judge, a second schedule at half the rate took it from
        # 82% to 85%, then one on the families that lagged (a share of the rest kept) to 88% (existence 68 -> 88%,
        # hallucination 84 -> 98%). As these two stages (run 13, the shipped judge): 86.7%.
        Stage(1, 4, 1000, 24000, answer=0.25, learning_rate=1e-3),
        Stage(1, 4, 1000, 24000, answer=0.25, learning_rate=1e-3,
              families=("existence", "count", "position", "hallucination"), other_families=0.15))
    vision: VisionPretrainConfig | None = field(default_factory=lambda: VisionPretrainConfig(
        steps=600, align_to_words=True, combo_codes=True, cell_codes=True))
    """Per-cell pre-training of the vision tower before any SFT (:mod:`training.vision_pretrain`); None skips it.
    The combination and cell codes keep which colour goes with which shape in any average of tokens (run 12); rows
    and columns need ~550 steps with them."""
    train_seed: int = 0
    heldout_seed: int = 1
    heldout_pairs: int = 300
    heldout_max_objects: int = 4
    eval_pairs: int = 96
    eval_every: int = 750
    model_seed: int = 0
    spec: TinySpec = field(default_factory=lambda: TinySpec(
        vocab_size=1000, hidden_size=128, intermediate_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
        vision_depth=2, vision_width=128, vision_heads=4, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16,
        max_position_embeddings=2048))
    learning_rate: float = 2e-3
    vision_learning_rate: float = 5e-4
    batch_size: int = 32
    critique_max_chars: int = 320
    modes: tuple[str, ...] = ("pairwise", "pointwise")
    description: str = "rows"
    """Description stages' target: "rows" ("Row 2, column 3: red circle.") or "cells" (every cell in order)."""
    fact_first: bool = True
    """Open every critique with the image's fact ("The circle is blue."), the very sentence the short-answer stage
    teaches, so that skill carries over at the same place in the output; the per-response checks then copy it."""
    critique_style: str = "compare"
    """The synthetic rows' per-response critiques (:data:`training.synthetic.CRITIQUE_STYLES`); ``compare`` puts the
    fact next to each claim in the claim's own short form ("It says red, the image shows blue. Wrong."): run 10."""
    noise: float = 0.0
    """Share of the critique stages' training preferences flipped (with their critiques and facts): the noisy-label
    setting of entropy-guided training. Answer-only stages and held-out pairs stay clean."""
    check_steps: int = 1200
    """Steps of the text-only check primitive before everything else (:func:`check_examples`); 0 skips it. Measured
    alone: 93% / 99% / 99.8% of held-out checks right after 750 / 1,000 / 1,250 steps; run 10's 600 stayed at 60%;
    run 12's 1,200: 60 / 94 / 98% after 400 / 800 / 1,200."""
    scene_in_critique: bool = False
    """Start every critique with the whole scene's description ("Row 2, column 3: red circle. …"), so the checks
    that follow can look the fact up in text; costs a longer critique (raise ``critique_max_chars``)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise < 1.0:
            raise ValueError("noise must be in [0, 1)")
        for stage in self.stages:
            if stage.describe < 0 or stage.answer < 0 or stage.describe + stage.answer > 1:
                raise ValueError(f"a stage's describe and answer shares must be >= 0 and sum to <= 1: {stage}")
        # The judge refuses items whose prompt plus worst-case output exceed the context (context_length errors),
        # so a budget whose token cap does not fit would make every evaluation empty.
        cap = self.judge_config().spec("pairwise").max_new_tokens
        if cap + 256 > self.spec.max_position_embeddings:
            raise ValueError(f"critique_max_chars {self.critique_max_chars} needs up to {cap} output tokens; with "
                             f"max_position_embeddings {self.spec.max_position_embeddings} no prompt would fit")

    def judge_config(self) -> JudgeConfig:
        return JudgeConfig(critique_max_chars=self.critique_max_chars,
                           prompt=PromptConfig(system_template="compact_system"))


QUICK = DemoRecipe(check_steps=5, critique_style="compare",
                   stages=(Stage(1, 2, 10, 64, answer=1.0), Stage(1, 2, 20, 64, describe=0.2, answer=0.2),
                           Stage(1, 2, 6, 64, answer=0.25, learning_rate=1e-3, families=("count", "existence"),
                                 other_families=0.2)),
                   heldout_pairs=16, eval_pairs=16, eval_every=20, batch_size=8,
                   vision=VisionPretrainConfig(steps=10, batch_size=8, heldout_scenes=16, eval_every=5,
                                               align_to_words=True, combo_codes=True, cell_codes=True))


def _log(message: str) -> None:
    print(f"[demo-judge] {message}", file=sys.stderr, flush=True)


def _corpus(pairs: list[PreferencePair], config: JudgeConfig) -> list[str]:
    """The task's own text as the judge sees and writes it (prompt texts with their template tags, targets, chat
    roles), so that every fixed word of the layout is one token and sequences stay short."""
    examples, _ = build_examples(pairs[:2000], config, modes=("pairwise", "pointwise"))
    texts = [example.prompt.system for example in examples[:50]]
    texts += [f"{example.prompt.text}\n{example.target}" for example in examples]
    texts += ["system\nuser\nassistant\n", f"{DESCRIBE_SYSTEM}\n{DESCRIBE_QUESTION}", ANSWER_SYSTEM,
              f"{CHECK_SYSTEM}\n{CHECK_TEXT}"] * 200
    texts += [pair.meta.get("description", "") for pair in pairs[:2000]]
    texts += [cell_listing(pair.meta["scene"], pair.meta["grid"]) for pair in pairs[:500] if "scene" in pair.meta]
    return texts + builtin_corpus(2000)


DESCRIBE_SYSTEM = "Describe the image."
CHECK_SYSTEM = "Check each claim against the image."
CHECK_TEXT = "Claims and facts:"
ANSWER_SYSTEM = "Answer the question."
DESCRIBE_QUESTION = "List every object with its row and column."


def cell_listing(scene: list[dict[str, Any]], grid: int) -> str:
    """Every cell in reading order, "empty" or its object: one item per visual token, in the tokens' order."""
    cells = {(o["row"], o["col"]): f"{o['colour']} {o['shape']}" for o in scene}
    return ", ".join(cells.get((r, c), "empty") for r in range(grid) for c in range(grid)) + "."


def description_examples(pairs: list[PreferencePair], style: str = "rows") -> list[SFTExample]:
    """One scene-description example per pair's image: ``rows`` is the canonical description the synthetic rows
    carry ("Row 2, column 3: red circle. …"), ``cells`` the cell-by-cell listing (:func:`cell_listing`)."""
    out = []
    for pair in pairs:
        image = load_image(pair.images[0])
        prompt = ChatPrompt(system=DESCRIBE_SYSTEM, text=DESCRIBE_QUESTION, images=(image,))
        target = (cell_listing(pair.meta["scene"], pair.meta["grid"]) if style == "cells"
                  else pair.meta["description"])
        out.append(SFTExample(f"{pair.id}/describe", prompt, target, "pairwise", "", "describe"))
    return out


def answer_examples(pairs: list[PreferencePair], questions: int = 1) -> list[SFTExample]:
    """One short-answer example per pair: the question, answered with the image's fact (``meta.observation``).
    Hallucination pairs are left out: their question ("Name one object") has no single right answer. With
    ``questions > 1`` each example asks 1..questions questions about the pair's scene, one per line, and the target
    states their facts in the same order (:func:`training.synthetic.scene_questions`, seeded by the pair id)."""
    import random
    import zlib

    out = []
    for pair in pairs:
        fact = pair.meta.get("observation") or pair.observation  # restate style keeps the fact in meta
        if pair.category == "hallucination" or not fact:
            continue
        text, target = pair.question, fact
        if questions > 1 and "scene" in pair.meta:
            rng = random.Random(zlib.crc32(pair.id.encode()))
            # 1..k questions, not always k: a model that only ever saw k-question prompts answered a single question
            # with the wrong fact (0 of 53 held-out), though it got 62% of facts right when asked four at a time.
            asked = scene_questions(pair.meta["scene"], rng, rng.randint(1, questions), pair.meta.get("grid", 4))
            if asked:
                text = "\n".join(q["question"] for q in asked)
                target = " ".join(q["fact"] for q in asked)
        prompt = ChatPrompt(system=ANSWER_SYSTEM, text=text, images=(load_image(pair.images[0]),))
        out.append(SFTExample(f"{pair.id}/answer", prompt, target, "pairwise", "", pair.category))
    return out


def _gist(rng: Any, kind: int, like: str | None = None) -> str:
    """A short claim of one question family, in the form the synthetic critiques quote it."""
    from training.synthetic_scenes import COLOURS, SHAPES

    if kind == 0:
        return rng.choice(list(COLOURS))
    if kind == 1:
        return rng.choice(list(SHAPES))
    if kind == 2:
        return str(rng.randint(0, 4))
    if kind == 3:
        return rng.choice(["yes", "no"])
    if kind == 4:
        if like is not None and rng.random() < 0.5:  # near miss: one coordinate changed
            row, col = like.replace("row ", "").split(", column ")
            if rng.random() < 0.5:
                return f"row {rng.randint(1, 4)}, column {col}"
            return f"row {row}, column {rng.randint(1, 4)}"
        return f"row {rng.randint(1, 4)}, column {rng.randint(1, 4)}"
    if like is not None and rng.random() < 0.5:  # near miss: same shape or same colour
        colour, shape = like.split(" ")
        if rng.random() < 0.5:
            return f"{rng.choice(list(COLOURS))} {shape}"
        return f"{colour} {rng.choice(list(SHAPES))}"
    return f"{rng.choice(list(COLOURS))} {rng.choice(list(SHAPES))}"


def check_examples(n: int, seed: int = 0, per_example: int = 6) -> list[SFTExample]:
    """Text-only examples of the critique's one comparison, many per example: "It says red, the image shows blue.
    Wrong. It says 2, the image shows 2. Right. …" over every family's claim forms, half of them equal, the rest
    often near misses. Measured here: inside critiques this comparison stayed at chance for 600 steps even with the
    fact given (the language model starts from nothing); six per example teach it in a few hundred steps."""
    import random

    rng = random.Random(seed)
    out = []
    for k in range(n):
        parts = []
        for _ in range(per_example):
            kind = rng.randrange(6)
            fact = _gist(rng, kind)
            claim = fact if rng.random() < 0.5 else _gist(rng, kind, like=fact)
            parts.append(f"It says {claim}, the image shows {fact}. {'Right' if claim == fact else 'Wrong'}.")
        prompt = ChatPrompt(system=CHECK_SYSTEM, text=CHECK_TEXT, images=())
        out.append(SFTExample(f"check-{k}", prompt, " ".join(parts), "pairwise", "", "check"))
    return out


def check_accuracy(model: Any, processor: Any, examples: list[SFTExample]) -> float:
    """Share of Right/Wrong words predicted correctly, teacher-forced, in :func:`check_examples` targets."""
    import torch

    from training.sft import encode_batch

    words = {processor.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" Right", " Wrong")}
    batch, _ = encode_batch(processor, examples)
    labels = batch.pop("labels")
    with torch.inference_mode():
        predicted = model(**batch).logits[:, :-1].argmax(-1)
    gold = labels[:, 1:]
    mask = torch.zeros_like(gold, dtype=torch.bool)
    for word in words:
        mask |= gold == word
    return float((predicted[mask] == gold[mask]).float().mean()) if mask.any() else 0.0


def answer_exactness(model: Any, processor: Any, pairs: list[PreferencePair], blind: bool = False) -> float:
    """Share of held-out questions whose greedy short answer is exactly the image's fact."""
    examples = answer_examples(pairs)
    if blind:
        examples = [dataclasses.replace(e, prompt=dataclasses.replace(
            e.prompt, images=(e.prompt.images[0].point(lambda _: 255),))) for e in examples]
    # Only the first sentence counts: a model trained on several questions per image may go on with more facts.
    return _exact(model, processor, examples, max_new_tokens=24, first_sentence=True)


def description_exactness(model: Any, processor: Any, pairs: list[PreferencePair], style: str = "rows") -> float:
    """Share of held-out scenes whose greedy description is exactly right (unconstrained generation)."""
    return _exact(model, processor, description_examples(pairs, style), max_new_tokens=80)


def _exact(model: Any, processor: Any, examples: list[SFTExample], max_new_tokens: int,
           first_sentence: bool = False) -> float:
    """Share of examples whose greedy, unconstrained generation is exactly the target (or, with
    ``first_sentence``, starts with the target followed by nothing or a space)."""
    import torch

    if not examples:
        return 0.0
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    inputs = processor(text=[render_prompt(processor, e.prompt) for e in examples],
                       images=[e.prompt.images[0] for e in examples], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    def right(text: str, target: str) -> bool:
        text = text.strip()
        return text == target or (first_sentence and text.startswith(target + " "))

    return sum(right(t, e.target) for t, e in zip(texts, examples)) / max(len(examples), 1)


def focus_families(pairs: list[PreferencePair], stage: Stage, seed: int) -> list[PreferencePair]:
    """The stage's pairs: all of them, or those of ``stage.families`` plus a seeded ``other_families`` share of
    the rest (in their original order)."""
    import random

    if stage.families is None:
        return pairs
    rng = random.Random(seed)
    return [p for p in pairs if p.category in stage.families or rng.random() < stage.other_families]


def _accuracy(model: Any, processor: Any, config: JudgeConfig, pairs: list[PreferencePair], blind: bool) -> dict:
    judge = Judge(TransformersEngine(model, processor, batch_size=64), config)
    report = evaluate(judge, pairs, blind=blind, chunk_size=64, progress=False)
    return {"accuracy": report.accuracy, "position_consistency": report.position_consistency,
            "per_category": {k: v["accuracy"] for k, v in report.per_category.items()},
            "parse_failures": report.parse_failures}


def pointwise_agreement(judge: Judge, pairs: list[PreferencePair]) -> float:
    """Share of pairs whose preferred response gets the higher expected score (pointwise, each scored alone)."""
    from critic.types import JudgeItem

    items = [JudgeItem(question=p.question, response=r, images=list(p.images), id=f"{p.id}/{s}")
             for p in pairs for s, r in (("a", p.response_a), ("b", p.response_b))]
    results = judge.with_config(mode="pointwise").judge(items)
    right = 0
    for k, pair in enumerate(pairs):
        a, b = results[2 * k], results[2 * k + 1]
        if a.ok and b.ok and a.expected_score is not None and b.expected_score is not None:
            better_a = a.expected_score > b.expected_score
            right += better_a if pair.preferred == "A" else (b.expected_score > a.expected_score)
    return right / max(len(pairs), 1)


def build_demo_judge(out: str | Path, recipe: DemoRecipe = DemoRecipe(), *, progress: bool = True,
                     keep: Collection[str] | None = None, difficulty: Mapping[str, float] | None = None
                     ) -> dict[str, Any]:
    """Run the recipe into ``out`` (a judge folder) and return the report that is also written there.

    Entropy-guided training hooks (:mod:`training.judge_data_demo`): ``keep`` limits the critique stages' pairs to
    those ids (curation); ``difficulty`` (pair id -> entropy) orders every stage's examples easy to hard
    (curriculum). The step budget is the recipe's either way."""
    start = time.perf_counter()
    out = Path(out)
    work = out / "build"
    config = recipe.judge_config()
    _log("writing synthetic data")
    stage_pairs = []
    for k, stage in enumerate(recipe.stages):
        noisy = recipe.noise if stage.describe + stage.answer < 1.0 else 0.0
        path = write_dataset(work / f"stage{k}", stage.pairs, seed=recipe.train_seed, noise=noisy,
                             min_objects=stage.min_objects, max_objects=stage.max_objects,
                             critique_style=recipe.critique_style)
        pairs = focus_families(read_preferences(path).pairs, stage, seed=recipe.train_seed + k)
        if keep is not None and noisy == recipe.noise and stage.describe + stage.answer < 1.0:
            pairs = [p for p in pairs if p.id in keep]
            _log(f"stage {k}: {len(pairs)} pairs kept by curation")
        stage_pairs.append(pairs)
    heldout = read_preferences(write_dataset(work / "heldout", recipe.heldout_pairs, seed=recipe.heldout_seed,
                                             max_objects=recipe.heldout_max_objects,
                                             critique_style=recipe.critique_style)).pairs
    _log("training the tokenizer")
    tokenizer = train_tokenizer(_corpus([p for pairs in stage_pairs for p in pairs], config),
                                recipe.spec.vocab_size, QWEN_SPECIAL_TOKENS)
    model_dir = build_tiny_model(work / "init", "qwen2_vl", seed=recipe.model_seed, spec=recipe.spec,
                                 tokenizer=tokenizer)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    n_params = sum(p.numel() for p in model.parameters())
    _log(f"model: {n_params / 1e6:.2f}M parameters")
    check_curve: list[dict[str, Any]] = []
    if recipe.check_steps > 0:
        _log(f"teaching the check primitive on text ({recipe.check_steps} steps)")
        held_checks = check_examples(64, seed=recipe.heldout_seed + 1000)
        check = train_sft(model, processor, check_examples(recipe.check_steps * recipe.batch_size, recipe.train_seed),
                          SFTConfig(max_steps=recipe.check_steps, learning_rate=recipe.learning_rate,
                                    per_device_train_batch_size=recipe.batch_size, seed=recipe.train_seed,
                                    max_length=recipe.spec.max_position_embeddings, logging_steps=25),
                          work / "trainer_check", progress=progress,
                          evaluate_fn=lambda net: {"check_accuracy": check_accuracy(net, processor, held_checks)},
                          eval_every=max(recipe.check_steps // 3, 1))
        check_curve = check.evaluations
    vision_curve: list[dict[str, Any]] = []
    if recipe.vision is not None:
        _log(f"pre-training the vision tower on per-cell labels ({recipe.vision.steps} steps)")
        vision_curve = pretrain_vision(model, processor, recipe.vision, progress=progress)
    subset = heldout[: recipe.eval_pairs]
    reserved = TransformersEngine(model, processor).reserved_strings()
    curve: list[dict[str, Any]] = []
    # The curve's clock includes the vision pre-training, so it reads as minutes since the build began training.
    steps_done = 0
    minutes_done = (vision_curve[-1]["seconds"] / 60 if vision_curve else 0.0) + \
        (check_curve[-1]["minutes"] if check_curve else 0.0)

    def evaluate_fn(net: Any) -> dict[str, Any]:
        seen = _accuracy(net, processor, config, subset, blind=False)
        blind = _accuracy(net, processor, config, subset, blind=True)
        record = {"accuracy": seen["accuracy"], "blind_accuracy": blind["accuracy"],
                  "position_consistency": seen["position_consistency"], "per_category": seen["per_category"]}
        if any(stage.answer > 0 for stage in recipe.stages):
            record["answer_exact"] = answer_exactness(net, processor, subset)
        if any(stage.describe > 0 for stage in recipe.stages):
            record["description_exact"] = description_exactness(net, processor, subset[:32], recipe.description)
        return record

    for k, (stage, pairs) in enumerate(zip(recipe.stages, stage_pairs)):
        examples: list[SFTExample] = []
        if stage.describe + stage.answer < 1.0:
            sources = pairs
            if recipe.scene_in_critique or recipe.fact_first:
                key = "description" if recipe.scene_in_critique else "observation"
                sources = [dataclasses.replace(p, observation=p.meta.get(key) or p.observation) for p in pairs]
            examples, problems = build_examples(sources, config, modes=recipe.modes, reserved=reserved)  # type: ignore[arg-type]
            if problems:
                _log(f"stage {k}: {len(problems)} pairs gave no example, e.g. {problems[0]}")
        critiques = len(examples)
        for share, make in ((stage.describe, lambda chosen: description_examples(chosen, recipe.description)),
                            (stage.answer, lambda chosen: answer_examples(chosen, stage.questions))):
            if share > 0.0:
                # A share of the stage's examples: all pairs for a pure stage, else relative to the critiques.
                wanted = len(pairs) if share >= 1.0 else round(critiques * share / (1 - stage.describe - stage.answer))
                examples += make(pairs[:wanted])
        _log(f"stage {k}: {stage.min_objects}-{stage.max_objects} objects, {len(examples)} examples, "
             f"{stage.steps} steps")
        rate = recipe.learning_rate if stage.learning_rate is None else stage.learning_rate
        sft = SFTConfig(max_steps=stage.steps, learning_rate=rate,
                        vision_learning_rate=recipe.vision_learning_rate * rate / recipe.learning_rate,
                        per_device_train_batch_size=recipe.batch_size, seed=recipe.train_seed + k,
                        max_length=recipe.spec.max_position_embeddings, logging_steps=25)
        order = None
        if difficulty is not None:
            from training.entropy import example_difficulty

            order = example_difficulty([e.id for e in examples], difficulty)
        result = train_sft(model, processor, examples, sft, work / f"trainer{k}", evaluate_fn=evaluate_fn,
                           eval_every=recipe.eval_every, progress=progress, difficulty=order)
        for record in result.evaluations:
            curve.append({**record, "stage": k, "step": steps_done + record["step"],
                          "minutes": minutes_done + record["minutes"]})
        steps_done += result.steps
        minutes_done += result.seconds / 60
    save_judge(model, processor, config, out)
    train_minutes = (time.perf_counter() - start) / 60
    _log(f"built in {train_minutes:.1f} min; final held-out evaluation on {len(heldout)} pairs")
    judge = Judge(TransformersEngine(model, processor, batch_size=64), config)
    final = evaluate(judge, heldout, chunk_size=64, progress=progress)
    blind = evaluate(judge, heldout, blind=True, chunk_size=64, progress=progress)
    report = {
        "build_minutes": train_minutes, "parameters": n_params, "steps": steps_done,
        "heldout_pairs": len(heldout), "heldout_seed": recipe.heldout_seed,
        "accuracy": final.accuracy, "per_category": {k: v["accuracy"] for k, v in final.per_category.items()},
        "position_consistency": final.position_consistency, "parse_failures": final.parse_failures,
        "ece": final.ece, "blind_accuracy": blind.accuracy,
        "pointwise_agreement": pointwise_agreement(judge, heldout),
        "curve": curve, "vision_curve": vision_curve, "check_curve": check_curve, "recipe": _jsonable(asdict(recipe)),
    }
    (out / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot_curve(curve, out / "learning_curve.png")
    return report


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def plot_curve(curve: list[dict[str, Any]], path: Path) -> bool:
    """Held-out accuracy with and without the image against training minutes."""
    plt = pyplot("learning-curve figure")
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.6))
    minutes = [r["minutes"] for r in curve]
    ax.plot(minutes, [r["accuracy"] for r in curve], "o-", label="held-out accuracy")
    ax.plot(minutes, [r["blind_accuracy"] for r in curve], "s--", label="same, image blanked")
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("pairwise accuracy (both orders)")
    ax.set_ylim(0.3, 1.02)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo_judge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the judge to build")
    parser.add_argument("--quick", action="store_true", help="a tiny run that checks the plumbing (about a minute)")
    parser.add_argument("--steps", type=int, default=None, help="override the last stage's steps")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    recipe = QUICK if args.quick else DemoRecipe()
    if args.steps is not None:
        recipe = replace(recipe, stages=recipe.stages[:-1] + (replace(recipe.stages[-1], steps=args.steps),))
    report = build_demo_judge(args.out, recipe, progress=not args.no_progress)
    summary = {k: report[k] for k in ("build_minutes", "accuracy", "blind_accuracy", "position_consistency",
                                       "pointwise_agreement", "per_category")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
