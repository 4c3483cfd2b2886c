"""Shared fixtures. Under CI=true nothing that CI can provide may be skipped: it fails instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(available: bool, reason: str) -> None:
    """Skips a test whose real dependency is missing on a developer's machine; fails it in CI."""
    if not available:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: this test must run)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    require(SHARED_DATA.is_dir(), f"{SHARED_DATA} is not there (../shared exists on dev and CI machines only)")
    return SHARED_DATA
