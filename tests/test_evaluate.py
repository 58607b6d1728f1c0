"""``critic.evaluate`` with scripted judges: metrics by hand, both orders, media errors, resume, dry run, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from critic import Judge, JudgeConfig
from critic.engines.base import GenerationRequest
from critic.engines.scripted import ScriptedEngine, ScriptedOutput
from critic.evaluate import EvalReport, compute_report, credit, evaluate, main, read_predictions
from critic.preferences import PreferencePair, read_preferences

DATA = Path(__file__).resolve().parent / "data"
VLRB = DATA / "benchmarks" / "vl_rewardbench_sample.json"
MM_RLHF = DATA / "benchmarks" / "mm_rlhf_rewardbench.jsonl"
_BLOCK = re.compile(r"<response_a>\n(.*)\n</response_a>", re.DOTALL)


def _always_a(request: GenerationRequest) -> str:
    return "Critique: the first one is better.\nVerdict: A"


def _oracle(pairs: list[PreferencePair]) -> Any:
    """A judge that knows the gold: it finds which response is shown as A and looks up whether that one won."""
    winners = {(p.response_a if p.preferred == "A" else p.response_b).strip() for p in pairs if p.preferred != "tie"}

    def script(request: GenerationRequest) -> ScriptedOutput:
        shown_a = _BLOCK.search(request.prompt.text).group(1).strip()
        label = "A" if shown_a in winners else "B"
        probs = {"A": 0.9, "B": 0.05, "tie": 0.05} if label == "A" else {"A": 0.05, "B": 0.9, "tie": 0.05}
        return ScriptedOutput(f"Critique: the right one is {label}.\nVerdict: {label}", probs)

    return script


@pytest.fixture(scope="module")
def vlrb_pairs(tmp_path_factory: pytest.TempPathFactory) -> list[PreferencePair]:
    """The real VL-RewardBench sample with placeholder images (the benchmark's images are not redistributed)."""
    images = tmp_path_factory.mktemp("vlrb")
    data = read_preferences(VLRB, images_dir=images)
    for pair in data.pairs:
        path = Path(pair.images[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 12), (10, 120, 200)).save(path)
    return data.pairs


def test_credit_rules() -> None:
    assert credit("A", "A") == 1 and credit("A", "B") == 0 and credit("A", "tie") == 0.5
    assert credit("tie", "tie") == 1 and credit("tie", "A") == 0


def test_always_first_judge_scores_exactly_half(vlrb_pairs: list[PreferencePair]) -> None:
    engine = ScriptedEngine(_always_a)
    report = evaluate(Judge(engine), vlrb_pairs, progress=False)
    # 36 of the 40 items prefer the first response: one order only would have scored 90%.
    assert report.accuracy == 0.5 and report.macro_accuracy == 0.5
    assert report.position_consistency == 0.0 and report.tie_rate == 1.0
    assert report.n_items == report.n_judged == 40 and report.errors == {} and report.parse_failures == 0
    assert report.judge_calls == 80 == len(engine.requests)
    assert report.ece == pytest.approx(0.5)  # confidence 0.5 in a verdict ('tie') that is never the gold


def test_perfect_judge_scores_everything(vlrb_pairs: list[PreferencePair]) -> None:
    report = evaluate(Judge(ScriptedEngine(_oracle(vlrb_pairs))), vlrb_pairs, progress=False)
    assert report.accuracy == 1.0 and report.position_consistency == 1.0 and report.tie_rate == 0.0
    assert report.per_category == {"general": {"accuracy": 1.0, "n": 12}, "hallucination": {"accuracy": 1.0, "n": 18},
                                   "reasoning": {"accuracy": 1.0, "n": 10}}
    assert report.ece == pytest.approx(0.1)  # always 90% sure, always right
    assert "acc_plus" not in report.to_dict()  # VL-RewardBench has no groups


def test_evaluate_forces_both_orders(vlrb_pairs: list[PreferencePair]) -> None:
    engine = ScriptedEngine(_always_a)
    report = evaluate(Judge(engine, JudgeConfig(swap=False)), vlrb_pairs[:3], progress=False)
    assert len(engine.requests) == 6 and report.position_consistency == 0.0


def _pair(pair_id: str, preferred: str = "A", group: str | None = None, category: str | None = None) -> PreferencePair:
    return PreferencePair(pair_id, "Q?", f"first {pair_id}", f"second {pair_id}", preferred,  # type: ignore[arg-type]
                          group=group, category=category)


def _record(pair_id: str, verdict: str | None, confidence: float = 1.0, consistent: bool = True,
            error: str | None = None) -> dict[str, Any]:
    if error is not None:
        return {"id": pair_id, "mode": "pairwise", "verdict": None, "probabilities": {}, "judgments": [],
                "error": {"kind": error, "message": "x", "raw": None}}
    rest = (1 - confidence) / 2
    probs = {label: (confidence if label == verdict else rest) for label in ("A", "B", "tie")}
    return {"id": pair_id, "mode": "pairwise", "verdict": verdict, "probabilities": probs, "consistent": consistent,
            "judgments": [{}, {}], "error": None}


def test_acc_plus_by_hand() -> None:
    pairs = [_pair("g1a", group="g1"), _pair("g1b", "B", group="g1"),      # both right -> group right
             _pair("g2a", group="g2"), _pair("g2b", group="g2"),           # one wrong -> group wrong
             _pair("g3a", group="g3"),                                       # tie verdict -> not right for ACC+
             _pair("g4a", group="g4"), _pair("g4b", group="g4"),           # one errored -> group left out
             _pair("solo")]                                                  # no group: not in ACC+
    records = [_record("g1a", "A"), _record("g1b", "B"), _record("g2a", "A"), _record("g2b", "B"),
               _record("g3a", "tie"), _record("g4a", "A"), _record("g4b", None, error="media"), _record("solo", "B")]
    report = compute_report(pairs, records)
    assert report.acc_plus == pytest.approx(1 / 3) and report.n_groups == 3
    assert report.accuracy == pytest.approx((1 + 1 + 1 + 0 + 0.5 + 1 + 0) / 7)
    assert report.errors == {"media": 1} and report.n_items == 8 and report.n_judged == 7
    assert report.judge_calls == 14
    assert report.to_dict()["acc_plus"] == pytest.approx(1 / 3)


def test_ece_and_categories_by_hand() -> None:
    pairs = [_pair("a", category="x"), _pair("b", category="x"), _pair("c", category="y"), _pair("d", category="y"),
             _pair("t", "tie", category="y")]
    records = [_record("a", "A", 0.95), _record("b", "B", 0.95, consistent=False), _record("c", "A", 0.65),
               _record("d", "A", 0.65), _record("t", "A", 0.25)]
    report = compute_report(pairs, records)
    # bin [0.9, 1): conf .95, accuracy .5 -> |.5 - .95| * 2/5;  bin [0.6, 0.7): conf .65, accuracy 1 -> .35 * 2/5;
    # bin [0.2, 0.3): conf .25, accuracy 0 (a gold tie answered 'A') -> .25 * 1/5
    assert report.ece == pytest.approx(0.45 * 2 / 5 + 0.35 * 2 / 5 + 0.25 / 5)
    assert [b["n"] for b in report.reliability] == [0, 0, 1, 0, 0, 0, 2, 0, 0, 2]
    assert report.per_category == {"x": {"accuracy": 0.5, "n": 2}, "y": {"accuracy": pytest.approx(2 / 3), "n": 3}}
    assert report.macro_accuracy == pytest.approx((0.5 + 2 / 3) / 2)
    assert report.accuracy == pytest.approx(3 / 5) and report.position_consistency == pytest.approx(4 / 5)
    assert compute_report(pairs, []).errors == {"missing": 5} and compute_report(pairs, []).accuracy is None


def test_missing_image_is_a_media_error_and_the_rest_is_judged(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    pairs = [PreferencePair(f"p{i}", "Q?", f"good {i}", f"bad {i}", "A", images=[str(tmp_path / "ok.png")])
             for i in range(4)]
    pairs[2].images = [str(tmp_path / "absent.png")]
    engine = ScriptedEngine(_oracle(pairs))
    report = evaluate(Judge(engine), pairs, progress=False)
    assert report.errors == {"media": 1} and report.n_judged == 3 and report.accuracy == 1.0
    assert len(engine.requests) == 6


def test_blind_shows_grey_images_of_the_same_size(tmp_path: Path) -> None:
    Image.new("RGB", (30, 20), (250, 0, 0)).save(tmp_path / "red.png")
    pairs = [PreferencePair(f"p{i}", "Q?", f"good {i}", f"bad {i}", "A", images=[str(tmp_path / "red.png")])
             for i in range(3)]
    pairs.append(PreferencePair("gone", "Q?", "good", "bad", "A", images=[str(tmp_path / "absent.png")]))
    seen = []

    def looks(request: GenerationRequest) -> str:
        image = request.prompt.images[0]
        seen.append((image.size, image.getextrema()))
        return _oracle(pairs)(request) if image.getpixel((0, 0)) == (250, 0, 0) else "Critique: blank.\nVerdict: tie"

    blind = evaluate(Judge(ScriptedEngine(looks)), pairs, blind=True, progress=False)
    assert blind.tie_rate == 1.0 and blind.accuracy == 0.5 and blind.errors == {"media": 1}
    assert set(seen) == {((30, 20), ((128, 128),) * 3)}
    assert evaluate(Judge(ScriptedEngine(looks)), pairs[:3], progress=False).accuracy == 1.0


def test_resume_after_a_kill_judges_only_the_rest(vlrb_pairs: list[PreferencePair], tmp_path: Path) -> None:
    predictions = tmp_path / "run.predictions.jsonl"
    full = evaluate(Judge(ScriptedEngine(_oracle(vlrb_pairs))), vlrb_pairs, predictions=predictions, progress=False)
    lines = predictions.read_text().splitlines(keepends=True)
    predictions.write_text("".join(lines[:15]) + lines[15][:40])  # killed while writing the 16th record
    engine = ScriptedEngine(_oracle(vlrb_pairs))
    resumed = evaluate(Judge(engine), vlrb_pairs, predictions=predictions, progress=False)
    assert len(engine.requests) == 2 * 25
    assert resumed == full and len(predictions.read_text().splitlines()) == 40
    again = ScriptedEngine(_oracle(vlrb_pairs))
    assert evaluate(Judge(again), vlrb_pairs, predictions=predictions, progress=False) == full
    assert again.requests == []


def test_engine_failures_are_retried_on_rerun(tmp_path: Path) -> None:
    pairs = [PreferencePair(f"p{i}", "Q?", f"good {i}", f"bad {i}", "A") for i in range(6)]

    def crashes_on_p3(request: GenerationRequest) -> ScriptedOutput:
        if "good 3" in request.prompt.text:
            raise ConnectionError("server went away")
        return _oracle(pairs)(request)

    predictions = tmp_path / "p.jsonl"
    first = evaluate(Judge(ScriptedEngine(crashes_on_p3)), pairs, predictions=predictions, chunk_size=2,
                     progress=False)
    assert first.errors == {"engine": 2} and first.n_judged == 4  # the crash failed its chunk (p2, p3) only
    engine = ScriptedEngine(_oracle(pairs))
    second = evaluate(Judge(engine), pairs, predictions=predictions, chunk_size=2, progress=False)
    assert len(engine.requests) == 4 and second.errors == {} and second.accuracy == 1.0
    assert sorted(read_predictions(predictions)) == [f"p{i}" for i in range(6)]


def test_dry_run_reports_bad_rows_and_missing_media(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "here.png")
    good = {"question": "Q", "response_a": "a", "response_b": "b", "preferred": "A", "category": "c"}
    lines = [json.dumps({**good, "id": "one", "image": "here.png"}),
             json.dumps({**good, "id": "two", "image": "nowhere/a.png"}),
             "{oops",
             json.dumps({**good, "id": "three", "preferred": "maybe"})]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert main(["--data", str(path), "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "2 pairs" in out and "per category: c 2" in out
    assert "missing media: 1 file(s) in 1 item(s)" in out and f"line 2 (two): {tmp_path / 'nowhere' / 'a.png'}" in out
    assert "malformed rows: 2" in out and "line 3: invalid JSON" in out and "line 4 (three): 'preferred'" in out
    assert main(["--data", str(DATA / "generic_sample.jsonl"), "--dry-run"]) == 0
    assert main(["--data", str(MM_RLHF), "--dry-run"]) == 1  # the published file's images are not here
    assert "missing media: 170 file(s)" in capsys.readouterr().out


def test_cli_writes_report_plot_and_predictions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pairs = read_preferences(DATA / "generic_sample.jsonl").pairs
    built = {}

    def fake_from_pretrained(cls: type, model: str, *, backend: str, config: JudgeConfig, **options: Any) -> Judge:
        built.update(model=model, backend=backend, options=options)
        return Judge(ScriptedEngine(_oracle(pairs)), config)

    monkeypatch.setattr(Judge, "from_pretrained", classmethod(fake_from_pretrained))
    output = tmp_path / "out" / "report.json"
    assert main(["--model", "m", "--data", str(DATA / "generic_sample.jsonl"), "--output", str(output),
                 "--critique-max-chars", "50", "--no-progress"]) == 0
    report = json.loads(output.read_text())
    assert {"accuracy", "macro_accuracy", "per_category", "position_consistency", "tie_rate", "parse_failures", "ece",
            "judge_calls", "n_items", "errors", "acc_plus"} <= set(report)
    # The oracle knows no winner of the gold tie (g3): its two orders disagree and average to a tie, which is right.
    assert report["accuracy"] == 1.0 and report["n_items"] == 4 and report["judge_calls"] == 8
    assert report["position_consistency"] == 0.75 and report["tie_rate"] == 0.25 and report["acc_plus"] == 1.0
    assert (tmp_path / "out" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(read_predictions(tmp_path / "out" / "report.predictions.jsonl")) == 4
    assert built["model"] == "m" and built["backend"] == "transformers"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == 1.0


def test_cli_usage_errors() -> None:
    with pytest.raises(SystemExit) as no_model:
        main(["--data", str(DATA / "generic_sample.jsonl"), "--output", "r.json"])
    assert no_model.value.code == 2
    with pytest.raises(SystemExit) as one_order:
        main(["--model", "m", "--data", str(DATA / "generic_sample.jsonl"), "--output", "r.json", "--no-swap"])
    assert one_order.value.code == 2
    assert main(["--data", "no/such/file.jsonl", "--dry-run"]) == 1


def test_report_is_a_dataclass_with_documented_keys() -> None:
    assert {"accuracy", "ece", "judge_calls"} <= set(EvalReport.__dataclass_fields__)
