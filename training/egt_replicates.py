"""Replicates of the EGT demonstration: one summary over several ``egt`` runs that differ only in ``--seed``.

    python -m training.judge_data_demo egt --recipe small --seed 2 --out runs/egt_s2 ...   # one run per seed
    python -m training.egt_replicates runs/egt_s0 runs/egt_s2 runs/egt_s3 --out runs/egt_replicates

One build per arm cannot rank arms that land 5-20 points apart on seeds alone (README, EGT). This module reads each
run's ``egt_report.json``, refuses runs whose settings differ (recipe, noise, drop, entropy kind, schedule, ...) or
that repeat a seed, and writes ``egt_replicates.json`` and ``egt_replicates.png``: every arm's held-out accuracy per
seed with its mean and standard deviation, each arm's paired gain over (a) (same seed, same snapshot) with its mean,
standard error and the seeds that meet the issue's +5 points, and the entropy-flip Spearman correlations per kind
against the issue's goal (>= 0.5 against "flipped", i.e. <= -0.5 against "label correct").
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from critic.plotting import pyplot

SETTINGS = ("recipe", "critique_pairs", "noise", "noise_model", "noise_sharpness", "drop", "by",
            "curriculum_schedule")
"""Report fields that must agree across replicates: only the seed may differ."""

BASELINE = "a_noisy"
GAIN_GOAL = 0.05
"""The issue's goal for (b) over (a): 5 points of held-out accuracy."""
SPEARMAN_GOAL = 0.5
"""The issue's goal, Spearman(entropy, label correct) <= -0.5, read against "flipped" as the reports store it."""

# The egt demonstration's arms (training.judge_data_demo), in the order both figures draw them.
ARM_LABELS = {"a_noisy": "(a) noisy", "b_egt": "(b) EGT", "b_curation": "curation\nalone",
              "b_curriculum": "curriculum\nalone", "c_clean": "(c) clean"}


def read_reports(runs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Each run folder's ``egt_report.json``; a ValueError naming every folder without a readable one."""
    reports, problems = [], []
    for run in runs:
        path = Path(run) / "egt_report.json"
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.append(f"{run}: no egt_report.json (an unfinished egt run?)")
            continue
        except json.JSONDecodeError as exc:
            problems.append(f"{run}: egt_report.json is not JSON ({exc})")
            continue
        if not isinstance(report.get("accuracy"), dict) or "seed" not in report:
            problems.append(f"{run}: egt_report.json has no per-arm accuracy or no seed (written before --seed?)")
            continue
        reports.append({**report, "run": str(run)})
    if problems:
        raise ValueError("; ".join(problems))
    return reports


def _stats(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation and standard error of the mean (NaN spread for one value)."""
    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "se": sd / math.sqrt(n) if n > 1 else math.nan,
            "min": min(values), "max": max(values)}


def scene_pool(report: dict[str, Any]) -> int:
    """The scene seed whose scenes a run trained on: its ``scene_seed``, or for a report from before that field its
    own ``seed`` (which then owned the scenes as well as drawing them)."""
    return int(report.get("scene_seed", report["seed"]))


def summarize(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-arm accuracies, paired gains over (a) and the Spearman correlations across replicate reports.

    An arm missing from a run (built without ``--ablation``) counts only where present; gains pair an arm with
    (a) of the same seed."""
    if len(reports) < 2:
        raise ValueError(f"replicates need at least 2 runs, got {len(reports)}")
    first = reports[0]
    for report in reports[1:]:
        differ = [f"{key} ({first.get(key)!r} in {first['run']}, {report.get(key)!r} in {report['run']})"
                  for key in SETTINGS if report.get(key) != first.get(key)]
        if differ:
            raise ValueError("replicates must differ only in seed; these settings differ: " + ", ".join(differ))
    seeds = [r["seed"] for r in reports]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed appears twice: {seeds}")
    pools = {r["run"]: scene_pool(r) for r in reports}
    if len(set(pools.values())) > 1:
        raise ValueError("replicates must train on the same scenes; scene seeds differ: " +
                         ", ".join(f"{run}: {pool}" for run, pool in pools.items()) +
                         " (runs from before scene_seed drew from their own seed's scenes; rebuild them)")
    arms = [a for a in ARM_LABELS if any(a in r["accuracy"] for r in reports)]
    arms += sorted({a for r in reports for a in r["accuracy"]} - set(arms))
    accuracy = {}
    gains = {}
    for arm in arms:
        per_seed = {r["seed"]: r["accuracy"][arm] for r in reports if arm in r["accuracy"]}
        accuracy[arm] = {"per_seed": per_seed, **_stats(list(per_seed.values()))}
        if arm == BASELINE:
            continue
        paired = {r["seed"]: r["accuracy"][arm] - r["accuracy"][BASELINE] for r in reports
                  if arm in r["accuracy"] and BASELINE in r["accuracy"]}
        if paired:
            gains[arm] = {"per_seed": paired, **_stats(list(paired.values())),
                          # accuracies are k / n: 0.9375 - 0.875 lands a rounding error under 0.0625
                          "seeds_meeting_goal": sorted(s for s, g in paired.items() if g >= GAIN_GOAL - 1e-9),
                          "wins": sum(g > 0 for g in paired.values()), "ties": sum(g == 0 for g in paired.values()),
                          "losses": sum(g < 0 for g in paired.values())}
    kinds = sorted({k for r in reports for k in r.get("spearman_entropy_vs_flipped", {})})
    correlation = {}
    for kind in kinds:
        per_seed = {r["seed"]: r["spearman_entropy_vs_flipped"][kind] for r in reports
                    if not math.isnan(r.get("spearman_entropy_vs_flipped", {}).get(kind, math.nan))}
        if per_seed:
            correlation[kind] = {"per_seed": per_seed, **_stats(list(per_seed.values())),
                                 "seeds_meeting_goal": sorted(s for s, v in per_seed.items() if v >= SPEARMAN_GOAL)}
    return {"runs": [r["run"] for r in reports], "seeds": seeds, "scene_seed": scene_pool(first),
            "settings": {k: first.get(k) for k in SETTINGS},
            "accuracy": accuracy, "gain_over_a": gains, "spearman_entropy_vs_flipped": correlation,
            "goals": {"gain_over_a": GAIN_GOAL, "spearman_entropy_vs_flipped": SPEARMAN_GOAL}}


def plot_replicates(summary: dict[str, Any], path: Path) -> bool:
    """Accuracy per arm (one line per seed, the mean as a bar) and each arm's gain over (a) per seed."""
    plt = pyplot("EGT replicates figure")
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    arms = list(summary["accuracy"])
    left.bar(range(len(arms)), [summary["accuracy"][a]["mean"] for a in arms], color="lightgrey",
             yerr=[0 if math.isnan(summary["accuracy"][a]["sd"]) else summary["accuracy"][a]["sd"] for a in arms],
             ecolor="grey", capsize=3)
    for seed in summary["seeds"]:
        xs = [k for k, a in enumerate(arms) if seed in summary["accuracy"][a]["per_seed"]]
        left.plot(xs, [summary["accuracy"][arms[k]]["per_seed"][seed] for k in xs], "o-", lw=0.8, ms=4,
                  label=f"seed {seed}")
    left.set_xticks(range(len(arms)), [ARM_LABELS.get(a, a) for a in arms], fontsize=8)
    lowest = min(v for a in arms for v in summary["accuracy"][a]["per_seed"].values())
    left.set_ylim(min(0.45, lowest - 0.05), 1.02)  # from chance (0.5), so seed-to-seed gaps stay visible
    left.axhline(0.5, color="grey", lw=0.8)
    left.set_ylabel("held-out accuracy")
    left.set_title("mean +- SD (bars), one line per seed", fontsize=9, pad=18)
    left.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(summary["seeds"]), frameon=False)
    gained = list(summary["gain_over_a"])
    for k, arm in enumerate(gained):
        values = list(summary["gain_over_a"][arm]["per_seed"].values())
        spread = [k + 0.08 * (j - (len(values) - 1) / 2) for j in range(len(values))]  # side by side, not stacked
        right.plot(spread, [100 * v for v in values], "o", color="tab:blue", ms=4)
        mean, se = summary["gain_over_a"][arm]["mean"], summary["gain_over_a"][arm]["se"]
        right.errorbar([k], [100 * mean], yerr=[0 if math.isnan(se) else 100 * se], fmt="_", color="black", ms=18,
                       capsize=4)
    right.axhline(0, color="grey", lw=0.8)
    right.axhline(100 * summary["goals"]["gain_over_a"], color="tab:green", lw=0.8, ls="--", label="goal: +5")
    right.set_xticks(range(len(gained)), [ARM_LABELS.get(a, a) for a in gained], fontsize=8)
    right.set_ylabel("gain over (a), points (mean +- SE)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.egt_replicates", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="egt run folders (python -m training.judge_data_demo egt --out ...)")
    parser.add_argument("--out", required=True, help="folder for egt_replicates.json and egt_replicates.png")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = summarize(read_reports(args.runs))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_replicates(summary, out / "egt_replicates.png")
    (out / "egt_replicates.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
