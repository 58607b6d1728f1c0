"""Best-of-N with a judge: sample N answers per item with a policy, let a strategy pick one.

In Python::

    from scaling.best_of_n import BestOfN
    from scaling.policy import PolicySampling, load_policy

    best = BestOfN(load_policy("transformers", "Qwen/Qwen2-VL-2B-Instruct"), Judge.from_pretrained(JUDGE),
                   strategy="knockout", n=8, sampling=PolicySampling(temperature=1.0, seed=0))
    [selection] = best.generate([Item("What colour is the cube?", images=["cube.png"], id="cube")])
    selection.chosen_text, selection.scores, selection.matches          # the choice and everything behind it
    best.rerank([selection], items, strategy="round_robin")             # same candidates, another strategy

From the command line (resumable JSONL, one :class:`~scaling.types.Selection` per item)::

    python -m scaling.best_of_n --policy MODEL --judge JUDGE --n 8 --strategy knockout \\
        --input items.jsonl --output best.jsonl
    python -m scaling.best_of_n --judge JUDGE --strategy round_robin --input items.jsonl \\
        --rerank best.jsonl --output best_rr.jsonl                      # re-rank, no policy

Input rows are :meth:`Item.from_dict <scaling.types.Item.from_dict>` objects (``question``, ``image`` / ``images``
/ ``video``, optional ``id`` (default ``line-N``), ``reference`` / ``answer``); relative media paths are resolved
against the input file's folder.  Output rows are ``Selection.to_dict()`` plus the item's ``question``.  As in
:mod:`critic.batch`: rows are appended and flushed one by one, a rerun skips ids already in the output, a bad row
(invalid JSON, no question) becomes an error row ``{"id", "error": {"kind": "input", "message"}, ...}`` and the run
goes on, and a chunk whose policy or judge raised becomes ``engine`` error rows, which a rerun retries.
``--max-calls`` is a judge-call budget for the run: the chunk that would pass it is not written, the run stops
with exit status 3, and a rerun continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from critic.batch import BatchSummary, jsonl_rows, pending_rows
from critic.core import Judge, JudgeConfig
from critic.judge import (
    add_engine_arguments,
    add_judging_arguments,
    config_from_args,
    engine_options,
    resolve_judge_model,
)
from scaling.calls import BudgetExceeded, CountingJudge, JudgeCalls
from scaling.policy import BACKENDS as POLICY_BACKENDS
from scaling.policy import Policy, PolicySampling, load_policy
from scaling.registry import STRATEGIES, make_strategy
from scaling.self_consistency import MajorityVote, SampledJudge
from scaling.strategy import Strategy
from scaling.types import Candidate, Item, Selection

__all__ = [
    "BestOfN",
    "ItemRow",
    "add_judge_arguments",
    "add_policy_arguments",
    "build_parser",
    "item_from_row",
    "load_judge",
    "load_policy_from_args",
    "main",
    "needs_judge",
    "policy_sampling",
    "read_candidates",
    "read_items",
]


# ---------------------------------------------------------------------------------------------------------------
# The library
# ---------------------------------------------------------------------------------------------------------------


class BestOfN:
    """A policy, a judge and a strategy: ``generate`` samples ``n`` candidates per item and selects one.

    ``strategy`` is a name from :data:`scaling.registry.STRATEGIES` (built with ``strategy_options``, e.g.
    ``rounds=4`` for Swiss, ``swap=False`` for tournaments) or a :class:`~scaling.strategy.Strategy`.

    ``judge`` is a :class:`~critic.core.Judge`, a :class:`~scaling.calls.JudgeCalls` (to share a cache and budget
    with other runs) or a :class:`~scaling.self_consistency.SampledJudge`; it may be None for the judge-free
    ``self_consistency`` strategy.  ``judge_samples=K > 1`` wraps the judge in a ``SampledJudge`` (K sampled
    judgments per comparison at ``judge_temperature``, seeds ``judge_seed .. judge_seed + K - 1``).

    ``max_calls`` is a budget for every judge call this object makes, over all its ``generate`` and ``rerank``
    calls; the batch that would pass it raises :class:`~scaling.calls.BudgetExceeded` before it is sent.  Greedy
    judgments are cached for the object's lifetime (re-ranking the same candidates pointwise again is free);
    sampled ones never are.
    """

    def __init__(
        self,
        policy: Policy | None,
        judge: Judge | CountingJudge | None,
        strategy: str | Strategy = "pointwise",
        n: int = 8,
        sampling: PolicySampling | None = None,
        max_calls: int | None = None,
        judge_samples: int = 1,
        *,
        judge_temperature: float = 0.7,
        judge_seed: int = 0,
        **strategy_options: Any,
    ) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if not isinstance(judge_samples, int) or isinstance(judge_samples, bool) or judge_samples < 1:
            raise ValueError(f"judge_samples must be an integer >= 1, got {judge_samples!r}")
        if isinstance(strategy, str):
            self.strategy: Strategy = make_strategy(strategy, **strategy_options)
        elif strategy_options:
            raise ValueError("strategy options are for a strategy given by name; build the Strategy with them")
        else:
            self.strategy = strategy
        self.policy = policy
        self.n = n
        self.sampling = sampling or PolicySampling()
        self.judge: CountingJudge | None = _counting_judge(judge, max_calls, judge_samples, judge_temperature,
                                                           judge_seed)
        if self.judge is None and needs_judge(self.strategy):
            raise ValueError(f"strategy {self.strategy.name!r} needs a judge")

    @property
    def spent(self) -> int:
        """Judge calls (engine generations) spent by this object so far; cache hits cost 0."""
        return 0 if self.judge is None else self.judge.spent

    def generate(self, items: Sequence[Item]) -> list[Selection]:
        """Sample ``n`` candidates per item with the policy, then select with the strategy (one per item)."""
        if self.policy is None:
            raise ValueError("generate needs a policy (rerank works without one)")
        items = list(items)
        candidates = self.policy.sample(items, self.n, self.sampling)
        return self._resolve(None).select(items, candidates, self.judge)  # type: ignore[arg-type]

    def rerank(
        self,
        selections_or_candidate_lists: Sequence[Selection | Sequence[Candidate]],
        items: Sequence[Item],
        strategy: str | Strategy | None = None,
    ) -> list[Selection]:
        """Select again among candidates generated earlier, without calling the policy.

        Each entry is an earlier :class:`Selection` (its candidates are used; its id must match the item's when
        both have one) or a list of candidates.  ``strategy`` (default: this object's) is a name or a Strategy.
        Answers extracted by an earlier strategy are dropped, so the result is what ``generate`` would have
        selected from the same candidates."""
        items = list(items)
        if len(selections_or_candidate_lists) != len(items):
            raise ValueError(f"{len(selections_or_candidate_lists)} candidate lists but {len(items)} items")
        lists: list[list[Candidate]] = []
        for entry, item in zip(selections_or_candidate_lists, items):
            if isinstance(entry, Selection):
                if entry.id is not None and item.id is not None and str(entry.id) != str(item.id):
                    raise ValueError(f"selection {entry.id!r} is aligned with item {item.id!r}")
                entry = entry.candidates
            lists.append([replace(c, answer=None) for c in entry])
        return self._resolve(strategy).select(items, lists, self.judge)  # type: ignore[arg-type]

    def _resolve(self, strategy: str | Strategy | None) -> Strategy:
        chosen = self.strategy if strategy is None else make_strategy(strategy) if isinstance(strategy, str) \
            else strategy
        if self.judge is None and needs_judge(chosen):
            raise ValueError(f"strategy {chosen.name!r} needs a judge")
        return chosen


def needs_judge(strategy: Strategy) -> bool:
    """Whether a registered strategy judges (all but ``self_consistency``).  A strategy of your own is trusted to
    say so itself: it is given whatever judge there is (None included)."""
    return strategy.name in STRATEGIES and not isinstance(strategy, MajorityVote)


def _counting_judge(judge: Judge | CountingJudge | None, max_calls: int | None, samples: int, temperature: float,
                    seed: int) -> CountingJudge | None:
    """The counting judge a BestOfN talks to: budgeted, and sampled K times when ``samples > 1``."""
    if judge is None:
        if samples > 1:
            raise ValueError("judge_samples > 1 needs a judge")
        return None
    if isinstance(judge, SampledJudge):
        if samples > 1:
            raise ValueError("the judge is already a SampledJudge; leave judge_samples at 1")
        return judge.scoped(max_calls) if max_calls is not None else judge
    if isinstance(judge, Judge):
        calls = JudgeCalls(judge, max_calls=max_calls)
    elif isinstance(judge, JudgeCalls):
        calls = judge.scoped(max_calls) if max_calls is not None else judge
    else:
        raise TypeError(f"expected a Judge, JudgeCalls or SampledJudge, got {type(judge).__name__}")
    return SampledJudge(calls, k=samples, temperature=temperature, seed=seed) if samples > 1 else calls


# ---------------------------------------------------------------------------------------------------------------
# Reading items and earlier candidates
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ItemRow:
    """One input line: an item, or the reason it could not be read (then ``item`` is None)."""

    line: int
    item_id: str
    item: Item | None
    error: str | None = None


def item_from_row(row: Any, base_dir: Path | None = None) -> Item:
    """An :class:`Item` from a JSON object, media paths resolved against ``base_dir``; ValueError naming the problem.

    A relative path is joined to ``base_dir`` when that file exists (so base64 strings and data URLs pass
    untouched, and a missing file is reported under the name the row gave)."""
    if not isinstance(row, dict):
        raise ValueError("row is not a JSON object")
    try:
        item = Item.from_dict(row)
    except TypeError as exc:
        raise ValueError(str(exc)) from exc

    def resolve(value: Any) -> Any:
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, str) and base_dir is not None and not value.startswith("data:") and len(value) < 4096:
            path = Path(value)
            if not path.is_absolute() and (base_dir / path).exists():
                return str(base_dir / path)
        return value

    item.images = resolve(list(item.images))
    item.video = resolve(item.video)
    return item


def read_items(path: str | Path) -> Iterator[ItemRow]:
    """Every non-blank line of a JSONL file as an item or an error.  Rows without an id get ``line-N``."""
    path = Path(path)
    for number, item_id, data, error in jsonl_rows(path):
        if error is not None:
            yield ItemRow(number, item_id, None, error)
            continue
        try:
            item = item_from_row(data, path.parent)
        except ValueError as exc:
            yield ItemRow(number, item_id, None, f"line {number}: {exc}")
            continue
        item.id = item_id
        yield ItemRow(number, item_id, item, None)


def read_candidates(path: str | Path) -> dict[str, list[Candidate]]:
    """Candidates by id from a JSONL file whose rows have ``id`` and ``candidates`` (a best-of-N output, or a
    scaling curve's ``--save-candidates`` file).  Rows without candidates (error rows) are left out; when an id
    appears twice, the last row wins."""
    found: dict[str, list[Candidate]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if handle.read(1) == "":  # a torn last line (a run killed mid-write)
                    break
                raise ValueError(f"{path}, line {number}: invalid JSON") from None
            if not isinstance(row, dict) or row.get("id") is None or not row.get("candidates"):
                continue
            try:
                found[str(row["id"])] = [Candidate.from_dict(c) for c in row["candidates"]]
            except (TypeError, KeyError, AttributeError) as exc:
                raise ValueError(f"{path}, line {number}: malformed candidates ({exc})") from None
    return found


# ---------------------------------------------------------------------------------------------------------------
# Running over a file
# ---------------------------------------------------------------------------------------------------------------


def error_record(row_id: str, strategy: str, kind: str, message: str, question: str | None = None) -> dict[str, Any]:
    """The output row of an item that has no selection.  ``error`` is ``{"kind", "message"}`` as in
    :mod:`critic.batch`, so :func:`critic.batch.completed_ids` retries ``engine`` errors on a rerun."""
    record: dict[str, Any] = {"id": row_id}
    if question is not None:
        record["question"] = question
    record.update({"strategy": strategy, "chosen": None, "candidates": [], "judge_calls": 0,
                   "error": {"kind": kind, "message": message}})
    return record


def selection_record(selection: Selection, item: Item) -> dict[str, Any]:
    """An output row: the selection with the item's question after its id."""
    data = selection.to_dict()
    return {"id": data.pop("id"), "question": item.question, **data}


def run_file(
    best: BestOfN,
    input_path: str | Path,
    output_path: str | Path,
    *,
    previous: dict[str, list[Candidate]] | None = None,
    rerank_n: int | None = None,
    chunk_size: int = 8,
    progress: bool = True,
) -> BatchSummary:
    """Select for every row of ``input_path`` not yet in ``output_path``, appending one row per item.

    With ``previous`` (candidates by id, :func:`read_candidates`), re-rank those instead of sampling: all of them,
    or the first ``rerank_n``; an item without (enough) earlier candidates gets an ``input`` error row.  Raises
    :class:`BudgetExceeded` (every finished chunk written, the offending one not) when the judge budget runs out."""
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file {str(input_path)!r} does not exist")
    summary = BatchSummary()
    pending = pending_rows(read_items(input_path), output_path, summary)
    if output_path.parent and not output_path.parent.exists():
        output_path.parent.mkdir(parents=True, exist_ok=True)
    chunk_size = max(chunk_size, 1)
    desc = f"{best.strategy.name} (re-rank)" if previous is not None else f"best-of-{best.n} {best.strategy.name}"
    bar = tqdm(total=len(pending), desc=desc, unit="item", file=sys.stderr, disable=not progress)
    try:
        with open(output_path, "a", encoding="utf-8") as out:
            for start in range(0, len(pending), chunk_size):
                chunk = pending[start:start + chunk_size]
                for record in _chunk_records(best, chunk, previous, rerank_n):
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    out.flush()
                    summary.done += 1
                    summary.errors += record.get("error") is not None
                os.fsync(out.fileno())
                bar.update(len(chunk))
    finally:
        bar.close()
    return summary


def _chunk_records(best: BestOfN, chunk: Sequence[ItemRow], previous: dict[str, list[Candidate]] | None,
                   rerank_n: int | None) -> list[dict[str, Any]]:
    """The output rows of one chunk, in input order (BudgetExceeded propagates: nothing of the chunk is written)."""
    name = best.strategy.name
    records: dict[int, dict[str, Any]] = {}
    ready: list[tuple[int, Item]] = []
    for k, row in enumerate(chunk):
        if row.item is None:
            records[k] = error_record(row.item_id, name, "input", row.error or "unreadable row")
        elif previous is not None and row.item_id not in previous:
            records[k] = error_record(row.item_id, name, "input", f"no earlier candidates for id {row.item_id!r}",
                                      row.item.question)
        elif previous is not None and rerank_n is not None and len(previous[row.item_id]) < rerank_n:
            records[k] = error_record(row.item_id, name, "input", f"the earlier output has "
                                      f"{len(previous[row.item_id])} candidates for this id, fewer than {rerank_n}",
                                      row.item.question)
        else:
            ready.append((k, row.item))
    if not ready:
        return [records[k] for k in range(len(chunk))]
    items = [item for _, item in ready]
    try:
        if previous is None:
            selections = best.generate(items)
        else:
            selections = best.rerank([previous[str(item.id)][:rerank_n] for item in items], items)
    except BudgetExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - a crash of the policy or engine fails this chunk, not the run
        message = f"{type(exc).__name__}: {exc}"
        for k, item in ready:
            records[k] = error_record(str(item.id), name, "engine", message, item.question)
    else:
        for (k, item), selection in zip(ready, selections):
            records[k] = selection_record(selection, item)
    return [records[k] for k in range(len(chunk))]


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """The policy flags (``--policy``, ``--policy-backend``, sampling), shared with ``python -m scaling.curve``.

    The policy also uses the engine flags ``--device``, ``--dtype``, ``--trust-remote-code``,
    ``--gpu-memory-utilization`` and ``--enforce-eager``."""
    policy = parser.add_argument_group("policy (the model that answers)")
    policy.add_argument("--policy", help="policy model folder or Hub id (openai: the server's model name)")
    policy.add_argument("--policy-backend", default="transformers", choices=sorted(POLICY_BACKENDS),
                        help="how the policy runs")
    policy.add_argument("--policy-base-url", help="openai policy: server URL, e.g. http://127.0.0.1:8001/v1")
    policy.add_argument("--policy-api-key", default=None, help="openai policy: bearer token (default: $OPENAI_API_KEY)")
    policy.add_argument("--policy-batch-size", type=int, default=8, help="transformers policy: rows per generate")
    policy.add_argument("--policy-max-model-len", type=int, default=None, help="override the policy's context length")
    policy.add_argument("--temperature", type=float, default=1.0, help="policy sampling temperature (0 = greedy)")
    policy.add_argument("--top-p", type=float, default=1.0, help="policy nucleus mass")
    policy.add_argument("--max-new-tokens", type=int, default=64, help="most tokens per candidate")
    policy.add_argument("--seed", type=int, default=0, help="candidate k samples with seed + k")


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    """The judge flags: ``--judge`` (``--model`` is the same flag), the judge CLI's engine flags, and a few
    judging flags.  The judge CLI's ``--temperature``/``--top-p``/``--seed`` would clash with the policy's, so the
    judge runs greedy with its ``judge_config.json`` unless ``--judge-samples`` asks for sampled judgments."""
    judge = parser.add_argument_group("judge")
    judge.add_argument("--judge", dest="model", help="judge model folder or Hub id (default: the shipped demo judge)")
    judge.add_argument("--no-swap", action="store_true",
                       help="pairwise strategies: judge each pair in one order only (half the calls)")
    judge.add_argument("--no-tie", action="store_true", help="pairwise: forbid the verdict 'tie'")
    judge.add_argument("--rubric", help="extra judging instructions for every item")
    judge.add_argument("--judge-samples", type=int, default=1,
                       help="K > 1: K sampled judgments per comparison, combined (judge-side self-consistency)")
    judge.add_argument("--judge-temperature", type=float, default=0.7, help="with --judge-samples: temperature")
    judge.add_argument("--judge-seed", type=int, default=0, help="with --judge-samples: seed of the first sample")
    judge.add_argument("--rounds", type=int, default=3, help="swiss: number of rounds")
    add_engine_arguments(parser, model_required=False)


def strategy_options(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Options of the named strategy from the flags (swap for tournaments, rounds for Swiss)."""
    options: dict[str, Any] = {}
    if name in ("knockout", "round_robin", "swiss") and args.no_swap:
        options["swap"] = False
    if name == "swiss":
        options["rounds"] = args.rounds
    return options


def policy_sampling(args: argparse.Namespace) -> PolicySampling:
    return PolicySampling(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                          seed=args.seed)


def _policy_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.policy_backend == "openai":
        return {"base_url": args.policy_base_url, "api_key": args.policy_api_key or os.environ.get("OPENAI_API_KEY"),
                "max_concurrency": args.max_concurrency, "timeout": args.timeout, "max_retries": args.max_retries}
    common = {"dtype": args.dtype, "max_model_len": args.policy_max_model_len,
              "trust_remote_code": args.trust_remote_code}
    if args.policy_backend == "vllm":
        return {**common, "gpu_memory_utilization": args.gpu_memory_utilization, "enforce_eager": args.enforce_eager}
    return {**common, "device": args.device, "batch_size": args.policy_batch_size}


def _judge_config(args: argparse.Namespace) -> Any:
    """The judge's configuration: its ``judge_config.json`` (or the defaults) with the flags given here."""
    judging = argparse.ArgumentParser(add_help=False)
    add_judging_arguments(judging)
    flags = judging.parse_args([])  # every judging flag unset ...
    flags.no_swap, flags.no_tie, flags.rubric = args.no_swap, args.no_tie, args.rubric  # ... but these
    return config_from_args(flags, JudgeConfig.from_pretrained(args.model))


def _shares_engine(args: argparse.Namespace) -> bool:
    """Policy and judge are the same local model on the same in-process backend: load it once."""
    return (args.policy is not None and args.policy == args.model and args.policy_backend == args.backend
            and args.backend in ("transformers", "vllm"))


def load_policy_from_args(args: argparse.Namespace) -> Policy:
    return load_policy(args.policy_backend, args.policy, **_policy_options(args))


def load_judge(args: argparse.Namespace, policy: Policy | None = None) -> Judge:
    """The judge the flags describe; when ``policy`` holds the same model on the same backend, its engine reuses
    the policy's weights (one copy in memory: for vLLM, one ``LLM`` serving both roles)."""
    config = _judge_config(args)
    if policy is not None and _shares_engine(args):
        if args.backend == "vllm":
            from critic.engines.vllm_engine import VLLMEngine

            return Judge(VLLMEngine(policy.llm, processor=policy.processor), config)  # type: ignore[attr-defined]
        from critic.engines.hf import TransformersEngine

        engine = TransformersEngine(policy.model, policy.processor, batch_size=args.batch_size,  # type: ignore[attr-defined]
                                    max_model_len=args.max_model_len)
        return Judge(engine, config)
    return Judge.from_pretrained(args.model, backend=args.backend, config=config, **engine_options(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scaling.best_of_n", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run = parser.add_argument_group("best-of-N")
    run.add_argument("--input", required=True, help="JSONL file of items")
    run.add_argument("--output", required=True, help="JSONL file of selections (appended; reruns skip finished ids)")
    run.add_argument("--n", type=int, default=None, help="candidates per item [8]; with --rerank: use the first n "
                                                         "(default: all)")
    run.add_argument("--strategy", default="pointwise", choices=list(STRATEGIES), help="how the best is picked")
    run.add_argument("--max-calls", type=int, default=None, help="judge-call budget for this run")
    run.add_argument("--chunk-size", type=int, default=8, help="items per policy + strategy call")
    run.add_argument("--rerank", metavar="PREVIOUS.jsonl",
                     help="re-rank the candidates of an earlier output instead of sampling (no --policy needed)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_policy_arguments(parser)
    add_judge_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if args.rerank is None and args.policy is None:
        parser.error("give --policy to sample candidates, or --rerank PREVIOUS.jsonl to re-rank earlier ones")
    if args.rerank is not None and Path(args.rerank).resolve() == Path(args.output).resolve():
        parser.error("--rerank and --output must be different files")
    if args.judge_samples < 1 or args.chunk_size < 1 or (args.n is not None and args.n < 1):
        parser.error("--judge-samples, --chunk-size and --n must be >= 1")
    if not Path(args.input).is_file():
        parser.error(f"--input {args.input!r} does not exist")
    previous = None
    if args.rerank is not None:
        try:
            previous = read_candidates(args.rerank)
        except (OSError, ValueError) as exc:
            parser.error(f"--rerank: {exc}")
    try:
        sampling = policy_sampling(args)
    except ValueError as exc:
        parser.error(str(exc))
    needs_judge = args.strategy != "self_consistency"
    if needs_judge:
        resolve_judge_model(parser, args)

    policy = load_policy_from_args(args) if previous is None else None
    try:
        judge = load_judge(args, policy) if needs_judge else None
        best = BestOfN(policy, judge, args.strategy, n=args.n or 8, sampling=sampling, max_calls=args.max_calls,
                       judge_samples=args.judge_samples, judge_temperature=args.judge_temperature,
                       judge_seed=args.judge_seed, **strategy_options(args, args.strategy))
        summary = run_file(best, args.input, args.output, previous=previous, rerank_n=args.n,
                           chunk_size=args.chunk_size, progress=not args.no_progress)
    except BudgetExceeded as exc:
        print(f"stopped: {exc}; the finished chunks are in {args.output}, a rerun continues", file=sys.stderr)
        return 3
    finally:
        if policy is not None:
            policy.close()
    print(json.dumps({"summary": summary.to_dict(), "judge_calls": best.spent}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
