"""Critique SFT: train a vision-language model to write the judge's output, with ``transformers.Trainer``.

    python -m training.sft --data pairs.jsonl --base Qwen/Qwen2-VL-2B-Instruct --out runs/judge \\
        --epochs 1 --lr 1e-5 --batch-size 4 --grad-accum 8 [--lora-r 16] [--modes pairwise,pointwise]

* Data: any preference file :mod:`critic.preferences` reads (generic JSONL, MM-RLHF, VL-RewardBench, Multimodal
  RewardBench, ``hf:NAME``), converted by :mod:`training.sft_data` into (prompt, target) examples in both orders.
* Inputs go through the model's own processor and chat template (:func:`render_prompt`, shared with the engines);
  the target's tokens follow the prompt's, then the end-of-turn token the engines stop on.
* Loss on the target tokens only (prompt and padding labels are -100).
* ``transformers.Trainer`` does the loop, so accelerate / FSDP / DeepSpeed configs and ``torchrun`` work as usual;
  ``--lora-r`` wraps the model with peft LoRA; ``--vision-lr`` gives the vision tower its own learning rate.
* The output folder is a judge: weights, processor, and ``judge_config.json`` (the prompt templates and critique
  budget the targets were built with), so ``python -m critic.judge --model OUT`` judges exactly as trained.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from critic.core import JudgeConfig
from critic.engines.tokenizer_utils import render_prompt, reserved_strings
from critic.prompting import PromptConfig
from training.sft_data import SFTExample, build_examples

IGNORE_INDEX = -100
# Parameter-name fragments of vision towers and projectors across the VLM families transformers ships.
VISION_PARAMETER_NAMES = ("visual", "vision_tower", "vision_model", "multi_modal_projector")


@dataclass
class SFTConfig:
    """Training knobs (names follow ``transformers.TrainingArguments`` where one exists)."""

    num_train_epochs: float = field(default=1.0, metadata={"help": "passes over the examples"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps; overrides epochs when > 0"})
    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate"})
    vision_learning_rate: float | None = field(default=None, metadata={"help": "vision tower LR (None: same)"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "examples per device and step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    warmup_steps: float = field(default=0.03, metadata={"help": "warm-up steps (int) or share of all steps (<1)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name"})
    max_length: int = field(default=4096, metadata={"help": "longer examples are skipped (and counted)"})
    seed: int = field(default=0, metadata={"help": "data order and initialisation of new weights"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains all weights"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    logging_steps: int = field(default=10, metadata={"help": "log the loss every N steps"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (GPU)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory"})
    curriculum_stages: int = field(default=3, metadata={"help": "easy-to-hard blocks when a difficulty is given"})
    curriculum_schedule: str = field(default="blocks", metadata={
        "help": "blocks: every epoch easy to hard; expanding: the pool grows from the easiest block to all"})
    curriculum_ramp: float = field(default=0.5, metadata={
        "help": "expanding: share of the run over which the pool grows to every example"})

    def __post_init__(self) -> None:
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch size and gradient accumulation must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if self.max_length < 16:
            raise ValueError("max_length must be >= 16")
        if self.curriculum_stages < 1:
            raise ValueError("curriculum_stages must be >= 1")
        from training.entropy import check_schedule

        check_schedule(self.curriculum_schedule, "curriculum_schedule")
        if not 0.0 <= self.curriculum_ramp <= 1.0:
            raise ValueError("curriculum_ramp must be in [0, 1]")


# ---------------------------------------------------------------------------------------------------------- data
def end_token_id(processor: Any) -> int:
    """The token that ends the assistant turn: the one the engines stop on (the tokenizer's eos)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; the judge could not stop after its verdict")
    return int(tokenizer.eos_token_id)


def encode_batch(processor: Any, examples: Sequence[SFTExample]) -> tuple[dict[str, torch.Tensor], list[int]]:
    """A training batch (ids, labels, attention mask, per-token and media inputs) and each row's length, with ONE
    processor call for all prompts.

    The processor's per-call overhead dwarfs its per-image work on small images (measured here: ~27 ms per
    example one by one), so prompts are processed together, then each row keeps its unpadded prompt ids, gets its
    target's ids and the end token appended (labels -100 on the prompt), and is right-padded again.  Media
    tensors (pixel values, grids) come out of the processor already concatenated in row order.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    end = end_token_id(processor)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    images = [image for e in examples for image in e.prompt.images]
    videos = [list(e.prompt.video) for e in examples if e.prompt.video]
    kwargs: dict[str, Any] = {"text": [render_prompt(processor, e.prompt) for e in examples], "padding": True,
                              "return_tensors": "pt"}
    if images:
        kwargs["images"] = images
    if videos:
        kwargs["videos"] = videos
    encoded = dict(processor(**kwargs))
    mask = encoded.pop("attention_mask").bool()
    ids = encoded.pop("input_ids")
    per_token = [k for k, v in encoded.items() if torch.is_tensor(v) and v.dim() == 2 and v.shape == mask.shape]
    prompts = [ids[r][mask[r]] for r in range(len(examples))]
    targets = [tokenizer.encode(e.target, add_special_tokens=False) + [end] for e in examples]
    lengths = [len(p) + len(t) for p, t in zip(prompts, targets)]
    width = max(lengths)
    batch = {
        "input_ids": torch.full((len(examples), width), pad, dtype=torch.long),
        "labels": torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long),
        "attention_mask": torch.zeros((len(examples), width), dtype=torch.long),
    }
    for key in per_token:  # e.g. mm_token_type_ids; target tokens are plain text (0)
        batch[key] = torch.zeros((len(examples), width), dtype=encoded[key].dtype)
    for r, (prompt, target) in enumerate(zip(prompts, targets)):
        n, m = len(prompt), len(target)
        batch["input_ids"][r, :n] = prompt
        batch["input_ids"][r, n: n + m] = torch.tensor(target)
        batch["labels"][r, n: n + m] = torch.tensor(target)
        batch["attention_mask"][r, : n + m] = 1
        for key in per_token:
            batch[key][r, :n] = encoded[key][r][mask[r]]
    for key, value in encoded.items():
        if key not in batch and torch.is_tensor(value):
            batch[key] = value
    return batch, lengths


def encode_example(processor: Any, example: SFTExample, max_length: int) -> dict[str, torch.Tensor]:
    """One example's tensors (rows of :func:`encode_batch`, batch dimension dropped where there is one).  Raises
    ValueError when it is longer than ``max_length``."""
    batch, [length] = encode_batch(processor, [example])
    if length > max_length:
        raise ValueError(f"{example.id}: {length} tokens, above max_length {max_length}")
    # per-token tensors are [1, length]: drop the batch dimension; media tensors stay as the processor made them
    return {k: (v[0] if v.dim() == 2 and v.shape == (1, length) else v) for k, v in batch.items()}


class SFTDataset(torch.utils.data.Dataset):
    """The examples themselves; encoding happens per batch in :class:`SFTCollator` (one processor call)."""

    def __init__(self, examples: Sequence[SFTExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> SFTExample:
        return self.examples[index]


@dataclass
class SFTCollator:
    """Encodes a batch of examples with :func:`encode_batch`.  Examples longer than ``max_length`` are dropped
    from their batch and listed in ``skipped`` (a batch left empty is an error: raise ``max_length``)."""

    processor: Any
    max_length: int
    skipped: list[str] = field(default_factory=list)

    def __call__(self, examples: list[SFTExample]) -> dict[str, torch.Tensor]:
        batch, lengths = encode_batch(self.processor, examples)
        if max(lengths) <= self.max_length:
            return batch
        fitting = [e for e, n in zip(examples, lengths) if n <= self.max_length]
        self.skipped += [e.id for e, n in zip(examples, lengths) if n > self.max_length]
        if not fitting:
            raise ValueError(f"every example of this batch is longer than max_length {self.max_length}")
        return encode_batch(self.processor, fitting)[0]  # re-encoded so the media tensors match the rows


# ---------------------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What a training run did."""

    steps: int
    seconds: float
    examples: int
    skipped: list[str]
    """Ids of examples dropped for being longer than ``max_length``."""
    losses: list[tuple[int, float]]
    """(step, training loss) as logged."""
    evaluations: list[dict[str, Any]]
    """Whatever ``evaluate_fn`` returned at each evaluation, with ``step`` and ``minutes``."""
    model: Any = None
    """The trained model (the LoRA-wrapped one when ``lora_r > 0``)."""


def _optimizer(model: Any, config: SFTConfig) -> torch.optim.Optimizer:
    vision, other = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (vision if any(part in name for part in VISION_PARAMETER_NAMES) else other).append(parameter)
    groups = [{"params": other, "lr": config.learning_rate}]
    if vision:
        groups.append({"params": vision, "lr": config.vision_learning_rate or config.learning_rate})
    return torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)


def train_sft(
    model: Any,
    processor: Any,
    examples: Sequence[SFTExample],
    config: SFTConfig,
    output_dir: str | Path,
    *,
    evaluate_fn: Callable[[Any], dict[str, Any]] | None = None,
    eval_every: int = 0,
    progress: bool = True,
    difficulty: Sequence[float] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place on ``examples``; ``evaluate_fn(model)`` runs every ``eval_every`` steps and at
    the end (the model is in eval mode during the call). With ``difficulty`` (one number per example, e.g. the
    warm-up judge's entropy from :mod:`training.entropy`), each epoch goes from easy to hard in
    ``config.curriculum_stages`` blocks instead of in random order, or (``curriculum_schedule="expanding"``) the
    examples drawn come from a pool that grows from the easiest block to all of them over ``curriculum_ramp`` of
    the run."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    dataset = SFTDataset(examples)
    if not len(dataset):
        raise ValueError("no training examples")
    collator = SFTCollator(processor, config.max_length)
    if config.lora_r > 0:
        model = _with_lora(model, config)
    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=config.num_train_epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay, lr_scheduler_type=config.lr_scheduler_type, seed=config.seed,
        logging_steps=config.logging_steps, save_strategy="no", report_to="none", remove_unused_columns=False,
        dataloader_num_workers=0, bf16=config.bf16, gradient_checkpointing=config.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=not progress,
    )
    start = time.perf_counter()
    losses: list[tuple[int, float]] = []
    evaluations: list[dict[str, Any]] = []

    def run_eval(step: int) -> None:
        if evaluate_fn is None:
            return
        was_training = model.training
        model.eval()
        record = {"step": step, "minutes": (time.perf_counter() - start) / 60, **evaluate_fn(model)}
        model.train(was_training)
        evaluations.append(record)
        print(f"[eval] step {step}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in record.items()), file=sys.stderr, flush=True)

    class _Hooks(TrainerCallback):
        def on_log(self, _args: Any, state: Any, _control: Any, logs: dict | None = None, **_: Any) -> None:
            if logs and "loss" in logs:
                losses.append((state.global_step, float(logs["loss"])))

        def on_step_end(self, _args: Any, state: Any, _control: Any, **_: Any) -> None:
            if eval_every and state.global_step % eval_every == 0 and state.global_step < state.max_steps:
                run_eval(state.global_step)

    trainer_class = Trainer
    if difficulty is not None:
        if len(difficulty) != len(dataset):
            raise ValueError(f"difficulty has {len(difficulty)} values for {len(dataset)} examples")
        from training.entropy import CurriculumSampler

        # The whole run's draws, for a schedule that spreads over epochs: steps times examples per step, or epochs.
        per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps
        draws = config.max_steps * per_step if config.max_steps > 0 else \
            math.ceil(config.num_train_epochs) * len(dataset)
        sampler = CurriculumSampler(difficulty, config.curriculum_stages, config.seed,
                                    schedule=config.curriculum_schedule, draws=draws, ramp=config.curriculum_ramp)

        class _CurriculumTrainer(Trainer):  # Trainer's hook for the order of the training examples
            def _get_train_sampler(self, train_dataset: Any = None) -> Any:
                return sampler

        trainer_class = _CurriculumTrainer
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, data_collator=collator,
                            optimizers=(_optimizer(model, config), None), callbacks=[_Hooks()])
    output = trainer.train()
    run_eval(output.global_step)
    return TrainResult(steps=output.global_step, seconds=time.perf_counter() - start, examples=len(dataset),
                       skipped=collator.skipped, losses=losses, evaluations=evaluations, model=model)


def _with_lora(model: Any, config: SFTConfig) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ImportError("--lora-r needs peft: pip install 'critic-judge[train]'") from exc
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def save_judge(model: Any, processor: Any, judge_config: JudgeConfig, out: str | Path) -> Path:
    """Write a judge folder: weights (LoRA merged), processor and ``judge_config.json``."""
    out = Path(out)
    if hasattr(model, "merge_and_unload"):  # a peft model: ship plain weights that every engine loads
        model = model.merge_and_unload()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    judge_config.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    from training.entropy import CURRICULUM_SCHEDULES, ENTROPY_KINDS

    parser = argparse.ArgumentParser(prog="python -m training.sft", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", required=True, help="preference file (or hf:NAME[:SPLIT])")
    parser.add_argument("--format", default="auto", help="auto|generic|mm-rlhf|vl-rewardbench|mmrb")
    parser.add_argument("--images", default=None, help="folder that relative media paths are resolved against")
    parser.add_argument("--base", required=True, help="model folder or Hub id to fine-tune")
    parser.add_argument("--out", required=True, help="output folder (a judge: weights, processor, judge_config)")
    parser.add_argument("--modes", default="pairwise", help="comma-separated: pairwise, pointwise")
    parser.add_argument("--critique-max-chars", type=int, default=600, help="critique budget of the targets")
    parser.add_argument("--system-template", default="system", help="prompt template (e.g. compact_system)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--vision-lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora-r", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--dtype", default="auto", help="weights dtype when loading the base model")
    parser.add_argument("--curriculum", default=None,
                        help="entropy scores (python -m training.entropy score): train from low to high entropy")
    parser.add_argument("--curriculum-by", choices=ENTROPY_KINDS, default="token")
    parser.add_argument("--curriculum-stages", type=int, default=3)
    parser.add_argument("--curriculum-schedule", choices=CURRICULUM_SCHEDULES, default="blocks",
                        help="blocks (default): every epoch from easy to hard; expanding: draw from a pool that "
                             "grows from the easiest block to every example")
    parser.add_argument("--curriculum-ramp", type=float, default=0.5,
                        help="expanding: share of the run over which the pool grows (default 0.5)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or any(m not in ("pairwise", "pointwise") for m in modes):
        parser.error("--modes takes pairwise and/or pointwise")
    try:
        sft = SFTConfig(num_train_epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.lr,
                        vision_learning_rate=args.vision_lr, per_device_train_batch_size=args.batch_size,
                        gradient_accumulation_steps=args.grad_accum, max_length=args.max_length, seed=args.seed,
                        lora_r=args.lora_r, lora_alpha=args.lora_alpha, bf16=args.bf16,
                        gradient_checkpointing=args.gradient_checkpointing,
                        curriculum_stages=args.curriculum_stages, curriculum_schedule=args.curriculum_schedule,
                        curriculum_ramp=args.curriculum_ramp)
        judge_config = replace(JudgeConfig(critique_max_chars=args.critique_max_chars),
                               prompt=PromptConfig(system_template=args.system_template))
    except ValueError as exc:
        parser.error(str(exc))
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from critic.preferences import read_preferences

    data = read_preferences(args.data, format=args.format, images_dir=args.images)
    for problem in data.problems:
        print(f"skipping malformed row: {problem}", file=sys.stderr)
    processor = AutoProcessor.from_pretrained(args.base)
    tokenizer = getattr(processor, "tokenizer", processor)
    examples, problems = build_examples(data.pairs, judge_config, modes=modes, reserved=reserved_strings(tokenizer))
    for problem in problems:
        print(f"skipping pair {problem.id}: {problem.message}", file=sys.stderr)
    if not examples:
        print("no training examples", file=sys.stderr)
        return 1
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    difficulty = None
    if args.curriculum:
        from training.entropy import example_difficulty, read_scores

        table = {s.id: s.value(args.curriculum_by) for s in read_scores(args.curriculum)}
        difficulty = example_difficulty([e.id for e in examples], table)
        missing = sum(math.isnan(d) for d in difficulty)
        if missing:
            print(f"{missing} examples have no entropy score; they come last", file=sys.stderr)
    model = AutoModelForImageTextToText.from_pretrained(args.base, dtype=dtype)
    result = train_sft(model, processor, examples, sft, Path(args.out) / "trainer", progress=not args.no_progress,
                       difficulty=difficulty)
    save_judge(result.model, processor, judge_config, args.out)
    last = result.losses[-1][1] if result.losses else math.nan
    print(f"trained {result.steps} steps on {result.examples} examples in {result.seconds / 60:.1f} min "
          f"(last logged loss {last:.3f}; {len(result.skipped)} too long); judge written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
