"""The synthetic task's question families: what each asks about a scene, and the two claims a pair contrasts.

Each family function turns a scene into a :class:`Question` (its text, the true and a false :class:`Claim`, and what
it is about), or returns None when the scene cannot support it; :mod:`training.synthetic` assembles rows, critiques
and datasets from them. ``target`` is a uniform number drawn once per row *before* scenes are sampled, so that
rejecting scenes does not bias what is asked (e.g. the wanted count stays uniform although high counts are rarer).
Position claims name a cell in one of :data:`POSITION_WORDINGS` (:func:`where`).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable

from training.synthetic_scenes import COLOURS, SHAPES, Scene

__all__ = ["FAMILIES", "FAMILY_FUNCS", "OFF_QUESTION_FAMILIES", "ORDINALS", "POSITION_WORDINGS", "Claim", "Question",
           "article", "asker", "check_wording", "near_miss_claim", "off_question_claim", "parse_cell", "plural",
           "scene_questions", "where"]


@dataclass(frozen=True)
class Claim:
    """What one response asserts, in the three wordings a row needs."""

    response: str  # the response text: "It is red."
    observation: str  # the claim stated as the image's fact: "The triangle is red."
    gist: str  # what the critique quotes: "red"
    asked: str | None = None  # set for an off-question claim: the object the question asked about


@dataclass(frozen=True)
class Question:
    """A question about one scene with the claim that answers it and a false one of the same form."""

    text: str
    true: Claim
    false: Claim
    subject: tuple[str, str] | None = None
    """What the question is about: ("colour", "red") or ("shape", "square") for count, ("object", "red circle") for
    position and existence. A listing enumerates it; an off-question response names another object."""


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("ss") else "s")


def article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _unique(scene: Scene, key: Callable[[dict], Any]) -> list[dict]:
    counts = Counter(key(o) for o in scene)
    return [o for o in scene if counts[key(o)] == 1]


def _colour(scene: Scene, rng: random.Random, target: float, grid: int, max_objects: int) -> Question | None:
    candidates = _unique(scene, lambda o: o["shape"])
    if not candidates:
        return None
    obj = rng.choice(candidates)
    wrong = rng.choice([c for c in COLOURS if c != obj["colour"]])

    def claim(colour: str) -> Claim:
        return Claim(f"It is {colour}.", f"The {obj['shape']} is {colour}.", colour)

    return Question(f"What colour is the {obj['shape']}?", claim(obj["colour"]), claim(wrong))


def _shape(scene: Scene, rng: random.Random, target: float, grid: int, max_objects: int) -> Question | None:
    candidates = _unique(scene, lambda o: o["colour"])
    if not candidates:
        return None
    obj = rng.choice(candidates)
    wrong = rng.choice([s for s in SHAPES if s != obj["shape"]])

    def claim(shape: str) -> Claim:
        return Claim(f"It is {article(shape)}.", f"The {obj['colour']} object is {article(shape)}.", shape)

    return Question(f"What shape is the {obj['colour']} object?", claim(obj["shape"]), claim(wrong))


POSITION_WORDINGS = ("numbers", "ordinal")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


def where(cell: tuple[int, int], wording: str = "numbers") -> str:
    """A cell (0-based row, column) in a position claim's words: ``numbers`` "row 2, column 3"; ``ordinal`` "the
    second row, column 3". Why ``ordinal``: rows and columns then use different words, so a visual token can be
    pulled towards its row's word and its column's digit at once (:mod:`training.vision_pretrain`'s ``row_words``
    and ``column_words``); with "row 2, column 3" both are digits, and a token near " 2" and " 3" cannot say which
    is its row."""
    if wording == "ordinal":
        return f"the {ORDINALS[cell[0]]} row, column {cell[1] + 1}"
    return f"row {cell[0] + 1}, column {cell[1] + 1}"


def parse_cell(gist: str) -> tuple[int, int]:
    """The 0-based (row, column) of a position claim's gist, in either wording."""
    match = re.fullmatch(r"row (\d+), column (\d+)", gist)
    if match:
        return int(match.group(1)) - 1, int(match.group(2)) - 1
    match = re.fullmatch(r"the (\w+) row, column (\d+)", gist)
    if match is None or match.group(1) not in ORDINALS:
        raise ValueError(f"not a position claim: {gist!r}")
    return ORDINALS.index(match.group(1)), int(match.group(2)) - 1


def _position(scene: Scene, rng: random.Random, target: float, grid: int, max_objects: int,
              wording: str = "numbers") -> Question | None:
    candidates = _unique(scene, lambda o: (o["colour"], o["shape"]))
    if not candidates:
        return None
    obj = rng.choice(candidates)
    name = f"{obj['colour']} {obj['shape']}"
    wrong = rng.choice([(r, c) for r in range(grid) for c in range(grid) if (r, c) != (obj["row"], obj["col"])])
    return Question(f"Where is the {name}?", _position_claim(name, (obj["row"], obj["col"]), wording),
                    _position_claim(name, wrong, wording), ("object", name))


def _position_claim(name: str, cell: tuple[int, int], wording: str) -> Claim:
    words = where(cell, wording)
    return Claim(f"It is in {words}.", f"The {name} is in {words}.", words)


def near_miss_claim(question: Question, scene: Scene, rng: random.Random, grid: int, wording: str) -> Question:
    """The position question with its wrong cell replaced by one a confused policy names: half the time another
    object's cell (when the scene has another object), else another cell of its row or column. Why: a uniformly
    drawn wrong cell is mostly empty and in another row and column, so the judge learns "the cell with an object";
    measured on the ordinal candidate's DPO pairs, 4 of its 7 wrong position choices named another object's cell
    and 3 an empty cell one row off, and the judge's pointwise scores accepted other rows of the right column."""
    assert question.subject is not None
    name = question.subject[1]
    obj = next(o for o in scene if f"{o['colour']} {o['shape']}" == name)
    here = (obj["row"], obj["col"])
    others = [(o["row"], o["col"]) for o in scene if (o["row"], o["col"]) != here]
    if others and rng.random() < 0.5:
        wrong = rng.choice(others)
    else:
        wrong = rng.choice([(r, c) for r in range(grid) for c in range(grid)
                            if (r == here[0]) != (c == here[1])])
    return replace(question, false=_position_claim(name, wrong, wording))


def _count(scene: Scene, rng: random.Random, target: float, grid: int, max_objects: int) -> Question | None:
    wanted = min(int(target * (max_objects + 1)), max_objects)
    colours, shapes = Counter(o["colour"] for o in scene), Counter(o["shape"] for o in scene)
    matches = [("colour", c) for c in COLOURS if colours[c] == wanted] + \
              [("shape", s) for s in SHAPES if shapes[s] == wanted]
    if not matches:
        return None
    kind, value = rng.choice(matches)
    wrong = rng.choice([k for k in range(max_objects + 1) if k != wanted])

    def noun(k: int) -> str:
        if kind == "colour":
            return f"{value} object" + ("" if k == 1 else "s")
        return value if k == 1 else plural(value)

    def claim(k: int) -> Claim:
        text = f"There {'is' if k == 1 else 'are'} {k} {noun(k)}."
        return Claim(text, text, str(k))

    return Question(f"How many {noun(2)} are there?", claim(wanted), claim(wrong), (kind, value))


def _existence(scene: Scene, rng: random.Random, target: float, grid: int, max_objects: int) -> Question | None:
    present = target < 0.5
    if present:
        obj = rng.choice(scene)
        name = f"{obj['colour']} {obj['shape']}"
    else:
        absent = _absent_kinds(scene)
        if not absent:
            return None
        name = rng.choice(absent)
    yes = Claim(f"Yes, there is {article(name)}.", f"There is {article(name)}.", "yes")
    no = Claim(f"No, there is no {name}.", f"There is no {name}.", "no")
    return Question(f"Is there {article(name)}?", yes if present else no, no if present else yes, ("object", name))


OFF_QUESTION_FAMILIES = ("existence", "count")


def off_question_claim(question: Question, rng: random.Random, family: str = "existence") -> Question:
    """The question with its wrong response replaced by one about another object, as a confused policy answers.
    Existence: the asked object with its colour or its shape changed ("Is there a green square?" - "Yes, there is a
    blue square."). Count: another shape or colour counted, with the right or the wrong number ("How many crosses
    are there?" - "There is 1 triangle."). Text alone shows it is wrong; the pair teaches the judge to check that a
    response answers the question asked, which the template pairs never required (measured: the judge scored such
    policy answers 10/10). The claim's ``gist`` and ``asked`` are the two objects as the critique names them."""
    assert question.subject is not None
    if family == "count":
        kind, value = question.subject
        other = rng.choice([v for v in (COLOURS if kind == "colour" else SHAPES) if v != value])
        k = int(rng.choice([question.true.gist, question.false.gist]))

        def noun(name: str, n: int) -> str:
            if kind == "colour":
                return f"{name} object" + ("" if n == 1 else "s")
            return name if n == 1 else plural(name)

        text = f"There {'is' if k == 1 else 'are'} {k} {noun(other, k)}."
        return replace(question, false=Claim(text, text, noun(other, 2), noun(value, 2)))
    asked = question.subject[1]
    colour, shape = asked.split(" ")
    if rng.random() < 0.5:
        other = f"{rng.choice([c for c in COLOURS if c != colour])} {shape}"
    else:
        other = f"{colour} {rng.choice([s for s in SHAPES if s != shape])}"
    if rng.random() < 0.5:
        claim = Claim(f"Yes, there is {article(other)}.", f"There is {article(other)}.", article(other), article(asked))
    else:
        claim = Claim(f"No, there is no {other}.", f"There is no {other}.", article(other), article(asked))
    return replace(question, false=claim)


def _hallucination(scene: Scene, rng: random.Random, target: float, grid: int, max_objects: int) -> Question | None:
    absent = _absent_kinds(scene)
    if not absent:
        return None
    obj = rng.choice(scene)
    real, fake = f"{obj['colour']} {obj['shape']}", rng.choice(absent)

    def claim(named: str, other: str) -> Claim:
        return Claim(f"There is {article(named)}.", f"There is {article(named)} but no {other}.", named)

    return Question("Name one object in the image.", claim(real, fake), claim(fake, real))


def _absent_kinds(scene: Scene) -> list[str]:
    present = {(o["colour"], o["shape"]) for o in scene}
    return [f"{c} {s}" for c in COLOURS for s in SHAPES if (c, s) not in present]


FAMILY_FUNCS = {"colour": _colour, "count": _count, "shape": _shape, "position": _position,
                 "existence": _existence, "hallucination": _hallucination}
FAMILIES: tuple[str, ...] = tuple(FAMILY_FUNCS)


def asker(family: str, wording: str) -> Callable[..., Question | None]:
    """The family's question function, with the position wording bound for position."""
    if family == "position":
        return lambda *args: _position(*args, wording=wording)
    return FAMILY_FUNCS[family]


def check_wording(wording: str, grid: int) -> str:
    """``wording`` if it is one of :data:`POSITION_WORDINGS` that can name ``grid`` rows; else ``ValueError``."""
    if wording not in POSITION_WORDINGS:
        raise ValueError(f"position wording must be one of {', '.join(POSITION_WORDINGS)}, got {wording!r}")
    if wording == "ordinal" and grid > len(ORDINALS):
        raise ValueError(f"the ordinal wording names at most {len(ORDINALS)} rows, the grid has {grid}")
    return wording


def scene_questions(scene: Scene, rng: random.Random, k: int, grid: int = 4, max_objects: int = 4,
                    families: Sequence[str] = ("colour", "count", "shape", "position", "existence"),
                    wording: str = "numbers") -> list[dict]:
    """Up to ``k`` distinct questions about one scene, each with the fact that answers it and its family
    (``{"question", "fact", "family"}``), for dense short-answer training: several retrievals per image instead of
    one. Families whose question has no single right answer (hallucination) are not offered."""
    out: list[dict] = []
    asked: set[str] = set()
    for _ in range(8 * k):
        if len(out) == k:
            break
        family = rng.choice(list(families))
        question = asker(family, wording)(scene, rng, rng.random(), grid, max_objects)
        if question is not None and question.text not in asked:
            asked.add(question.text)
            out.append({"question": question.text, "fact": question.true.observation, "family": family})
    return out
