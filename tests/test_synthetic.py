"""The synthetic preference task: determinism, seed disjointness, answerability from scene and pixels, balance, noise.

Answers are re-derived here from `meta.scene` and from the drawn pixels with the test's own parsers and probes,
not with the generator's code, so a generator that mislabels, misdraws or leaks the answer through text fails.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from training.synthetic import FAMILIES, describe_scene, draw_scene, generate_pairs, main, where, write_dataset
from training.synthetic_questions import parse_cell
from training.synthetic_scenes import BACKGROUND, COLOURS, SHAPES, SceneSpace, scene_key

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows_seed0() -> list[dict]:
    return generate_pairs(600, 0)


def _png(row: dict) -> bytes:
    buf = io.BytesIO()
    draw_scene(row["meta"]["scene"], row["meta"]["grid"], row["meta"]["cell"]).save(buf, format="PNG")
    return buf.getvalue()


def _scene_from_pixels(image, grid: int, cell: int) -> list[dict]:
    """Read a scene back from an image: colour from the cell centre, shape from probe points inside the object box."""
    by_rgb = {rgb: name for name, rgb in COLOURS.items()}
    margin = max(1, cell // 10)
    lo, hi = margin, cell - 1 - margin
    size = hi - lo
    scene = []
    for r in range(grid):
        for c in range(grid):
            def filled(x: float, y: float) -> bool:
                return image.getpixel((c * cell + round(x), r * cell + round(y))) != BACKGROUND

            ring = [(0, i) for i in range(cell)] + [(cell - 1, i) for i in range(cell)] + \
                   [(i, 0) for i in range(cell)] + [(i, cell - 1) for i in range(cell)]
            assert not any(filled(x, y) for x, y in ring), f"cell {r},{c} bleeds into its neighbours"
            centre = image.getpixel((c * cell + cell // 2, r * cell + cell // 2))
            if centre == BACKGROUND:
                assert not any(filled(x, y) for x in range(cell) for y in range(cell))
                continue
            if filled(lo + 1, lo + 1):  # top-left corner of the box: only a square reaches it
                shape = "square"
            elif filled(lo + 1, hi - 1):  # bottom-left corner: the triangle's base
                shape = "triangle"
            elif filled(lo + 0.2 * size, lo + 0.2 * size):  # on the diagonal, inside a circle, outside a cross's arms
                shape = "circle"
            else:
                shape = "cross"
            scene.append({"row": r, "col": c, "colour": by_rgb[centre], "shape": shape})
    return scene


def _claim(family: str, text: str) -> str:
    """The fact a response or an observation states, as a comparable string."""
    patterns = {
        "colour": r"(?:It|The \w+) is (\w+)\.",
        "shape": r"(?:It|The \w+ object) is an? (\w+)\.",
        "position": r"(?:It|The \w+ \w+) is in (row \d+, column \d+)\.",
        "count": r"There (?:is|are) (\d+) ",
        "existence": r"(?:Yes, |No, )?There is (no )?",
        "hallucination": r"There is an? (\w+ \w+)",
    }
    m = re.match(patterns[family], text, flags=re.IGNORECASE)
    assert m, f"{family}: cannot read {text!r}"
    if family == "existence":
        return "no" if m.group(1) else "yes"
    return m.group(1)


def _truth(row: dict) -> str:
    """The right answer to the row's question, derived from meta.scene."""
    scene, q = row["meta"]["scene"], row["question"]
    family = row["category"]
    if family == "colour":
        [obj] = [o for o in scene if o["shape"] == re.fullmatch(r"What colour is the (\w+)\?", q).group(1)]
        return obj["colour"]
    if family == "shape":
        [obj] = [o for o in scene if o["colour"] == re.fullmatch(r"What shape is the (\w+) object\?", q).group(1)]
        return obj["shape"]
    if family == "position":
        colour, shape = re.fullmatch(r"Where is the (\w+) (\w+)\?", q).groups()
        [obj] = [o for o in scene if (o["colour"], o["shape"]) == (colour, shape)]
        return f"row {obj['row'] + 1}, column {obj['col'] + 1}"
    if family == "count":
        m = re.fullmatch(r"How many (\w+) objects are there\?", q)
        if m:
            return str(sum(o["colour"] == m.group(1) for o in scene))
        noun = re.fullmatch(r"How many (\w+) are there\?", q).group(1)
        return str(sum(noun in (o["shape"] + "s", o["shape"] + "es") for o in scene))
    if family == "existence":
        colour, shape = re.fullmatch(r"Is there an? (\w+) (\w+)\?", q).groups()
        return "yes" if any((o["colour"], o["shape"]) == (colour, shape) for o in scene) else "no"
    assert q == "Name one object in the image."
    present = {f"{o['colour']} {o['shape']}" for o in scene}
    [real] = [_claim(family, row[k]) for k in ("response_a", "response_b") if _claim(family, row[k]) in present]
    return real


def _check_row(row: dict) -> None:
    """Everything a row says agrees with itself; the preferred response is right unless the row is noisy."""
    family = row["category"]
    a, b = _claim(family, row["response_a"]), _claim(family, row["response_b"])
    truth = _truth(row)
    assert a != b and truth in (a, b), row
    right = "A" if a == truth else "B"
    assert row["preferred"] == (("B" if right == "A" else "A") if row["meta"]["noisy"] else right), row
    pref, other = ("a", "b") if row["preferred"] == "A" else ("b", "a")
    believed = _claim(family, row[f"response_{pref}"])
    restate = row["meta"]["critique_style"] == "restate"
    observation = row["meta"]["observation"] if restate else row["observation"]
    assert ("observation" in row) is not restate  # restated critiques carry the fact; no leading observation
    assert _claim(family, observation) == believed, row  # the observation states what the label believes
    assert row[f"critique_{pref}"].endswith("Right.") and row[f"critique_{other}"].endswith("Wrong."), row
    for side in "ab":
        pattern = r"It says (.+?); (.+)\. (Right|Wrong)\." if restate else r"It says (.+)\. (Right|Wrong)\."
        match = re.fullmatch(pattern, row[f"critique_{side}"])
        assert match.group(1).lower() in row[f"response_{side}"].lower()
        if restate and family != "hallucination":  # the restated fact is the believed fact, whichever side
            assert match.group(2) == observation[0].lower() + observation[1:-1]
        elif restate:
            named_right = (side == pref)
            assert match.group(2) == ("there is one" if named_right else "there is none")
    assert (row[f"score_{pref}"], row[f"score_{other}"]) == (10, 1)


def test_every_row_answerable_from_scene_and_pixels(rows_seed0: list[dict]) -> None:
    assert {r["category"] for r in rows_seed0} == set(FAMILIES)
    for row in rows_seed0:
        meta = row["meta"]
        assert not meta["noisy"]
        _check_row(row)
        image = draw_scene(meta["scene"], meta["grid"], meta["cell"])
        assert image.size == (meta["grid"] * meta["cell"],) * 2
        assert _scene_from_pixels(image, meta["grid"], meta["cell"]) == meta["scene"]
        described = [{"row": int(r) - 1, "col": int(c) - 1, "colour": col, "shape": s} for r, c, col, s in
                     re.findall(r"Row (\d+), column (\d+): (\w+) (\w+)\.", meta["description"])]
        assert described == meta["scene"] and meta["description"] == describe_scene(meta["scene"])


def test_other_grids_and_cells_stay_token_aligned() -> None:
    for row in generate_pairs(60, 3, grid=3, cell=32, min_objects=2, max_objects=5):
        _check_row(row)
        image = draw_scene(row["meta"]["scene"], 3, 32)
        assert image.size == (96, 96) and _scene_from_pixels(image, 3, 32) == row["meta"]["scene"]
        assert 2 <= len(row["meta"]["scene"]) <= 5


def test_critiques_short_and_position_free(rows_seed0: list[dict]) -> None:
    for row in rows_seed0:
        for side in "ab":
            # capital A/B only: "a triangle" is not a position
            assert not re.search(r"\b[AB]\b", row[f"critique_{side}"])
            assert not re.search(r"response|first|second", row[f"critique_{side}"], re.IGNORECASE)
        lead = f"{row['observation']} " if "observation" in row else ""
        composed = f"{lead}Response A: {row['critique_a']} Response B: {row['critique_b']}"
        assert len(composed) <= 200, composed  # the demo judge's critique budget


def test_text_alone_does_not_tell_right_from_wrong() -> None:
    # A text-only judge that learns, for each family and pair of stated values, which value tends to be right (e.g.
    # "the smaller count") must stay near chance in every family: only the image may decide.
    rows = generate_pairs(6000, 2)
    fit, held = rows[:3000], rows[3000:]
    right, seen = Counter(), Counter()

    def values(row: dict) -> tuple[str, str]:
        return _claim(row["category"], row["response_a"]), _claim(row["category"], row["response_b"])

    for row in fit:
        a, b = values(row)
        pair = (row["category"], frozenset((a, b)))
        seen[pair] += 1
        right[pair, a if row["preferred"] == "A" else b] += 1
    hits, total = Counter(), Counter()
    for row in held:
        a, b = values(row)
        pair = (row["category"], frozenset((a, b)))
        guess = "A" if right[pair, a] >= right[pair, b] else "B"
        hits[row["category"]] += guess == row["preferred"]
        total[row["category"]] += 1
    for family in FAMILIES:
        assert hits[family] / total[family] < 0.6, (family, hits[family], total[family])


def test_preferred_position_balanced(rows_seed0: list[dict]) -> None:
    counts = Counter(r["preferred"] for r in rows_seed0)
    assert abs(counts["A"] - counts["B"]) <= 1
    for family in FAMILIES:
        fam = Counter(r["preferred"] for r in rows_seed0 if r["category"] == family)
        assert sum(fam.values()) == 100 and abs(fam["A"] - fam["B"]) <= 2, (family, fam)
    for n in (601, 1001):  # noise takes its flips half from each side, so the balance survives it
        counts = Counter(r["preferred"] for r in generate_pairs(n, 4, noise=0.3))
        assert abs(counts["A"] - counts["B"]) <= 2


def test_deterministic_bytes(tmp_path: Path) -> None:
    kwargs = dict(noise=0.2, families="colour,position,existence", max_objects=3)
    first = write_dataset(tmp_path / "one", 40, 7, **kwargs).parent
    second = write_dataset(tmp_path / "two", 40, 7, **kwargs).parent
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 41 and files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    assert (first / "pairs.jsonl").read_bytes() != write_dataset(tmp_path / "three", 40, 8, **kwargs).read_bytes()


def test_seeds_share_no_scene_or_image() -> None:
    rows = {seed: generate_pairs(500, seed) for seed in (0, 1)}
    keys = {seed: {scene_key(r["meta"]["scene"]) for r in rs} for seed, rs in rows.items()}
    images = {seed: {hashlib.sha256(_png(r)).hexdigest() for r in rs} for seed, rs in rows.items()}
    assert len(keys[0]) > 400 and not keys[0] & keys[1]
    assert not images[0] & images[1]
    for seed, rs in rows.items():  # every scene is one its seed owns, by the space's inverse permutation
        for r in rs:
            scene = r["meta"]["scene"]
            assert SceneSpace.owner(SceneSpace(4, len(scene)).rank(scene)) == seed


def test_partition_is_exact_on_a_whole_space() -> None:
    space = SceneSpace(4, 1)
    scenes = [space.scene(rank) for rank in range(space.size)]
    assert len({scene_key(s) for s in scenes}) == space.size == 16 * len(COLOURS) * len(SHAPES)
    assert all(space.rank(s) == rank for rank, s in enumerate(scenes))
    owners = Counter(SceneSpace.owner(rank) for rank in range(space.size))
    assert owners == {s: space.owned_count(s) for s in range(9)} and owners[0] == 192 and owners[1] == 96
    # Sampling single-object scenes for seed 1 reaches all of its 96 scenes and nothing else.
    sampled = {scene_key(r["meta"]["scene"]) for r in generate_pairs(2000, 1, max_objects=1)}
    assert sampled == {scene_key(s) for rank, s in enumerate(scenes) if SceneSpace.owner(rank) == 1}
    two = SceneSpace(5, 3)
    for rank in range(0, two.size, two.size // 500):
        assert two.rank(two.scene(rank)) == rank


def test_a_draw_seed_draws_other_rows_from_the_owners_scenes_only() -> None:
    owner = {scene_key(s) for rank, s in enumerate(SceneSpace(4, 1).scene(r) for r in range(384))
             if SceneSpace.owner(rank) == 0}
    own = generate_pairs(600, 0, noise=0.3, max_objects=1)
    replicate = generate_pairs(600, 0, noise=0.3, max_objects=1, draw_seed=5)
    assert replicate == generate_pairs(600, 0, noise=0.3, max_objects=1, draw_seed=5)  # deterministic
    assert generate_pairs(600, 0, noise=0.3, max_objects=1, draw_seed=None) == own  # None: the seed draws
    drawn = {scene_key(r["meta"]["scene"]) for r in replicate}
    # Seed 0's pool, not seed 5's 6 scenes: well over a hundred of its 192 in 600 rows.
    assert drawn <= owner and len(drawn) > 150
    assert [r["meta"]["scene"] for r in replicate] != [r["meta"]["scene"] for r in own]
    assert {i for i, r in enumerate(replicate) if r["meta"]["noisy"]} != \
        {i for i, r in enumerate(own) if r["meta"]["noisy"]}
    assert sum(r["meta"]["noisy"] for r in replicate) == 180
    assert replicate[7]["id"] == "syn-s0d5-000007" and replicate[7]["meta"]["draw_seed"] == 5
    assert replicate[7]["meta"]["seed"] == 0 and "draw_seed" not in own[7]["meta"]
    assert not {r["id"] for r in replicate} & {r["id"] for r in own}
    for row in replicate:
        _check_row(row)


def _flip(critique: str) -> str:
    return critique[:-len("Right.")] + ("Wrong." if critique.endswith("Right.") else "Right.")


def test_noise_flips_exactly_and_consistently() -> None:
    clean = generate_pairs(201, 5, critique_style="check")
    for noise in (0.15, 0.5, 1.0):
        noisy = generate_pairs(201, 5, noise=noise, critique_style="check")
        flipped = [i for i, r in enumerate(noisy) if r["meta"]["noisy"]]
        assert len(flipped) == round(noise * 201)
        for i, (c, r) in enumerate(zip(clean, noisy)):
            _check_row(r)
            if i not in flipped:
                assert r == c
                continue
            assert r["preferred"] != c["preferred"] and r["observation"] != c["observation"]
            # Same responses, same quotes, verdict words swapped.
            assert [_flip(r[f"critique_{x}"]) for x in "ab"] == [c[f"critique_{x}"] for x in "ab"]
            assert (r["score_a"], r["score_b"]) == (c["score_b"], c["score_a"])
            assert {k: v for k, v in r.items() if k not in ("preferred", "observation", "critique_a", "critique_b",
                                                            "score_a", "score_b", "meta")} == \
                   {k: v for k, v in c.items() if k not in ("preferred", "observation", "critique_a", "critique_b",
                                                            "score_a", "score_b", "meta")}
    for row in generate_pairs(201, 5, noise=0.5):  # restated critiques of noisy rows are consistent too
        _check_row(row)
    assert generate_pairs(3, 0, noise=0.5)[0]["meta"]["seed"] == 0
    assert sum(r["meta"]["noisy"] for r in generate_pairs(3, 0, noise=0.5)) == 2  # round(1.5) == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(noise=1.5), r"noise must be a fraction in \[0, 1\]"),
    (dict(noise=-0.1), r"noise must be a fraction"),
    (dict(families=["colour", "colr"]), r"unknown family 'colr'; known: colour, count"),
    (dict(families=""), r"at least one family"),
    (dict(max_objects=17), r"max_objects \(17\) exceeds the 16 cells of a 4x4 grid"),
    (dict(min_objects=3, max_objects=2), r"min_objects \(3\) is larger than max_objects \(2\)"),
    (dict(min_objects=0), r"min_objects must be at least 1"),
    (dict(seed=-1), r"seed must be a non-negative integer"),
    (dict(draw_seed=-2), r"draw_seed must be a non-negative integer or None"),
    (dict(seed=9, max_objects=1), r"seed 9 owns no scene with 1 object\(s\) on a 4x4 grid: .* seeds 0\.\.8"),
    (dict(grid=1, max_objects=1), r"grid must be at least 2"),
    (dict(cell=4), r"cell must be at least 8 pixels"),
    (dict(n=0), r"n must be a positive integer"),
])
def test_bad_arguments_explain_themselves(kwargs: dict, message: str) -> None:
    args = dict(n=10, seed=0) | kwargs
    with pytest.raises(ValueError, match=message):
        generate_pairs(**args)


def test_cli_writes_dataset_like_the_library(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    env = dict(os.environ, PYTHONHASHSEED="123")  # another process and hash seed must still give the same bytes
    proc = subprocess.run([sys.executable, "-m", "training.synthetic", "--out", str(out), "--n", "30", "--seed", "2",
                           "--noise", "0.1", "--families", "count,hallucination", "--max-objects", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 30 rows (3 noisy)" in proc.stdout
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and {r["category"] for r in rows} == {"count", "hallucination"}
    assert all((out / r["images"][0]).is_file() for r in rows)
    lib = write_dataset(tmp_path / "lib", 30, 2, noise=0.1, families=["count", "hallucination"], max_objects=2)
    assert (out / "pairs.jsonl").read_bytes() == lib.read_bytes()
    assert all((out / r["images"][0]).read_bytes() == (lib.parent / r["images"][0]).read_bytes() for r in rows)

    assert main(["--out", str(tmp_path / "m"), "--n", "4", "--no-progress"]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "bad"), "--n", "4", "--families", "colour,size"])
    assert exc.value.code == 2 and "unknown family 'size'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_compare_critiques_put_the_believed_fact_next_to_each_claim_in_the_same_form(noise: float) -> None:
    for row in generate_pairs(120, 3, noise=noise, critique_style="compare"):
        pref = "a" if row["preferred"] == "A" else "b"
        shown = {}
        for side in "ab":
            match = re.fullmatch(r"It says (.+), the image shows (.+)\. (Right|Wrong)\.", row[f"critique_{side}"])
            assert match, row[f"critique_{side}"]
            claim, fact, verdict = match.groups()
            assert claim.lower() in row[f"response_{side}"].lower()
            assert (verdict == "Right") == (claim == fact) == (side == pref), row
            shown[side] = fact
        assert shown["a"] == shown["b"]  # one believed fact, stated the same way for both responses
        assert "observation" in row  # the fact sentence stays at the top, as in the check style


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_listing_enumerates_what_decides_the_believed_fact_and_changes_nothing_else(noise: float) -> None:
    plain = generate_pairs(240, 4, noise=noise, critique_style="compare")
    listed = generate_pairs(240, 4, noise=noise, critique_style="compare", listing="count,position")
    seen = Counter()
    for row, base in zip(listed, plain):
        if row["category"] not in ("count", "position"):
            assert row == base
            continue
        assert {k: v for k, v in row.items() if k != "observation"} == \
               {k: v for k, v in base.items() if k != "observation"}
        listing, fact = row["observation"][: -len(base["observation"]) - 1], base["observation"]
        assert row["observation"] == f"{listing} {fact}"
        scene = row["meta"]["scene"]
        believed = row[f"response_{row['preferred'].lower()}"]  # the fact the label takes as true
        if row["category"] == "count":
            head, items = re.fullmatch(r"(\w+(?: objects)?): (.+)\.", listing).groups()
            names = [] if items == "none" else items.split(", ")
            assert len(names) == int(re.search(r"\d+", believed).group())  # agrees with the believed count
            if not row["meta"]["noisy"]:  # and, for a clean row, with the scene in reading order
                if head.endswith(" objects"):
                    colour = head.split()[0].lower()
                    truth = [o["shape"] for o in sorted(scene, key=lambda o: (o["row"], o["col"]))
                             if o["colour"] == colour]
                else:
                    shape = "cross" if head == "Crosses" else head.lower()[:-1]
                    truth = [o["colour"] for o in sorted(scene, key=lambda o: (o["row"], o["col"]))
                             if o["shape"] == shape]
                assert names == truth, (listing, scene)
        else:
            name = re.fullmatch(r"Where is the (\w+ \w+)\?", row["question"]).group(1)
            r, c = map(int, re.search(r"row (\d+), column (\d+)", believed).groups())
            cells = re.fullmatch(rf"Row {r}: (.+)\.", listing).group(1).split(", ")
            assert len(cells) == row["meta"]["grid"] and cells[c - 1] == name and cells.count(name) == 1
            others = {o["col"] + 1: f"{o['colour']} {o['shape']}" for o in scene
                      if o["row"] + 1 == r and f"{o['colour']} {o['shape']}" != name}
            for k, cell in enumerate(cells, start=1):
                assert cell == (name if k == c else others.get(k, "empty"))
        seen[(row["category"], row["meta"]["noisy"])] += 1
    assert seen[("count", False)] and seen[("position", False)]
    assert (seen[("count", True)] > 0 and seen[("position", True)] > 0) == (noise > 0)
    with pytest.raises(ValueError, match="listing is offered for count, position only"):
        generate_pairs(4, 0, listing="colour")


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_lookup_critiques_say_what_each_claimed_cell_holds_and_change_nothing_else(noise: float) -> None:
    plain = generate_pairs(240, 4, noise=noise, critique_style="compare", listing="count")
    looked = generate_pairs(240, 4, noise=noise, critique_style="compare", listing="count", lookup="position")
    seen = Counter()
    for row, base in zip(looked, plain):
        if row["category"] != "position":
            assert row == base
            continue
        changed = {"observation", "critique_a", "critique_b", "meta"}
        assert {k: v for k, v in row.items() if k not in changed} == {k: v for k, v in base.items() if k not in changed}
        assert "observation" not in row and row["meta"] == {**base["meta"], "fact": base["observation"]}
        name = re.fullmatch(r"Where is the (\w+ \w+)\?", row["question"]).group(1)
        held = {(o["row"] + 1, o["col"] + 1): f"{o['colour']} {o['shape']}" for o in row["meta"]["scene"]}
        for side in "ab":
            match = re.fullmatch(r"It says row (\d), column (\d); that cell (?:has (?:the|an?) (\w+ \w+)|is empty)\. "
                                 r"(Right|Wrong)\.", row[f"critique_{side}"])
            assert match, row[f"critique_{side}"]
            r, c, there, verdict = match.groups()
            assert f"row {r}, column {c}" in row[f"response_{side}"]
            assert (verdict == "Right") == (side == row["preferred"].lower()) == (there == name)
            if not row["meta"]["noisy"]:  # a clean row's lookups are what the scene holds
                assert there == held.get((int(r), int(c)))
            elif verdict == "Wrong":  # a noisy row calls the object's true cell empty, consistently with its label
                assert there is None and held.get((int(r), int(c))) == name
        seen[row["meta"]["noisy"]] += 1
        seen["occupied wrong cell"] += any(re.search(r"that cell has an? .+ Wrong", row[f"critique_{side}"])
                                           for side in "ab")
    assert seen[False] and bool(seen[True]) == (noise > 0) and seen["occupied wrong cell"]
    with pytest.raises(ValueError, match="lookup is offered for position only"):
        generate_pairs(4, 0, lookup="count")
    with pytest.raises(ValueError, match="cannot be both listed and looked up"):
        generate_pairs(4, 0, listing="position", lookup="position")


def test_ordinal_wording_changes_only_how_position_claims_name_the_cell() -> None:
    from training.synthetic import ORDINALS, where

    numbers = generate_pairs(240, 4, noise=0.2, critique_style="compare", listing="count,position")
    ordinal = generate_pairs(240, 4, noise=0.2, critique_style="compare", listing="count,position",
                             position_wording="ordinal")

    def renamed(text: str) -> str:  # the ordinal row back into numbers
        text = re.sub(r"the (\w+) row, column (\d)", lambda m: f"row {ORDINALS.index(m.group(1)) + 1}, column "
                      f"{m.group(2)}", text)
        return re.sub(r"The (\w+) row:", lambda m: f"Row {ORDINALS.index(m.group(1)) + 1}:", text)

    positions = 0
    for row, base in zip(ordinal, numbers):
        assert row["meta"].pop("position_wording") == "ordinal"
        if row["category"] != "position":
            assert row == base
            continue
        positions += 1
        assert json.loads(renamed(json.dumps(row))) == base
        assert re.search(r"It is in the (first|second|third|fourth) row, column [1-4]\.", row["response_a"])
    assert positions > 20
    assert where((1, 2)) == "row 2, column 3" and where((1, 2), "ordinal") == "the second row, column 3"
    with pytest.raises(ValueError, match="position wording must be one of numbers, ordinal"):
        generate_pairs(4, 0, position_wording="letters")
    with pytest.raises(ValueError, match="at most 10 rows"):
        generate_pairs(4, 0, grid=11, position_wording="ordinal")


def test_a_models_position_wording_comes_from_its_build_report(tmp_path: Path) -> None:
    from training.synthetic import recorded_wording, resolve_wording

    judge, policy, plain = tmp_path / "judge", tmp_path / "policy", tmp_path / "plain"
    for folder in (judge, policy, plain):
        folder.mkdir()
    (judge / "demo_report.json").write_text(json.dumps({"recipe": {"position_wording": "ordinal"}}))
    (policy / "policy_report.json").write_text(json.dumps({"recipe": {"steps": 3}}))  # from before the option
    assert recorded_wording(judge) == "ordinal" and recorded_wording(policy) == "numbers"
    assert recorded_wording(plain) == "numbers" and recorded_wording("org/hub-model") == "numbers"
    assert resolve_wording("auto", judge) == "ordinal" and resolve_wording("auto") == "numbers"
    assert resolve_wording("auto", policy, plain) == "numbers"
    assert resolve_wording("numbers", judge, policy) == "numbers"  # named on purpose: no check
    with pytest.raises(ValueError, match="different position wordings"):
        resolve_wording("auto", judge, policy)
    with pytest.raises(ValueError, match="position wording must be one of"):
        resolve_wording("letters", judge)


@pytest.mark.parametrize("style", ["compare", "restate"])
def test_off_question_pairs_replace_only_the_wrong_existence_response_with_another_object(style: str) -> None:
    plain = generate_pairs(300, 5, noise=0.2, critique_style=style)
    mixed = generate_pairs(300, 5, noise=0.2, critique_style=style, off_question=0.6)
    off = 0
    for row, base in zip(mixed, plain):
        if not row["meta"].get("off_question"):
            assert row == base
            continue
        off += 1
        assert row["category"] == "existence" and not row["meta"]["noisy"]
        right, wrong = row["preferred"].lower(), "b" if row["preferred"] == "A" else "a"
        # The right response, its critique, the label and the fact are the template row's.
        for key in ("question", "preferred", f"response_{right}", f"critique_{right}", "images"):
            assert row[key] == base[key]
        asked = re.fullmatch(r"Is there an? (\w+) (\w+)\?", row["question"]).groups()
        named = re.fullmatch(r"(?:Yes, there is an?|No, there is no) (\w+) (\w+)\.", row[f"response_{wrong}"]).groups()
        # Another object: exactly one of colour and shape changed, so the response is about a different object.
        assert (named[0] == asked[0]) != (named[1] == asked[1]), (asked, named)
        assert named[0] in COLOURS and named[1] in SHAPES
        assert row[f"critique_{wrong}"] == (f"It answers about {'an' if named[0][0] in 'aeiou' else 'a'} "
                                            f"{' '.join(named)}, not {'an' if asked[0][0] in 'aeiou' else 'a'} "
                                            f"{' '.join(asked)}. Wrong.")
    existence = sum(r["category"] == "existence" and not r["meta"]["noisy"] for r in plain)
    assert 0.4 * existence < off < 0.8 * existence  # about the asked share of clean existence rows
    with pytest.raises(ValueError, match="off_question must be a fraction"):
        generate_pairs(4, 0, off_question=1.5)


@pytest.mark.parametrize("wording", ["numbers", "ordinal"])
def test_near_miss_pairs_move_only_the_wrong_position_claim_to_another_objects_cell_or_its_row_or_column(
        wording: str) -> None:
    plain = generate_pairs(400, 7, noise=0.2, critique_style="check", position_wording=wording)
    mixed = generate_pairs(400, 7, noise=0.2, critique_style="check", position_wording=wording, near_miss=0.7)
    moved, kinds = 0, set()
    for row, base in zip(mixed, plain):
        if not row["meta"].get("near_miss"):
            assert row == base
            continue
        moved += 1
        assert row["category"] == "position" and not row["meta"]["noisy"]
        right, wrong = row["preferred"].lower(), "b" if row["preferred"] == "A" else "a"
        for key in ("question", "preferred", f"response_{right}", f"critique_{right}", "observation", "images"):
            assert row[key] == base[key]
        here, claimed = (parse_cell(re.fullmatch(r"It is in (.+)\.", row[f"response_{x}"]).group(1))
                         for x in (right, wrong))
        occupied = {(o["row"], o["col"]) for o in row["meta"]["scene"]} - {here}
        in_line = (claimed[0] == here[0]) != (claimed[1] == here[1])
        assert claimed != here and (claimed in occupied or in_line), (here, claimed, occupied)
        kinds.add("object" if claimed in occupied else "line")
        assert where(claimed, wording) in row[f"critique_{wrong}"]  # the critique checks the moved claim
    clean = sum(r["category"] == "position" and not r["meta"]["noisy"] for r in plain)
    assert 0.5 * clean < moved < 0.9 * clean and kinds == {"object", "line"}
    with pytest.raises(ValueError, match="near_miss must be a fraction"):
        generate_pairs(4, 0, near_miss=-0.5)


def test_count_off_question_pairs_count_another_object_and_leave_existence_rows_as_before() -> None:
    existence_only = generate_pairs(300, 5, noise=0.2, critique_style="compare", off_question=0.6)
    both = generate_pairs(300, 5, noise=0.2, critique_style="compare", off_question=0.6,
                          off_question_families="existence,count")
    counted, numbers = 0, set()
    for row, base in zip(both, existence_only):
        if row["category"] != "count" or not row["meta"].get("off_question"):
            assert row == base  # existence off-question rows, and every other row, are unchanged
            continue
        counted += 1
        right, wrong = row["preferred"].lower(), "b" if row["preferred"] == "A" else "a"
        for key in ("question", "preferred", f"response_{right}", f"critique_{right}", "observation"):
            assert row[key] == base[key]
        asked = re.fullmatch(r"How many (\w+(?: objects)?) are there\?", row["question"]).group(1)
        k, named = re.fullmatch(r"There (?:is|are) (\d) (\w+(?: objects?)?)\.", row[f"response_{wrong}"]).groups()
        right_k, _ = re.fullmatch(r"There (?:is|are) (\d) (.+)\.", row[f"response_{right}"]).groups()
        plural_named = named if k != "1" else named + ("es" if named.endswith("ss") else "s")
        assert plural_named != asked and asked.endswith(" objects") == plural_named.endswith(" objects")
        assert row[f"critique_{wrong}"] == f"It answers about {plural_named}, not {asked}. Wrong."
        assert not row["meta"]["noisy"]
        numbers.add(k == right_k)  # the number alone must not give the answer away
    clean_counts = sum(r["category"] == "count" and not r["meta"]["noisy"] for r in both)
    assert 0.4 * clean_counts < counted < 0.8 * clean_counts and numbers == {True, False}
    with pytest.raises(ValueError, match="off-question answers are offered for existence, count only"):
        generate_pairs(4, 0, off_question=0.5, off_question_families="colour")
