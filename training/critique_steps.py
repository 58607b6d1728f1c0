"""Which step of a compare-style critique a judge gets wrong: the fact it reads from the image, or the check of each
response against that fact.

A judge trained on the synthetic task's ``compare`` critiques writes, for each response, "It says red, the image
shows blue. Wrong." (:func:`training.synthetic.compare_sentence`). A wrong verdict then has one of two causes, and
they call for different cures: the *fact* is wrong (the image shows something else: grounding, the retrieval of the
asked object) or the *check* is wrong ("It says blue, the image shows blue. Wrong.": the text comparison). This
module reads the per-item predictions that ``python -m critic.evaluate`` writes and reports, per family:

* ``fact``: share of judgments whose fact for the preferred response equals that response's claim (the judge read
  the image the way the label does);
* ``check``: share of judgments whose every comparison says Right exactly when claim and fact are equal;
* ``second``: share of judgments whose verdict is the second shown response (0.5 when the judge has no slot bias);
* ``parsed``: share of judgments with a comparison for both responses (off-question critiques, "It answers about
  ...", have none).

Command: ``python -m training.critique_steps --data pairs.jsonl --predictions report.predictions.jsonl --output
steps.json`` (a PNG with the same stem beside it). It needs no model: the predictions hold every critique.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from critic.evaluate import read_predictions
from critic.plotting import pyplot
from critic.preferences import PreferencePair, read_preferences
from training.synthetic import COMPARE_PATTERN

_OTHER = {"A": "B", "B": "A"}


def judgment_steps(critique: str, preferred_shown: str) -> dict[str, bool] | None:
    """``fact`` and ``check`` of one critique whose preferred response was shown as ``preferred_shown`` ('A' or
    'B'); None when the critique lacks a comparison for either response."""
    checks = {match[0]: match[1:] for match in COMPARE_PATTERN.findall(critique)}
    if set(checks) != {"A", "B"}:
        return None
    claim, fact, _ = checks[preferred_shown]
    return {"fact": claim == fact, "check": all((said_claim == shown_fact) == (said == "Right")
                                               for said_claim, shown_fact, said in checks.values())}


def step_breakdown(pairs: Sequence[PreferencePair], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per category and overall (``all``): pairs, accuracy and the ``fact``, ``check``, ``second`` and ``parsed``
    shares (see the module docstring), from ``critic.evaluate``'s prediction records by pair id. Pairs without a record, with an error or
    a tie label are counted under ``skipped``."""
    counts: dict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    skipped = 0
    for pair in pairs:
        record = records.get(str(pair.id))
        if record is None or record.get("status") != "ok" or pair.preferred not in _OTHER:
            skipped += 1
            continue
        for key in (pair.category or "uncategorised", "all"):
            row = counts[key]
            row["pairs"] += 1
            row["right"] += record.get("verdict") == pair.preferred
            for judgment in record.get("judgments", []):
                shown = pair.preferred if judgment.get("order") != "BA" else _OTHER[pair.preferred]
                steps = judgment_steps(judgment.get("critique", ""), shown)
                row["judgments"] += 1
                row["second"] += judgment.get("label") == "B"
                if steps is not None:
                    row["parsed"] += 1
                    row["fact"] += steps["fact"]
                    row["check"] += steps["check"]
    report: dict[str, Any] = {"skipped": skipped, "families": {}}
    for key in sorted(counts, key=lambda k: (k == "all", k)):
        row = counts[key]
        judged, parsed = max(row["judgments"], 1), max(row["parsed"], 1)
        report["families"][key] = {
            "pairs": row["pairs"], "accuracy": row["right"] / row["pairs"], "fact": row["fact"] / parsed,
            "check": row["check"] / parsed, "second": row["second"] / judged, "parsed": row["parsed"] / judged}
    return report


def plot_steps(report: Mapping[str, Any], path: str | Path, title: str = "") -> bool:
    """Grouped bars of accuracy, fact and check per family; False when matplotlib is missing."""
    plt = pyplot("critique-steps figure")
    if plt is None:
        return False
    families = list(report["families"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(families)), 3.6))
    width = 0.27
    for k, key in enumerate(("accuracy", "fact", "check")):
        values = [report["families"][f][key] for f in families]
        ax.bar([i + (k - 1) * width for i in range(len(families))], values, width, label=key)
    ax.set_xticks(range(len(families)), families, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("share")
    ax.set_title(title or "verdict accuracy, fact read right, check right")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.critique_steps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the preference file that was evaluated")
    parser.add_argument("--predictions", required=True, help="critic.evaluate's per-item predictions JSONL")
    parser.add_argument("--output", required=True, help="report JSON (a PNG with the same stem is written beside it)")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args(argv)
    if not Path(args.predictions).is_file():
        parser.error(f"no predictions file {args.predictions} (python -m critic.evaluate writes one)")
    pairs = read_preferences(args.data).pairs
    report = step_breakdown(pairs, read_predictions(args.predictions))
    if not any(row["pairs"] for row in report["families"].values()):
        print(f"no pair of {args.data} has a prediction in {args.predictions}", file=sys.stderr)
        return 1
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    plot_steps(report, output.with_suffix(".png"), args.title)
    for family, row in report["families"].items():
        print(f"{family:14s} pairs {row['pairs']:4d}  accuracy {row['accuracy']:.3f}  fact {row['fact']:.3f}  "
              f"check {row['check']:.3f}  second {row['second']:.3f}  parsed {row['parsed']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
