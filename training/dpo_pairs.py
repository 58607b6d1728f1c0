"""Judge-built DPO pairs (UnifiedReward's pipeline) with dynamic reward scaling (MM-RLHF).

    python -m training.dpo_pairs --policy POLICY --judge JUDGE --data prompts.jsonl --output dpo.jsonl \\
        [--n 8] [--rounds 3] [--beta 0.1 --drs-w 1.0 --drs-k 0.5]

For each prompt (a row with ``question`` and ``image``/``images``, as :class:`scaling.types.Item` reads it):

1. the policy samples ``n`` candidates (:mod:`scaling.policy`: vLLM, transformers or an OpenAI-compatible server);
2. the pairwise judge ranks them over ``rounds`` Swiss rounds (:class:`scaling.tournament.Swiss`, both orders);
3. the pointwise judge scores every candidate (:class:`scaling.pointwise.PointwiseBestOfN`);
4. **chosen** is the best-scored candidate among those that won a match, **rejected** the worst-scored among
   those that lost one; the prompt is dropped when there is no such pair or chosen's score is not above
   rejected's (the two judges disagree, or every candidate looks alike) — or, optionally, when the margin is under
   ``--min-margin`` or chosen's own score under ``--min-chosen-score`` (a prompt where even the best candidate looks
   wrong gives a pair of two wrong answers: with a weak policy, most of them).

Rows are written in TRL's DPO dataset format — ``prompt``, ``chosen``, ``rejected``, ``images`` — plus ``id``,
``chosen_score``, ``rejected_score``, ``margin`` (δ = the score difference) and ``beta``, the per-pair β of dynamic
reward scaling: β(δ) = β₀·(1 + w·(1 − e^{−kδ})). A confident judge (large δ) gets a larger β, so the DPO loss
pushes harder on pairs the judge is sure of. :func:`drs_dpo_trainer` returns a ``trl.DPOTrainer`` subclass that
reads that column (TRL is an optional extra: ``pip install -e ".[dpo]"``).

Dropped prompts are written to ``--dropped`` with the reason, so nothing disappears silently.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from critic.core import Judge
from scaling.pointwise import PointwiseBestOfN
from scaling.tournament import Swiss
from scaling.types import Candidate, Item, Selection


# ---------------------------------------------------------------------------------------------- reward scaling
@dataclass(frozen=True)
class DRSConfig:
    """Dynamic reward scaling: β(δ) = beta·(1 + w·(1 − exp(−k·δ))) for a judge margin δ ≥ 0."""

    beta: float = 0.1
    w: float = 1.0
    k: float = 0.5

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError("beta must be positive")
        if self.w < 0 or self.k < 0:
            raise ValueError("w and k must be >= 0")

    def __call__(self, margin: float) -> float:
        return drs_beta(margin, self.beta, self.w, self.k)


def drs_beta(margin: float, beta: float, w: float, k: float) -> float:
    """β(δ) = β₀·(1 + w·(1 − e^{−kδ})); a negative margin counts as 0 (such pairs are dropped anyway)."""
    if math.isnan(margin):
        raise ValueError("margin is NaN")
    return beta * (1.0 + w * (1.0 - math.exp(-k * max(margin, 0.0))))


# ---------------------------------------------------------------------------------------------- pair selection
@dataclass
class DPOPair:
    """The pair built for one prompt, or why there is none."""

    id: str | None
    chosen: int | None = None
    rejected: int | None = None
    chosen_score: float | None = None
    rejected_score: float | None = None
    dropped: str | None = None
    """Why the prompt gave no pair."""

    @property
    def margin(self) -> float | None:
        if self.chosen_score is None or self.rejected_score is None:
            return None
        return self.chosen_score - self.rejected_score


def select_pair(item_id: str | None, ranking: Selection, scoring: Selection, *, min_margin: float = 0.0,
                min_chosen_score: float | None = None, require_unbeaten: bool = False) -> DPOPair:
    """The chosen/rejected rule on one prompt's Swiss matches (``ranking``) and pointwise scores (``scoring``).
    The pair is dropped unless chosen outscores rejected by more than ``min_margin``, when given chosen's own score
    is at least ``min_chosen_score``, and with ``require_unbeaten`` chosen lost no pairwise match: a best-scored
    winner that another candidate beat head to head is one the two kinds of judgment disagree about."""
    winners = {m.winner for m in ranking.matches if m.winner is not None and m.b != -1}
    losers = {m.a if m.winner == m.b else m.b for m in ranking.matches if m.winner is not None and m.b != -1}
    scores = scoring.scores
    winners = {i for i in winners if scores[i] is not None}
    losers = {i for i in losers if scores[i] is not None}
    if not winners or not losers:
        reason = ranking.error or scoring.error or "no decided match between two scored candidates"
        return DPOPair(item_id, dropped=reason)
    # Ties on score go to the earlier-sampled candidate (deterministic and seed-reproducible).
    chosen = max(sorted(winners), key=lambda i: scores[i])  # type: ignore[arg-type, return-value]
    rejected = min(sorted(losers), key=lambda i: scores[i])  # type: ignore[arg-type, return-value]
    pair = DPOPair(item_id, chosen, rejected, scores[chosen], scores[rejected])
    if chosen == rejected:
        pair.dropped = "the only winner is also the only loser"
    elif pair.margin is None or pair.margin <= min_margin:
        pair.dropped = (f"chosen's score {scores[chosen]:.2f} is not above rejected's {scores[rejected]:.2f}"
                        + (f" by more than {min_margin:g}" if min_margin > 0 else ""))
    elif min_chosen_score is not None and scores[chosen] < min_chosen_score:  # type: ignore[operator]
        pair.dropped = f"chosen's score {scores[chosen]:.2f} is under {min_chosen_score:g}: no candidate looks right"
    elif require_unbeaten and chosen in losers:
        pair.dropped = "chosen lost a pairwise match"
    return pair


def build_pairs(items: Sequence[Item], candidates: Sequence[Sequence[Candidate]], judge: Judge, *,
                rounds: int = 3, min_margin: float = 0.0, min_chosen_score: float | None = None,
                require_unbeaten: bool = False) -> tuple[list[DPOPair], list[Selection], list[Selection]]:
    """Rank (Swiss, ``rounds``) and score (pointwise) every prompt's candidates, then apply :func:`select_pair`.
    Returns the pairs with the two selections behind each, for auditing."""
    ranking = Swiss(rounds=rounds).select(items, candidates, judge)
    scoring = PointwiseBestOfN().select(items, candidates, judge)
    pairs = [select_pair(item.id, r, s, min_margin=min_margin, min_chosen_score=min_chosen_score,
                         require_unbeaten=require_unbeaten) for item, r, s in zip(items, ranking, scoring)]
    return pairs, ranking, scoring


def dpo_row(item: Item, cands: Sequence[Candidate], pair: DPOPair, drs: DRSConfig) -> dict[str, Any]:
    """One row in TRL's DPO format (plus the judge's scores, margin and the DRS β)."""
    assert pair.chosen is not None and pair.rejected is not None and pair.margin is not None
    return {"id": item.id, "prompt": item.question, "chosen": cands[pair.chosen].text,
            "rejected": cands[pair.rejected].text, "images": [str(i) for i in item.images],
            "chosen_score": pair.chosen_score, "rejected_score": pair.rejected_score, "margin": pair.margin,
            "beta": drs(pair.margin)}


# ---------------------------------------------------------------------------------------------- TRL integration
def drs_dpo_trainer() -> type:
    """A ``trl.DPOTrainer`` subclass that uses each pair's ``beta`` column (dynamic reward scaling).

    TRL's losses multiply the policy/reference log-ratio margin by its scalar ``self.beta``; for each batch this
    trainer sets ``self.beta`` to the batch's per-pair β tensor (shape [pairs], which broadcasts everywhere the
    scalar did, in the loss and in the logged rewards), then restores it. Rows without the column use
    ``args.beta``. Raises ImportError naming the extra when TRL is missing."""
    try:
        import torch
        from trl import DPOTrainer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("dynamic reward scaling needs TRL: pip install -e '.[dpo]'") from exc

    class _CollateBeta:
        """Wraps TRL's collator: takes ``beta`` off each example, collates the rest, adds ``beta`` as a tensor."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            betas = [example.pop("beta", None) for example in examples]
            batch = self.inner(examples)
            if all(b is not None for b in betas):
                batch["beta"] = torch.tensor(betas, dtype=torch.float32)
            return batch

    class DRSDPOTrainer(DPOTrainer):
        """DPO with a per-pair β read from the dataset's ``beta`` column (:func:`drs_beta`)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.data_collator = _CollateBeta(self.data_collator)

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if "beta" not in self._signature_columns:  # keep the column through remove_unused_columns
                self._signature_columns = [*self._signature_columns, "beta"]

        def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
            beta = inputs.pop("beta", None)
            if beta is None:
                return super()._compute_loss(model, inputs, return_outputs)
            scalar = self.beta
            self.beta = beta.to(self.accelerator.device)
            try:
                return super()._compute_loss(model, inputs, return_outputs)
            finally:
                self.beta = scalar

    return DRSDPOTrainer


def weighted_dpo_loss(chosen_logps: Any, rejected_logps: Any, ref_chosen_logps: Any, ref_rejected_logps: Any,
                      beta: Any) -> Any:
    """The sigmoid DPO loss per pair with a per-pair β tensor: −log σ(β·((π_c − ref_c) − (π_r − ref_r))).

    Framework-free (any torch training loop can call it); :func:`drs_dpo_trainer` uses the same formula."""
    import torch.nn.functional as F

    logits = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * logits)


# --------------------------------------------------------------------------------------------------------- command
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.dpo_pairs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True, help="policy model folder, Hub id or server model name")
    parser.add_argument("--policy-backend", default="vllm", help="vllm, transformers or openai")
    parser.add_argument("--judge", required=True, help="judge folder or Hub id")
    parser.add_argument("--judge-backend", default="transformers")
    parser.add_argument("--data", required=True, help="prompts JSONL: question, image(s), id")
    parser.add_argument("--output", required=True, help="DPO pairs JSONL (TRL format)")
    parser.add_argument("--dropped", default=None, help="prompts that gave no pair, with the reason")
    parser.add_argument("--n", type=int, default=8, help="candidates per prompt")
    parser.add_argument("--rounds", type=int, default=3, help="Swiss rounds of pairwise judging")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-margin", type=float, default=0.0,
                        help="drop a prompt unless chosen outscores rejected by more than this (default 0)")
    parser.add_argument("--min-chosen-score", type=float, default=None,
                        help="drop a prompt whose chosen candidate scores under this (e.g. the scale's midpoint)")
    parser.add_argument("--require-unbeaten", action="store_true",
                        help="drop a prompt whose chosen candidate lost a pairwise match (pointwise and pairwise "
                             "judgments disagree about it)")
    parser.add_argument("--beta", type=float, default=0.1, help="DRS β₀")
    parser.add_argument("--drs-w", type=float, default=1.0, help="DRS w")
    parser.add_argument("--drs-k", type=float, default=0.5, help="DRS k")
    parser.add_argument("--chunk-size", type=int, default=32, help="prompts per generate/judge round")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    from critic.batch import jsonl_rows
    from scaling.policy import PolicySampling, load_policy

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        drs = DRSConfig(args.beta, args.drs_w, args.drs_k)
    except ValueError as exc:
        parser.error(str(exc))
    if args.min_margin < 0:
        parser.error("--min-margin must be >= 0")
    data_path = Path(args.data)
    items, bad = [], []
    for number, item_id, row, error in jsonl_rows(data_path):
        try:
            if error is not None:
                raise ValueError(error)
            item = Item.from_dict(row)
            item.id = item.id or item_id
            item.images = [str(p if Path(p).is_absolute() else data_path.parent / p) for p in item.images]
            items.append(item)
        except ValueError as exc:
            bad.append({"id": item_id, "dropped": f"line {number}: {exc}"})
    policy = load_policy(args.policy_backend, args.policy)
    judge = Judge.from_pretrained(args.judge, backend=args.judge_backend)
    sampling = PolicySampling(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    out, dropped_path = Path(args.output), Path(args.dropped) if args.dropped else None
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = 0
    dropped = list(bad)
    with out.open("w", encoding="utf-8") as handle:
        bar = tqdm(total=len(items), desc="dpo pairs", unit="prompt", disable=args.no_progress, file=sys.stderr)
        for start in range(0, len(items), args.chunk_size):
            chunk = items[start: start + args.chunk_size]
            candidates = policy.sample(chunk, args.n, sampling)
            pairs, _, _ = build_pairs(chunk, candidates, judge, rounds=args.rounds, min_margin=args.min_margin,
                                      min_chosen_score=args.min_chosen_score, require_unbeaten=args.require_unbeaten)
            for item, cands, pair in zip(chunk, candidates, pairs):
                if pair.dropped is None:
                    handle.write(json.dumps(dpo_row(item, cands, pair, drs)) + "\n")
                    kept += 1
                else:
                    dropped.append({"id": item.id, "dropped": pair.dropped})
            handle.flush()
            bar.update(len(chunk))
        bar.close()
    if dropped_path is not None:
        dropped_path.write_text("".join(json.dumps(d) + "\n" for d in dropped), encoding="utf-8")
    print(json.dumps({"prompts": len(items) + len(bad), "pairs": kept, "dropped": len(dropped),
                      "kept_rate": kept / max(len(items) + len(bad), 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
