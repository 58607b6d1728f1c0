"""The test-time scaling demonstration on the synthetic shapes task: a weak policy, the demo judge, the curve.

    python -m scaling.demo --out runs/scaling_demo                       # build the policy, sample, judge, plot (16 min)
    python -m scaling.demo --out /tmp/sd --quick --policy-backend transformers   # a minute-long plumbing check
    python -m scaling.demo --out runs/policy1500 --policy-steps 1500 --policy-vision-steps 600 --policy-pairs 12000 \
        --policy-only                                                    # a stronger policy only (7 min)

Steps (each logs on stderr):

1. a deliberately weak policy: a small Qwen2-VL from :mod:`critic.tiny`, its vision tower pre-trained briefly on
   per-cell labels (:mod:`training.vision_pretrain`), then SFT (:mod:`training.sft`) on the synthetic task's
   preferred answers ("It is a cross.") for a few hundred steps, so that its answers are right only part of the time
   (``--policy-vision aligned`` and more steps give one that answers well, for the DPO demonstration);
2. labelled items (question, scene, reference answer) from a scene-space seed that neither the policy nor the demo
   judge trained or was evaluated on; the hallucination family is left out (its question, "Name one object", has
   many right answers and the reference names one);
3. :func:`scaling.curve.scaling_curve`: candidates sampled once at the largest N at temperature 1 (vLLM on CPU by
   default, so the demonstration exercises the production backend), smaller N as prefixes, each strategy run on the
   demo judge; ``curve.json`` and ``curve.png`` in ``--out``.

The policy is a separate model from the judge (its own tokenizer and weights), as in production.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from critic.engines.base import ChatPrompt
from critic.media import load_image
from critic.preferences import PreferencePair, read_preferences
from critic.tiny import QWEN_SPECIAL_TOKENS, TinySpec, build_tiny_model, builtin_corpus, train_tokenizer
from scaling.policy import PolicyPrompt
from scaling.types import Item
from training.sft import SFTConfig, train_sft
from training.sft_data import SFTExample
from training.synthetic import POSITION_WORDINGS, resolve_wording, write_dataset
from training.vision_pretrain import VisionPretrainConfig, pretrain_vision

ITEMS_SEED = 2
"""Scene-space seed of the labelled items: the demo judge trains on seed 0 and is evaluated on seed 1."""


POLICY_VISION = ("plain", "aligned")


@dataclass(frozen=True)
class PolicyRecipe:
    """Everything that decides the policy (the defaults: the scaling demo's weak one)."""

    pairs: int = 6000
    steps: int = 300
    vision_steps: int = 150
    learning_rate: float = 2e-3
    batch_size: int = 32
    seed: int = 0
    position_wording: str = "numbers"
    """How its training pairs name cells (``training.synthetic``'s ``position_wording``): the judge's."""
    vision: str = "plain"
    """How the tower is pre-trained: "plain" (linear per-cell heads: a weak reader, the scaling demo's point) or
    "aligned" (as the demo judge's: colour and shape heads aligned to their words, combination and cell codes), for a
    policy that answers well, as a real one would in a DPO pipeline."""
    vision_learning_rate: float | None = None
    """The tower's learning rate during SFT (None: ``learning_rate``; the demo judge uses 5e-4)."""
    spec: TinySpec = field(default_factory=lambda: TinySpec(
        vocab_size=800, hidden_size=128, intermediate_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
        vision_depth=2, vision_width=128, vision_heads=4, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16,
        max_position_embeddings=1024))

    def __post_init__(self) -> None:
        if self.vision not in POLICY_VISION:
            raise ValueError(f"vision must be one of {POLICY_VISION}, got {self.vision!r}")


QUICK_POLICY = PolicyRecipe(pairs=64, steps=10, vision_steps=5, batch_size=8)


def _log(message: str) -> None:
    print(f"[scaling-demo] {message}", file=sys.stderr, flush=True)


def policy_examples(pairs: list[PreferencePair], prompt: PolicyPrompt) -> list[SFTExample]:
    """The policy's SFT examples: the question (in the policy's own prompt layout) answered with the preferred
    response. Hallucination pairs are left out (no single right answer)."""
    out = []
    for pair in pairs:
        if pair.category == "hallucination":
            continue
        answer = pair.response_a if pair.preferred == "A" else pair.response_b
        chat = ChatPrompt(system=prompt.system, text=pair.question, images=(load_image(pair.images[0]),))
        out.append(SFTExample(f"{pair.id}/policy", chat, answer, "pairwise", "", pair.category))
    return out


def labelled_items(pairs: list[PreferencePair]) -> list[Item]:
    """Items with the preferred response as the reference answer (hallucination pairs left out)."""
    items = []
    for pair in pairs:
        if pair.category == "hallucination":
            continue
        reference = pair.response_a if pair.preferred == "A" else pair.response_b
        items.append(Item(question=pair.question, images=list(pair.images), id=pair.id, reference=reference,
                          meta={"category": pair.category}))
    return items


def write_items(items: list[Item], path: Path) -> Path:
    """JSONL rows that ``python -m scaling.curve --data`` reads (image paths absolute)."""
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            row = {"id": item.id, "question": item.question, "images": [str(Path(i).resolve()) for i in item.images],
                   "reference": item.reference, "category": item.meta.get("category")}
            f.write(json.dumps(row) + "\n")
    return path


def build_policy(out: Path, recipe: PolicyRecipe = PolicyRecipe(), *, progress: bool = True) -> dict[str, Any]:
    """Train the weak policy into ``out`` (a model folder any policy backend loads)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    start = time.perf_counter()
    work = out / "build"
    pairs = read_preferences(write_dataset(work / "train", recipe.pairs, seed=recipe.seed,
                                           position_wording=recipe.position_wording)).pairs
    prompt = PolicyPrompt()
    texts = [f"{prompt.system}\n{p.question}\n{p.response_a}\n{p.response_b}" for p in pairs]
    tokenizer = train_tokenizer(texts + builtin_corpus(1000), recipe.spec.vocab_size, QWEN_SPECIAL_TOKENS)
    init = build_tiny_model(work / "init", "qwen2_vl", seed=recipe.seed, spec=recipe.spec, tokenizer=tokenizer)
    processor = AutoProcessor.from_pretrained(init)
    model = AutoModelForImageTextToText.from_pretrained(init)
    aligned = recipe.vision == "aligned"
    vision = pretrain_vision(model, processor, VisionPretrainConfig(
        steps=recipe.vision_steps, eval_every=50, heldout_scenes=64, align_to_words=aligned, combo_codes=aligned,
        cell_codes=aligned), progress=progress)
    config = SFTConfig(max_steps=recipe.steps, learning_rate=recipe.learning_rate,
                       vision_learning_rate=recipe.vision_learning_rate,
                       per_device_train_batch_size=recipe.batch_size, seed=recipe.seed,
                       max_length=recipe.spec.max_position_embeddings, logging_steps=25)
    result = train_sft(model, processor, policy_examples(pairs, prompt), config, work / "trainer", progress=progress)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    report = {"minutes": (time.perf_counter() - start) / 60, "steps": result.steps,
              "final_loss": result.losses[-1][1] if result.losses else None, "vision_curve": vision,
              "recipe": json.loads(json.dumps(asdict(recipe), default=str))}
    (out / "policy_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaling.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the policy, items, curve.json/png")
    parser.add_argument("--judge", default=None, help="judge folder (default: the demo judge)")
    parser.add_argument("--backend", default="transformers", help="judge backend (default transformers)")
    parser.add_argument("--policy-backend", default="vllm", help="policy backend (default vllm)")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="candidate counts")
    parser.add_argument("--strategies", nargs="+", default=["pointwise", "knockout", "self_consistency"])
    parser.add_argument("--items", type=int, default=600,
                        help="labelled items (default 600; with 200 the standard error, ~3.5 points, was larger than "
                             "the gaps between strategies)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--quick", action="store_true", help="tiny policy and few items: checks the plumbing")
    defaults = PolicyRecipe()
    parser.add_argument("--policy-steps", type=int, default=defaults.steps,
                        help=f"the policy's SFT steps (default {defaults.steps}: deliberately weak)")
    parser.add_argument("--policy-vision-steps", type=int, default=defaults.vision_steps,
                        help=f"the policy's vision pre-training steps (default {defaults.vision_steps})")
    parser.add_argument("--policy-pairs", type=int, default=defaults.pairs,
                        help=f"synthetic pairs the policy trains on (default {defaults.pairs})")
    parser.add_argument("--policy-vision", choices=POLICY_VISION, default=defaults.vision,
                        help="the policy tower's pre-training: plain (default, a weak reader) or aligned (the demo "
                             "judge's: word-aligned heads, combination and cell codes)")
    parser.add_argument("--policy-vision-lr", type=float, default=defaults.vision_learning_rate,
                        help="the tower's learning rate during the policy's SFT (default: the SFT rate)")
    parser.add_argument("--policy-only", action="store_true",
                        help="build the policy into OUT/policy and stop (e.g. for the DPO demonstration)")
    parser.add_argument("--position-wording", choices=("auto",) + POSITION_WORDINGS, default="auto",
                        help="how the policy's training pairs and the items name cells; auto (default): the wording "
                             "the judge (and an existing OUT/policy) was built with, from its build report")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from critic.core import Judge
    from critic.demo_judge import demo_judge_dir
    from scaling.best_of_n import needs_judge
    from scaling.curve import paired_counts, scaling_curve, write_plot
    from scaling.policy import PolicySampling, load_policy
    from scaling.registry import make_strategy

    args.out.mkdir(parents=True, exist_ok=True)
    policy_dir = args.out / "policy"
    wants_judge = any(needs_judge(make_strategy(name)) for name in args.strategies)
    judge_dir = args.judge
    if judge_dir is None and (wants_judge or args.policy_only):
        try:
            judge_dir = demo_judge_dir()
        except (FileNotFoundError, ValueError) as exc:  # no --judge and no shipped demo judge
            if not args.policy_only:
                parser.error(str(exc))
            # A policy alone needs no judge; it is built in the default wording.
    built = [policy_dir] if (policy_dir / "config.json").is_file() else []
    try:
        wording = resolve_wording(args.position_wording, *built, *([judge_dir] if judge_dir else []))
    except ValueError as exc:
        parser.error(str(exc))
    if not built:
        _log("building the weak policy")
        recipe = QUICK_POLICY if args.quick else PolicyRecipe(
            pairs=args.policy_pairs, steps=args.policy_steps, vision_steps=args.policy_vision_steps,
            vision=args.policy_vision, vision_learning_rate=args.policy_vision_lr)
        build_policy(policy_dir, replace(recipe, position_wording=wording), progress=not args.no_progress)
    if args.policy_only:
        return 0
    n_items = 8 if args.quick else args.items
    # Generate more rows than needed: hallucination rows are dropped.
    rows = read_preferences(write_dataset(args.out / "items", n_items * 2, seed=ITEMS_SEED,
                                          position_wording=wording)).pairs
    items = labelled_items(rows)[:n_items]
    write_items(items, args.out / "items.jsonl")
    judge = Judge.from_pretrained(str(judge_dir), backend=args.backend) if wants_judge else None
    policy = load_policy(args.policy_backend, str(policy_dir))
    _log(f"sampling {max(args.n)} candidates for {len(items)} items ({args.policy_backend})")
    candidates = policy.sample(items, max(args.n), PolicySampling(temperature=1.0, seed=args.seed, max_new_tokens=24))
    policy.close()
    curve = scaling_curve(items, candidates, judge, args.n, args.strategies, progress=not args.no_progress)
    (args.out / "curve.json").write_text(json.dumps(curve, indent=2) + "\n", encoding="utf-8")
    write_plot(curve, args.out / "curve.png")
    summary = {k: curve[k] for k in ("n", "oracle", "random")} | \
        {s: v["accuracy"] for s, v in curve["strategies"].items()}
    if {"knockout", "pointwise"} <= set(curve["strategies"]):  # the comparison, item by item
        summary["knockout_vs_pointwise"] = paired_counts(curve, "knockout", "pointwise")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
