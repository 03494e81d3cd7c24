"""Suite-wide rules: which tests need the real engine.

Tests under tests/integration get the `docker` marker, so `pytest -m "not docker"` runs the
cheap part alone. Whether a missing engine skips or fails is decided in
tests/integration/conftest.py (skip on a laptop, fail when CI is set). Nothing heavy is
imported here: unit and API tests never load docker-py through this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

INTEGRATION_DIR = Path(__file__).parent / "integration"

# No per-example deadline: on a loaded 2-core machine an example that fsyncs or parses a large
# target can take seconds; Hypothesis would call that a failure. Speed is `make bench`'s job.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents and item.get_closest_marker("no_engine") is None:
            item.add_marker(pytest.mark.docker)
