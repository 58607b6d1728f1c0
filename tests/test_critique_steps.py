"""``training.critique_steps``: fact and check of compare-style critiques, by hand, and the command on a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from critic.preferences import PreferencePair
from training.critique_steps import judgment_steps, main, step_breakdown
from training.synthetic import COMPARE_PATTERN, compare_sentence


def _critique(first: tuple[str, str, bool], second: tuple[str, str, bool]) -> str:
    return (f"The square is red. Response A: {compare_sentence(*first)} "
            f"Response B: {compare_sentence(*second)}")


def test_compare_sentence_reads_back() -> None:
    text = _critique(("the first row, column 2", "the first row, column 2", True), ("red", "blue", False))
    assert COMPARE_PATTERN.findall(text) == [("A", "the first row, column 2", "the first row, column 2", "Right"),
                                             ("B", "red", "blue", "Wrong")]


def test_judgment_steps_by_hand() -> None:
    good = _critique(("red", "red", True), ("blue", "red", False))
    assert judgment_steps(good, "A") == {"fact": True, "check": True}
    # the fact for the preferred response (shown as B) is not its claim: the image was read otherwise
    assert judgment_steps(good, "B") == {"fact": False, "check": True}
    # right fact, broken comparison: "It says red, the image shows red. Wrong."
    broken = _critique(("red", "red", False), ("blue", "red", True))
    assert judgment_steps(broken, "A") == {"fact": True, "check": False}
    assert judgment_steps("Response A: It answers about a circle, not a square. Wrong. Response B: ok", "A") is None


def test_step_breakdown_counts_orders_and_skips() -> None:
    pairs = [PreferencePair(id="p1", question="What colour is the square?", response_a="It is red.",
                            response_b="It is blue.", preferred="A", category="colour"),
             PreferencePair(id="p2", question="What colour is the square?", response_a="It is blue.",
                            response_b="It is red.", preferred="B", category="colour"),
             PreferencePair(id="p3", question="?", response_a="x", response_b="y", preferred="A", category="shape")]
    records = {
        # AB: red is shown first and read right; BA: red is shown second, read right, and the check is broken
        "p1": {"status": "ok", "verdict": "A", "judgments": [
            {"order": "AB", "label": "A", "critique": _critique(("red", "red", True), ("blue", "red", False))},
            {"order": "BA", "label": "A", "critique": _critique(("blue", "red", True), ("red", "red", False))}]},
        # the preferred (red) is B in the caller's order: in BA it is shown as A
        "p2": {"status": "ok", "verdict": "A", "judgments": [
            {"order": "AB", "label": "B", "critique": _critique(("blue", "blue", True), ("red", "blue", False))},
            {"order": "BA", "label": "B", "critique": _critique(("red", "red", True), ("blue", "red", False))}]},
        "p3": {"status": "error"},
    }
    report = step_breakdown(pairs, records)
    colour = report["families"]["colour"]
    assert report["skipped"] == 1 and colour["pairs"] == 2
    assert colour["accuracy"] == 0.5
    assert colour["fact"] == 0.75  # p2 AB read blue for the preferred red
    assert colour["check"] == 0.75  # only p1 BA says Right for unequal spans (p2 AB is a wrong fact, checked right)
    assert colour["second"] == 0.5 and colour["parsed"] == 1.0
    assert report["families"]["all"] == colour


def test_command_writes_report_and_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"id": "p1", "question": "What colour is the square?", "response_a": "It is red.",
                                "response_b": "It is blue.", "preferred": "A", "category": "colour"}) + "\n")
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text(json.dumps({"id": "p1", "status": "ok", "verdict": "A", "judgments": [
        {"order": "AB", "label": "A", "critique": _critique(("red", "red", True), ("blue", "red", False))}]}) + "\n")
    out = tmp_path / "steps.json"
    assert main(["--data", str(data), "--predictions", str(predictions), "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["families"]["colour"] == {"pairs": 1, "accuracy": 1.0, "fact": 1.0, "check": 1.0, "second": 0.0,
                                            "parsed": 1.0}
    assert out.with_suffix(".png").stat().st_size > 0
    assert "colour" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--data", str(data), "--predictions", str(tmp_path / "missing.jsonl"), "--output", str(out)])
