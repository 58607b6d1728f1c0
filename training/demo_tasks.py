"""The demo recipe's auxiliary examples and their measures: text-only checks, short answers, scene descriptions.

Each builder returns :class:`training.sft_data.SFTExample` rows for :mod:`training.demo_judge`'s stages:
:func:`check_examples` (the critique's comparison as a text-only task, "It says red, the image shows blue. Wrong."),
:func:`answer_examples` (the question answered with the image's fact), :func:`description_examples` (the whole
scene); :func:`check_accuracy`, :func:`answer_exactness` and :func:`description_exactness` measure how well a model
has learned each, for the learning curves.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from critic.engines.base import ChatPrompt
from critic.engines.tokenizer_utils import render_prompt
from critic.media import load_image
from critic.preferences import PreferencePair
from training.sft_data import SFTExample
from training.synthetic import compare_sentence
from training.synthetic_questions import scene_questions

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
        # restate style keeps the fact in meta.observation, lookup rows in meta.fact
        fact = pair.meta.get("fact") or pair.meta.get("observation") or pair.observation
        if pair.category == "hallucination" or not fact:
            continue
        text, target = pair.question, fact
        if questions > 1 and "scene" in pair.meta:
            rng = random.Random(zlib.crc32(pair.id.encode()))
            # 1..k questions, not always k: a model that only ever saw k-question prompts answered a single question
            # with the wrong fact (0 of 53 held-out), though it got 62% of facts right when asked four at a time.
            asked = scene_questions(pair.meta["scene"], rng, rng.randint(1, questions), pair.meta.get("grid", 4),
                                    wording=pair.meta.get("position_wording", "numbers"))
            if asked:
                text = "\n".join(q["question"] for q in asked)
                target = " ".join(q["fact"] for q in asked)
        prompt = ChatPrompt(system=ANSWER_SYSTEM, text=text, images=(load_image(pair.images[0]),))
        out.append(SFTExample(f"{pair.id}/answer", prompt, target, "pairwise", "", pair.category))
    return out


def _gist(rng: Any, kind: int, like: str | None = None, wording: str = "numbers") -> str:
    """A short claim of one question family, in the form the synthetic critiques quote it (position claims in
    ``wording``, see :func:`training.synthetic.where`)."""
    from training.synthetic_questions import parse_cell, where
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
            row, col = parse_cell(like)
            if rng.random() < 0.5:
                return where((rng.randint(0, 3), col), wording)
            return where((row, rng.randint(0, 3)), wording)
        return where((rng.randint(0, 3), rng.randint(0, 3)), wording)
    if like is not None and rng.random() < 0.5:  # near miss: same shape or same colour
        colour, shape = like.split(" ")
        if rng.random() < 0.5:
            return f"{rng.choice(list(COLOURS))} {shape}"
        return f"{colour} {rng.choice(list(SHAPES))}"
    return f"{rng.choice(list(COLOURS))} {rng.choice(list(SHAPES))}"


def check_examples(n: int, seed: int = 0, per_example: int = 6, wording: str = "numbers") -> list[SFTExample]:
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
            fact = _gist(rng, kind, wording=wording)
            claim = fact if rng.random() < 0.5 else _gist(rng, kind, like=fact, wording=wording)
            parts.append(compare_sentence(claim, fact, claim == fact))
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
