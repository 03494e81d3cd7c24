"""Fixtures for the API tests: a fake context and a TestClient over `build_app(ctx)`."""

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
from tests.api.fakes import FakeContext


@pytest.fixture
def ctx() -> FakeContext:
    return FakeContext()


@pytest.fixture
def client(ctx: FakeContext) -> Iterator[TestClient]:
    with TestClient(build_app(ctx), base_url="http://127.0.0.1:48484") as test_client:
        yield test_client
