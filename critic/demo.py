"""The project's main job, end to end on a fresh machine: ``./run demo`` (or ``python -m critic.demo``).

With the demo judge shipped in :mod:`critic.demo_judge` (rebuilt by ``python -m training.demo_judge --out
critic/demo_judge``), or any judge given with ``--model``, it judges a few held-out pairs (scenes from a seed never
used in training, in ``examples/heldout``) printing each critique and verdict in both orders, then evaluates every
held-out pair with the image and with the image blanked and prints the accuracy.

In an install without the demo judge's weights it judges the bundled sample items with a tiny random-weight
Qwen2-VL from the factory instead: gibberish critiques, but the machinery shows — constrained output that always
parses, probabilities that sum to 1, and the position-consistency check.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m critic.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="judge folder or Hub id (default: the shipped demo judge)")
    parser.add_argument("--data", default=str(EXAMPLES / "heldout" / "pairs.jsonl"), help="held-out pairs")
    parser.add_argument("--show", type=int, default=3, help="pairs whose critiques are printed")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first K pairs")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from critic.core import Judge
    from critic.evaluate import evaluate
    from critic.preferences import read_preferences

    model = args.model
    if model is None:
        from critic.demo_judge import demo_judge_dir

        try:
            model = str(demo_judge_dir())
        except FileNotFoundError:
            return _untrained_demo()
        report = Path(model) / "demo_report.json"
        if report.is_file():
            built = json.loads(report.read_text())
            print(f"judge: the shipped demo judge ({built['parameters'] / 1e6:.1f}M parameters, trained from scratch "
                  f"in {built['build_minutes']:.0f} min on a 2-core CPU)\n")
    judge = Judge.from_pretrained(model, device=args.device)
    data = read_preferences(args.data)
    pairs = data.pairs[: args.limit] if args.limit else data.pairs
    for pair, result in zip(pairs[: args.show], judge.judge([p.to_item() for p in pairs[: args.show]])):
        print(f"=== {pair.id} ({pair.category}) — {pair.question}")
        print(f"  A: {pair.response_a}\n  B: {pair.response_b}\n  preferred: {pair.preferred}")
        if result.error is not None:
            print(f"  error ({result.error.kind}): {result.error.message}")
            continue
        for judgment in result.judgments:
            print(f"  [{judgment.order}] Critique: {judgment.critique}\n       Verdict: {judgment.label}")
        probs = ", ".join(f"{k}={v:.2f}" for k, v in result.probabilities.items())
        print(f"  combined verdict: {result.verdict} ({probs}); consistent across orders: {result.consistent}\n")
    seen = evaluate(judge, pairs, chunk_size=64, progress=True)
    blind = evaluate(judge, pairs, blind=True, chunk_size=64, progress=True)
    summary = {"pairs": seen.n_items, "accuracy": seen.accuracy, "blind_accuracy": blind.accuracy,
               "position_consistency": seen.position_consistency, "parse_failures": seen.parse_failures,
               "per_category": {k: round(v["accuracy"], 3) for k, v in seen.per_category.items()}}
    print(f"held-out accuracy (both orders): {seen.accuracy:.3f}; with the image blanked: {blind.accuracy:.3f}")
    print(json.dumps(summary))
    return 0 if seen.parse_failures == 0 and not seen.errors else 1


def _untrained_demo() -> int:
    """The machinery on a random-weight model: every output parses, probabilities sum to 1."""
    from critic.batch import read_rows
    from critic.core import Judge, JudgeConfig
    from critic.judge import format_result
    from critic.tiny import tiny_model_dir

    model = str(tiny_model_dir("qwen2_vl", seed=0))
    print("no trained demo judge in this checkout (build one: python -m training.demo_judge --out "
          f"critic/demo_judge); judging with a tiny random-weight Qwen2-VL instead ({model})\n")
    judge = Judge.from_pretrained(model, config=JudgeConfig(critique_max_chars=120), device="cpu")
    rows = list(read_rows(EXAMPLES / "sample.jsonl"))
    results = judge.judge([row.item for row in rows if row.item is not None])
    for result in results:
        print(f"=== {result.id} ({result.mode})")
        print(format_result(result))
        print()
    ok = sum(r.ok for r in results)
    print(json.dumps({"items": len(results), "ok": ok, "errors": len(results) - ok}))
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
