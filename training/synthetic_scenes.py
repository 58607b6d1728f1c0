"""Scenes for the synthetic preference task: token-aligned grids of coloured shapes, and which seed owns which scene.

A scene is a few objects on a ``grid`` x ``grid`` board, at most one per cell, listed in row-major order::

    [{"row": 0, "col": 1, "colour": "blue", "shape": "triangle"}, {"row": 2, "col": 0, "colour": "red", ...}]

:func:`draw_scene` draws it with every cell exactly ``cell`` pixels wide and aligned to the image origin, so with the
default 28-pixel cells each object is one Qwen2-VL visual token (14-pixel patches merged 2x2).
:func:`describe_scene` writes the canonical description used for image-description training.

**Seeds own disjoint scenes.** For each object count ``k`` the scenes form a finite space of
``C(grid*grid, k) * (colours*shapes)**k`` members, which :class:`SceneSpace` numbers by an index (a k-subset of
cells in the combinatorial number system, then one colour/shape digit per object). A keyed pseudo-random
permutation of that space (a Feistel network over bits with cycle walking; its key is fixed and does not depend on
the seed) gives every scene a *rank*, and the scene belongs to seed ``s`` exactly when ``rank + 1`` is an odd
multiple of ``2**s``. So seed 0 owns half of every space, seed 1 a quarter, seed 2 an eighth, and so on: each scene
has exactly one owner, and a seed only ever samples ranks it owns. Scenes drawn for a held-out seed therefore never
occur in data made with any other seed, whatever the other arguments, for the same grid and palette. Small spaces
run out quickly (one object on a 4x4 grid: 384 scenes, of which seed 0 owns 192, seed 1 owns 96, seed 8 owns 1),
so :meth:`SceneSpace.owned_count` says how many a seed owns and the generator refuses a seed that owns none.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import TypedDict

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 200, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "purple": (150, 0, 200),
    "orange": (255, 140, 0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
BACKGROUND: tuple[int, int, int] = (255, 255, 255)

# Part of the permutation key: bump it when the palette, shapes or ranking change, so that a new layout of the
# space is a deliberate decision (ownership is only comparable between datasets made with the same version).
SPACE_VERSION = 1
_FEISTEL_ROUNDS = 6


class SceneObject(TypedDict):
    """One object of a scene; ``row`` and ``col`` are 0-based (descriptions and answers say them 1-based)."""

    row: int
    col: int
    colour: str
    shape: str


Scene = list[SceneObject]


def scene_key(scene: Scene) -> str:
    """A canonical string for a scene (row-major), equal for equal scenes; used to compare scenes across datasets."""
    return ";".join(f"{o['row']},{o['col']},{o['colour']},{o['shape']}" for o in sorted_scene(scene))


def sorted_scene(scene: Scene) -> Scene:
    return sorted(scene, key=lambda o: (o["row"], o["col"]))


def describe_scene(scene: Scene) -> str:
    """The canonical whole-scene description, row-major, e.g. ``Row 1, column 2: blue triangle. Row 3, ...``."""
    return " ".join(f"Row {o['row'] + 1}, column {o['col'] + 1}: {o['colour']} {o['shape']}."
                    for o in sorted_scene(scene))


def draw_scene(scene: Scene, grid: int = 4, cell: int = 28) -> Image.Image:
    """Draw a scene as an RGB image of ``grid*cell`` pixels square, one object per cell on a plain background.

    Shapes are drawn without anti-aliasing and keep a margin inside their cell, so every pixel of an object lies in
    its own cell (one visual token) and the cell's centre pixel always has the object's exact palette colour.
    """
    image = Image.new("RGB", (grid * cell, grid * cell), BACKGROUND)
    draw = ImageDraw.Draw(image)
    margin = max(1, cell // 10)
    for obj in scene:
        if not (0 <= obj["row"] < grid and 0 <= obj["col"] < grid):
            raise ValueError(f"object {obj} lies outside a {grid}x{grid} grid")
        fill = COLOURS[obj["colour"]]
        left, top = obj["col"] * cell + margin, obj["row"] * cell + margin
        right, bottom = (obj["col"] + 1) * cell - 1 - margin, (obj["row"] + 1) * cell - 1 - margin
        cx, cy = (left + right) / 2, (top + bottom) / 2
        if obj["shape"] == "circle":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif obj["shape"] == "square":
            draw.rectangle((left, top, right, bottom), fill=fill)
        elif obj["shape"] == "triangle":
            draw.polygon([(cx, top), (right, bottom), (left, bottom)], fill=fill)
        elif obj["shape"] == "cross":
            arm = (right - left) / 6  # half the arm width: arms are a third of the object wide
            draw.rectangle((left, cy - arm, right, cy + arm), fill=fill)
            draw.rectangle((cx - arm, top, cx + arm, bottom), fill=fill)
        else:
            raise ValueError(f"unknown shape {obj['shape']!r}; known: {', '.join(SHAPES)}")
    return image


class SceneSpace:
    """All scenes with a given number of objects on one grid, ranked by a fixed pseudo-random permutation.

    ``scene(rank)`` and ``rank(scene)`` are inverse bijections between ``range(size)`` and the scenes; ``owner``
    maps a rank to the one seed that may use it (see the module docstring).
    """

    def __init__(self, grid: int, objects: int) -> None:
        self.grid = grid
        self.objects = objects
        self.cells = grid * grid
        self.kinds = len(COLOURS) * len(SHAPES)
        if not 1 <= objects <= self.cells:
            raise ValueError(f"a {grid}x{grid} grid holds 1 to {self.cells} objects, not {objects}")
        self.size = math.comb(self.cells, objects) * self.kinds ** objects
        # The Feistel network permutes [0, 2**(2*half)); cycle walking restricts it to [0, size). Since
        # 2**(2*half) < 4*size, a walk takes fewer than four steps on average.
        self._half = max(1, ((self.size - 1).bit_length() + 1) // 2)
        self._key = f"critic-synthetic-v{SPACE_VERSION}|grid={grid}|objects={objects}".encode()

    # --- ownership -------------------------------------------------------------------------------------------

    @staticmethod
    def owner(rank: int) -> int:
        """The seed owning a rank: the number of trailing zero bits of ``rank + 1``."""
        x = rank + 1
        return (x & -x).bit_length() - 1

    def owned_count(self, seed: int) -> int:
        """How many scenes of this space ``seed`` owns (``rank + 1`` an odd multiple of ``2**seed``)."""
        return (self.size >> seed) - (self.size >> (seed + 1))

    def sample(self, rng: random.Random, seed: int) -> Scene:
        """A scene owned by ``seed``, uniform over the scenes it owns."""
        count = self.owned_count(seed)
        if count == 0:
            raise ValueError(f"seed {seed} owns no scene with {self.objects} object(s) on a {self.grid}x{self.grid} "
                             f"grid ({self.size} scenes; seed s owns about 1/2**(s+1) of them)")
        m = rng.randrange(count)
        return self.scene(((2 * m + 1) << seed) - 1)

    # --- rank <-> scene ----------------------------------------------------------------------------------------

    def scene(self, rank: int) -> Scene:
        index = self._walk(rank, inverse=False)
        subset, kinds = divmod(index, self.kinds ** self.objects)
        scene: Scene = []
        for cell in _unrank_subset(subset, self.objects):
            kinds, kind = divmod(kinds, self.kinds)
            colour, shape = divmod(kind, len(SHAPES))
            scene.append({"row": cell // self.grid, "col": cell % self.grid,
                          "colour": list(COLOURS)[colour], "shape": SHAPES[shape]})
        return scene

    def rank(self, scene: Scene) -> int:
        if len(scene) != self.objects:
            raise ValueError(f"scene has {len(scene)} objects; this space holds {self.objects}")
        objs = sorted_scene(scene)
        cells = [o["row"] * self.grid + o["col"] for o in objs]
        if len(set(cells)) != len(cells):
            raise ValueError("two objects share a cell")
        subset = sum(math.comb(c, i + 1) for i, c in enumerate(cells))
        kinds = 0
        for o in reversed(objs):  # the first object is the least significant digit, as in `scene`
            kinds = kinds * self.kinds + list(COLOURS).index(o["colour"]) * len(SHAPES) + SHAPES.index(o["shape"])
        return self._walk(subset * self.kinds ** self.objects + kinds, inverse=True)

    def _walk(self, x: int, inverse: bool) -> int:
        if not 0 <= x < self.size:
            raise ValueError(f"{x} is outside [0, {self.size})")
        while True:  # cycle walking: re-apply the permutation until it lands inside the space
            x = self._feistel(x, inverse)
            if x < self.size:
                return x

    def _feistel(self, x: int, inverse: bool) -> int:
        mask = (1 << self._half) - 1
        left, right = x >> self._half, x & mask
        if not inverse:
            for r in range(_FEISTEL_ROUNDS):
                left, right = right, left ^ self._round(r, right)
        else:
            for r in reversed(range(_FEISTEL_ROUNDS)):
                left, right = right ^ self._round(r, left), left
        return (left << self._half) | right

    def _round(self, r: int, value: int) -> int:
        digest = hashlib.shake_256(self._key + f"|{r}|{value}".encode()).digest((self._half + 7) // 8)
        return int.from_bytes(digest, "big") & ((1 << self._half) - 1)


def _unrank_subset(rank: int, k: int) -> list[int]:
    """The k-subset of cells with this rank in the combinatorial number system, ascending."""
    cells = []
    for i in range(k, 0, -1):
        c = i - 1
        while math.comb(c + 1, i) <= rank:
            c += 1
        rank -= math.comb(c, i)
        cells.append(c)
    return cells[::-1]
