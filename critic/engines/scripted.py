"""A scripted engine: completions come from a Python function instead of a model.

For testing judging logic (swap-and-combine, tournaments, aggregation) with known outcomes, the way Inspect ships a
mock model.  The function sees each request and returns the text to "generate", optionally with label
probabilities, or a :class:`~critic.engines.base.Completion` (e.g. one with an error).

    def always_first(request):
        return "Critique: the first one.\\nVerdict: A"
    judge = Judge(ScriptedEngine(always_first))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from critic.engines.base import Completion, Engine, EngineCapabilities, GenerationRequest, SamplingConfig

Script = Callable[[GenerationRequest], "str | Completion | ScriptedOutput"]


@dataclass(frozen=True)
class ScriptedOutput:
    """Text plus the label probabilities the scripted engine should report for it."""

    text: str
    probabilities: dict[str, float] | None = None


class ScriptedEngine(Engine):
    """Engine whose outputs are decided by ``script(request)``; records every request it served."""

    name = "scripted"
    capabilities = EngineCapabilities(label_probabilities=True, video=True)

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[GenerationRequest] = []
        self.calls = 0

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[Completion]:
        self.calls += 1
        out = []
        for request in requests:
            self.requests.append(request)
            answer = self.script(request)
            if isinstance(answer, Completion):
                out.append(answer)
            elif isinstance(answer, ScriptedOutput):
                out.append(Completion(text=answer.text, label_probabilities=answer.probabilities))
            else:
                out.append(Completion(text=str(answer)))
        return out
