"""The scaling demonstration's pieces: labelled items, the weak policy's examples, and a tiny end-to-end run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from critic.core import JudgeConfig
from critic.preferences import read_preferences
from scaling.demo import labelled_items, main, policy_examples, write_items
from scaling.policy import PolicyPrompt
from training.synthetic import write_dataset


def test_items_and_policy_examples_use_the_preferred_answer(tmp_path: Path) -> None:
    pairs = read_preferences(write_dataset(tmp_path / "d", 60, seed=2)).pairs
    items = labelled_items(pairs)
    examples = policy_examples(pairs, PolicyPrompt())
    kept = [p for p in pairs if p.category != "hallucination"]
    assert 0 < len(kept) < len(pairs) and len(items) == len(examples) == len(kept)
    for item, example, pair in zip(items, examples, kept):
        preferred = pair.response_a if pair.preferred == "A" else pair.response_b
        assert item.reference == example.target == preferred
        assert item.question == example.prompt.text == pair.question
        assert example.prompt.system == PolicyPrompt().system
    rows = [json.loads(line) for line in write_items(items, tmp_path / "items.jsonl").read_text().splitlines()]
    assert all(Path(row["images"][0]).is_absolute() and Path(row["images"][0]).is_file() for row in rows)


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path: Path, tiny_qwen2_vl_dir: Path, capsys: pytest.CaptureFixture) -> None:
    judge_dir = tmp_path / "judge"
    shutil.copytree(tiny_qwen2_vl_dir, judge_dir)
    JudgeConfig(critique_max_chars=30).save_pretrained(judge_dir)  # a short critique keeps the random judge fast
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--quick", "--judge", str(judge_dir), "--policy-backend", "transformers",
                 "--n", "1", "2", "4", "--strategies", "pointwise", "knockout", "--no-progress"]) == 0
    curve = json.loads((out / "curve.json").read_text())
    assert curve["n"] == [1, 2, 4] and curve["items"] == 8
    assert curve["strategies"]["knockout"]["judge_calls"] == [0, 2, 6]  # 2(N - 1) with swap
    assert curve["strategies"]["pointwise"]["judge_calls"] == [1, 2, 4]
    assert all(o >= a for name in ("pointwise", "knockout")
               for o, a in zip(curve["oracle"], curve["strategies"][name]["accuracy"]))
    assert (out / "curve.png").stat().st_size > 0 and (out / "policy" / "policy_report.json").is_file()
    assert '"oracle"' in capsys.readouterr().out


@pytest.mark.slow
def test_policy_only_builds_the_policy_the_flags_describe_and_stops(tmp_path: Path) -> None:
    out = tmp_path / "strong"
    assert main(["--out", str(out), "--policy-only", "--policy-steps", "3", "--policy-vision-steps", "2",
                 "--policy-pairs", "40", "--position-wording", "ordinal", "--policy-vision", "aligned",
                 "--policy-vision-lr", "1e-4", "--no-progress"]) == 0
    report = json.loads((out / "policy" / "policy_report.json").read_text())
    # The judge's tower pre-training: word-aligned heads and the combination and cell codes.
    assert report["recipe"]["vision"] == "aligned" and report["recipe"]["vision_learning_rate"] == 1e-4
    assert {"combo", "cell"} <= set(report["vision_curve"][-1])
    assert report["steps"] == 3 and report["recipe"]["vision_steps"] == 2 and report["recipe"]["pairs"] == 40
    assert report["recipe"]["position_wording"] == "ordinal"
    rows = [json.loads(line) for line in (out / "policy" / "build" / "train" / "pairs.jsonl").open()]
    assert any(r["category"] == "position" and " row, column " in r["response_a"] for r in rows)
    assert (out / "policy" / "config.json").is_file()
    assert not (out / "curve.json").exists() and not (out / "items.jsonl").exists()
    # A judge built on the other wording: "auto" refuses the mix before anything is sampled.
    judge = tmp_path / "judge"
    judge.mkdir()
    (judge / "demo_report.json").write_text(json.dumps({"recipe": {"position_wording": "numbers"}}))
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--judge", str(judge), "--no-progress"])
    assert not (out / "items.jsonl").exists()


def test_a_policy_built_alone_takes_the_shipped_judges_wording_unless_there_are_no_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import critic.demo_judge
    import scaling.demo

    wordings: list[str] = []
    monkeypatch.setattr(scaling.demo, "build_policy",
                        lambda out, recipe, progress=True: wordings.append(recipe.position_wording))
    assert main(["--out", str(tmp_path / "a"), "--policy-only", "--no-progress"]) == 0
    # The shipped judge reads "the second row, column 3": a policy for the DPO demonstration must write it too.
    monkeypatch.setattr(critic.demo_judge, "DEMO_JUDGE_DIR", tmp_path / "no-weights")
    assert main(["--out", str(tmp_path / "b"), "--policy-only", "--no-progress"]) == 0
    assert wordings == ["ordinal", "numbers"]
