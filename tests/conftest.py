"""Shared test setup: few threads (CI machines have 2 cores), paths to optional real data."""

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture
def shared_fixtures() -> Path:
    """../shared/fixtures when present (real data, not in the repo); skip otherwise."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip("../shared/fixtures not present")
    return SHARED_FIXTURES
