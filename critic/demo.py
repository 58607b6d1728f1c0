"""The project's main job, end to end on a fresh machine: ``./run demo`` (or ``python -m critic.demo``).

Until the trained demo judge exists, this builds a tiny random-weight Qwen2-VL with the project's factory (cached
after the first run), judges the bundled sample items in ``examples/sample.jsonl`` pairwise (both orders) and
pointwise, and prints each critique and verdict.  A random-weight model writes gibberish critiques; what the demo
shows is the machinery: constrained output that always parses, verdict probabilities that sum to 1, and the
position-consistency check.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m critic.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=str(EXAMPLES / "sample.jsonl"), help="items to judge (JSONL)")
    parser.add_argument("--model", default=None, help="judge model; default: a tiny model from the factory")
    parser.add_argument("--critique-max-chars", type=int, default=120, help="critique budget (characters)")
    args = parser.parse_args(argv)

    from critic.batch import read_rows
    from critic.core import Judge, JudgeConfig
    from critic.judge import format_result

    model = args.model
    if model is None:
        from critic.tiny import tiny_model_dir

        model = str(tiny_model_dir("qwen2_vl", seed=0))
        print(f"judge: tiny random-weight Qwen2-VL from the factory ({model})\n")
    judge = Judge.from_pretrained(model, config=JudgeConfig(critique_max_chars=args.critique_max_chars), device="cpu")
    rows = list(read_rows(Path(args.input)))
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
