"""Suite-wide rules: which tests need the real engine.

Tests under tests/integration get the `docker` marker, so `pytest -m "not docker"` runs the
cheap part alone. Whether a missing engine skips or fails is decided in
tests/integration/conftest.py (skip on a laptop, fail when CI is set), and in CI no test may
skip at all: a skip is turned into a failure here, whatever its cause. Nothing heavy is
imported here: unit and API tests never load docker-py through this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.ci import ci_strict

INTEGRATION_DIR = Path(__file__).parent / "integration"

# No per-example deadline: on a loaded 2-core machine an example that fsyncs or parses a large
# target can take seconds; Hypothesis would call that a failure. Speed is `make bench`'s job.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents and item.get_closest_marker("no_engine") is None:
            item.add_marker(pytest.mark.docker)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI a skipped test is a failure: what CI cannot run, it has not checked."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail") and ci_strict():
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI is set: nothing may skip): {report.longrepr}"
