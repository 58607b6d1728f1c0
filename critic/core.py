"""The judge: items in, critiques and verdicts out, on any engine.

    from critic import Judge, JudgeItem
    judge = Judge.from_pretrained("path/or/hub-id")                 # transformers engine by default
    [result] = judge.judge([JudgeItem(question="What colour is the cube?", images=["cube.png"],
                                      response_a="Red.", response_b="Blue.")])
    result.verdict, result.probabilities, result.consistent, result.critique

One :meth:`Judge.judge` call sends every generation of every item (both orders of each pair) to the engine in one
``generate`` call, so engines batch across items.  Items that cannot be judged (missing fields, unreadable media,
prompts longer than the context, unparseable output) become results with an ``error``; the rest are unaffected.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from critic.combine import combine_orders
from critic.engines.base import Completion, Engine, GenerationRequest, SamplingConfig

JUDGE_CONFIG_NAME = "judge_config.json"
"""A model folder may carry its judging configuration (prompt templates, critique budget, scale) in this file, the
way a transformers model folder carries ``generation_config.json``; :meth:`Judge.from_pretrained` reads it."""
from critic.labels import expected_score
from critic.media import MediaError
from critic.prompting import InputError, PreparedItem, PromptConfig, prepare
from critic.spec import OutputSpec, VerdictParseError
from critic.types import JudgeError, JudgeItem, JudgeResult, Judgment


@dataclass(frozen=True)
class JudgeConfig:
    """Everything about how items are judged, apart from the engine."""

    mode: str = field(default="auto", metadata={"help": "'auto' (from each item's fields), 'pairwise' or 'pointwise'"})
    swap: bool = field(default=True, metadata={"help": "pairwise: judge both orders and combine"})
    allow_tie: bool = field(default=True, metadata={"help": "pairwise: allow the verdict 'tie'"})
    scale_min: int = field(default=1, metadata={"help": "pointwise: lowest score"})
    scale_max: int = field(default=10, metadata={"help": "pointwise: highest score"})
    style: str = field(default="critique", metadata={"help": "'critique' or 'think'"})
    critique_max_chars: int = field(default=600, metadata={"help": "critique budget in characters"})
    prompt: PromptConfig = field(default_factory=PromptConfig, metadata={"help": "templates, budgets, media"})
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={"help": "greedy by default"})

    def spec(self, mode: str) -> OutputSpec:
        """The output spec for ``mode`` ('pairwise' or 'pointwise')."""
        return OutputSpec(
            mode=mode,  # type: ignore[arg-type]
            allow_tie=self.allow_tie,
            scale_min=self.scale_min,
            scale_max=self.scale_max,
            style=self.style,  # type: ignore[arg-type]
            critique_max_chars=self.critique_max_chars,
        )

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "pairwise", "pointwise"):
            raise ValueError(f"mode must be 'auto', 'pairwise' or 'pointwise', not {self.mode!r}")
        # Building both specs validates the scale, style and budget once, at configuration time.
        self.spec("pairwise")
        self.spec("pointwise")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JudgeConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error (a typo must not be silently ignored)."""
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown judge config keys: {', '.join(unknown)}")
        prompt = PromptConfig(**data.pop("prompt", {}))
        sampling = SamplingConfig(**data.pop("sampling", {}))
        return cls(prompt=prompt, sampling=sampling, **data)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``judge_config.json`` into a model folder."""
        path = Path(directory) / JUDGE_CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_pretrained(cls, model: str | Path) -> JudgeConfig | None:
        """The configuration a local model folder ships, or None (Hub ids and folders without the file)."""
        path = Path(model) / JUDGE_CONFIG_NAME
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc


class Judge:
    """A critique judge over an :class:`~critic.engines.base.Engine`."""

    def __init__(self, engine: Engine, config: JudgeConfig | None = None) -> None:
        self.engine = engine
        self.config = config or JudgeConfig()

    @classmethod
    def from_pretrained(
        cls, model: str, *, backend: str = "transformers", config: JudgeConfig | None = None, **engine_options: Any
    ) -> Judge:
        """Load ``model`` on ``backend`` (see :func:`critic.engines.load_engine` for the options).  Without
        ``config``, the model folder's ``judge_config.json`` is used when it has one."""
        from critic.engines import load_engine

        config = config or JudgeConfig.from_pretrained(model) or JudgeConfig()
        return cls(load_engine(backend, model, **engine_options), config)

    def with_config(self, **changes: Any) -> Judge:
        """The same engine with some configuration fields changed."""
        return Judge(self.engine, replace(self.config, **changes))

    # ------------------------------------------------------------------ judging
    def judge(self, items: Sequence[JudgeItem], sampling: SamplingConfig | None = None) -> list[JudgeResult]:
        """Judge every item; the result list is aligned with ``items``."""
        sampling = sampling or self.config.sampling
        reserved = self.engine.reserved_strings()
        results: list[JudgeResult | None] = [None] * len(items)
        prepared: dict[int, tuple[OutputSpec, PreparedItem]] = {}
        requests: list[GenerationRequest] = []
        owners: list[int] = []
        for i, item in enumerate(items):
            mode = item.mode if isinstance(item, JudgeItem) else "pointwise"
            try:
                if not isinstance(item, JudgeItem):
                    raise InputError(f"expected a JudgeItem, got {type(item).__name__}")
                if self.config.mode not in ("auto", item.mode):
                    raise InputError(f"this is a {item.mode} item but the judge is configured for {self.config.mode}")
                spec = self.config.spec(item.mode)
                ready = prepare(item, spec, self.config.prompt, swap=self.config.swap, reserved=reserved)
            except MediaError as exc:
                results[i] = JudgeResult.failure(_id(item), mode, JudgeError("media", str(exc)))
                continue
            except (InputError, ValueError, TypeError) as exc:
                results[i] = JudgeResult.failure(_id(item), mode, JudgeError("input", str(exc)))
                continue
            prepared[i] = (spec, ready)
            for prompt in ready.prompts:
                requests.append(GenerationRequest(prompt, spec))
                owners.append(i)
        completions = self.engine.generate(requests, sampling) if requests else []
        if len(completions) != len(requests):
            raise RuntimeError(f"engine {self.engine.name} returned {len(completions)} completions for {len(requests)}")
        per_item: dict[int, list[Completion]] = {}
        for owner, completion in zip(owners, completions):
            per_item.setdefault(owner, []).append(completion)
        for i, (spec, ready) in prepared.items():
            results[i] = self._assemble(items[i], spec, ready, per_item[i])
        return [r for r in results if r is not None]

    def _assemble(self, item: JudgeItem, spec: OutputSpec, ready: PreparedItem, completions: list[Completion]) -> JudgeResult:
        judgments: list[Judgment] = []
        for order, completion in zip(ready.orders, completions):
            if completion.error is not None or completion.text is None:
                kind = completion.error_kind or "engine"
                return JudgeResult.failure(item.id, spec.mode, JudgeError(kind, completion.error or "no output"), ready.truncated)
            try:
                parsed = spec.parse(completion.text)
            except VerdictParseError as exc:
                return JudgeResult.failure(item.id, spec.mode, JudgeError("parse", exc.reason, raw=exc.raw), ready.truncated)
            probs = completion.label_probabilities
            if probs is None:  # engines without log-probabilities: the generated label gets all the mass
                probs = {label: float(label == parsed.label) for label in spec.labels}
            judgments.append(Judgment(order, completion.text, parsed.critique, parsed.label, dict(probs)))
        first = judgments[0]
        result = JudgeResult(id=item.id, mode=spec.mode, critique=first.critique, judgments=judgments,
                             truncated=list(ready.truncated))
        if spec.mode == "pointwise":
            result.verdict = first.label
            result.score = spec.score_of(first.label)
            result.probabilities = first.probabilities
            result.expected_score = expected_score(first.probabilities)
        elif len(judgments) == 2:
            combined = combine_orders(first.probabilities, first.label, judgments[1].probabilities,
                                      judgments[1].label, spec.labels)
            result.verdict = combined.verdict
            result.probabilities = combined.probabilities
            result.consistent = combined.consistent
        else:
            result.verdict = first.label
            result.probabilities = first.probabilities
        return result


def _id(item: object) -> str | None:
    value = getattr(item, "id", None)
    return None if value is None else str(value)


__all__ = ["JUDGE_CONFIG_NAME", "Judge", "JudgeConfig"]
