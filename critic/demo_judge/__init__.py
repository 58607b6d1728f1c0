"""The demo judge that ships with the package: a 1.6M-parameter Qwen2-VL-style critique judge trained from scratch
on the synthetic shapes task (``python -m training.demo_judge --out critic/demo_judge`` rebuilds it in about 109 minutes
on a 2-core CPU; its measured accuracy, recipe and learning curves are in ``demo_report.json`` here, the curve as a
figure in the repository's ``docs/``).  ``python -m critic.judge`` uses it when no ``--model`` is given.
"""

from __future__ import annotations

from pathlib import Path

DEMO_JUDGE_DIR = Path(__file__).resolve().parent


def demo_judge_dir() -> Path:
    """The folder of the shipped demo judge; a clear error when the weights are missing from this install."""
    if not (DEMO_JUDGE_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"the demo judge's weights are not in {DEMO_JUDGE_DIR}; rebuild them with "
            f"`python -m training.demo_judge --out {DEMO_JUDGE_DIR}` or pass --model"
        )
    return DEMO_JUDGE_DIR
