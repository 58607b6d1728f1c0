"""Preference readers against the real published files (copies in tests/data/benchmarks), fixtures and bad rows."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from critic.preferences import (
    PreferencePair,
    detect_format,
    missing_media,
    read_preferences,
)

DATA = Path(__file__).resolve().parent / "data"
MM_RLHF = DATA / "benchmarks" / "mm_rlhf_rewardbench.jsonl"
VLRB = DATA / "benchmarks" / "vl_rewardbench_sample.json"


def test_mm_rlhf_rewardbench_real_file() -> None:
    data = read_preferences(MM_RLHF)
    assert data.format == "mm-rlhf" and data.rows == 170 and len(data.pairs) == 170 and data.problems == []
    assert data.categories == {"mcq": 42, "long": 37, "short": 34, "safety": 32, "video": 25}
    assert {p.preferred for p in data.pairs} == {"A"}  # chosen is A
    assert all(p.critique_a and p.critique_b for p in data.pairs)
    # Every pair of a prompt shares its id in the published file; ids are made unique, the original kept.
    assert len({p.id for p in data.pairs}) == 170
    first = data.pairs[0]
    assert first.id == "073712_6205145#1" and first.meta["source_id"] == "073712_6205145"
    assert first.group == "073712" and first.category == "mcq" and first.line == 1
    assert first.images == [str(MM_RLHF.parent / "mcq" / "073712.png")]
    groups = Counter(p.group for p in data.pairs)
    assert len(groups) == 46 and groups["cauldron/dvqa/images/dvqa_00100690.png"] == 6
    videos = [p for p in data.pairs if p.category == "video"]
    assert all(p.video is not None and p.images == [] for p in videos)
    raw = [json.loads(line) for line in MM_RLHF.read_text().splitlines()]
    assert [p.response_a for p in data.pairs] == [r["chosen"] for r in raw]


def test_vl_rewardbench_real_file() -> None:
    data = read_preferences(VLRB)
    raw = json.loads(VLRB.read_text())
    assert data.format == "vl-rewardbench" and len(data.pairs) == 40 and data.problems == []
    assert Counter(p.preferred for p in data.pairs) == {"A": 36, "B": 4}
    second = {r["id"] for r in raw if r["human_ranking"][0] > r["human_ranking"][1]}
    assert {p.id for p in data.pairs if p.preferred == "B"} == second and len(second) == 4
    assert data.categories == {"general": 12, "hallucination": 18, "reasoning": 10}
    by_id = {p.id: p for p in data.pairs}
    assert by_id["RLAIF-V-14"].category == "hallucination" and by_id["svit-complex_reasoning-876"].category == "general"
    assert by_id["mmmu_pro_test_Electronics_6"].category == "reasoning"
    # Published order is kept: response[0] is A.
    assert [(p.response_a, p.response_b) for p in data.pairs] == [tuple(r["response"]) for r in raw]
    assert set(data.pairs[0].meta) == {"rationale", "models", "judge", "query_source", "ground_truth"}
    assert data.pairs[0].images == [str(VLRB.parent / "images" / "hallucination_pair-1003.png")]
    # A JSON array's rows point at the line where each object starts.
    lines = VLRB.read_text().splitlines()
    for pair in data.pairs:
        assert lines[pair.line - 1].strip() == "{" and pair.id in lines[pair.line]


def test_vl_rewardbench_categories_and_ranking(tmp_path: Path) -> None:
    rows = [{"id": i, "query": "Q", "response": ["x", "y"], "image": "a.png", "human_ranking": r}
            for i, r in [("wildvision-battle-1", [0, 1]), ("Jailbreak-x", [1, 0]), ("RLHF-V-2", [1, 1]),
                         ("mathverse_9", [0, 2]), ("novelset_3", [0, 1])]]
    rows.append({"id": "bad-ranking", "query": "Q", "response": ["x", "y"], "human_ranking": [0]})
    rows.append({"id": "one-response", "query": "Q", "response": ["x"], "human_ranking": [0, 1]})
    path = tmp_path / "vl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = read_preferences(path, images_dir=tmp_path / "imgs")
    assert [(p.category, p.preferred) for p in data.pairs] == [
        ("general", "A"), ("general", "B"), ("hallucination", "tie"), ("reasoning", "A"), ("novelset", "A")]
    assert data.pairs[0].images == [str(tmp_path / "imgs" / "a.png")]
    assert [(q.line, q.id) for q in data.problems] == [(6, "bad-ranking"), (7, "one-response")]
    assert "human_ranking" in data.problems[0].message and "two strings" in data.problems[1].message


def test_mmrb_fixture() -> None:
    data = read_preferences(DATA / "mmrb_sample.jsonl")
    assert data.format == "mmrb" and len(data.pairs) == 6 and data.problems == []
    assert [p.preferred for p in data.pairs] == ["A", "B", "B", "A", "A", "B"]
    assert data.categories == {"general_correctness": 3, "safety": 1, "reasoning": 2}
    assert data.pairs[0].id == "mmrb-001" and data.pairs[0].meta == {"Meta": {"source": "hand-made"}}
    assert missing_media(data.pairs[0]) == []


def test_generic_fixture_every_field() -> None:
    data = read_preferences(DATA / "generic_sample.jsonl")
    assert data.format == "generic" and data.problems == []
    g1, g2, g3, g4 = data.pairs
    assert g1.images == [str(DATA / "images" / "red.png")] and g1.score_a == 9 and g1.score_b == 2
    assert g1.critique_b.startswith("This response") and g1.observation and g1.meta == {"generator": "hand-made"}
    assert (g1.category, g1.group) == ("colour", "colour-q")
    assert len(g2.images) == 2 and g2.preferred == "B" and g3.preferred == "tie"
    # chosen/rejected: chosen becomes A and is preferred, with its critique.
    assert (g4.response_a, g4.preferred, g4.critique_a) == ("A blue square.", "A", "This response is accurate.")
    override = read_preferences(DATA / "generic_sample.jsonl", images_dir="/elsewhere")
    assert override.pairs[0].images == ["/elsewhere/images/red.png"]


def test_pair_methods_round_trip(tmp_path: Path) -> None:
    pair = read_preferences(DATA / "generic_sample.jsonl").pairs[0]
    item = pair.to_item()
    assert (item.id, item.mode, item.response_a, item.images) == ("g1", "pairwise", "It is red.", pair.images)
    swapped = pair.swapped()
    assert (swapped.response_a, swapped.preferred, swapped.critique_a, swapped.score_a) == (
        "It is green.", "B", pair.critique_b, 2)
    assert swapped.swapped() == pair
    row = pair.to_row(relative_to=DATA)
    assert row["images"] == ["images/red.png"] and "line" not in row
    path = tmp_path / "roundtrip.jsonl"
    path.write_text(json.dumps(row) + "\n")
    again = read_preferences(path, images_dir=DATA).pairs[0]
    assert again == PreferencePair(**{**pair.__dict__, "line": 1})
    with pytest.raises(ValueError, match="in-memory"):
        PreferencePair("x", "Q", "a", "b", "A", images=[Image.new("RGB", (2, 2))]).to_row()


def test_bad_rows_become_problems_with_line_numbers(tmp_path: Path) -> None:
    good = {"id": "ok", "question": "Q", "response_a": "a", "response_b": "b", "preferred": "A"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": "no-b", "response_b": None}),
        "",
        json.dumps({**good, "id": "empty", "response_a": "   "}),
        json.dumps({**good, "id": "bad-pref", "preferred": "C"}),
        json.dumps({**good, "id": "typo", "questoin": "Q"}),
        json.dumps([1, 2]),
        json.dumps({**good, "id": "ok2", "preferred": "b"}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    data = read_preferences(path)
    assert data.format == "generic" and [p.id for p in data.pairs] == ["ok", "ok2"]
    assert data.pairs[1].preferred == "B" and data.pairs[1].line == 9
    assert [(q.line, q.id) for q in data.problems] == [(2, None), (3, "no-b"), (5, "empty"), (6, "bad-pref"),
                                                       (7, "typo"), (8, None)]
    messages = [q.message for q in data.problems]
    assert "invalid JSON" in messages[0] and "response_b" in messages[1] and "empty" in messages[2]
    assert "'preferred'" in messages[3] and "questoin" in messages[4] and "not an object" in messages[5]
    assert str(data.problems[1]).startswith("line 3 (no-b): ")


def test_broken_json_array_reports_the_line(tmp_path: Path) -> None:
    row = {"id": "a", "query": "Q", "response": ["x", "y"], "human_ranking": [0, 1]}
    path = tmp_path / "broken.json"
    path.write_text("[\n" + json.dumps(row) + ",\n" + json.dumps({**row, "id": "b"}) + ",\n{\"id\": \"c\", oops}\n]\n")
    data = read_preferences(path)
    assert [p.id for p in data.pairs] == ["a", "b"] and [p.line for p in data.pairs] == [2, 3]
    assert len(data.problems) == 1 and data.problems[0].line == 4 and "invalid JSON" in data.problems[0].message


def test_format_detection_and_unknown_columns(tmp_path: Path) -> None:
    assert detect_format({"id": 1, "prompt": "p", "chosen": "c", "rejected": "r"}) == "mm-rlhf"
    assert detect_format({"question": "q", "chosen": "c", "rejected": "r"}) == "generic"
    assert detect_format({"ID": 1, "Text": "t", "Output1": "a", "Output2": "b", "Better": "Output1"}) == "mmrb"
    assert detect_format({"query": "q", "response": ["a", "b"]}) == "vl-rewardbench"
    assert detect_format({"foo": 1}) is None
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"foo": 1}) + "\n")
    data = read_preferences(path)
    assert data.format == "unknown" and data.pairs == [] and "cannot tell the format" in data.problems[0].message
    with pytest.raises(ValueError, match="unknown format"):
        read_preferences(path, format="nope")
    with pytest.raises(FileNotFoundError):
        read_preferences(tmp_path / "absent.jsonl")
    # An explicit format applies its converter even when detection would fail.
    forced = read_preferences(DATA / "mmrb_sample.jsonl", format="generic")
    assert forced.pairs == [] and len(forced.problems) == 6


def test_missing_media_and_video_folders(tmp_path: Path) -> None:
    frames = tmp_path / "video" / "clip1"
    frames.mkdir(parents=True)
    for i in (2, 1, 3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(frames / f"{i:03d}.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "here.png")
    rows = [{"id": "v_1", "video": "video/clip1", "prompt": "P", "chosen": "c", "rejected": "r"},
            {"id": "i_1", "image": "here.png", "prompt": "P", "chosen": "c", "rejected": "r"},
            {"id": "i_2", "image": "gone/absent.png", "prompt": "P", "chosen": "c", "rejected": "r"}]
    path = tmp_path / "mm.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    video, present, absent = read_preferences(path).pairs
    assert video.category == "video" and present.category is None and absent.category == "gone"
    assert missing_media(video) == [] and missing_media(present) == []
    assert missing_media(absent) == [str(tmp_path / "gone" / "absent.png")]
    assert video.to_item().video == [str(frames / f"{i:03d}.jpg") for i in (1, 2, 3)]  # a folder of frames, sorted


def _rows_with_pil() -> list[dict]:
    image = Image.new("RGB", (10, 6), (0, 200, 0))
    return [{"id": "hallucination_1", "query": "Q?", "response": ["yes", "no"], "image": image,
             "human_ranking": [1, 0]},
            {"id": "mmmu_2", "query": "Q2?", "response": ["a", "b"], "image": {"bytes": b"png", "path": None},
             "human_ranking": [0, 1]}]


def test_rows_from_memory_keep_pil_images() -> None:
    data = read_preferences(_rows_with_pil())
    assert data.format == "vl-rewardbench" and data.source == "<list>"
    first, second = data.pairs
    assert isinstance(first.images[0], Image.Image) and first.preferred == "B" and first.line == 1
    assert second.images == [b"png"] and missing_media(first) == []


def test_generic_rows_with_none_filled_columns() -> None:
    # A datasets table has every column in every row, None where a row had no value.
    columns = dict.fromkeys(["id", "images", "image", "video", "question", "response_a", "response_b", "preferred",
                             "chosen", "rejected", "chosen_critique", "rejected_critique", "critique_a", "critique_b",
                             "observation", "score_a", "score_b", "category", "group", "meta"])
    rows = [{**columns, "id": "x", "question": "Q", "chosen": "c", "rejected": "r"},
            {**columns, "id": "y", "question": "Q", "response_a": "a", "response_b": "b", "preferred": "tie"}]
    data = read_preferences(rows)
    assert data.problems == [] and [(p.response_a, p.preferred) for p in data.pairs] == [("c", "A"), ("a", "tie")]


def test_hf_source_goes_through_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(name: str, split: str | None = None) -> object:
        calls.append((name, split))
        return _rows_with_pil() if split else {"train": [], "test": _rows_with_pil()}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert len(read_preferences("hf:org/bench:validation").pairs) == 2
    data = read_preferences("hf:org/bench")
    assert len(data.pairs) == 2 and data.source == "hf:org/bench"  # the 'test' split when none is named
    assert calls == [("org/bench", "validation"), ("org/bench", None)]


def test_hf_source_without_datasets_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(ImportError, match="pip install datasets"):
        read_preferences("hf:org/bench")


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="Hugging Face datasets is not installed")
def test_in_memory_hf_dataset() -> None:
    import datasets

    rows = [{"ID": f"m{i}", "Text": "Which is right?", "Image": Image.new("RGB", (8, 8), (i, i, i)),
             "Output1": "one", "Output2": "two", "Better": "Output1" if i % 2 else "Output2", "Category": "c"}
            for i in range(4)]
    dataset = datasets.Dataset.from_list(rows).cast_column("Image", datasets.Image())
    data = read_preferences(dataset)
    assert data.format == "mmrb" and [p.preferred for p in data.pairs] == ["B", "A", "B", "A"]
    assert all(isinstance(p.images[0], Image.Image) and p.images[0].size == (8, 8) for p in data.pairs)
