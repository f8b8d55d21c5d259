"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real test media folder (../shared/data from the repo root); skips if absent (fails on CI)."""
    if not DATA_DIR.is_dir():
        message = f"real test media not found at {DATA_DIR} (see the project README: ../shared/data)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return DATA_DIR


@pytest.fixture(scope="session", autouse=True)
def _wire_types() -> None:
    """Register the built-in message types with the wire codec, as the ZeroMQ worker does at start."""
    from kikimimi.engine.messages import register_types
    from kikimimi.engine.msgs import builtin_types

    register_types(builtin_types())
