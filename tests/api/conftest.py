"""Fixtures for the API tests: a fake context and a TestClient over `build_app(ctx)`, and a
registered devcloud process (one per test module) for the tests of the cloud side."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x prefers `httpx2`; the venv has httpx, which TestClient still supports.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from supervisor.api.app import build_app
from tests.api.devcloud_proc import Cloud, free_port
from tests.api.fakes import FakeContext


@pytest.fixture
def ctx() -> FakeContext:
    return FakeContext()


@pytest.fixture
def client(ctx: FakeContext) -> Iterator[TestClient]:
    with TestClient(build_app(ctx), base_url="http://127.0.0.1:48484") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A devcloud process on 127.0.0.1 with its fleet registered."""
    found = Cloud(tmp_path_factory.mktemp("devcloud"), free_port())
    found.start()
    found.register()
    yield found
    found.stop()
