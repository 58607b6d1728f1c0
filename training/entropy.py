"""Entropy-guided training (EGT): the judge's own uncertainty on each training pair, used to drop noisy pairs and to
order the rest from easy to hard.

The claim (Entropy-Guided Training for multimodal reward models): a judge's response entropy tracks its errors, so
it is an unsupervised proxy for label noise and difficulty. Two entropies are computed per pair, from a warm-up
judge (any judge folder or Hub id):

* ``token``: the mean per-token entropy (nats) of the judge's own critique and verdict. The judge generates under
  its constraint; the generated text is then scored teacher-forced, so the entropy is that of the model's
  unconstrained next-token distribution at every generated position. Averaged over both response orders.
* ``label``: the entropy of the verdict distribution (``A``/``B``/``tie`` probabilities, averaged over both orders).
* ``peak``: the largest per-token entropy of the same critique and verdict (averaged over both orders). Most of a
  critique's tokens are fixed by its template once its fact is written, so the mean dilutes the one or two
  positions where the judge hesitates between facts; the peak is that hesitation itself.

    python -m training.entropy score --judge DIR --data pairs.jsonl --output entropy.jsonl
    python -m training.entropy curate --data pairs.jsonl --scores entropy.jsonl --drop 0.3 --output kept.jsonl
    python -m training.sft --data kept.jsonl --curriculum entropy.jsonl --curriculum-stages 3 ...

``curate`` drops the highest-entropy share (``--drop``) or everything above ``--threshold``; pairs the judge could
not score are kept and counted. The curriculum (:class:`CurriculumSampler`) orders examples from low to high
entropy in ``stages`` blocks, shuffled within each block, and is what ``training.sft --curriculum`` plugs into
``transformers.Trainer``; ``--curriculum-schedule expanding`` grows the pool of examples from the easiest block to
all of them instead (:data:`CURRICULUM_SCHEDULES`).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from critic.core import Judge
from critic.preferences import PreferencePair, read_preferences
from critic.prompting import prepare

EntropyKind = Literal["token", "label", "peak"]
ENTROPY_KINDS: tuple[str, ...] = ("token", "label", "peak")


# ------------------------------------------------------------------------------------------------------- entropies
def label_entropy(probabilities: Mapping[str, float]) -> float:
    """Shannon entropy (nats) of a verdict distribution; zero-probability labels contribute nothing."""
    total = sum(probabilities.values())
    if total <= 0:
        raise ValueError("probabilities must have a positive sum")
    return -sum(p / total * math.log(p / total) for p in probabilities.values() if p > 0)


def token_entropies(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token entropy (nats) over each row's labelled positions: their ``mean`` or their ``max``.

    ``logits`` is [batch, length, vocab] and ``labels`` [batch, length] with -100 where not scored (prompt,
    padding); position t's distribution predicts token t+1, as in the training loss. Rows with no labelled
    position get NaN."""
    if reduction not in ("mean", "max"):
        raise ValueError(f"reduction must be 'mean' or 'max', got {reduction!r}")
    return token_entropy_stats(logits, labels)[reduction]


def token_entropy_stats(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both reductions of :func:`token_entropies` (``mean`` and ``max``) from one softmax over the vocabulary, the
    costly part with a real model's vocabulary."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [batch, length-1, vocab]
    entropy = -(logp.exp() * logp).sum(-1)  # [batch, length-1]
    mask = labels[:, 1:] != -100
    counts = mask.sum(-1)
    nan = torch.full_like(counts, math.nan, dtype=entropy.dtype)
    mean = (entropy * mask).sum(-1) / counts.clamp(min=1)
    peak = entropy.masked_fill(~mask, -1.0).max(-1).values  # entropies are >= 0, so masked positions never win
    return {"mean": torch.where(counts > 0, mean, nan), "max": torch.where(counts > 0, peak, nan)}


@dataclass
class SampleEntropy:
    """One pair's entropies under the warm-up judge."""

    id: str
    label: str
    """The data's preferred response ('A' or 'B')."""
    verdict: str | None = None
    """The judge's verdict (caller's order); None when it could not judge the pair."""
    agrees: bool | None = None
    """Whether the judge's verdict equals the data's label."""
    token_entropy: float | None = None
    """Mean per-token entropy of the generated critique and verdict, both orders averaged (nats)."""
    label_entropy: float | None = None
    """Entropy of the verdict probabilities (nats)."""
    peak_entropy: float | None = None
    """Largest per-token entropy of the generated critique and verdict, both orders averaged (nats)."""
    category: str | None = None
    error: str | None = None
    """Why the pair has no entropies."""

    def value(self, by: EntropyKind) -> float | None:
        if by not in ENTROPY_KINDS:
            raise ValueError(f"entropy kind must be one of {', '.join(ENTROPY_KINDS)}, got {by!r}")
        return getattr(self, f"{by}_entropy")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> SampleEntropy:
        return cls(**{k: row.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


def score_entropy(judge: Judge, pairs: Sequence[PreferencePair], *, chunk_size: int = 32,
                  progress: bool = True) -> list[SampleEntropy]:
    """Judge every pair (pairwise, both orders) and compute its label and token entropies.

    Token entropies need the model itself (a :class:`~critic.engines.hf.TransformersEngine`); on other engines
    only label entropies are computed. A pair the judge fails on gets ``error`` and no entropies."""
    from tqdm.auto import tqdm

    from critic.engines.hf import TransformersEngine

    teacher_forced = isinstance(judge.engine, TransformersEngine)
    spec = judge.config.spec("pairwise")
    out: list[SampleEntropy] = []
    bar = tqdm(total=len(pairs), desc="entropy", unit="pair", disable=not progress, file=sys.stderr)
    for start in range(0, len(pairs), chunk_size):
        chunk = pairs[start: start + chunk_size]
        items = [pair.to_item() for pair in chunk]
        results = judge.judge(items)
        rows = []
        for pair, item, result in zip(chunk, items, results):
            row = SampleEntropy(id=pair.id, label=pair.preferred, category=pair.category)
            if not result.ok:
                row.error = f"{result.error.kind}: {result.error.message}"  # type: ignore[union-attr]
            else:
                row.verdict = result.verdict
                row.agrees = result.verdict == pair.preferred
                row.label_entropy = label_entropy(result.probabilities)
            rows.append((row, item, result))
        if teacher_forced:
            _add_token_entropies(judge, spec, rows)
        out += [row for row, _, _ in rows]
        bar.update(len(chunk))
    bar.close()
    return out


def _add_token_entropies(judge: Judge, spec: Any, rows: list[tuple[SampleEntropy, Any, Any]]) -> None:
    """Teacher-forced entropy of each judgment's own text, averaged over the orders of its pair."""
    from training.sft import encode_batch
    from training.sft_data import SFTExample

    engine = judge.engine
    reserved = engine.reserved_strings()
    examples, owners = [], []
    for k, (row, item, result) in enumerate(rows):
        if row.error is not None:
            continue
        prompts = prepare(item, spec, judge.config.prompt, swap=len(result.judgments) > 1, reserved=reserved).prompts
        for prompt, judgment in zip(prompts, result.judgments):
            examples.append(SFTExample(f"{row.id}/{judgment.order}", prompt, judgment.text, "pairwise", judgment.label))
            owners.append(k)
    values: dict[int, list[tuple[float, float]]] = {}
    model = engine.model  # type: ignore[attr-defined]
    batch_size = getattr(engine, "batch_size", 8)
    for start in range(0, len(examples), batch_size):
        batch, _ = encode_batch(engine.processor, examples[start: start + batch_size])  # type: ignore[attr-defined]
        labels = batch.pop("labels")
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.inference_mode():
            logits = model(**batch).logits.cpu()
        stats = token_entropy_stats(logits, labels)
        means, peaks = stats["mean"].tolist(), stats["max"].tolist()
        for owner, mean, peak in zip(owners[start: start + batch_size], means, peaks):
            values.setdefault(owner, []).append((mean, peak))
    for k, found in values.items():
        rows[k][0].token_entropy = sum(mean for mean, _ in found) / len(found)
        rows[k][0].peak_entropy = sum(peak for _, peak in found) / len(found)


# ------------------------------------------------------------------------------------------------ rank statistics
def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on tie-averaged ranks); NaN when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("spearman needs two sequences of the same length, at least 2")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan


def auc(values: Sequence[float], flags: Sequence[bool]) -> float:
    """Area under the ROC curve of ``values`` as a score for ``flags`` (Mann-Whitney U over tie-averaged ranks):
    the chance that a flagged item scores above an unflagged one, ties counting half. NaN without both kinds."""
    if len(values) != len(flags):
        raise ValueError("auc needs one flag per value")
    ranks = _ranks(values)
    positives = sum(bool(f) for f in flags)
    negatives = len(flags) - positives
    if not positives or not negatives:
        return math.nan
    rank_sum = sum(r for r, f in zip(ranks, flags) if f)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


# -------------------------------------------------------------------------------------------- curation, curriculum
@dataclass
class Curation:
    """What :func:`curate` kept and dropped."""

    kept: list[str]
    dropped: list[str]
    unscored: list[str]
    """Ids without an entropy (judge errors or missing from the scores): kept, since nothing speaks against them."""
    threshold: float | None
    """The entropy above which pairs were dropped."""


def curate(scores: Sequence[SampleEntropy], *, by: EntropyKind = "token", drop: float | None = None,
           threshold: float | None = None) -> Curation:
    """Drop the highest-entropy share ``drop`` of the scored pairs, or every pair above ``threshold``."""
    if (drop is None) == (threshold is None):
        raise ValueError("give exactly one of drop (a share) and threshold (an entropy)")
    if drop is not None and not 0 <= drop < 1:
        raise ValueError("drop must be in [0, 1)")
    scored = [(s.value(by), s.id) for s in scores if s.value(by) is not None and not math.isnan(s.value(by))]  # type: ignore[arg-type]
    unscored = [s.id for s in scores if s.value(by) is None or math.isnan(s.value(by))]  # type: ignore[arg-type]
    scored.sort()
    if drop is not None:
        n_drop = int(round(drop * len(scored)))
        cut = len(scored) - n_drop
        threshold = scored[cut - 1][0] if 0 < cut < len(scored) else (math.inf if n_drop == 0 else -math.inf)
        kept, dropped = [i for _, i in scored[:cut]], [i for _, i in scored[cut:]]
    else:
        kept = [i for v, i in scored if v <= threshold]  # type: ignore[operator]
        dropped = [i for v, i in scored if v > threshold]  # type: ignore[operator]
    return Curation(kept=kept + unscored, dropped=dropped, unscored=unscored, threshold=threshold)


def _easy_to_hard(difficulty: Sequence[float], stages: int) -> list[int]:
    """Example indices from the lowest difficulty to the highest, NaN (unscored) last; checks ``stages``."""
    if stages < 1:
        raise ValueError("stages must be >= 1")
    key = [math.inf if d is None or math.isnan(d) else d for d in difficulty]
    return sorted(range(len(key)), key=lambda i: key[i])


def curriculum_order(difficulty: Sequence[float], stages: int, seed: int = 0) -> list[int]:
    """Indices from easiest to hardest in ``stages`` equal blocks, shuffled within each block (so the model does
    not see a fixed order inside a difficulty level). NaN difficulties go last."""
    ranked = _easy_to_hard(difficulty, stages)
    rng = random.Random(seed)
    out: list[int] = []
    for s in range(stages):
        block = ranked[s * len(ranked) // stages: (s + 1) * len(ranked) // stages]
        rng.shuffle(block)
        out += block
    return out


CURRICULUM_SCHEDULES = ("blocks", "expanding")
"""How a curriculum spends the training budget. ``blocks``: every epoch goes from easy to hard in ``stages`` blocks
(so every epoch ends on the hardest block). ``expanding`` ("baby steps"): the pool of examples the model draws from
starts as the easiest block and grows by one block at each of ``stages`` equal steps through the first ``ramp``
share of the draws; after that every example is drawn in random order."""


def check_schedule(schedule: str, name: str = "schedule") -> str:
    """``schedule`` if it is one of :data:`CURRICULUM_SCHEDULES`, else a ``ValueError`` naming the argument."""
    if schedule not in CURRICULUM_SCHEDULES:
        raise ValueError(f"{name} must be one of {', '.join(CURRICULUM_SCHEDULES)}, got {schedule!r}")
    return schedule


def expanding_order(difficulty: Sequence[float], stages: int, draws: int, ramp: float = 0.5,
                    seed: int = 0) -> list[int]:
    """``draws`` example indices for the ``expanding`` schedule. Draw ``t`` comes from the easiest
    ``min(stages, floor(t / (ramp * draws / stages)) + 1)`` blocks (all of them once ``t >= ramp * draws``); within a
    pool the draws run through fresh shuffles of it, so every example in the pool is seen once before any is seen
    twice. NaN difficulties join with the last block."""
    if not 0.0 <= ramp <= 1.0:
        raise ValueError("ramp must be in [0, 1]")
    if draws < 0:
        raise ValueError("draws must be >= 0")
    ranked = _easy_to_hard(difficulty, stages)
    rng = random.Random(seed)
    # Draw positions where the pool grows: stage s (0-based) starts at round(s * ramp * draws / stages).
    starts = [round(s * ramp * draws / stages) for s in range(stages)] + [draws]
    out: list[int] = []
    for s in range(stages):
        pool = ranked[: (s + 1) * len(ranked) // stages] if s < stages - 1 else ranked
        wanted = starts[s + 1] - starts[s]
        while wanted > 0 and pool:
            round_ = list(pool)
            rng.shuffle(round_)
            out += round_[:wanted]
            wanted -= len(round_[:wanted])
    return out


class CurriculumSampler(torch.utils.data.Sampler[int]):
    """A ``Trainer`` sampler for a curriculum (:data:`CURRICULUM_SCHEDULES`). ``blocks``: :func:`curriculum_order`
    each epoch (a new shuffle inside blocks). ``expanding``: epoch ``e`` yields draws ``e*n .. (e+1)*n - 1`` of
    :func:`expanding_order` over ``draws`` (the whole run's examples: steps times batch), so an epoch keeps its length
    ``n`` (``Trainer`` counts steps from it) while the pool grows across epochs; past ``draws``, random order."""

    def __init__(self, difficulty: Sequence[float], stages: int, seed: int = 0, *, schedule: str = "blocks",
                 draws: int | None = None, ramp: float = 0.5) -> None:
        if check_schedule(schedule) == "expanding" and draws is None:
            raise ValueError("the expanding schedule needs draws (the examples the whole run will see)")
        self.difficulty = list(difficulty)
        self.stages = stages
        self.seed = seed
        self.schedule = schedule
        self.epoch = 0
        self._draws = expanding_order(self.difficulty, stages, draws, ramp, seed) if schedule == "expanding" else []

    def __iter__(self) -> Iterator[int]:
        epoch, n = self.epoch, len(self.difficulty)
        self.epoch += 1
        if self.schedule == "blocks":
            return iter(curriculum_order(self.difficulty, self.stages, self.seed + epoch))
        order = self._draws[epoch * n: (epoch + 1) * n]
        if len(order) < n:  # past the planned run (or its partial last epoch): fill in random order
            rest = list(range(n))
            random.Random(self.seed + epoch).shuffle(rest)
            order += rest[: n - len(order)]
        return iter(order)

    def __len__(self) -> int:
        return len(self.difficulty)


def example_difficulty(example_ids: Sequence[str], pair_values: Mapping[str, float | None]) -> list[float]:
    """Each SFT example's value (e.g. entropy), looked up by its pair id (``{pair id}/{AB|BA|a|b}``); NaN when the
    pair has none."""
    out = []
    for example_id in example_ids:
        value = pair_values.get(example_id.rsplit("/", 1)[0])
        out.append(math.nan if value is None else float(value))
    return out


def write_scores(scores: Sequence[SampleEntropy], path: str | Path) -> Path:
    """Scores as ``score`` writes them (one JSON object per line; :func:`read_scores` reads them back)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in scores), encoding="utf-8")
    return out


def read_scores(path: str | Path) -> list[SampleEntropy]:
    """Scores written by ``score`` (one JSON object per line)."""
    from critic.batch import jsonl_rows

    out = []
    for number, _, row, error in jsonl_rows(Path(path)):
        if error is not None or not isinstance(row, dict) or "id" not in row:
            print(f"{path}: line {number} is not a score row; ignored", file=sys.stderr)
            continue
        out.append(SampleEntropy.from_dict(row))
    return out


# --------------------------------------------------------------------------------------------------------- commands
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.entropy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="entropies of a judge on every pair")
    score.add_argument("--judge", required=True, help="judge folder or Hub id")
    score.add_argument("--data", required=True, help="preference file (any format critic.preferences reads)")
    score.add_argument("--format", default="auto")
    score.add_argument("--images", default=None, help="folder that relative media paths are under")
    score.add_argument("--output", required=True, help="JSONL, one object per pair")
    score.add_argument("--limit", type=int, default=None)
    score.add_argument("--batch-size", type=int, default=16)
    score.add_argument("--no-progress", action="store_true")
    cur = sub.add_parser("curate", help="drop the highest-entropy pairs")
    cur.add_argument("--data", required=True)
    cur.add_argument("--format", default="auto")
    cur.add_argument("--images", default=None)
    cur.add_argument("--scores", required=True, help="output of the score command")
    cur.add_argument("--by", choices=ENTROPY_KINDS, default="token", help="which entropy curates (default token)")
    group = cur.add_mutually_exclusive_group(required=True)
    group.add_argument("--drop", type=float, help="share of scored pairs to drop, highest entropy first")
    group.add_argument("--threshold", type=float, help="drop pairs whose entropy is above this (nats)")
    cur.add_argument("--output", required=True, help="kept pairs, generic JSONL")
    cur.add_argument("--dropped", default=None, help="also write the dropped pairs here")
    return parser


def _write_pairs(pairs: Sequence[PreferencePair], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair.to_row(relative_to=path.parent)) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data = read_preferences(args.data, args.format, args.images)
    for problem in data.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if args.command == "score":
        pairs = data.pairs[: args.limit] if args.limit else data.pairs
        judge = Judge.from_pretrained(args.judge, batch_size=args.batch_size)
        scores = score_entropy(judge, pairs, chunk_size=args.batch_size * 2, progress=not args.no_progress)
        out = write_scores(scores, args.output)
        errors = sum(s.error is not None for s in scores)
        print(json.dumps({"pairs": len(scores), "errors": errors, "output": str(out)}))
        return 0
    scores = read_scores(args.scores)
    known = {s.id for s in scores}
    scores += [SampleEntropy(id=p.id, label=p.preferred, error="not in the scores file")
               for p in data.pairs if p.id not in known]
    curation = curate([s for s in scores if s.id in {p.id for p in data.pairs}], by=args.by, drop=args.drop,
                      threshold=args.threshold)
    kept = set(curation.kept)
    _write_pairs([p for p in data.pairs if p.id in kept], Path(args.output))
    if args.dropped:
        _write_pairs([p for p in data.pairs if p.id not in kept], Path(args.dropped))
    print(json.dumps({"kept": len(curation.kept), "dropped": len(curation.dropped),
                      "unscored_kept": len(curation.unscored), "threshold": curation.threshold}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
