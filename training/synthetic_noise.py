"""Which synthetic preferences to flip: uniformly at random, or as a confused annotator would.

``uniform`` (the default, and the only model before this module) flips exactly ``round(noise * n)`` rows drawn at
random, half from A-preferred and half from B-preferred rows. A random flip changes the label and nothing the judge
reads, so no judge that has not trained on a pair can tell a flipped pair from a clean one by looking at it (README,
"Why random flips defeat an entropy"). Human annotators do not err at random: they err where the two responses'
claims look alike in the image (orange for yellow, a circle for a cross, the cell next to the right one), which is
the setting of the entropy-guided training paper, whose claim is that a judge is unsure exactly there.

``confusion`` models that annotator. Every row gets a :func:`confusion` in [0, 1] - how alike its true and its false
claim look, computed from the palette, the drawn shapes and the grid, never from a model - and each family flips
exactly ``round(noise * n_family)`` of its rows, drawn without replacement with weights ``confusion ** sharpness``
(half from A-preferred, half from B-preferred rows), so every family keeps the requested noise rate and the flips
concentrate on its look-alike pairs. ``sharpness`` 0 is uniform within each family; the higher, the more the flips
pile onto the most confusable rows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from functools import cache

import numpy as np

from training.synthetic_questions import Question, parse_cell
from training.synthetic_scenes import COLOURS, SHAPES, Scene, draw_scene

__all__ = ["DEFAULT_SHARPNESS", "NOISE_MODELS", "colour_similarity", "confusion", "noisy_rows", "object_similarity",
           "shape_similarity"]

NOISE_MODELS = ("uniform", "confusion")
DEFAULT_SHARPNESS = 2.0
"""Weights ``confusion ** 2``: on single-object colour rows the most alike colour pair (yellow/orange) is then about
30 times likelier to be flipped than the least alike one drawn at all (blue/orange)."""


def colour_similarity(a: str, b: str) -> float:
    """1 for the same colour, 0 for the palette's two most distant colours, linear in RGB distance between."""
    return 1.0 - math.dist(COLOURS[a], COLOURS[b]) / _palette_span()


@cache
def _palette_span() -> float:
    return max(math.dist(p, q) for p in COLOURS.values() for q in COLOURS.values())


def shape_similarity(a: str, b: str) -> float:
    """Intersection over union of the two shapes as :func:`draw_scene` draws them in one cell (1 for the same)."""
    return _shape_iou(*sorted((a, b)))


@cache
def _shape_iou(a: str, b: str) -> float:
    def mask(shape: str) -> np.ndarray:
        pixels = np.asarray(draw_scene([{"row": 0, "col": 0, "colour": "blue", "shape": shape}], grid=1, cell=56))
        return pixels[:, :, 0] == COLOURS["blue"][0]  # blue has no red; the white background has all

    if a not in SHAPES or b not in SHAPES:
        raise ValueError(f"unknown shape in {a!r}, {b!r}; known: {', '.join(SHAPES)}")
    ma, mb = mask(a), mask(b)
    return float((ma & mb).sum() / (ma | mb).sum())


def object_similarity(a: str, b: str) -> float:
    """Two objects named "<colour> <shape>": the product of their colours' and their shapes' similarity."""
    (ca, sa), (cb, sb) = a.split(" "), b.split(" ")
    return colour_similarity(ca, cb) * shape_similarity(sa, sb)


def confusion(family: str, question: Question, scene: Scene, grid: int, max_objects: int) -> float:
    """How alike a row's true and false claims look in its image, in [0, 1] (1: easiest to mistake).

    colour and shape: the similarity of the two values (:func:`colour_similarity`, :func:`shape_similarity`);
    position: 1 for a neighbouring cell down to 0 for the opposite corner, linear in city-block distance; count: 1
    for off by one down to 0 for off by ``max_objects``; existence and hallucination: how like the object the
    question turns on (the asked one; the invented one) is to the most similar other object in the scene (0 when
    there is none), since an annotator says "yes, there is an orange circle" when there is a yellow one."""
    true, false = question.true.gist, question.false.gist
    if family == "colour":
        return colour_similarity(true, false)
    if family == "shape":
        return shape_similarity(true, false)
    if family == "position":
        (r1, c1), (r2, c2) = parse_cell(true), parse_cell(false)
        span = max(1, 2 * (grid - 1) - 1)
        return 1.0 - (abs(r1 - r2) + abs(c1 - c2) - 1) / span
    if family == "count":
        return 1.0 - (abs(int(true) - int(false)) - 1) / max(1, max_objects - 1)
    if family == "existence":
        assert question.subject is not None
        return _closest(question.subject[1], scene)
    if family == "hallucination":
        return _closest(false, scene)
    raise ValueError(f"no confusion defined for family {family!r}")


def _closest(name: str, scene: Scene) -> float:
    others = [f"{o['colour']} {o['shape']}" for o in scene]
    return max((object_similarity(name, o) for o in others if o != name), default=0.0)


def noisy_rows(positions: Sequence[str], noise: float, seed: int, model: str = "uniform",
               families: Sequence[str] | None = None, confusions: Sequence[float] | None = None,
               sharpness: float = DEFAULT_SHARPNESS) -> set[int]:
    """The indices of the rows to flip (module docstring). ``positions`` are the rows' preferred slots ("A"/"B");
    ``families`` and ``confusions`` (one per row) are needed by the ``confusion`` model only."""
    if model not in NOISE_MODELS:
        raise ValueError(f"noise model must be one of {', '.join(NOISE_MODELS)}, got {model!r}")
    if model == "uniform":
        # Its own stream, so that adding noise changes only the flipped rows (and rows made before the confusion
        # model existed stay byte-identical).
        rng = random.Random(f"critic-synthetic-noise-{seed}")
        return _balanced(rng, list(range(len(positions))), positions, round(noise * len(positions)), None)
    if sharpness < 0:
        raise ValueError(f"sharpness must be >= 0, got {sharpness!r}")
    if families is None or confusions is None or not len(families) == len(confusions) == len(positions):
        raise ValueError("the confusion model needs one family and one confusion per row")
    rng = random.Random(f"critic-synthetic-noise-confusion-{seed}")
    chosen: set[int] = set()
    for family in sorted(set(families)):
        rows = [i for i, f in enumerate(families) if f == family]
        weights = {i: max(confusions[i], 1e-9) ** sharpness for i in rows}
        chosen |= _balanced(rng, rows, positions, round(noise * len(rows)), weights)
    return chosen


def _balanced(rng: random.Random, rows: list[int], positions: Sequence[str], m: int,
              weights: dict[int, float] | None) -> set[int]:
    """``m`` of ``rows``, half among right-is-A rows and half among right-is-B rows; uniformly, or weighted without
    replacement (Efraimidis-Spirakis keys ``log(u) / w``: the ``k`` largest are a weighted sample of ``k``)."""
    a_rows = [i for i in rows if positions[i] == "A"]
    b_rows = [i for i in rows if positions[i] == "B"]
    m_a = m // 2 + (m % 2 if rng.random() < 0.5 else 0)
    m_a = min(max(m_a, m - len(b_rows)), len(a_rows))

    def sample(pool: list[int], k: int) -> set[int]:
        if weights is None:
            return set(rng.sample(pool, k))
        keys = {i: math.log(1.0 - rng.random()) / weights[i] for i in pool}
        return set(sorted(pool, key=lambda i: keys[i], reverse=True)[:k])

    return sample(a_rows, m_a) | sample(b_rows, m - m_a)
