"""Shared fixtures: tiny random-weight VLM folders built once per test session with `critic.tiny`."""

from __future__ import annotations

from pathlib import Path

import pytest

from critic.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen2-VL with the default `TinySpec`, seed 0."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2_vl", "qwen2_vl", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen2_5_vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen2.5-VL with the default `TinySpec`, seed 0."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2_5_vl", "qwen2_5_vl", seed=0)


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LLaVA (CLIP vision tower + Llama text model) with the default `TinySpec`, seed 0."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llava", "llava", seed=0)
