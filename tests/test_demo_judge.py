"""The shipped demo judge (``critic/demo_judge``): it loads, judges held-out pairs by the image, and ``critic.demo``
runs with it and without it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from critic.core import Judge
from critic.demo_judge import DEMO_JUDGE_DIR, demo_judge_dir
from critic.evaluate import evaluate
from critic.preferences import read_preferences

HELDOUT = Path(__file__).resolve().parent.parent / "examples" / "heldout" / "pairs.jsonl"
SEEN_AT_LEAST = 0.9  # measured 0.975 (blind 0.450) on these 120 pairs (run 18); run 17 (numbers wording): 0.942


@pytest.fixture(scope="session")
def shipped_judge() -> Judge:
    return Judge.from_pretrained(str(demo_judge_dir()), device="cpu")


def test_the_shipped_weights_are_small_and_come_with_their_report() -> None:
    weights = DEMO_JUDGE_DIR / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 20 * 2**20
    report = json.loads((DEMO_JUDGE_DIR / "demo_report.json").read_text())
    assert report["parse_failures"] == 0 and report["heldout_seed"] != report["recipe"]["train_seed"]


@pytest.mark.slow
def test_the_shipped_judge_judges_held_out_pairs_by_the_image(shipped_judge: Judge) -> None:
    # examples/heldout: 120 pairs from the held-out scene seed, never trained on. The thresholds sit a few points
    # under what the shipped weights measure there (README), so a change that breaks how the judge is prompted or
    # decoded fails here; the image-blanked run shows the accuracy comes from the image.
    pairs = read_preferences(HELDOUT).pairs
    seen = evaluate(shipped_judge, pairs, chunk_size=64, progress=False)
    blind = evaluate(shipped_judge, pairs, blind=True, chunk_size=64, progress=False)
    assert seen.parse_failures == 0 and not seen.errors
    assert seen.accuracy >= SEEN_AT_LEAST and blind.accuracy <= 0.6, (seen.accuracy, blind.accuracy)


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_serves_the_shipped_judge_as_well_as_transformers() -> None:
    # The same weights through the vLLM engine on CPU (run 13 measured: 0.908, consistency 0.933; transformers 0.900).
    judge = Judge.from_pretrained(str(demo_judge_dir()), backend="vllm")
    try:
        report = evaluate(judge, read_preferences(HELDOUT).pairs, chunk_size=64, progress=False)
    finally:
        judge.engine.close()
    assert report.parse_failures == 0 and not report.errors and report.accuracy >= SEEN_AT_LEAST, report.accuracy


def test_the_demo_runs_with_the_shipped_judge(capsys: pytest.CaptureFixture) -> None:
    from critic.demo import main

    assert main(["--limit", "8", "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "the shipped demo judge" in out and "Critique:" in out and "held-out accuracy" in out


def test_without_the_weights_the_demo_shows_the_machinery_on_a_random_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import critic.demo_judge
    from critic.demo import main

    monkeypatch.setattr(critic.demo_judge, "DEMO_JUDGE_DIR", tmp_path)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "no trained demo judge" in out and '"errors": 0' in out
