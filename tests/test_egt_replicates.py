"""The EGT replicate summary on hand-written reports: statistics, pairing, refusals, CLI outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from training.egt_replicates import main, read_reports, summarize

SETTINGS = {"recipe": "small", "critique_pairs": 1000, "noise": 0.3, "noise_model": "uniform",
            "noise_sharpness": 2.0, "drop": 0.3, "by": "token", "curriculum_schedule": "expanding"}


def _run(tmp_path: Path, seed: int, accuracy: dict[str, float], spearman: dict[str, float],
         **settings: object) -> Path:
    folder = tmp_path / f"egt_s{seed}"
    folder.mkdir()
    report = {**SETTINGS, **settings, "seed": seed, "accuracy": accuracy, "spearman_entropy_vs_flipped": spearman}
    (folder / "egt_report.json").write_text(json.dumps(report))
    return folder


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    # Seed 0's report as written before scene_seed (its own scenes are scene seed 0's); 2 and 3 drew from them.
    return [_run(tmp_path, 0, {"a_noisy": 0.80, "b_egt": 0.90, "c_clean": 1.0, "b_curation": 0.85},
                 {"token": 0.35, "peak": 0.6}),
            _run(tmp_path, 2, {"a_noisy": 0.90, "b_egt": 0.85, "c_clean": 0.95}, {"token": 0.5, "peak": math.nan},
                 scene_seed=0),
            _run(tmp_path, 3, {"a_noisy": 0.60, "b_egt": 0.66, "c_clean": 0.70}, {"token": 0.2, "peak": 0.4},
                 scene_seed=0)]


def test_summary_statistics_by_hand(three_runs: list[Path]) -> None:
    summary = summarize(read_reports(three_runs))
    assert list(summary["accuracy"]) == ["a_noisy", "b_egt", "b_curation", "c_clean"]  # the figures' arm order
    a = summary["accuracy"]["a_noisy"]
    assert a["n"] == 3 and a["mean"] == pytest.approx(0.7666667)
    # sample SD of 0.8, 0.9, 0.6: deviations 1/30, 4/30, -5/30 -> sqrt((1 + 16 + 25) / 900 / 2)
    assert a["sd"] == pytest.approx(math.sqrt(42 / 1800))
    assert a["se"] == pytest.approx(a["sd"] / math.sqrt(3))
    gain = summary["gain_over_a"]["b_egt"]
    assert gain["per_seed"] == pytest.approx({0: 0.10, 2: -0.05, 3: 0.06})
    assert gain["mean"] == pytest.approx(0.11 / 3)
    assert gain["seeds_meeting_goal"] == [0, 3] and (gain["wins"], gain["ties"], gain["losses"]) == (2, 0, 1)
    # an arm built on one seed only (no --ablation elsewhere) pairs with that seed's (a) and has no spread
    curation = summary["gain_over_a"]["b_curation"]
    assert curation["per_seed"] == pytest.approx({0: 0.05}) and curation["seeds_meeting_goal"] == [0]
    assert math.isnan(curation["sd"])
    assert "a_noisy" not in summary["gain_over_a"]
    token = summary["spearman_entropy_vs_flipped"]["token"]
    assert token["mean"] == pytest.approx(1.05 / 3) and token["seeds_meeting_goal"] == [2]
    peak = summary["spearman_entropy_vs_flipped"]["peak"]  # the NaN seed is left out, not averaged in
    assert peak["per_seed"] == {0: 0.6, 3: 0.4} and peak["mean"] == pytest.approx(0.5)


def test_refuses_mixed_settings_repeated_seeds_and_missing_reports(tmp_path: Path) -> None:
    s0 = _run(tmp_path, 0, {"a_noisy": 0.8, "b_egt": 0.9}, {})
    blocks = _run(tmp_path, 2, {"a_noisy": 0.8, "b_egt": 0.9}, {}, curriculum_schedule="blocks")
    with pytest.raises(ValueError, match="curriculum_schedule"):
        summarize(read_reports([s0, blocks]))
    again = tmp_path / "again"
    again.mkdir()
    (again / "egt_report.json").write_text((s0 / "egt_report.json").read_text())
    with pytest.raises(ValueError, match="seed appears twice"):
        summarize(read_reports([s0, again]))
    with pytest.raises(ValueError, match="at least 2"):
        summarize(read_reports([s0]))
    # Seed 3 drawing from its own scenes (a report from before scene_seed) is no replicate of seed 0's scenes.
    own_scenes = _run(tmp_path, 3, {"a_noisy": 0.6, "b_egt": 0.7}, {})
    with pytest.raises(ValueError, match=r"same scenes; scene seeds differ: .*egt_s0: 0, .*egt_s3: 3"):
        summarize(read_reports([s0, own_scenes]))
    pooled = _run(tmp_path, 4, {"a_noisy": 0.6, "b_egt": 0.7}, {}, scene_seed=0)
    assert summarize(read_reports([s0, pooled]))["scene_seed"] == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "egt_report.json").write_text("{")
    with pytest.raises(ValueError, match="unfinished") as error:
        read_reports([s0, tmp_path / "nothing", broken])
    assert "broken: egt_report.json is not JSON" in str(error.value)  # every bad folder named, not the first only


def test_cli_writes_json_and_png(three_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "summary"
    assert main([*map(str, three_runs), "--out", str(out)]) == 0
    written = json.loads((out / "egt_replicates.json").read_text())
    assert written["seeds"] == [0, 2, 3] and written["gain_over_a"]["b_egt"]["per_seed"]["2"] == pytest.approx(-0.05)
    assert (out / "egt_replicates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(three_runs[0]), str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "nothing: no egt_report.json" in capsys.readouterr().err
