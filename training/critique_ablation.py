"""Does writing a critique before the verdict help a judge learn? Verdict-only vs critique targets, same budget.

    python -m training.critique_ablation --out runs/critique_ablation            # about 34 minutes on 2 cores
    python -m training.critique_ablation --out /tmp/abl --quick                   # plumbing check, a minute

Two demo judges (:mod:`training.demo_judge`) from the same recipe (:data:`training.demo_recipes.SMALL`), seeds and step
budget, on single-object scenes (colour and shape questions, the setting where a trial judge stated the right fact
every time yet left its verdict at chance):

* **critique**: the target is the critique the shipped judge writes ("The triangle is blue. Response A: It says red,
  the image shows blue. Wrong. Response B: It says blue, the image shows blue. Right."), then the verdict;
* **verdict-only**: the same examples with the critique replaced by one placeholder character, then the verdict.

Both arms get the recipe's label-free steps first (the text-only check primitive, vision pre-training, short answers),
so the arms differ only in the targets of the critique stage. The report (``ablation.json``)
gives held-out accuracy with and without the image and position consistency per arm, with their learning curves,
and ``ablation.png`` plots held-out accuracy against training minutes for both.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.demo_judge import build_demo_judge, plot_curves
from training.demo_recipes import QUICK, SMALL, DemoRecipe, Stage

RECIPE = SMALL
QUICK_RECIPE = replace(SMALL, stages=(Stage(1, 1, 4, 64, answer=1.0, families=SMALL.heldout_families),
                                      Stage(1, 1, 8, 64, answer=0.25, families=SMALL.heldout_families)),
                       check_steps=4, vision=QUICK.vision, heldout_pairs=16, eval_pairs=16, eval_every=4, batch_size=8)
ARMS = {"critique": False, "verdict_only": True}


def _log(message: str) -> None:
    print(f"[critique-ablation] {message}", file=sys.stderr, flush=True)


def run_ablation(out: Path, recipe: DemoRecipe = RECIPE, *, progress: bool = True) -> dict[str, Any]:
    """Build both arms into ``out/critique`` and ``out/verdict_only``; write and return the report."""
    arms: dict[str, Any] = {}
    for name, verdict_only in ARMS.items():
        _log(f"arm {name}")
        report = build_demo_judge(out / name, replace(recipe, verdict_only=verdict_only), progress=progress)
        arms[name] = {key: report[key] for key in ("accuracy", "blind_accuracy", "position_consistency",
                                                   "per_category", "pointwise_agreement", "build_minutes",
                                                   "parse_failures", "curve")}
    result = {"steps": sum(stage.steps for stage in recipe.stages), "check_steps": recipe.check_steps,
              "heldout_pairs": recipe.heldout_pairs, "families": list(recipe.heldout_families), "arms": arms,
              "critique_minus_verdict_only": arms["critique"]["accuracy"] - arms["verdict_only"]["accuracy"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot_ablation(result, out / "ablation.png")
    return result


def plot_ablation(result: dict[str, Any], path: Path) -> bool:
    """Held-out accuracy (solid) and blind accuracy (dashed) of both arms against training minutes."""
    return plot_curves({f"{name.replace('_', '-')} (final {arm['accuracy']:.0%})": arm["curve"]
                        for name, arm in result["arms"].items()}, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.critique_ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for both judges and the report")
    parser.add_argument("--steps", type=int, default=None, help="critique-stage steps per arm (default 800)")
    parser.add_argument("--quick", action="store_true", help="a tiny run that checks the plumbing")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    recipe = QUICK_RECIPE if args.quick else RECIPE
    if args.steps is not None:
        if args.steps < 1:
            parser.error("--steps must be positive")
        recipe = replace(recipe, stages=recipe.stages[:-1] + (replace(recipe.stages[-1], steps=args.steps),))
    result = run_ablation(args.out, recipe, progress=not args.no_progress)
    print(json.dumps({name: {k: arm[k] for k in ("accuracy", "blind_accuracy", "position_consistency")}
                      for name, arm in result["arms"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
