"""Shared fixtures: the tiny trained checkpoint and an engine on it."""

from __future__ import annotations

import pytest

from kosmos2_engine import Kosmos2Engine
from tests.tiny_model.build import ensure_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint() -> str:
    """Folder of the tiny trained Kosmos-2 (built on first use, then cached)."""
    return str(ensure_tiny_checkpoint())


@pytest.fixture(scope="session")
def engine(tiny_checkpoint) -> Kosmos2Engine:
    return Kosmos2Engine.load(tiny_checkpoint, device="cpu")
