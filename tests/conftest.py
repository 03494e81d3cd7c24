"""Suite-wide rules: which tests need the real engine.

Tests under tests/integration get the `docker` marker, so `pytest -m "not docker"` runs the
cheap part alone. Whether a missing engine skips or fails is decided in
tests/integration/conftest.py (skip on a laptop, fail when CI is set). Nothing heavy is
imported here: unit and API tests never load docker-py through this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.docker)
