"""Noisy-sample filtering: score supervised examples (media, question, answer) with the pointwise judge and set
aside the outliers — InternLM-XComposer2.5-Reward's data-cleaning use of a reward model.

    python -m training.filter --data sft.jsonl --judge DIR --output kept.jsonl --rejected rejected.jsonl \\
        [--threshold 5 | --quantile 0.1] [--plot scores.png]

Input rows are the judge's batch rows with one response: ``id``, ``image``/``images``/``video``, ``question`` and
``answer`` (or ``response``), plus any other fields (``category``, metadata), which are written back unchanged.
Each row gets ``judge_score`` (the expected score under the verdict distribution) and is flagged when

* ``--threshold T``: its score is below T; or
* ``--quantile q``: its score is below the q-quantile of its ``category`` (all rows when there is none), for data
  whose categories are scored on different levels.

Kept rows go to ``--output``; flagged rows, and rows the judge could not score (with ``filter_error``), go to
``--rejected`` with ``filter_reason``. A histogram of the scores (kept vs flagged) is written with ``--plot``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from critic.batch import item_from_row, jsonl_rows
from critic.core import Judge
from critic.plotting import pyplot
from critic.types import JudgeItem

_READ = ("id", "question", "response", "images", "image", "video", "criteria", "reference")


@dataclass
class FilterRow:
    """One input row and what the filter decided."""

    line: int
    row: dict[str, Any]
    item: JudgeItem | None = None
    score: float | None = None
    flagged: bool = False
    reason: str | None = None
    error: str | None = None


@dataclass
class FilterReport:
    """Counts and the rule used."""

    rows: int = 0
    kept: int = 0
    flagged: int = 0
    errors: int = 0
    rule: str = ""
    cutoffs: dict[str, float] = field(default_factory=dict)
    """The score below which a row was flagged, per category (``*`` for all rows)."""


def read_rows(path: str | Path) -> list[FilterRow]:
    """Every non-blank line as a :class:`FilterRow`; a row that cannot become a judge item carries its error."""
    path = Path(path)
    out = []
    for number, _, data, error in jsonl_rows(path):
        row = FilterRow(line=number, row=data if isinstance(data, dict) else {"raw": data})
        if error is not None:
            row.error = error
        else:
            try:
                fields = {k: v for k, v in data.items() if k in _READ}
                if "answer" in data and "response" not in data:
                    fields["response"] = data["answer"]
                if fields.get("response") is None:
                    raise ValueError("no 'answer' (or 'response') field")
                fields.setdefault("id", f"line-{number}")
                row.item = item_from_row(fields, path.parent)
            except (ValueError, AttributeError) as exc:
                row.error = f"line {number}: {exc}"
        out.append(row)
    return out


def score_rows(judge: Judge, rows: Sequence[FilterRow], *, chunk_size: int = 32, progress: bool = True) -> None:
    """Fill each row's ``score`` (expected pointwise score) or ``error``."""
    from tqdm.auto import tqdm

    pointwise = judge.with_config(mode="pointwise")
    todo = [r for r in rows if r.item is not None and r.error is None]
    bar = tqdm(total=len(todo), desc="filter", unit="row", disable=not progress, file=sys.stderr)
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start: start + chunk_size]
        for row, result in zip(chunk, pointwise.judge([r.item for r in chunk])):  # type: ignore[misc]
            if result.ok and result.expected_score is not None:
                row.score = result.expected_score
            else:
                row.error = (f"{result.error.kind}: {result.error.message}" if result.error
                             else "the judge gave no expected score")
        bar.update(len(chunk))
    bar.close()


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def flag(rows: Sequence[FilterRow], *, threshold: float | None = None, quantile: float | None = None,
         category_field: str = "category") -> FilterReport:
    """Mark rows as flagged by the threshold or per-category quantile rule (exactly one must be given)."""
    if (threshold is None) == (quantile is None):
        raise ValueError("give exactly one of threshold and quantile")
    if quantile is not None and not 0 < quantile < 1:
        raise ValueError("quantile must be in (0, 1)")
    report = FilterReport(rows=len(rows))
    scored = [r for r in rows if r.score is not None]
    if threshold is not None:
        report.rule = f"score < {threshold}"
        cutoffs = {"*": threshold}

        def cutoff(_: FilterRow) -> float:
            return threshold  # type: ignore[return-value]
    else:
        report.rule = f"score < the {quantile:g}-quantile of its {category_field}"
        groups: dict[str, list[float]] = {}
        for r in scored:
            groups.setdefault(str(r.row.get(category_field, "*")), []).append(r.score)  # type: ignore[arg-type]
        cutoffs = {k: _quantile(v, quantile) for k, v in groups.items()}  # type: ignore[arg-type]

        def cutoff(row: FilterRow) -> float:
            return cutoffs[str(row.row.get(category_field, "*"))]
    report.cutoffs = cutoffs
    for r in rows:
        if r.error is not None or r.score is None:
            r.flagged, r.reason = True, "error"
            report.errors += 1
        elif r.score < cutoff(r):
            r.flagged, r.reason = True, f"score {r.score:.2f} < {cutoff(r):.2f}"
            report.flagged += 1
        else:
            report.kept += 1
    return report


def write_outputs(rows: Sequence[FilterRow], output: str | Path, rejected: str | Path | None) -> None:
    """Kept rows (with ``judge_score``) to ``output``; flagged and failed rows to ``rejected``."""
    def dump(row: FilterRow) -> str:
        out = dict(row.row)
        out["judge_score"] = row.score
        if row.flagged:
            out["filter_reason"] = row.reason
            if row.error:
                out["filter_error"] = row.error
        return json.dumps(out) + "\n"

    for path, wanted in ((output, False), (rejected, True)):
        if path is None:
            continue
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(dump(r) for r in rows if r.flagged == wanted)


def plot_scores(rows: Sequence[FilterRow], path: str | Path, report: FilterReport,
                truth: Sequence[bool] | None = None) -> bool:
    """Histogram of judge scores, kept vs flagged (or, with ``truth``, clean vs corrupted), with the cutoffs."""
    plt = pyplot("histogram")
    if plt is None:
        return False
    scored = [(r, k) for k, r in enumerate(rows) if r.score is not None]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if truth is None:
        groups = {"kept": [r.score for r, _ in scored if not r.flagged],
                  "flagged": [r.score for r, _ in scored if r.flagged]}
    else:
        groups = {"clean": [r.score for r, k in scored if not truth[k]],
                  "corrupted": [r.score for r, k in scored if truth[k]]}
    values = [v for vs in groups.values() for v in vs]
    bins = 20 if not values else [min(values) + (max(values) - min(values) + 1e-9) * i / 20 for i in range(21)]
    for name, vs in groups.items():
        ax.hist(vs, bins=bins, alpha=0.6, label=f"{name} ({len(vs)})")
    for cut in set(report.cutoffs.values()):
        ax.axvline(cut, color="black", lw=0.8, ls="--")
    ax.set_xlabel("judge expected score")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def precision_recall(rows: Sequence[FilterRow], truth: Sequence[bool]) -> dict[str, float]:
    """Flags against known corruption (``truth[k]``: row k is corrupted); rows without a score are left out."""
    pairs = [(r.flagged, t) for r, t in zip(rows, truth) if r.score is not None]
    tp = sum(f and t for f, t in pairs)
    flagged, corrupted = sum(f for f, _ in pairs), sum(t for _, t in pairs)
    precision = tp / flagged if flagged else math.nan
    recall = tp / corrupted if corrupted else math.nan
    return {"precision": precision, "recall": recall, "flagged": flagged, "corrupted": corrupted, "rows": len(pairs)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.filter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="JSONL rows: image(s)/video, question, answer")
    parser.add_argument("--judge", required=True, help="judge folder or Hub id")
    parser.add_argument("--output", required=True, help="kept rows (JSONL, with judge_score)")
    parser.add_argument("--rejected", default=None, help="flagged and failed rows (JSONL, with filter_reason)")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, default=None, help="flag scores below this (default: the scale's "
                                                                         "midpoint)")
    rule.add_argument("--quantile", type=float, default=None, help="flag scores below this per-category quantile")
    parser.add_argument("--category-field", default="category")
    parser.add_argument("--plot", default=None, help="histogram PNG of the scores")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backend", default="transformers", help="judge engine (transformers, vllm, openai)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = read_rows(args.data)
    judge = Judge.from_pretrained(args.judge, backend=args.backend, batch_size=args.batch_size)
    threshold = args.threshold
    if threshold is None and args.quantile is None:
        threshold = (judge.config.scale_min + judge.config.scale_max) / 2
    score_rows(judge, rows, chunk_size=args.batch_size * 2, progress=not args.no_progress)
    report = flag(rows, threshold=threshold, quantile=args.quantile, category_field=args.category_field)
    write_outputs(rows, args.output, args.rejected)
    if args.plot:
        plot_scores(rows, args.plot, report)
    for row in rows:
        if row.error:
            print(f"row error: {row.error}", file=sys.stderr)
    print(json.dumps({"rows": report.rows, "kept": report.kept, "flagged": report.flagged, "errors": report.errors,
                      "rule": report.rule, "cutoffs": report.cutoffs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
