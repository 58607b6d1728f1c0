"""Judge assembly logic with scripted engines: swap-and-combine, probabilities, errors, modes."""

from __future__ import annotations

import pytest

from critic import Judge, JudgeConfig, JudgeItem
from critic.engines.base import Completion, GenerationRequest
from critic.engines.scripted import ScriptedEngine, ScriptedOutput

PAIR = JudgeItem(id="p", question="Which colour?", response_a="red answer", response_b="blue answer")


def _shown_first(request: GenerationRequest) -> str:
    text = request.prompt.text
    return "red" if text.index("red answer") < text.index("blue answer") else "blue"


def test_always_first_judge_is_inconsistent_and_ends_in_a_tie() -> None:
    engine = ScriptedEngine(lambda r: ScriptedOutput("Critique: first.\nVerdict: A", {"A": 0.9, "B": 0.05, "tie": 0.05}))
    [result] = Judge(engine).judge([PAIR])
    assert len(engine.requests) == 2 and engine.calls == 1  # both orders in one engine call
    assert result.consistent is False
    assert result.probabilities == pytest.approx({"A": 0.475, "B": 0.475, "tie": 0.05})
    assert result.verdict == "tie"
    assert [j.order for j in result.judgments] == ["AB", "BA"]


def test_judge_that_follows_content_is_consistent() -> None:
    def prefers_red(request: GenerationRequest) -> ScriptedOutput:
        label = "A" if _shown_first(request) == "red" else "B"
        probs = {"A": 0.8, "B": 0.1, "tie": 0.1} if label == "A" else {"A": 0.1, "B": 0.8, "tie": 0.1}
        return ScriptedOutput(f"Critique: red is right.\nVerdict: {label}", probs)

    [result] = Judge(ScriptedEngine(prefers_red)).judge([PAIR])
    assert result.consistent is True and result.verdict == "A"
    assert result.probabilities == pytest.approx({"A": 0.8, "B": 0.1, "tie": 0.1})
    swapped = JudgeItem(id="q", question="Which colour?", response_a="blue answer", response_b="red answer")
    [other] = Judge(ScriptedEngine(prefers_red)).judge([swapped])
    assert other.verdict == "B" and other.consistent is True


def test_engine_without_probabilities_gives_one_hot() -> None:
    [result] = Judge(ScriptedEngine(lambda r: "Critique: ok.\nScore: 7")).judge(
        [JudgeItem(question="Q", response="R")])
    assert result.score == 7 and result.expected_score == 7.0
    assert result.probabilities["7"] == 1.0 and sum(result.probabilities.values()) == 1.0


def test_unparseable_server_output_is_a_parse_error_with_raw_text() -> None:
    raw = "I think A is better, definitely A."
    results = Judge(ScriptedEngine(lambda r: raw)).judge([PAIR, JudgeItem(id="x", question="Q", response="R")])
    for result in results:
        assert result.error is not None and result.error.kind == "parse" and result.error.raw == raw
        assert result.verdict is None and result.probabilities == {}
        assert result.to_dict()["status"] == "error"


def test_engine_errors_are_per_item() -> None:
    def script(request: GenerationRequest) -> Completion | str:
        if "boom" in request.prompt.text:
            return Completion(error="server returned 503", error_kind="engine")
        return "Critique: fine.\nScore: 5"

    good, bad = Judge(ScriptedEngine(script)).judge(
        [JudgeItem(id="g", question="Q", response="R"), JudgeItem(id="b", question="Q", response="boom")])
    assert good.ok and good.score == 5
    assert bad.error.kind == "engine" and "503" in bad.error.message


def test_mode_option_rejects_other_items() -> None:
    judge = Judge(ScriptedEngine(lambda r: "Critique: x.\nScore: 5"), JudgeConfig(mode="pointwise"))
    point, pair = judge.judge([JudgeItem(question="Q", response="R"), PAIR])
    assert point.ok
    assert pair.error.kind == "input" and "pointwise" in pair.error.message


def test_to_dict_fields() -> None:
    engine = ScriptedEngine(lambda r: ScriptedOutput("Critique: c.\nVerdict: B", {"A": 0.2, "B": 0.7, "tie": 0.1}))
    data = Judge(engine, JudgeConfig(swap=False)).judge([PAIR])[0].to_dict()
    assert {"id", "critique", "verdict", "probabilities", "consistent", "judgments", "status"} <= set(data)
    assert "score" not in data and data["consistent"] is None and data["verdict"] == "B"
