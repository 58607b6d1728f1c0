"""Which synthetic preferences are flipped: the confusion model's similarities, its per-family counts and weighting,
and that it changes nothing but the flipped rows' labels (the uniform model's rows are checked in test_synthetic)."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import pytest

from training.synthetic import generate_pairs, main
from training.synthetic_noise import colour_similarity, confusion, noisy_rows, object_similarity, shape_similarity
from training.synthetic_questions import Claim, Question
from training.synthetic_scenes import COLOURS, SHAPES

LABEL_KEYS = ("preferred", "observation", "critique_a", "critique_b", "score_a", "score_b", "meta")


def test_similarities_are_one_for_the_same_value_and_order_the_palette_and_shapes_by_how_alike_they_look() -> None:
    assert all(colour_similarity(c, c) == 1.0 for c in COLOURS)
    assert all(shape_similarity(s, s) == 1.0 for s in SHAPES)
    assert colour_similarity("blue", "yellow") == 0.0  # the palette's most distant pair: (0,0,255) and (255,255,0)
    assert colour_similarity("orange", "yellow") > colour_similarity("orange", "blue")
    assert colour_similarity("red", "orange") == colour_similarity("orange", "red")
    # A square covers a circle in the same cell (IoU = circle / square area, about pi/4) far more than a triangle
    # covers a cross; every pair of different shapes lies strictly between 0 and 1.
    assert shape_similarity("circle", "square") == pytest.approx(math.pi / 4, abs=0.05)
    assert shape_similarity("square", "circle") == shape_similarity("circle", "square")
    assert shape_similarity("circle", "square") > shape_similarity("triangle", "cross")
    assert all(0 < shape_similarity(a, b) < 1 for a in SHAPES for b in SHAPES if a != b)
    assert object_similarity("red circle", "orange square") == pytest.approx(
        colour_similarity("red", "orange") * shape_similarity("circle", "square"))
    with pytest.raises(ValueError, match="unknown shape"):
        shape_similarity("circle", "star")


def _question(true: str, false: str, subject: tuple[str, str] | None = None) -> Question:
    return Question("?", Claim(true, true, true), Claim(false, false, false), subject)


def test_confusion_of_positions_counts_and_objects_follows_their_distance() -> None:
    scene = [{"row": 0, "col": 0, "colour": "yellow", "shape": "circle"},
             {"row": 3, "col": 3, "colour": "blue", "shape": "cross"}]
    near = _question("row 1, column 1", "row 1, column 2")
    far = _question("row 1, column 1", "row 4, column 4")
    assert confusion("position", near, scene, 4, 4) == 1.0 and confusion("position", far, scene, 4, 4) == 0.0
    assert confusion("position", _question("the first row, column 1", "the third row, column 1"), scene, 4, 4) == 0.8
    assert confusion("count", _question("2", "3"), scene, 4, 4) == 1.0
    assert confusion("count", _question("0", "4"), scene, 4, 4) == 0.0
    # "Is there an orange circle?" next to a yellow circle is easier to get wrong than next to a blue cross alone.
    lookalike = confusion("existence", _question("no", "yes", ("object", "orange circle")), scene, 4, 4)
    assert lookalike == pytest.approx(colour_similarity("orange", "yellow"))
    alone = confusion("existence", _question("no", "yes", ("object", "orange circle")), scene[1:], 4, 4)
    assert alone < lookalike
    # A present object is compared with the other objects, not with itself.
    assert confusion("existence", _question("yes", "no", ("object", "blue cross")), scene[1:], 4, 4) == 0.0
    assert confusion("hallucination", _question("yellow circle", "orange circle"), scene, 4, 4) == lookalike
    assert confusion("colour", _question("red", "orange"), scene, 4, 4) == colour_similarity("red", "orange")
    with pytest.raises(ValueError, match="no confusion defined for family 'size'"):
        confusion("size", near, scene, 4, 4)


def test_the_confusion_model_flips_each_familys_share_on_its_look_alike_pairs_and_changes_nothing_else() -> None:
    uniform = generate_pairs(900, 6, noise=0.3)
    rows = generate_pairs(900, 6, noise=0.3, noise_model="confusion")
    clean = generate_pairs(900, 6)
    by_family: dict[str, list[dict]] = defaultdict(list)
    for row, plain in zip(rows, clean):
        by_family[row["category"]].append(row)
        assert 0.0 <= row["meta"]["confusion"] <= 1.0
        # Same scene, question and responses as without noise; a clean row is the clean row plus its confusion.
        assert {k: v for k, v in row.items() if k not in LABEL_KEYS} == \
               {k: v for k, v in plain.items() if k not in LABEL_KEYS}
        if not row["meta"]["noisy"]:
            assert row == plain | {"meta": plain["meta"] | {"confusion": row["meta"]["confusion"]}}
        else:
            assert row["preferred"] != plain["preferred"]
    for family, members in by_family.items():
        flipped = [r for r in members if r["meta"]["noisy"]]
        assert len(flipped) == round(0.3 * len(members)), family
        # Half of a family's flips come from each preferred slot (within one), as the uniform model's do overall.
        sides = Counter(r["preferred"] for r in flipped)
        assert abs(sides["A"] - sides["B"]) <= 1, family
        mean = sum(r["meta"]["confusion"] for r in flipped) / len(flipped)
        rest = sum(r["meta"]["confusion"] for r in members if not r["meta"]["noisy"]) / (len(members) - len(flipped))
        # Shapes differ least (IoU 0.47 to 0.78), so their flips lean least: measured 0.64 against 0.60 on this seed.
        assert mean > rest + (0.03 if family == "shape" else 0.1), family
    # The uniform model's flips do not follow confusion; the confusion model's do, more so the sharper it is.
    def flipped_mean(sample: list[dict], confusions: list[float]) -> float:
        flips = [c for r, c in zip(sample, confusions) if r["meta"]["noisy"]]
        return sum(flips) / len(flips)

    conf = [r["meta"]["confusion"] for r in rows]
    sharp = generate_pairs(900, 6, noise=0.3, noise_model="confusion", noise_sharpness=6.0)
    flat = generate_pairs(900, 6, noise=0.3, noise_model="confusion", noise_sharpness=0.0)
    assert flipped_mean(uniform, conf) < flipped_mean(rows, conf) < flipped_mean(sharp, conf)
    assert abs(flipped_mean(flat, conf) - flipped_mean(uniform, conf)) < 0.05
    assert generate_pairs(900, 6, noise=0.3, noise_model="confusion") == rows  # deterministic


def test_noise_model_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="noise_model must be one of uniform, confusion"):
        generate_pairs(10, 0, noise=0.3, noise_model="hard")
    with pytest.raises(ValueError, match="sharpness must be >= 0"):
        generate_pairs(10, 0, noise=0.3, noise_model="confusion", noise_sharpness=-1.0)
    with pytest.raises(ValueError, match="one family and one confusion per row"):
        noisy_rows(["A", "B"], 0.5, 0, "confusion", ["colour", "colour"], [0.5])


def test_the_cli_writes_confusion_noise_and_counts_its_flips(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    # Three families of 10 rows: round(2.5) == 2 flips each, 6 in all, where round(0.25 * 30) would say 8.
    assert main(["--out", str(tmp_path), "--n", "30", "--seed", "1", "--noise", "0.25", "--noise-model", "confusion",
                 "--families", "colour,count,shape", "--no-progress"]) == 0
    assert "wrote 30 rows (6 noisy)" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert Counter(r["category"] for r in rows) == {"colour": 10, "count": 10, "shape": 10}
    assert sum(r["meta"]["noisy"] for r in rows) == 6 and all("confusion" in r["meta"] for r in rows)
