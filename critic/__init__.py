"""Generative critique judges for vision-language models.

A judge reads images or video frames, a question and one or two responses, writes a critique, then gives a verdict
(pairwise A / B / tie, or a pointwise score) produced under structured decoding, so it always parses.

    from critic import Judge, JudgeItem
    judge = Judge.from_pretrained("path/to/model")
    [result] = judge.judge([JudgeItem(question="…", images=["a.png"], response_a="…", response_b="…")])

Engines are imported lazily: ``import critic`` needs neither vLLM, sglang nor outlines.
"""

from critic.core import Judge, JudgeConfig
from critic.engines.base import SamplingConfig
from critic.prompting import PromptConfig
from critic.spec import OutputSpec, VerdictParseError
from critic.types import JudgeError, JudgeItem, JudgeResult, Judgment

__all__ = [
    "Judge",
    "JudgeConfig",
    "JudgeError",
    "JudgeItem",
    "JudgeResult",
    "Judgment",
    "OutputSpec",
    "PromptConfig",
    "SamplingConfig",
    "VerdictParseError",
]
__version__ = "0.1.0"
