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


@pytest.fixture(scope="session")
def hand_dir(tmp_path_factory) -> Path:
    """A small MANO-format test hand (fixtures_native.write_test_hand): every convention rule changes results."""
    from fixtures_native import write_test_hand

    return write_test_hand(tmp_path_factory.mktemp("hand"))


@pytest.fixture(scope="session")
def hands(hand_dir):
    """HandModels (both sides) of the test hand, as the converters use them."""
    from megohand.data.sources.pipeline import HandModels

    return HandModels(hand_dir)


def cli_error(capsys, argv: list[str], code: int | None = None) -> str:
    """Run ``megohand ARGV`` in process, expecting a failure: returns its one-line stderr message after
    checking the exit status is non-zero (``code`` if given), the message is one line and no traceback."""
    from megohand.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(list(map(str, argv)))
    err = capsys.readouterr().err
    assert e.value.code not in (0, None), err
    if code is not None:
        assert e.value.code == code, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln and "it/s" not in ln]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("megohand "), err
    return lines[0]
