"""Scaling curves: accuracy of the selected answer against N, and against the judge calls spent per item.

    python -m scaling.curve --policy MODEL --judge JUDGE --data labelled.jsonl --n 1 2 4 8 16 \\
        --strategies pointwise knockout self_consistency --output curve.json --plot curve.png

Candidates are generated once, at the largest N; a smaller N uses each item's first N candidates (every policy is
prefix-stable: candidate k depends only on the item and ``seed + k``, see :mod:`scaling.policy`).
``--save-candidates FILE`` keeps them and ``--candidates FILE`` reuses them (or the candidates of a
``python -m scaling.best_of_n`` output) without a policy.

For each strategy and N the curve has

* ``accuracy``: the share of items whose selected candidate is correct (no selection counts as wrong).  Correct
  means ``checker(candidate_text, item)`` (``--checker module:function``); by default the candidate's
  :func:`~scaling.self_consistency.default_answer_extractor` answer equals the item's ``reference``'s;
* ``judge_calls``: the mean judge calls per item the strategy makes, as if nothing were cached (a pair judged in
  both orders counts 2).  The greedy cache of :class:`~scaling.calls.JudgeCalls` is shared across the whole curve,
  so pointwise scores at N = 8 reuse those of N = 4; the curve still charges them, because a run at N = 8 alone
  would pay for them;
* ``engine_calls``: the mean generations actually spent for that point (cache hits free);
* ``chosen``: per N, each item's selected candidate index (None: no selection), so that every point can be re-derived
  and two strategies compared item by item (:func:`paired_counts`);

plus two reference lines over N: ``oracle`` (the share of items with any correct candidate among the first N: no
selection can do better) and ``random`` (the exact expected accuracy of picking one of the first N uniformly:
the mean share of correct candidates; failed candidates count as wrong).  The JSON::

    {"n": [1, 2, 4], "items": 200, "candidates_per_item": 4,
     "strategies": {"knockout": {"accuracy": [...], "judge_calls": [...], "engine_calls": [...],
                                 "no_choice": [...], "chosen": [[...], ...]}, ...},
     "oracle": [...], "random": [...], "engine_calls_total": 1234,
     "item_ids": [...], "correct": [[true, false, ...], ...]}

``correct[k][i]`` says whether candidate ``i`` of item ``k`` is right.

The PNG has two panels: accuracy against N (log2 axis, with the oracle and random lines) and accuracy against
judge calls per item.  matplotlib is imported only to draw it (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from critic.core import Judge, JudgeConfig
from critic.engines.base import SamplingConfig
from critic.judge import resolve_judge_model
from critic.plotting import pyplot
from critic.types import JudgeItem, JudgeResult
from scaling.best_of_n import (
    add_judge_arguments,
    add_policy_arguments,
    load_judge,
    load_policy_from_args,
    needs_judge,
    policy_sampling,
    read_candidates,
    read_items,
    strategy_options,
)
from scaling.calls import _PRE_ENGINE_ERRORS, CountedResults, CountingJudge, JudgeCalls
from scaling.registry import STRATEGIES, make_strategy
from scaling.self_consistency import SampledJudge, default_answer_extractor
from scaling.strategy import Strategy
from scaling.types import Candidate, Item

Checker = Callable[[str, Item], bool]
"""``checker(candidate_text, item) -> bool``: whether a candidate answers the item correctly."""

__all__ = ["Checker", "NominalCalls", "load_checker", "main", "reference_checker", "scaling_curve", "write_plot"]


def reference_checker(text: str, item: Item) -> bool:
    """The default checker: the extracted answers of the candidate and of ``item.reference`` are equal."""
    if item.reference is None:
        raise ValueError(f"item {item.id!r} has no reference answer")
    return default_answer_extractor(text) == default_answer_extractor(item.reference)


def load_checker(spec: str) -> Checker:
    """``"package.module:function"`` → the function."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--checker must look like module:function, not {spec!r}")
    module = importlib.import_module(module_name)
    try:
        checker = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no {attribute!r}") from None
    if not callable(checker):
        raise ValueError(f"{spec} is not callable")
    return checker


class NominalCalls:
    """A counting judge that also tallies the calls its callers asked for as if nothing were cached.

    A fresh result costs what it cost; a cache hit (or an in-batch duplicate) costs what judging it would have
    cost: 2 for a pair with swap, 1 otherwise (only valid results are cached, and those reached the engine).
    Views (:meth:`scoped`, :meth:`with_config`) add to the same tally."""

    def __init__(self, inner: CountingJudge, tally: list[int] | None = None) -> None:
        self.inner = inner
        self._tally = tally if tally is not None else [0]

    @property
    def nominal(self) -> int:
        """Calls asked for through this object and its views, cache hits included."""
        return self._tally[0]

    @property
    def spent(self) -> int:
        return self.inner.spent

    @property
    def config(self) -> JudgeConfig:
        return self.inner.config

    def scoped(self, max_calls: int | None) -> NominalCalls:
        return NominalCalls(self.inner.scoped(max_calls), self._tally)

    def with_config(self, **changes: Any) -> NominalCalls:
        return NominalCalls(self.inner.with_config(**changes), self._tally)

    def judge(self, items: Sequence[JudgeItem], sampling: SamplingConfig | None = None) -> list[JudgeResult]:
        return self.judge_counted(items, sampling).results

    def judge_counted(self, items: Sequence[JudgeItem], sampling: SamplingConfig | None = None) -> CountedResults:
        counted = self.inner.judge_counted(items, sampling)
        swap = self.config.swap
        for item, result, calls, cached in zip(items, counted.results, counted.calls, counted.cached):
            if not cached:
                self._tally[0] += calls
            elif result.error is None or result.error.kind not in _PRE_ENGINE_ERRORS:
                # A copy of a judgment (only those that reached the engine); an in-batch duplicate of an item that
                # failed before the engine would have cost nothing either.
                self._tally[0] += 2 if item.mode == "pairwise" and swap else 1
        return counted


def scaling_curve(
    items: Sequence[Item],
    candidates: Sequence[Sequence[Candidate]],
    judge: Judge | CountingJudge | None,
    ns: Sequence[int],
    strategies: Sequence[str | Strategy],
    checker: Checker | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy and judge calls of each strategy at each N, with the oracle and random lines (module docstring).

    ``candidates[k]`` holds at least ``max(ns)`` candidates of ``items[k]``; N uses the first N.  ``judge`` may be
    None when every strategy is ``self_consistency``.  Strategies given by name are built with their defaults."""
    items, ns = list(items), sorted(set(ns))
    if not items:
        raise ValueError("a scaling curve needs at least one item")
    if len(candidates) != len(items):
        raise ValueError(f"{len(items)} items but {len(candidates)} candidate lists")
    if not ns or ns[0] < 1:
        raise ValueError(f"every N must be >= 1, got {ns}")
    largest = ns[-1]
    short = [item.id for item, cands in zip(items, candidates) if len(cands) < largest]
    if short:
        raise ValueError(f"{len(short)} item(s) have fewer than {largest} candidates, e.g. {short[0]!r}")
    built = [make_strategy(s) if isinstance(s, str) else s for s in strategies]
    names = [s.name for s in built]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"give one or more distinct strategies, got {names}")
    check = checker or reference_checker
    if checker is None:
        missing = [item.id for item in items if item.reference is None or not default_answer_extractor(item.reference)]
        if missing:
            raise ValueError(f"{len(missing)} item(s) have no (non-empty) reference answer, e.g. {missing[0]!r}; "
                             "label them or pass a checker")
    # correct[k][i]: candidate i of item k is right; failed candidates are wrong without asking the checker.
    correct = [[c.error is None and bool(check(c.text, item)) for c in cands[:largest]]
               for item, cands in zip(items, candidates)]

    calls: NominalCalls | None = None
    if judge is not None:
        calls = NominalCalls(JudgeCalls(judge) if isinstance(judge, Judge) else judge)
    elif any(needs_judge(s) for s in built):
        raise ValueError(f"strategies {[s.name for s in built if needs_judge(s)]} need a judge")

    count = len(items)
    curves: dict[str, dict[str, list[Any]]] = {}
    bar = tqdm(total=len(built) * len(ns), desc="strategies × N", unit="point", file=sys.stderr,
               disable=not progress)
    for strategy in built:
        line: dict[str, list[Any]] = {"accuracy": [], "judge_calls": [], "engine_calls": [], "no_choice": [],
                                      "chosen": []}
        for n in ns:
            bar.set_postfix_str(f"{strategy.name} N={n}")
            before = calls.nominal if calls is not None else 0
            selections = strategy.select(items, [list(c[:n]) for c in candidates], calls)  # type: ignore[arg-type]
            nominal = (calls.nominal - before) if calls is not None else 0
            line["accuracy"].append(sum(s.chosen is not None and correct[k][s.chosen]
                                        for k, s in enumerate(selections)) / count)
            line["judge_calls"].append(nominal / count)
            line["engine_calls"].append(sum(s.judge_calls for s in selections) / count)
            line["no_choice"].append(sum(s.chosen is None for s in selections))
            line["chosen"].append([s.chosen for s in selections])
            bar.update(1)
        curves[strategy.name] = line
    bar.close()
    return {
        "n": ns,
        "items": count,
        "candidates_per_item": largest,
        "strategies": curves,
        "oracle": [sum(any(row[:n]) for row in correct) / count for n in ns],
        "random": [sum(sum(row[:n]) / n for row in correct) / count for n in ns],
        "engine_calls_total": calls.spent if calls is not None else 0,
        "item_ids": [item.id for item in items],
        "correct": correct,
    }


def paired_counts(curve: dict[str, Any], first: str, second: str) -> list[dict[str, int]]:
    """Per N, how many items only ``first``'s selection got right and how many only ``second``'s (the discordant
    pairs of a McNemar test; items both got right or both wrong say nothing about which strategy is better)."""
    lines = curve["strategies"]
    out = []
    for k in range(len(curve["n"])):
        mine, theirs = lines[first]["chosen"][k], lines[second]["chosen"][k]
        right = [[a is not None and row[a], b is not None and row[b]]
                 for row, a, b in zip(curve["correct"], mine, theirs)]
        out.append({"n": curve["n"][k], f"only_{first}": sum(a and not b for a, b in right),
                    f"only_{second}": sum(b and not a for a, b in right)})
    return out


def write_plot(curve: dict[str, Any], path: str | Path) -> bool:
    """Accuracy vs N (log2) and accuracy vs judge calls per item, as a PNG; False when matplotlib is missing."""
    plt = pyplot("scaling-curve figure")
    if plt is None:
        return False
    from matplotlib.ticker import FuncFormatter
    ns = curve["n"]
    figure, (by_n, by_calls) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, line in curve["strategies"].items():
        by_n.plot(ns, line["accuracy"], "o-", label=name)
        by_calls.plot(line["judge_calls"], line["accuracy"], "o-", label=name)
    by_n.plot(ns, curve["oracle"], "k--", label="oracle (any correct)")
    by_n.plot(ns, curve["random"], ":", color="grey", label="random pick")
    by_n.set_xscale("log", base=2)
    by_n.set_xticks(ns, [str(n) for n in ns])
    by_n.set_xlabel("N (candidates per item)")
    by_calls.set_xscale("symlog", base=2, linthresh=1)  # symlog: self-consistency and N = 1 cost 0 calls
    by_calls.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    by_calls.set_xlabel("judge calls per item")
    for axis in (by_n, by_calls):
        axis.set_ylabel("accuracy of the selected answer")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"Best-of-N on {curve['items']} items")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scaling.curve", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run = parser.add_argument_group("curve")
    run.add_argument("--data", required=True, help="JSONL of items with a 'reference' (or 'answer')")
    run.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8], help="the values of N")
    run.add_argument("--strategies", nargs="+", default=["pointwise", "knockout", "self_consistency"],
                     choices=list(STRATEGIES), help="strategies to compare")
    run.add_argument("--checker", help="module:function called as checker(candidate_text, item) -> bool "
                                       "(default: extracted answer equals the reference's)")
    run.add_argument("--output", required=True, help="curve JSON")
    run.add_argument("--plot", help="PNG (default: the output path with .png)")
    run.add_argument("--candidates", help="reuse candidates from this JSONL (a --save-candidates file or a "
                                          "best_of_n output) instead of sampling")
    run.add_argument("--save-candidates", help="write the sampled candidates here (JSONL)")
    run.add_argument("--chunk-size", type=int, default=8, help="items per policy call")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_policy_arguments(parser)
    add_judge_arguments(parser)
    return parser


def _sample(policy: Any, items: list[Item], n: int, sampling: Any, chunk_size: int, progress: bool
            ) -> list[list[Candidate]]:
    out: list[list[Candidate]] = []
    bar = tqdm(total=len(items), desc=f"sampling {n} per item", unit="item", file=sys.stderr, disable=not progress)
    for start in range(0, len(items), chunk_size):
        chunk = items[start:start + chunk_size]
        out.extend(policy.sample(chunk, n, sampling))
        bar.update(len(chunk))
    bar.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.n) < 1 or args.chunk_size < 1 or args.judge_samples < 1:
        parser.error("--n values, --chunk-size and --judge-samples must be >= 1")
    if args.candidates is None and args.policy is None:
        parser.error("give --policy to sample candidates, or --candidates FILE to reuse earlier ones")
    ns = sorted(set(args.n))
    if not Path(args.data).is_file():
        parser.error(f"--data {args.data!r} does not exist")
    rows = list(read_items(args.data))
    bad = [row.error for row in rows if row.item is None]
    if bad:
        parser.error(f"{len(bad)} unreadable row(s) in --data, e.g. {bad[0]}")
    items = [row.item for row in rows if row.item is not None]
    if not items:
        parser.error(f"--data {args.data!r} has no items")
    unlabelled = [item.id for item in items if not default_answer_extractor(item.reference or "")]
    if args.checker is None and unlabelled:
        parser.error(f"{len(unlabelled)} item(s) have no reference answer (e.g. {unlabelled[0]!r}); label them or "
                     "pass --checker")
    try:
        checker = load_checker(args.checker) if args.checker else None
        sampling = policy_sampling(args)
    except (ImportError, ValueError) as exc:
        parser.error(str(exc))

    policy = None
    if args.candidates is not None:
        try:
            found = read_candidates(args.candidates)
        except (OSError, ValueError) as exc:
            parser.error(f"--candidates: {exc}")
        missing = [item.id for item in items if item.id not in found]
        if missing:
            parser.error(f"--candidates has none for {len(missing)} item(s), e.g. {missing[0]!r}")
        candidates = [found[str(item.id)] for item in items]
    else:
        policy = load_policy_from_args(args)
        if not policy.capabilities.prefix_stable:
            print(f"warning: the {policy.name} policy is not prefix-stable; the first N of {ns[-1]} candidates "
                  "are not an N-sample", file=sys.stderr)
        candidates = _sample(policy, items, ns[-1], sampling, args.chunk_size, not args.no_progress)
        if args.save_candidates:
            path = Path(args.save_candidates)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                for item, cands in zip(items, candidates):
                    row = {"id": item.id, "question": item.question, "reference": item.reference,
                           "candidates": [c.to_dict() for c in cands]}
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    judge: Judge | CountingJudge | None = None
    if any(name != "self_consistency" for name in args.strategies):
        resolve_judge_model(parser, args)
        judge = load_judge(args, policy)
        if args.judge_samples > 1:
            judge = SampledJudge(judge, k=args.judge_samples, temperature=args.judge_temperature, seed=args.judge_seed)
    strategies = [make_strategy(name, **strategy_options(args, name)) for name in dict.fromkeys(args.strategies)]
    try:
        curve = scaling_curve(items, candidates, judge, ns, strategies, checker, progress=not args.no_progress)
    except ValueError as exc:
        parser.error(str(exc))
    finally:
        if policy is not None:
            policy.close()
    record = {**curve, "policy": args.policy, "candidates_file": args.candidates,
              "sampling": asdict(sampling) if args.candidates is None else None,
              "judge": args.model if judge is not None else None, "judge_samples": args.judge_samples,
              "checker": args.checker or "reference"}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not write_plot(curve, args.plot or output.with_suffix(".png")):
        print("matplotlib is not installed, so no plot was written (pip install matplotlib)", file=sys.stderr)
    summary = {name: dict(zip(map(str, ns), line["accuracy"])) for name, line in curve["strategies"].items()}
    print(json.dumps({"accuracy": summary, "oracle": curve["oracle"], "random": curve["random"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
