"""Engine benchmark: this project's judge against the per-pair ``model.generate`` loop of published judge scripts.

Run (CPU, ~10 minutes):   .venv/bin/python benchmarks/engines.py --output benchmarks/results/engines_cpu.json
GPU variant (~2B random Qwen2-VL):   python benchmarks/engines.py --preset 2b --device cuda --pairs 64

All timings are taken in one process on one model (the factory's ``wide`` preset by default: a 224×224 image is
256 visual tokens, so the image prefix dominates), and reported as ratios against the baseline measured in the
same run:

* ``baseline``: for each pair, one unconstrained ``model.generate`` (``max_new_tokens`` = the critique budget in
  tokens) and a regex over the text for the verdict — what the published reward-model repositories do;
* ``transformers``: this project's transformers engine, batched, constrained, with verdict probabilities;
  with both orders (the default) and without (``--no-swap``, the same number of generations as the baseline);
* ``vllm``: the vLLM engine (if vLLM is importable);
* ``shared_prefix``: N = 8 pointwise candidates sharing one image and question vs 1 candidate;
* ``constraint_overhead``: constrained vs unconstrained batched decoding of the same number of tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("the red circle is left of a blue square and two green triangles are above it while "
         "nothing else appears in the picture so the answer is yes no three four").split()


def _response(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _image(rng: random.Random) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = rng.randrange(180), rng.randrange(180)
        draw.rectangle((x, y, x + 40, y + 40), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def _timed(fn: Any, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="wide", help="tiny-model preset (critic.tiny.PRESETS)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=16, help="pairs per measurement")
    parser.add_argument("--response-words", type=int, default=40, help="~50 tokens per response")
    parser.add_argument("--critique-tokens", type=int, default=48, help="critique budget in tokens")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "engines.json"))
    args = parser.parse_args(argv)

    import torch

    from critic import Judge, JudgeConfig, JudgeItem
    from critic.engines.hf import TransformersEngine
    from critic.prompting import PromptConfig, prepare
    from critic.tiny import PRESETS, tiny_model_dir

    torch.manual_seed(0)
    rng = random.Random(0)
    spec = PRESETS[args.preset]
    model_dir = tiny_model_dir("qwen2_vl", seed=0, spec=spec)
    engine = TransformersEngine.from_pretrained(str(model_dir), device=args.device, batch_size=args.batch_size)
    tokenizer = engine.tokenizer
    chars_per_token = len("".join(WORDS)) / max(1, len(tokenizer.encode(" ".join(WORDS), add_special_tokens=False)))
    critique_chars = max(8, int(args.critique_tokens * chars_per_token))
    config = JudgeConfig(critique_max_chars=critique_chars)
    pairs = [JudgeItem(id=str(i), images=[_image(rng)], question="Which shape is on the left of the red circle?",
                       response_a=_response(rng, args.response_words), response_b=_response(rng, args.response_words))
             for i in range(args.pairs)]
    image_tokens = len(engine._model_inputs([prepare(pairs[0], config.spec("pairwise"), PromptConfig(), swap=False)
                                             .prompts[0]])["input_ids"][0])
    report: dict[str, Any] = {"device": args.device, "preset": args.preset, "tiny_spec": dataclasses.asdict(spec),
                              "pairs": args.pairs, "prompt_tokens": image_tokens, "critique_chars": critique_chars}

    # --- baseline: per-pair generate + regex parse ------------------------------------------------------------
    verdict_regex = re.compile(r"\[\[(A|B)\]\]|\b(A|B) is better")
    parsed = 0

    def baseline() -> None:
        nonlocal parsed
        parsed = 0
        for item in pairs:
            prompt = prepare(item, config.spec("pairwise"), PromptConfig(), swap=False).prompts[0]
            inputs = {k: v.to(engine.model.device) for k, v in engine._model_inputs([prompt]).items()}
            with torch.inference_mode():
                out = engine.model.generate(**inputs, max_new_tokens=args.critique_tokens, do_sample=False,
                                            min_new_tokens=args.critique_tokens)
            text = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            parsed += bool(verdict_regex.search(text))

    base = _timed(baseline, args.repeats)
    report["baseline"] = {"seconds": base, "items_per_s": args.pairs / base, "verdicts_parsed": parsed}

    def ours(judge: Judge) -> dict[str, Any]:
        results: list[Any] = []

        def run() -> None:
            results[:] = judge.judge(pairs)

        seconds = _timed(run, args.repeats)
        tokens = statistics.mean(len(tokenizer.encode(j.text, add_special_tokens=False))
                                 for r in results for j in r.judgments)
        return {"seconds": seconds, "items_per_s": args.pairs / seconds, "speedup": base / seconds,
                "parsed": sum(r.ok for r in results), "mean_generated_tokens": tokens}

    report["transformers_swap"] = ours(Judge(engine, config))
    report["transformers_no_swap"] = ours(Judge(engine, dataclasses.replace(config, swap=False)))

    # --- N candidates sharing one image + question vs one ----------------------------------------------------
    image = _image(rng)
    candidates = [JudgeItem(id=f"c{i}", images=[image], question="Describe the shapes.",
                            response=_response(rng, args.response_words)) for i in range(8)]
    pointwise = Judge(engine, config)
    one = _timed(lambda: pointwise.judge(candidates[:1]), args.repeats)
    eight = _timed(lambda: pointwise.judge(candidates), args.repeats)
    report["shared_prefix_transformers"] = {"one_s": one, "eight_s": eight, "ratio": eight / one, "goal": 1.3}

    # --- constrained vs unconstrained decoding of the same length ---------------------------------------------
    from critic.engines.base import GenerationRequest, SamplingConfig

    requests = [GenerationRequest(prepare(p, config.spec("pairwise"), PromptConfig(), swap=False).prompts[0],
                                  config.spec("pairwise")) for p in pairs[: args.batch_size]]
    lengths = [len(tokenizer.encode(c.text, add_special_tokens=False)) for c in engine.generate(requests, SamplingConfig())]
    fixed = max(lengths)

    def unconstrained() -> None:
        inputs = {k: v.to(engine.model.device) for k, v in engine._model_inputs([r.prompt for r in requests]).items()}
        with torch.inference_mode():
            engine.model.generate(**inputs, max_new_tokens=fixed, min_new_tokens=fixed, do_sample=False)

    free = _timed(unconstrained, args.repeats)
    constrained = _timed(lambda: engine.generate(requests, SamplingConfig(max_new_tokens=fixed)), args.repeats)
    report["constraint_overhead"] = {"unconstrained_s": free, "constrained_s": constrained,
                                     "ratio": constrained / free, "tokens": fixed, "goal": 1.1}

    # --- vLLM ---------------------------------------------------------------------------------------------------
    if not args.no_vllm:
        try:
            from critic.engines.vllm_engine import VLLMEngine

            vllm_engine = VLLMEngine.from_pretrained(str(model_dir), max_model_len=4096, enforce_eager=True)
        except ImportError as exc:
            report["vllm"] = {"skipped": str(exc)}
        else:
            report["vllm_swap"] = ours(Judge(vllm_engine, config))
            report["vllm_no_swap"] = ours(Judge(vllm_engine, dataclasses.replace(config, swap=False)))
            vjudge = Judge(vllm_engine, config)
            one = _timed(lambda: vjudge.judge(candidates[:1]), args.repeats)
            eight = _timed(lambda: vjudge.judge(candidates), args.repeats)
            report["shared_prefix_vllm"] = {"one_s": one, "eight_s": eight, "ratio": eight / one, "goal": 1.3}

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(_table(report))
    print(f"\nwritten: {out}")
    return 0


def _table(report: dict[str, Any]) -> str:
    rows = [("per-pair generate loop (baseline)", f"{report['baseline']['items_per_s']:.2f} items/s", "1.00×", "")]
    for key, label, goal in [("transformers_swap", "transformers engine, both orders", "≥ 5×"),
                             ("transformers_no_swap", "transformers engine, one order", "≥ 5×"),
                             ("vllm_swap", "vLLM engine, both orders", "≥ 10×"),
                             ("vllm_no_swap", "vLLM engine, one order", "≥ 10×")]:
        if key in report:
            r = report[key]
            rows.append((label, f"{r['items_per_s']:.2f} items/s", f"{r['speedup']:.2f}×", goal))
    for key, label in [("shared_prefix_transformers", "8 candidates / 1 candidate, transformers"),
                       ("shared_prefix_vllm", "8 candidates / 1 candidate, vLLM")]:
        if key in report:
            rows.append((label, f"{report[key]['eight_s']:.2f} s / {report[key]['one_s']:.2f} s",
                         f"{report[key]['ratio']:.2f}×", "≤ 1.3×"))
    c = report["constraint_overhead"]
    rows.append(("constrained / unconstrained decoding", f"{c['tokens']} tokens", f"{c['ratio']:.2f}×", "≤ 1.1×"))
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'measurement'.ljust(width)} | value | ratio | goal |", f"|{'-' * (width + 2)}|---|---|---|"]
    lines += [f"| {a.ljust(width)} | {b} | {c_} | {d} |" for a, b, c_, d in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
