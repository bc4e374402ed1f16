"""Shared test helpers: where the real public data lives, and a marker that skips when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

# The data is never copied into the repo (licences); it lives next to the checkout in ../shared/data.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

requires_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder, or a skip when this machine has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
