"""Command line: ``python -m critic.judge`` – judge one item from flags, or a JSONL batch.

Single pair (pairwise)::

    python -m critic.judge --model DIR_OR_HUB_ID --image cat.png --question "What animal is this?" \\
        --response-a "A dog." --response-b "A cat."

One response (pointwise): ``--response "..."`` instead of ``--response-a/--response-b``.  ``--json`` prints one JSON
object.  Batch: ``--input items.jsonl --output results.jsonl`` (resumable; see :mod:`critic.batch`).
The script only parses flags, builds the configuration and calls the library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from typing import Any

from critic.types import JudgeItem, JudgeResult


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m critic.judge", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_engine_arguments(parser, model_required=False)

    item = parser.add_argument_group("single item")
    item.add_argument("--image", action="append", default=[], help="image path (repeat for several)")
    item.add_argument("--video", help="video file")
    item.add_argument("--question", help="question or instruction (text-to-image: the generation prompt)")
    item.add_argument("--response-a", help="pairwise: first response")
    item.add_argument("--response-b", help="pairwise: second response")
    item.add_argument("--response", help="pointwise: the response to score")
    item.add_argument("--image-a", help="text-to-image pairwise: first generated image")
    item.add_argument("--image-b", help="text-to-image pairwise: second generated image")
    item.add_argument("--criteria", help="rubric for this item")
    item.add_argument("--reference", help="reference answer")
    item.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    batch = parser.add_argument_group("batch")
    batch.add_argument("--input", help="JSONL file of items")
    batch.add_argument("--output", help="JSONL file of results (appended; reruns skip finished ids)")
    batch.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    add_judging_arguments(parser)
    return parser


def add_engine_arguments(parser: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    """The engine flags (``--model``, ``--backend``, …), shared with ``python -m critic.evaluate``."""
    engine = parser.add_argument_group("engine")
    engine.add_argument("--model", required=model_required,
                        help="model folder or Hub id of the judge (critic.judge: default, the shipped demo judge)")
    engine.add_argument("--backend", default="transformers", choices=["transformers", "vllm", "openai", "sglang"], help="inference engine")
    engine.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', …")
    engine.add_argument("--dtype", default="auto", help="'auto', 'float32', 'bfloat16', 'float16'")
    engine.add_argument("--batch-size", type=int, default=8, help="generations per engine batch")
    engine.add_argument("--max-model-len", type=int, default=None, help="override the model's context length")
    engine.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub")
    engine.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="vllm: share of GPU memory (CPU build: of RAM) for weights and KV cache")
    engine.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs / compilation")
    engine.add_argument("--base-url", help="openai: server URL, e.g. http://127.0.0.1:8000/v1")
    engine.add_argument("--api-key", default=None, help="openai: bearer token (default: $OPENAI_API_KEY if set)")
    engine.add_argument("--constraint", default="structured_outputs", choices=["structured_outputs", "regex"],
                        help="openai: how the regex is sent (vLLM: structured_outputs; sglang: regex)")
    engine.add_argument("--max-concurrency", type=int, default=8, help="openai: requests in flight")
    engine.add_argument("--timeout", type=float, default=120.0, help="openai: seconds per request")
    engine.add_argument("--max-retries", type=int, default=5, help="openai: retries on 429/5xx/connection errors")


def add_judging_arguments(parser: argparse.ArgumentParser) -> None:
    """The judging flags (mode, swap, spec, prompt, sampling), read back by :func:`config_from_args`.

    Flags left out fall back to the model folder's ``judge_config.json`` when it has one, else to the library's
    defaults (shown in brackets)."""
    judging = parser.add_argument_group("judging (unset flags: the model's judge_config.json, else [default])")
    judging.add_argument("--mode", choices=["auto", "pairwise", "pointwise"],
                         help="auto: pairwise when two responses are given, else pointwise [auto]")
    judging.add_argument("--no-swap", action="store_true", help="pairwise: judge only the given order")
    judging.add_argument("--no-tie", action="store_true", help="pairwise: forbid the verdict 'tie'")
    judging.add_argument("--scale-min", type=int, help="pointwise: lowest score [1]")
    judging.add_argument("--scale-max", type=int, help="pointwise: highest score [10]")
    judging.add_argument("--style", choices=["critique", "think"], help="critique format [critique]")
    judging.add_argument("--critique-max-chars", type=int, help="critique budget in characters [600]")
    judging.add_argument("--max-response-chars", type=int, help="longer responses are truncated [8000]")
    judging.add_argument("--num-frames", type=int, help="frames sampled from a video [8]")
    judging.add_argument("--rubric", help="extra judging instructions for every item")
    judging.add_argument("--system-template", help="template name or .jinja path [system]")
    judging.add_argument("--pairwise-template", help="template name or .jinja path [pairwise]")
    judging.add_argument("--pointwise-template", help="template name or .jinja path [pointwise]")
    judging.add_argument("--temperature", type=float, help="0 = greedy [0]")
    judging.add_argument("--top-p", type=float, help="nucleus mass when sampling [1.0]")
    judging.add_argument("--seed", type=int, default=None, help="sampling seed")


def config_from_args(args: argparse.Namespace, base: Any = None) -> Any:
    """The :class:`~critic.core.JudgeConfig` described by the flags, on top of ``base`` (the model's own
    configuration, or the library defaults)."""
    from critic.core import JudgeConfig

    base = base or JudgeConfig()

    def given(**flags: Any) -> dict[str, Any]:  # only the flags the user set; the rest stay as in ``base``
        return {name: value for name, value in flags.items() if value is not None}

    prompt = replace(base.prompt, **given(
        system_template=args.system_template, pairwise_template=args.pairwise_template,
        pointwise_template=args.pointwise_template, rubric=args.rubric, max_response_chars=args.max_response_chars,
        num_frames=args.num_frames))
    sampling = replace(base.sampling, **given(temperature=args.temperature, top_p=args.top_p, seed=args.seed))
    return replace(base, swap=base.swap and not args.no_swap, allow_tie=base.allow_tie and not args.no_tie,
                   prompt=prompt, sampling=sampling, **given(
                       mode=args.mode, scale_min=args.scale_min, scale_max=args.scale_max, style=args.style,
                       critique_max_chars=args.critique_max_chars))


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of the chosen backend's ``from_pretrained``."""
    common = {"dtype": args.dtype, "max_model_len": args.max_model_len, "trust_remote_code": args.trust_remote_code}
    if args.backend == "openai":
        return {"base_url": args.base_url, "api_key": args.api_key or os.environ.get("OPENAI_API_KEY"),
                "constraint": args.constraint, "max_concurrency": args.max_concurrency, "timeout": args.timeout,
                "max_retries": args.max_retries}
    if args.backend == "sglang":
        return {"trust_remote_code": args.trust_remote_code}
    if args.backend == "vllm":
        return {**common, "gpu_memory_utilization": args.gpu_memory_utilization, "enforce_eager": args.enforce_eager}
    return {**common, "device": args.device, "batch_size": args.batch_size}


def format_result(result: JudgeResult) -> str:
    """Human-readable text of one result."""
    if result.error is not None:
        raw = f"\nraw output: {result.error.raw!r}" if result.error.raw else ""
        return f"error ({result.error.kind}): {result.error.message}{raw}"
    probs = ", ".join(f"{label}={p:.3f}" for label, p in result.probabilities.items())
    lines = [f"Critique: {result.critique}", f"Verdict: {result.verdict}", f"Probabilities: {probs}"]
    if result.mode == "pointwise":
        lines.append(f"Expected score: {result.expected_score:.2f}")
    elif result.consistent is not None:
        lines.append(f"Consistent across orders: {'yes' if result.consistent else 'no'}")
    if result.truncated:
        lines.append(f"Truncated inputs: {', '.join(result.truncated)}")
    return "\n".join(lines)


def resolve_judge_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """No model given (``args.model`` None): the shipped demo judge; a usage error that says how to build it when
    this install lacks its weights. Every command that takes a judge does the same."""
    if args.model is None:
        from critic.demo_judge import demo_judge_dir

        try:
            args.model = str(demo_judge_dir())
        except FileNotFoundError as exc:
            parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Results go to stdout (one JSON object with --json); keep vLLM's logs on stderr unless the user chose otherwise.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    batch_mode = args.input is not None or args.output is not None
    if batch_mode and not (args.input and args.output):
        parser.error("batch mode needs both --input and --output")
    if not batch_mode and args.question is None:
        parser.error("give --question (and responses) for one item, or --input/--output for a batch")
    from critic.core import Judge, JudgeConfig

    resolve_judge_model(parser, args)
    try:
        config = config_from_args(args, JudgeConfig.from_pretrained(args.model))
    except ValueError as exc:
        parser.error(str(exc))

    judge = Judge.from_pretrained(args.model, backend=args.backend, config=config, **engine_options(args))
    if batch_mode:
        from critic.batch import run_batch

        summary = run_batch(judge, args.input, args.output, chunk_size=max(args.batch_size, 1),
                            progress=not args.no_progress)
        print(json.dumps({"summary": summary.to_dict()}), file=sys.stderr)
        return 0
    item = JudgeItem(
        question=args.question, response_a=args.response_a, response_b=args.response_b, response=args.response,
        images=list(args.image), video=args.video, image_a=args.image_a, image_b=args.image_b,
        criteria=args.criteria, reference=args.reference,
    )
    [result] = judge.judge([item])
    print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else format_result(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
