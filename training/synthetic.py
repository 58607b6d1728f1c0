"""A synthetic visual preference task that a small judge can learn from scratch on CPU.

Each row shows one drawn scene (a few coloured shapes on a token-aligned grid, see :mod:`training.synthetic_scenes`),
asks a question whose answer only the image decides, and gives two responses from the same template that differ in
one fact. Rows follow the project's generic preference schema (``pairs.jsonl``) with a position-independent
``observation`` (the fact the question needs), per-response critiques that state what a response says and judge it
("It says red. Wrong."), pointwise scores (10 right, 1 wrong) and, in ``meta``, the scene itself and its canonical
description for an image-description stage. A pairwise critique composes as
``"{observation} Response A: {critique_a} Response B: {critique_b}"``; critiques never name a position.

    python -m training.synthetic --out data/syn-train --n 20000 --seed 0
    python -m training.synthetic --out data/syn-heldout --n 500 --seed 1 --families colour,count --max-objects 1

Families (``category``): ``colour`` (of the one <shape>), ``shape`` (of the one <colour> object), ``count`` (of a
colour or shape, 0 to max-objects), ``position`` (row and column of the one <colour> <shape>), ``existence``
("Is there a <colour> <shape>?", yes or no, each half the time) and ``hallucination`` (one response names an object
that is not in the image). Wrong answers are drawn so that the right and the wrong value have the same distribution
(counts uniform over 0..max-objects, colours, shapes and cells uniform), so text alone does not tell them apart.

Guarantees: the same arguments give byte-identical ``pairs.jsonl`` and PNGs. The preferred position is balanced:
overall within one row, per family within two. Different seeds never share a scene: seed ``s`` samples only the
scenes it owns, about ``1/2**(s+1)`` of each space (see :mod:`training.synthetic_scenes`), so a held-out seed is
disjoint from every training seed. ``--noise F`` flips exactly ``round(F*n)`` preferences (Python's ``round``), half
from A-preferred and half from B-preferred rows so the overall balance stays within two, chosen by their own random
stream so that the other rows do not change; ``--noise-model confusion`` flips ``round(F*n_family)`` of each
family's rows, the look-alike pairs first, as a confused annotator would (:mod:`training.synthetic_noise`). A flipped
row reads as a consistent label from an annotator who misread the image: its observation states the wrong response's
fact, that response's critique says "Right.", the other's says "Wrong.", the scores swap, and ``meta.noisy`` is
true. ``--off-question F`` gives that share of the clean existence rows a wrong response about another object
("Yes, there is a blue square." to "Is there a green square?"), as a confused policy answers; text alone shows it is
wrong, so the template rows never have one. ``--lookup position`` gives position rows no leading fact: each
critique looks its claimed cell up ("It says row 4, column 1; that cell is empty. Wrong."), and the fact moves to
``meta.fact``.

In code: ``generate_pairs(n, seed, ...)`` returns the rows, ``write_dataset(out_dir, n, seed, ...)`` writes them with
their images, ``draw_scene(scene, grid, cell)`` and ``describe_scene(scene)`` render a row's ``meta.scene``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from training.synthetic_noise import DEFAULT_SHARPNESS, NOISE_MODELS, confusion, noisy_rows
from training.synthetic_questions import (
    FAMILIES,
    OFF_QUESTION_FAMILIES,
    ORDINALS,
    POSITION_WORDINGS,
    Claim,
    Question,
    article,
    asker,
    check_wording,
    near_miss_claim,
    off_question_claim,
    parse_cell,
    plural,
    scene_questions,
    where,
)
from training.synthetic_scenes import COLOURS, SHAPES, Scene, SceneSpace, describe_scene, draw_scene, sorted_scene

__all__ = ["FAMILIES", "LISTING_FAMILIES", "LOOKUP_FAMILIES", "OFF_QUESTION_FAMILIES", "ORDINALS", "POSITION_WORDINGS",
           "RIGHT_SCORE", "WRONG_SCORE", "check_listing", "check_lookup", "check_off_question_families",
           "check_wording", "describe_scene", "draw_scene", "generate_pairs", "main", "recorded_wording",
           "resolve_wording", "scene_questions", "where", "write_dataset"]

RIGHT_SCORE = 10
WRONG_SCORE = 1
# A family that cannot be asked about a sampled scene (no unique shape, no object with the wanted count, ...)
# draws another scene; this bounds the search so that an impossible request fails instead of looping.
MAX_TRIES = 10_000


CRITIQUE_STYLES = ("restate", "check", "compare")
LISTING_FAMILIES = ("count", "position")
LOOKUP_FAMILIES = ("position",)


def _family_names(value: Sequence[str] | str) -> tuple[str, ...]:
    """Family names given as a sequence or a comma-separated string."""
    if isinstance(value, str):
        return tuple(f.strip() for f in value.split(",") if f.strip())
    return tuple(value)


def _offered(value: Sequence[str] | str, offered: Sequence[str], what: str) -> tuple[str, ...]:
    """``value``'s family names, or ``ValueError`` naming those outside ``offered`` ("{what} offered for ...")."""
    names = _family_names(value)
    unknown = set(names) - set(offered)
    if unknown:
        raise ValueError(f"{what} offered for {', '.join(offered)} only, got {', '.join(sorted(unknown))}")
    return names


def check_off_question_families(families: Sequence[str] | str) -> tuple[str, ...]:
    """``families`` (names or a comma-separated string) as a tuple of :data:`OFF_QUESTION_FAMILIES` names; raises
    ``ValueError`` naming any other family."""
    return _offered(families, OFF_QUESTION_FAMILIES, "off-question answers are")


def check_listing(listing: Sequence[str] | str) -> tuple[str, ...]:
    """``listing`` (names or a comma-separated string) as a tuple of :data:`LISTING_FAMILIES` names; raises
    ``ValueError`` naming any other family."""
    return _offered(listing, LISTING_FAMILIES, "listing is")


def check_lookup(lookup: Sequence[str] | str, listing: Sequence[str] = ()) -> tuple[str, ...]:
    """``lookup`` (names or a comma-separated string) as a tuple of :data:`LOOKUP_FAMILIES` names; raises
    ``ValueError`` naming any other family, or one that is also listed (a lookup row states no fact to list for)."""
    lookup = _offered(lookup, LOOKUP_FAMILIES, "lookup is")
    both = set(lookup) & set(listing)
    if both:
        raise ValueError(f"{', '.join(sorted(both))} cannot be both listed and looked up: a lookup critique states no "
                         "fact for a listing to lead to")
    return lookup


def _lookup_critique(claim: Claim, right: bool, scene: Scene, name: str) -> str:
    """A position critique that looks the claimed cell up instead of comparing with a stated fact: "It says row 2,
    column 3; that cell has the red circle. Right." / "It says row 4, column 1; that cell is empty. Wrong." /
    "...; that cell has a blue square. Wrong." The hope: finding what is at a named cell might be easier than stating
    where a named object is, which the demo judge got exactly right for only about half of the position questions.
    Measured on it (README), it was not: the judge copied the asked object from the question into both lookups.
    A noisy row's critiques agree with its (wrong) label: the believed cell has the asked object, the true one is
    called empty."""
    if right:
        return f"It says {claim.gist}; that cell has the {name}. Right."
    cell = parse_cell(claim.gist)
    there = [o for o in scene if (o["row"], o["col"]) == cell and f"{o['colour']} {o['shape']}" != name]
    if there:
        return f"It says {claim.gist}; that cell has {article(there[0]['colour'] + ' ' + there[0]['shape'])}. Wrong."
    return f"It says {claim.gist}; that cell is empty. Wrong."


def _listing(question: Question, believed: Claim, scene: Scene, grid: int, rng: random.Random) -> str:
    """The objects that decide the believed fact, listed in reading order before it is stated: for count, every
    object of the asked colour or shape ("Squares: green, green, red." / "Orange objects: none."); for position, the
    believed row cell by cell ("Row 2: empty, red circle, empty, blue square."). Stating the count or column then
    copies from text instead of tallying visual tokens in one step: measured on the shipped judge, count critiques
    with the listing went from 60% to 80% in 800 continuation steps, plain ones to 62%. A noisy row's listing
    agrees with its (wrong) believed fact, so the listing's length or layout never tells the flip apart."""
    assert question.subject is not None
    kind, value = question.subject
    ordered = sorted_scene(scene)
    if kind == "object":
        row, col = parse_cell(believed.gist)
        cells = {o["col"]: f"{o['colour']} {o['shape']}" for o in ordered
                 if o["row"] == row and f"{o['colour']} {o['shape']}" != value}
        cells[col] = value
        head = f"Row {row + 1}:" if believed.gist.startswith("row ") else f"The {ORDINALS[row]} row:"
        return f"{head} " + ", ".join(cells.get(c, "empty") for c in range(grid)) + "."
    if kind == "colour":
        head, names, pool = f"{value.capitalize()} objects:", [o["shape"] for o in ordered if o["colour"] == value], \
            SHAPES
    else:
        head, names, pool = f"{plural(value).capitalize()}:", [o["colour"] for o in ordered if o["shape"] == value], \
            COLOURS
    wanted = int(believed.gist)
    while len(names) > wanted:
        names.pop(rng.randrange(len(names)))
    while len(names) < wanted:
        names.insert(rng.randrange(len(names) + 1), rng.choice(list(pool)))
    return f"{head} {', '.join(names) if names else 'none'}."


def compare_sentence(claim: str, fact: str, right: bool) -> str:
    """The ``compare`` style's one comparison: "It says red, the image shows blue. Wrong." (claim and fact in the
    same short form); :data:`COMPARE_PATTERN` reads it back."""
    return f"It says {claim}, the image shows {fact}. {'Right' if right else 'Wrong'}."


COMPARE_PATTERN = re.compile(r"Response ([AB]): It says (.+?), the image shows (.+?)\. (Right|Wrong)\.")
"""One response's :func:`compare_sentence` inside a critique (``training.sft_data``'s "Response A: ..." layout):
groups are the response's letter, the claim, the fact and the check."""


def _critique(claim: Claim, right: bool, style: str, family: str, believed: Claim) -> str:
    """A per-response critique.  ``check``: "It says red. Wrong." (the fact is stated once, in the observation).
    ``restate``: "It says red; the triangle is blue. Wrong." — the image fact is restated right next to the claim,
    so Right/Wrong compares two spans a few tokens apart instead of reaching back to the observation.
    ``compare``: "It says red, the image shows blue. Wrong." — the fact in the claim's own short form (for
    hallucination, the object that is there), so the two spans compared have the same shape."""
    verdict = "Right" if right else "Wrong"
    if claim.asked is not None:  # an off-question response: wrong whatever the image shows
        return f"It answers about {claim.gist}, not {claim.asked}. {verdict}."
    if style == "check":
        return f"It says {claim.gist}. {verdict}."
    if style == "compare":  # claim and fact side by side in the same short form: a two-span comparison
        return compare_sentence(claim.gist, believed.gist, right)
    if family == "hallucination":  # the fact that decides this claim: is the named object there (as the label believes)?
        fact = "there is one" if right else "there is none"
    else:
        fact = believed.observation[0].lower() + believed.observation[1:].rstrip(".")
    return f"It says {claim.gist}; {fact}. {verdict}."


def _check_args(n: int, seed: int, noise: float, families: Sequence[str] | str, grid: int, cell: int,
                min_objects: int, max_objects: int) -> tuple[str, ...]:
    """Validate the generator's arguments with messages that name the problem; returns the families as a tuple."""
    families = _family_names(families)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (it picks the share of scenes the seed owns), "
                         f"got {seed!r}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be a fraction in [0, 1], got {noise!r}")
    if not families:
        raise ValueError(f"give at least one family; known: {', '.join(FAMILIES)}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(FAMILIES)}")
    if len(set(families)) != len(families):
        raise ValueError(f"families repeat: {', '.join(families)}")
    if grid < 2:
        raise ValueError(f"grid must be at least 2 cells wide, got {grid}")
    if cell < 8:
        raise ValueError(f"cell must be at least 8 pixels for shapes to be told apart, got {cell}")
    if min_objects < 1:
        raise ValueError(f"min_objects must be at least 1, got {min_objects}")
    if min_objects > max_objects:
        raise ValueError(f"min_objects ({min_objects}) is larger than max_objects ({max_objects})")
    if max_objects > grid * grid:
        raise ValueError(f"max_objects ({max_objects}) exceeds the {grid * grid} cells of a {grid}x{grid} grid")
    for k in range(min_objects, max_objects + 1):
        space = SceneSpace(grid, k)
        if space.owned_count(seed) == 0:
            raise ValueError(f"seed {seed} owns no scene with {k} object(s) on a {grid}x{grid} grid: that space has "
                             f"{space.size} scenes, enough for seeds 0..{space.size.bit_length() - 1}; use a smaller "
                             f"seed or raise min_objects")
    return families


def _plan(n: int, families: tuple[str, ...], rng: random.Random) -> tuple[list[str], list[str]]:
    """Each row's family (as equal shares as n allows, shuffled) and the position of its right response.

    Positions are assigned in random A/B or B/A pairs along the rows sorted by family, so that A and B are balanced
    overall (within one) and within each family (within two).
    """
    fams = [families[i % len(families)] for i in range(n)]
    rng.shuffle(fams)
    order = sorted(range(n), key=lambda i: (families.index(fams[i]), i))
    positions = [""] * n
    for start in range(0, n, 2):
        pair = ("A", "B") if rng.random() < 0.5 else ("B", "A")
        for slot, i in zip(pair, order[start:start + 2]):
            positions[i] = slot
    return fams, positions


def _make_row(index: int, width: int, seed: int, family: str, position: str, noisy: bool, scene: Scene,
              question: Question, grid: int, cell: int, critique_style: str,
              listing: tuple[str, ...] = (), lookup: tuple[str, ...] = (),
              draw_seed: int | None = None) -> dict[str, Any]:
    a, b = (question.true, question.false) if position == "A" else (question.false, question.true)
    # The claim the row's label takes as the fact: the true one, or for a noisy row the false one.
    believed = question.false if noisy else question.true
    a_right = a is believed
    draws = seed if draw_seed is None else draw_seed
    # Rows of other draw seeds get other ids: replicates over one scene pool must not share pair ids.
    name = f"s{seed}-{index:0{width}d}" if draw_seed is None else f"s{seed}d{draw_seed}-{index:0{width}d}"
    scene = sorted_scene(scene)
    row = {
        "id": f"syn-{name}",
        "images": [f"images/{name}.png"],
        "question": question.text,
        "response_a": a.response,
        "response_b": b.response,
        "preferred": "A" if a_right else "B",
        "observation": believed.observation,
        "critique_a": _critique(a, a_right, critique_style, family, believed),
        "critique_b": _critique(b, not a_right, critique_style, family, believed),
        "score_a": RIGHT_SCORE if a_right else WRONG_SCORE,
        "score_b": WRONG_SCORE if a_right else RIGHT_SCORE,
        "category": family,
        "meta": {"scene": scene, "grid": grid, "cell": cell, "description": describe_scene(scene),
                 "noisy": noisy, "seed": seed, "critique_style": critique_style},
    }
    if draw_seed is not None:  # only then, so that the default rows stay byte-identical to earlier versions
        row["meta"]["draw_seed"] = draw_seed
    if family in listing and question.subject is not None:
        # Its own stream per row, so that listing some families changes no other row (nor the main stream).
        rng = random.Random(f"critic-synthetic-listing-{draws}-{index}")
        row["observation"] = f"{_listing(question, believed, scene, grid, rng)} {row['observation']}"
    if family in lookup and question.subject is not None:
        # No leading fact: each critique looks its own claim's cell up. The fact stays in meta for short answers.
        row["meta"]["fact"] = row.pop("observation")
        for key, claim, right in (("critique_a", a, a_right), ("critique_b", b, not a_right)):
            row[key] = _lookup_critique(claim, right, scene, question.subject[1])
    elif critique_style == "restate":  # the fact is in each critique; a leading observation would only repeat it
        row["meta"]["observation"] = row.pop("observation")
    return row


def generate_pairs(n: int, seed: int, noise: float = 0.0, families: Sequence[str] | str = FAMILIES, grid: int = 4,
                   cell: int = 28, min_objects: int = 1, max_objects: int = 4, critique_style: str = "restate",
                   listing: Sequence[str] | str = (), off_question: float = 0.0,
                   off_question_families: Sequence[str] | str = ("existence",), lookup: Sequence[str] | str = (),
                   position_wording: str = "numbers", near_miss: float = 0.0, noise_model: str = "uniform",
                   noise_sharpness: float = DEFAULT_SHARPNESS, progress: bool = False,
                   draw_seed: int | None = None) -> list[dict[str, Any]]:
    """``n`` preference rows for ``seed`` (schema in the module docstring); images are drawn by `write_dataset`.

    ``draw_seed``: seeds every draw (scenes among the ones ``seed`` owns, questions, positions, flips, the rows' own
    streams) instead of ``seed``, which then only picks the scenes; rows get ids ``syn-s<seed>d<draw_seed>-…`` and
    ``meta.draw_seed``. For replicates over one scene pool: a seed owns about ``1/2**(s+1)`` of each space, so
    training seed 5 alone owns 6 of the 384 single-object scenes on a 4x4 grid, seed 0 owns 192.

    ``families`` is a sequence of names or a comma-separated string; object counts are uniform over
    ``min_objects..max_objects``. ``listing`` (names or a comma-separated string, from :data:`LISTING_FAMILIES`):
    those families' observations open with the objects that decide them (see :func:`_listing`); the other rows and
    the random stream are unchanged. ``off_question``: the share of the ``off_question_families`` rows (from
    :data:`OFF_QUESTION_FAMILIES`; never a noisy row) whose wrong response is about another object
    (:func:`training.synthetic_questions.off_question_claim`; ``meta.off_question`` is true), drawn from each row's
    own stream, so the other rows do not change. ``lookup`` (from :data:`LOOKUP_FAMILIES`): those families' rows
    have no leading observation and each critique looks its claim's cell up (:func:`_lookup_critique`); the fact
    moves to ``meta.fact``. ``position_wording`` (:data:`POSITION_WORDINGS`, see :func:`where`): how position claims
    name a cell; rows written with ``ordinal`` record it in ``meta.position_wording``. ``near_miss``: the share of
    position rows (never a noisy one) whose wrong cell is another object's or another of the right row or column
    (:func:`training.synthetic_questions.near_miss_claim`; ``meta.near_miss`` is true), from each row's own stream.
    ``noise_model`` (:data:`training.synthetic_noise.NOISE_MODELS`): which rows ``noise`` flips, ``uniform`` at
    random or ``confusion`` on the rows whose two claims look alike (:func:`training.synthetic_noise.noisy_rows`,
    weights ``confusion ** noise_sharpness``; rows made with it record ``meta.confusion``).
    Raises ``ValueError`` for bad arguments.
    """
    if noise_model not in NOISE_MODELS:
        raise ValueError(f"noise_model must be one of {', '.join(NOISE_MODELS)}, got {noise_model!r}")
    families = _check_args(n, seed, noise, families, grid, cell, min_objects, max_objects)
    listing = check_listing(listing)
    lookup = check_lookup(lookup, listing)
    wording = check_wording(position_wording, grid)
    if not 0.0 <= off_question <= 1.0:
        raise ValueError(f"off_question must be a fraction in [0, 1], got {off_question!r}")
    off_families = check_off_question_families(off_question_families)
    if not 0.0 <= near_miss <= 1.0:
        raise ValueError(f"near_miss must be a fraction in [0, 1], got {near_miss!r}")
    if critique_style not in CRITIQUE_STYLES:
        raise ValueError(f"critique_style must be one of {', '.join(CRITIQUE_STYLES)}, got {critique_style!r}")
    if draw_seed is not None and (not isinstance(draw_seed, int) or draw_seed < 0):
        raise ValueError(f"draw_seed must be a non-negative integer or None, got {draw_seed!r}")
    draws = seed if draw_seed is None else draw_seed
    rng = random.Random(draws)
    spaces = [SceneSpace(grid, k) for k in range(min_objects, max_objects + 1)]
    fams, positions = _plan(n, families, rng)
    width = max(6, len(str(n - 1)))
    # Every scene and question first (the main stream alone), so that the confusion model can pick the rows to
    # flip from their questions; the uniform model's choice does not depend on them.
    drawn: list[tuple[Scene, Question]] = []
    for i in tqdm(range(n), desc="scenes", unit="row", disable=not progress, file=sys.stderr):
        ask = asker(fams[i], wording)
        target = rng.random()
        for _ in range(MAX_TRIES):
            scene = rng.choice(spaces).sample(rng, seed)
            question = ask(scene, rng, target, grid, max_objects)
            if question is not None:
                break
        else:
            raise RuntimeError(f"found no scene owned by seed {seed} for a {fams[i]!r} question in {MAX_TRIES} "
                               f"tries (grid {grid}, {min_objects}..{max_objects} objects); try a smaller seed or "
                               f"other object counts")
        drawn.append((scene, question))
    confusions = [confusion(fams[i], question, scene, grid, max_objects) for i, (scene, question) in
                  enumerate(drawn)] if noise_model == "confusion" else None
    noisy = noisy_rows(positions, noise, draws, noise_model, fams, confusions, noise_sharpness)
    rows = []
    for i, (scene, question) in enumerate(drawn):
        off = False
        if off_question > 0 and fams[i] in off_families and i not in noisy:
            own = random.Random(f"critic-synthetic-off-question-{draws}-{i}")
            if own.random() < off_question:
                question, off = off_question_claim(question, own, fams[i]), True
        near = False
        if near_miss > 0 and fams[i] == "position" and i not in noisy:
            own = random.Random(f"critic-synthetic-near-miss-{draws}-{i}")
            if own.random() < near_miss:
                question, near = near_miss_claim(question, scene, own, grid, wording), True
        row = _make_row(i, width, seed, fams[i], positions[i], i in noisy, scene, question, grid, cell,
                        critique_style, listing, lookup, draw_seed)
        if off:
            row["meta"]["off_question"] = True
        if near:
            row["meta"]["near_miss"] = True
        if confusions is not None:
            row["meta"]["confusion"] = round(confusions[i], 4)
        if wording != "numbers":  # only then, so that the default rows stay byte-identical to earlier versions
            row["meta"]["position_wording"] = wording
        rows.append(row)
    return rows


def write_dataset(out_dir: str | Path, n: int, seed: int, noise: float = 0.0,
                  families: Sequence[str] | str = FAMILIES, grid: int = 4, cell: int = 28, min_objects: int = 1,
                  max_objects: int = 4, critique_style: str = "restate", listing: Sequence[str] | str = (),
                  off_question: float = 0.0, off_question_families: Sequence[str] | str = ("existence",),
                  lookup: Sequence[str] | str = (), position_wording: str = "numbers", near_miss: float = 0.0,
                  noise_model: str = "uniform", noise_sharpness: float = DEFAULT_SHARPNESS,
                  progress: bool = False, draw_seed: int | None = None) -> Path:
    """Generate rows as `generate_pairs` does and write ``out_dir/pairs.jsonl`` and ``out_dir/images/*.png``.

    Returns the path of ``pairs.jsonl``; image paths in the rows are relative to ``out_dir``.
    """
    rows = generate_pairs(n, seed, noise=noise, families=families, grid=grid, cell=cell, min_objects=min_objects,
                          max_objects=max_objects, critique_style=critique_style, listing=listing,
                          off_question=off_question, off_question_families=off_question_families, lookup=lookup,
                          position_wording=position_wording, near_miss=near_miss, noise_model=noise_model,
                          noise_sharpness=noise_sharpness, progress=progress, draw_seed=draw_seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for row in tqdm(rows, desc="images", unit="img", disable=not progress, file=sys.stderr):
        # PNG encoding with fixed settings and no metadata is byte-deterministic for the same Pillow/zlib.
        draw_scene(row["meta"]["scene"], grid, cell).save(out / row["images"][0], format="PNG")
    path = out / "pairs.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


BUILD_REPORTS = ("demo_report.json", "policy_report.json")
"""The build reports whose ``recipe`` records a model's ``position_wording``: a demo judge's and a scaling-demo
policy's."""


def recorded_wording(model: str | Path) -> str:
    """The position wording a model was trained on, from its folder's build report (:data:`BUILD_REPORTS`);
    "numbers" for any other model (a Hub id, a folder without a report, a report from before the option), since
    that is the task's default."""
    for name in BUILD_REPORTS:
        path = Path(model) / name
        if path.is_file():
            recipe = json.loads(path.read_text(encoding="utf-8")).get("recipe", {})
            return check_wording(recipe.get("position_wording", "numbers"), 4)
    return "numbers"


def resolve_wording(requested: str, *models: str | Path) -> str:
    """``requested`` (:data:`POSITION_WORDINGS`), or for "auto" the wording ``models`` were trained on. Raises
    ``ValueError`` for "auto" when they disagree (a judge built on "the second row" and a policy that answers "row
    2" make a task neither was built for; name the wording to measure that on purpose)."""
    if requested != "auto":
        return check_wording(requested, 4)
    recorded = {str(m): recorded_wording(m) for m in models}
    if len(set(recorded.values())) > 1:
        raise ValueError(f"the models were trained on different position wordings {recorded}; pass "
                         f"--position-wording to choose one")
    return next(iter(recorded.values()), "numbers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic",
        description="Write a synthetic visual preference dataset (pairs.jsonl + PNG scenes) for training a judge.")
    parser.add_argument("--out", required=True, type=Path, help="output folder (pairs.jsonl and images/)")
    parser.add_argument("--n", required=True, type=int, help="number of rows")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed; different seeds never share a scene (seed s owns ~1/2**(s+1) of the scenes)")
    parser.add_argument("--draw-seed", type=int, default=None,
                        help="seed of the draws (scenes among --seed's, questions, flips) for replicates over the "
                             "same scenes; default: --seed")
    parser.add_argument("--noise", type=float, default=0.0, help="fraction of preferences to flip (default 0)")
    parser.add_argument("--noise-model", default="uniform", choices=NOISE_MODELS,
                        help="which preferences --noise flips: uniform (at random; default) or confusion (each "
                             "family's look-alike pairs first, as a confused annotator would: orange for yellow, the "
                             "next cell)")
    parser.add_argument("--noise-sharpness", type=float, default=DEFAULT_SHARPNESS,
                        help=f"confusion model: flip weights are confusion ** this (default "
                             f"{DEFAULT_SHARPNESS:g}; 0 is uniform within each family)")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated question families (default: {','.join(FAMILIES)})")
    parser.add_argument("--grid", type=int, default=4, help="cells per side (default 4)")
    parser.add_argument("--cell", type=int, default=28,
                        help="pixels per cell (default 28: one Qwen2-VL visual token per cell)")
    parser.add_argument("--min-objects", type=int, default=1, help="fewest objects per scene (default 1)")
    parser.add_argument("--max-objects", type=int, default=4, help="most objects per scene (default 4)")
    parser.add_argument("--critique-style", default="restate", choices=CRITIQUE_STYLES,
                        help="restate: 'It says red; the triangle is blue. Wrong.' (default); "
                             "check: an observation, then 'It says red. Wrong.'")
    parser.add_argument("--listing", default="",
                        help=f"comma-separated families ({','.join(LISTING_FAMILIES)}) whose observation first lists "
                             "the objects that decide it: 'Squares: green, red. There are 2 squares.'")
    parser.add_argument("--off-question", type=float, default=0.0,
                        help="share of the --off-question-families rows whose wrong response is about another "
                             "object ('Is there a green square?' - 'Yes, there is a blue square.'; default 0)")
    parser.add_argument("--off-question-families", default="existence",
                        help=f"comma-separated families ({','.join(OFF_QUESTION_FAMILIES)}) that --off-question applies "
                             "to (default existence); count: 'How many crosses are there?' - 'There is 1 triangle.'")
    parser.add_argument("--lookup", default="",
                        help=f"comma-separated families ({','.join(LOOKUP_FAMILIES)}) whose critiques look each "
                             "claimed cell up instead of stating the fact first: 'It says row 2, column 3; that cell "
                             "is empty. Wrong.'")
    parser.add_argument("--position-wording", default="numbers", choices=POSITION_WORDINGS,
                        help="how position claims name a cell: numbers 'row 2, column 3' (default); ordinal 'the "
                             "second row, column 3' (rows and columns in different words)")
    parser.add_argument("--near-miss", type=float, default=0.0,
                        help="share of position rows whose wrong cell is another object's or another cell of the "
                             "right row or column, as a confused policy answers (default 0: any other cell)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        path = write_dataset(args.out, args.n, args.seed, noise=args.noise, families=args.families, grid=args.grid,
                             cell=args.cell, min_objects=args.min_objects, max_objects=args.max_objects,
                             critique_style=args.critique_style, listing=args.listing,
                             off_question=args.off_question, off_question_families=args.off_question_families,
                             lookup=args.lookup, position_wording=args.position_wording, near_miss=args.near_miss,
                             noise_model=args.noise_model, noise_sharpness=args.noise_sharpness,
                             progress=not args.no_progress, draw_seed=args.draw_seed)
    except ValueError as exc:
        parser.error(str(exc))
    with path.open(encoding="utf-8") as f:
        noisy = sum(json.loads(line)["meta"]["noisy"] for line in f)
    print(f"wrote {args.n} rows ({noisy} noisy) to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
