"""Evaluate a judge on preference data: ``python -m critic.evaluate``.

    python -m critic.evaluate --model DIR_OR_HUB_ID --data vl_rewardbench.json --output report.json
    python -m critic.evaluate --data mm_rlhf_rewardbench.jsonl --dry-run      # check the data, no model

Every pair is judged in both orders (published data is order-biased: VL-RewardBench puts the preferred answer
first in 1,245 of 1,250 items, so a judge that always says "A" would look nearly perfect).  The report has
``accuracy`` (a tie verdict earns half credit; a gold tie is right only when the verdict is tie),
``macro_accuracy`` over ``per_category``, ``acc_plus`` where pairs have groups, ``position_consistency``,
``tie_rate``, ``parse_failures``, ``ece`` (calibration of the verdict probabilities), ``judge_calls`` and
``n_items``; items with error records are left out of every rate and counted in ``errors`` by kind.  A PNG with
per-category accuracy and a reliability diagram is written next to the JSON.

Results are appended per item to a predictions JSONL (``--predictions``, default ``<output stem>.predictions.jsonl``)
with the batch judge's machinery (:mod:`critic.batch`): a rerun skips ids already there and retries engine
failures; the report is computed from all predictions.  ``--blind`` replaces every image by a uniform grey image
of the same size: a judge that scores as well blind is not looking at the images.

In Python, :func:`evaluate` takes any :class:`~critic.core.Judge` (e.g. one over a scripted engine) and
:func:`compute_report` is a pure function of pairs and results.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from critic.batch import BatchRow, completed_ids, judge_rows
from critic.core import Judge, JudgeConfig
from critic.engines.base import SamplingConfig
from critic.judge import add_engine_arguments, add_judging_arguments, config_from_args, engine_options
from critic.media import MediaError, load_image, load_video
from critic.plotting import pyplot
from critic.preferences import FORMATS, PreferenceFile, PreferencePair, missing_media, read_preferences
from critic.spec import TIE
from critic.types import JudgeError, JudgeItem, JudgeResult

_GREY = (128, 128, 128)


@dataclass
class EvalReport:
    """Metrics of one evaluation.  Rates are None when no item could be scored."""

    accuracy: float | None
    """Mean credit over judged pairs: 1 for the gold verdict, 0.5 for a tie verdict on a non-tie pair, else 0."""
    macro_accuracy: float | None
    """Mean of the per-category accuracies."""
    per_category: dict[str, dict[str, Any]]
    """``{category: {"accuracy": ..., "n": ...}}`` over judged pairs."""
    position_consistency: float | None
    """Share of judged pairs whose two orders gave the same verdict after un-swapping."""
    tie_rate: float | None
    """Share of judged pairs with the verdict 'tie'."""
    parse_failures: int
    """Items whose output did not parse (0 under constrained decoding)."""
    ece: float | None
    """Expected calibration error: probability of the chosen verdict vs whether it is the gold one (10 bins)."""
    judge_calls: int
    """Generations behind the recorded results (two per pair judged in both orders)."""
    n_items: int
    """Pairs evaluated, including those with errors."""
    n_judged: int
    """Pairs with a verdict (the denominator of the rates)."""
    errors: dict[str, int] = field(default_factory=dict)
    """Items without a verdict, by error kind ('missing' = no prediction recorded)."""
    acc_plus: float | None = None
    """Share of groups (pairs sharing a prompt) whose every pair got the gold verdict; None without groups."""
    n_groups: int = 0
    """Groups behind ``acc_plus`` (a group with an errored pair is left out)."""
    reliability: list[dict[str, Any]] = field(default_factory=list)
    """The ECE bins: ``{"low", "high", "n", "confidence", "accuracy"}`` (the latter two None when empty)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.acc_plus is None:
            data.pop("acc_plus")
            data.pop("n_groups")
        return data


def credit(gold: str, verdict: str) -> float:
    """Accuracy credit of one verdict: a tie verdict is worth half unless the gold itself is a tie."""
    if verdict == gold:
        return 1.0
    return 0.5 if verdict == TIE and gold != TIE else 0.0


@dataclass(frozen=True)
class _Outcome:
    verdict: str | None
    probabilities: dict[str, float]
    consistent: bool | None
    error_kind: str | None
    generations: int


def _outcome(result: JudgeResult | Mapping[str, Any]) -> _Outcome:
    """The same view of a live result and of its JSON record in the predictions file."""
    record = result.to_dict() if isinstance(result, JudgeResult) else result
    error = record.get("error") or None
    generations = len(record.get("judgments") or [])
    if error is not None and not generations and error.get("raw"):
        generations = 1  # an unparseable output was still generated
    return _Outcome(record.get("verdict"), dict(record.get("probabilities") or {}), record.get("consistent"),
                    None if error is None else str(error.get("kind")), generations)


def compute_report(pairs: Sequence[PreferencePair], results: Iterable[JudgeResult | Mapping[str, Any]],
                   *, bins: int = 10) -> EvalReport:
    """The metrics of ``results`` (live results or their JSON records) against the gold of ``pairs``, matched by id."""
    by_id: dict[str, _Outcome] = {}
    for result in results:
        result_id = result.id if isinstance(result, JudgeResult) else result.get("id")
        if result_id is not None:
            by_id[str(result_id)] = _outcome(result)
    errors: Counter[str] = Counter()
    scores: list[float] = []
    per_category: defaultdict[str, list[float]] = defaultdict(list)
    groups: defaultdict[str, list[float | None]] = defaultdict(list)
    consistency: list[bool] = []
    calibration: list[tuple[float, bool]] = []
    ties = calls = 0
    for pair in pairs:
        outcome = by_id.get(pair.id)
        if outcome is None or outcome.error_kind is not None or outcome.verdict is None:
            errors["missing" if outcome is None else (outcome.error_kind or "input")] += 1
            calls += 0 if outcome is None else outcome.generations
            if pair.group is not None:
                groups[pair.group].append(None)
            continue
        calls += outcome.generations
        score = credit(pair.preferred, outcome.verdict)
        scores.append(score)
        per_category[pair.category or "uncategorised"].append(score)
        if pair.group is not None:
            groups[pair.group].append(score)
        if outcome.consistent is not None:
            consistency.append(outcome.consistent)
        ties += outcome.verdict == TIE
        # Calibration asks whether the verdict the judge chose is the gold one, so a half-credit tie counts as wrong.
        calibration.append((_confidence(outcome), outcome.verdict == pair.preferred))
    categories = {name: {"accuracy": _mean(values), "n": len(values)} for name, values in sorted(per_category.items())}
    # A group with an errored pair cannot be called all right or not, so it is left out of ACC+.
    complete = [values for values in groups.values() if all(v is not None for v in values)]
    reliability, ece = _reliability(calibration, bins)
    return EvalReport(
        accuracy=_mean(scores),
        macro_accuracy=_mean([c["accuracy"] for c in categories.values()]),
        per_category=categories,
        position_consistency=_mean([float(c) for c in consistency]),
        tie_rate=ties / len(scores) if scores else None,
        parse_failures=errors.get("parse", 0),
        ece=ece,
        judge_calls=calls,
        n_items=len(pairs),
        n_judged=len(scores),
        errors=dict(errors),
        acc_plus=_mean([float(all(v == 1.0 for v in values)) for values in complete]) if groups else None,
        n_groups=len(complete),
        reliability=reliability,
    )


def _confidence(outcome: _Outcome) -> float:
    """Probability of the chosen verdict.

    A 'tie' chosen because A and B came out exactly equal (see :func:`critic.combine.argmax_label`) stands for those
    two labels, so its confidence is the probability each of them got, not the (possibly zero) one of 'tie'.
    """
    probs = outcome.probabilities
    if not probs:
        return 1.0  # no distribution recorded: the verdict was all the judge said
    own = probs.get(outcome.verdict or "", 0.0)
    return max(probs.values()) if outcome.verdict == TIE and own < max(probs.values()) else own


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _reliability(points: list[tuple[float, bool]], bins: int) -> tuple[list[dict[str, Any]], float | None]:
    """Equal-width bins over confidence; ECE = sum over bins of (share of items) x |accuracy - confidence|."""
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for confidence, correct in points:
        members[min(int(confidence * bins), bins - 1)].append((confidence, correct))
    table, ece = [], 0.0
    for index, inside in enumerate(members):
        confidence = _mean([c for c, _ in inside])
        accuracy = _mean([float(ok) for _, ok in inside])
        table.append({"low": index / bins, "high": (index + 1) / bins, "n": len(inside),
                      "confidence": confidence, "accuracy": accuracy})
        if inside:
            ece += len(inside) / len(points) * abs(accuracy - confidence)  # type: ignore[operator]
    return table, (ece if points else None)


# --------------------------------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------------------------------


def blank_item(item: JudgeItem, num_frames: int = 8, max_pixels: int = 64_000_000) -> JudgeItem:
    """``item`` with every image and video frame replaced by uniform grey of the same size (raises MediaError)."""
    images = [Image.new("RGB", load_image(src, max_pixels=max_pixels).size, _GREY) for src in item.images]
    video = item.video
    if video is not None:
        video = [Image.new("RGB", frame.size, _GREY) for frame in load_video(video, num_frames=num_frames,
                                                                              max_pixels=max_pixels)]
    return JudgeItem(id=item.id, question=item.question, response_a=item.response_a, response_b=item.response_b,
                     images=images, video=video, criteria=item.criteria, reference=item.reference)


class BlindJudge(Judge):
    """The same engine and configuration, shown a blank image in place of every image (see :func:`blank_item`)."""

    def __init__(self, judge: Judge) -> None:
        super().__init__(judge.engine, judge.config)

    def judge(self, items: Sequence[JudgeItem], sampling: SamplingConfig | None = None) -> list[JudgeResult]:
        results: list[JudgeResult | None] = [None] * len(items)
        ready: list[tuple[int, JudgeItem]] = []
        prompt = self.config.prompt
        for index, item in enumerate(items):
            try:  # blanks are made per chunk, so a large benchmark never holds all its grey images at once
                ready.append((index, blank_item(item, prompt.num_frames, prompt.max_pixels)))
            except (MediaError, ImportError) as exc:
                results[index] = JudgeResult.failure(item.id, item.mode, JudgeError("media", str(exc)))
        judged = super().judge([item for _, item in ready], sampling) if ready else []
        for (index, _), result in zip(ready, judged):
            results[index] = result
        return [r for r in results if r is not None]


def evaluate(judge: Judge, pairs: Sequence[PreferencePair], *, predictions: str | Path | None = None,
             blind: bool = False, chunk_size: int = 8, progress: bool = True) -> EvalReport:
    """Judge every pair in both orders and report the metrics.

    With ``predictions``, each result is appended to that JSONL as it comes and pairs already recorded there are
    not judged again (engine failures are retried), so an interrupted evaluation resumes; the report covers every
    recorded prediction of ``pairs``.  Without it, predictions go to a temporary file.
    """
    ids = [pair.id for pair in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError("pair ids must be unique (read_preferences makes them so)")
    # Both orders always: on order-biased data a one-order score says more about position bias than quality.
    judge = judge.with_config(swap=True, mode="pairwise")
    if blind:
        judge = BlindJudge(judge)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(predictions) if predictions is not None else Path(scratch) / "predictions.jsonl"
        done = completed_ids(path)
        rows = [BatchRow(p.line, p.id, p.to_item(), None, "pairwise") for p in pairs if p.id not in done]
        judge_rows(judge, rows, path, chunk_size=max(chunk_size, 1), progress=progress, desc="evaluating")
        return compute_report(pairs, read_predictions(path).values())


def read_predictions(path: str | Path) -> dict[str, dict[str, Any]]:
    """The records of a predictions JSONL by id (the last record of an id wins; unreadable lines are skipped)."""
    records: dict[str, dict[str, Any]] = {}
    if not Path(path).exists():
        return records
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line; completed_ids cuts it off on the next run
            if isinstance(record, dict) and record.get("id") is not None:
                records[str(record["id"])] = record
    return records


# --------------------------------------------------------------------------------------------------------------
# Data check and outputs
# --------------------------------------------------------------------------------------------------------------


def summarise_data(data: PreferenceFile, pairs: Sequence[PreferencePair] | None = None, *, show: int = 5
                   ) -> dict[str, Any]:
    """What ``--dry-run`` prints: counts per category and gold verdict, missing media, malformed rows."""
    pairs = data.pairs if pairs is None else pairs
    missing = [(pair, path) for pair in pairs for path in missing_media(pair)]
    return {
        "source": data.source,
        "format": data.format,
        "rows": data.rows,
        "pairs": len(pairs),
        "per_category": dict(sorted(Counter(p.category or "uncategorised" for p in pairs).items())),
        "preferred": dict(Counter(p.preferred for p in pairs)),
        "groups": len({p.group for p in pairs if p.group is not None}),
        "missing_media": {"count": len(missing), "items": len({p.id for p, _ in missing}),
                          "first": [f"line {p.line} ({p.id}): {path}" for p, path in missing[:show]]},
        "problems": [{"line": q.line, "id": q.id, "message": q.message} for q in data.problems],
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable text of :func:`summarise_data`."""
    lines = [f"{summary['source']}: format {summary['format']}, {summary['rows']} rows, {summary['pairs']} pairs",
             "per category: " + ", ".join(f"{k} {v}" for k, v in summary["per_category"].items()),
             "preferred: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["preferred"].items()))]
    if summary["groups"]:
        lines.append(f"groups: {summary['groups']}")
    media = summary["missing_media"]
    lines.append(f"missing media: {media['count']} file(s) in {media['items']} item(s)")
    lines += [f"  {entry}" for entry in media["first"]]
    lines.append(f"malformed rows: {len(summary['problems'])}")
    lines += ["  line {}{}: {}".format(p["line"], f" ({p['id']})" if p["id"] else "", p["message"])
              for p in summary["problems"]]
    return "\n".join(lines)


def write_plot(report: EvalReport, path: str | Path) -> bool:
    """Per-category accuracy bars and a reliability diagram as a PNG; False when matplotlib is missing."""
    plt = pyplot("evaluation figure")
    if plt is None:
        return False
    figure, (bars, diagram) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(report.per_category)
    drawn = bars.bar(names, [report.per_category[n]["accuracy"] for n in names], color="#4c72b0")
    bars.bar_label(drawn, labels=[f"n={report.per_category[n]['n']}" for n in names], padding=2, fontsize=8)
    if report.accuracy is not None:
        bars.axhline(report.accuracy, color="black", linestyle="--", linewidth=1, label=f"overall {report.accuracy:.3f}")
        bars.legend(loc="lower right")
    bars.set(ylim=(0, 1), ylabel="accuracy", title="Accuracy per category")
    bars.tick_params(axis="x", labelrotation=30)
    filled = [b for b in report.reliability if b["n"]]
    width = 1 / max(len(report.reliability), 1)
    diagram.bar([b["low"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
                color="#55a868", edgecolor="black", label="accuracy")
    diagram.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    ece = "n/a" if report.ece is None else f"{report.ece:.3f}"
    diagram.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence of the verdict", ylabel="share correct",
                title=f"Reliability (ECE {ece})")
    diagram.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m critic.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_engine_arguments(parser, model_required=False)  # --dry-run needs no model
    data = parser.add_argument_group("evaluation")
    data.add_argument("--data", required=True, help="preference file (JSONL or JSON array) or hf:NAME[:SPLIT]")
    data.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="data format")
    data.add_argument("--images", default=None, help="folder to resolve relative media paths against")
    data.add_argument("--limit", type=int, default=None, help="evaluate only the first K pairs")
    data.add_argument("--blind", action="store_true", help="replace every image by a grey image of the same size")
    data.add_argument("--output", help="report JSON (a PNG with the same stem is written next to it)")
    data.add_argument("--predictions", help="per-item results JSONL (default: <output stem>.predictions.jsonl)")
    data.add_argument("--dry-run", action="store_true", help="only check and summarise the data file")
    data.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_judging_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        data = read_preferences(args.data, args.format, args.images)
    except (OSError, ImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pairs = data.pairs[: args.limit] if args.limit is not None else data.pairs
    if args.dry_run:
        summary = summarise_data(data, pairs)
        print(format_summary(summary))
        return 0 if not summary["problems"] and not summary["missing_media"]["count"] else 1
    if not args.model or not args.output:
        parser.error("give --model and --output (or --dry-run)")
    if args.no_swap or args.mode == "pointwise":
        parser.error("evaluation judges pairs in both orders; --no-swap and --mode pointwise do not apply")
    try:
        config = config_from_args(args, JudgeConfig.from_pretrained(args.model))
    except ValueError as exc:
        parser.error(str(exc))
    for problem in data.problems:
        print(f"skipping malformed row: {problem}", file=sys.stderr)
    output = Path(args.output)
    predictions = Path(args.predictions) if args.predictions else output.with_name(output.stem + ".predictions.jsonl")
    judge = Judge.from_pretrained(args.model, backend=args.backend, config=config, **engine_options(args))
    report = evaluate(judge, pairs, predictions=predictions, blind=args.blind, chunk_size=args.batch_size,
                      progress=not args.no_progress)
    record = {**report.to_dict(), "model": args.model, "data": data.source, "format": data.format,
              "blind": args.blind, "predictions": str(predictions), "malformed_rows": len(data.problems)}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not write_plot(report, output.with_suffix(".png")):
        print("matplotlib is not installed, so no plot was written (pip install matplotlib)", file=sys.stderr)
    print(json.dumps({k: record[k] for k in ("accuracy", "macro_accuracy", "position_consistency", "n_items")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
