"""The OpenAPI document and the app's routes describe the same API, both ways."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route

from supervisor.api import openapi
from supervisor.api.app import build_app
from tests.api.fakes import FakeContext

if TYPE_CHECKING:
    from starlette.testclient import TestClient

METHODS = {"get", "post", "put", "patch", "delete"}


def _app_routes() -> set[tuple[str, str]]:
    app = build_app(FakeContext())
    out: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                out.add((method, route.path))
    return out


def _documented(doc: dict[str, object]) -> set[tuple[str, str]]:
    paths = doc["paths"]
    assert isinstance(paths, dict)
    return {(method.upper(), path) for path, ops in paths.items()
            for method in ops if method in METHODS}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    routes = _app_routes()
    documented = _documented(openapi.document())
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented paths the app does not serve"
    assert len(routes) > 35


def test_served_document_needs_no_key(client: TestClient) -> None:
    res = client.get("/openapi.json")
    assert res.status_code == 200
    doc = res.json()
    assert doc["openapi"].startswith("3.1")
    assert _documented(doc) == _documented(openapi.document())
    assert doc["paths"]["/ping"]["get"]["security"] == []
    assert "security" not in doc["paths"]["/v1/device"]["get"]


def test_schema_references_resolve() -> None:
    doc = openapi.document()
    schemas = doc["components"]["schemas"]
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    refs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
