"""Shared fixtures: the location of ../shared/data and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a clean skip naming what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: ../shared is absent (CI has it)")
    return path


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    torch.manual_seed(0)
