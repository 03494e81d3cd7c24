"""The Docker adapter (supervisor/engine/docker.py) without a daemon.

What can be checked without Docker: reading inspect data into model objects (legacy
`io.resin.*` labels, names, env, networks, volumes), the inspect cache of `observe` (only
containers whose listing changed are inspected again), the translation of docker-py errors, the
benign answers (304 already started/stopped, 404 already gone, 409 removal in progress), pull
errors and cancellation, and the clean-up of a half-created container. The docker-py API client
is replaced by a recorder of the calls; the same paths against the real engine are in
tests/integration/test_engine_adapter.py (where repeated starts and stops succeed: docker-py does
not raise Docker's 304 today, so the 304 branches are a defence only).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker.errors
import pytest
import requests

from supervisor import errors
from supervisor.engine.docker import DockerEngine, _split_ref, _translate, normalise_labels
from supervisor.model.current import CONFIG_HASH_LABEL
from supervisor.model.spec import ContainerSpec


def api_error(status: int, explanation: str = "",
              cls: type[docker.errors.APIError] = docker.errors.APIError) -> Exception:
    response = requests.Response()
    response.status_code = status
    return cls(f"{status} error", response=response, explanation=explanation)


class FakeApi:
    """docker-py's APIClient surface the adapter uses; `fail` maps a method to its error."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, Exception] = {}
        self.summaries: list[dict[str, Any]] = []
        self.inspects: dict[str, dict[str, Any]] = {}
        self.pull_events: list[dict[str, Any]] = []
        self.image_ids: dict[str, str] = {}
        self.closed_streams = 0

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail[name]

    # observe
    def containers(self, all: bool, filters: dict[str, str]) -> list[dict[str, Any]]:
        label = filters["label"]
        return [s for s in self.summaries if s.get("_label", "io.balena.supervised") == label]

    def inspect_container(self, cid: str) -> dict[str, Any]:
        self._call("inspect_container", cid)
        if cid not in self.inspects:
            raise api_error(404, f"No such container: {cid}", docker.errors.NotFound)
        return self.inspects[cid]

    def images(self, all: bool) -> list[dict[str, Any]]:
        return []

    def networks(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        return []

    def volumes(self) -> dict[str, Any]:
        return {"Volumes": [
            {"Name": "12_data", "Labels": {"io.resin.supervised": "true"}, "Driver": "local"},
            {"Name": "not-an-app-volume", "Labels": {}},
        ]}

    def inspect_network(self, name: str) -> dict[str, Any]:
        raise api_error(404, "network not found", docker.errors.NotFound)

    # images
    def pull(self, repo: str, tag: str | None, stream: bool, decode: bool,
             auth_config: dict[str, str] | None) -> Iterator[dict[str, Any]]:
        self._call("pull", repo, tag)
        api = self

        class Stream:
            def __iter__(self) -> Iterator[dict[str, Any]]:
                return iter(api.pull_events)

            def close(self) -> None:
                api.closed_streams += 1

        return _Closable(Stream())

    def inspect_image(self, ref: str) -> dict[str, Any]:
        if ref not in self.image_ids:
            raise api_error(404, "no such image", docker.errors.ImageNotFound)
        return {"Id": self.image_ids[ref]}

    # containers
    def create_container_from_config(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        self._call("create", name)
        return {"Id": "cid-1"}

    def connect_container_to_network(self, cid: str, net: str, **kw: Any) -> None:
        self._call("connect", cid, net, kw["aliases"])

    def start(self, cid: str) -> None:
        self._call("start", cid)

    def stop(self, cid: str, timeout: int | None = None) -> None:
        self._call("stop", cid)

    def remove_container(self, cid: str, v: bool, force: bool) -> None:
        self._call("remove", cid, v, force)


class _Closable:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.it = iter(stream)

    def __iter__(self) -> _Closable:
        return self

    def __next__(self) -> dict[str, Any]:
        return dict(next(self.it))

    def close(self) -> None:
        self.stream.close()


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def engine(api: FakeApi) -> Iterator[DockerEngine]:
    """A DockerEngine on the recorder: built without __init__, which would dial a daemon."""
    eng = object.__new__(DockerEngine)
    eng.api = api
    eng._inspect_cache = {}
    eng._inspect_pool = ThreadPoolExecutor(max_workers=2)
    yield eng
    eng._inspect_pool.shutdown()


def inspect(cid: str, name: str, **labels: str) -> dict[str, Any]:
    return {
        "Id": cid, "Name": f"/{name}", "Image": "sha256:abc", "Created": "2026-01-01T00:00:00Z",
        "State": {"Status": "running", "Running": True, "StartedAt": "2026-01-01T00:00:01Z",
                  "ExitCode": 0, "Error": ""},
        "Config": {"Image": "registry/main:latest", "Env": ["A=1", "B=x=y", "EMPTY="],
                   "Labels": labels},
        "HostConfig": {"NetworkMode": "12_default", "RestartPolicy": {"Name": "always"}},
        "NetworkSettings": {"Networks": {"12_default": {"Aliases": ["main", "abc123"]},
                                         "12_other": None}},
        "Mounts": [{"Type": "volume", "Name": "12_data"}, {"Type": "bind", "Name": ""}],
    }


def summary(cid: str, state: str = "running", status: str = "Up 2 minutes",
            name: str = "/main_5_6_c0ffee", label: str = "io.balena.supervised") -> dict[str, Any]:
    return {"Id": cid, "State": state, "Status": status, "Names": [name], "_label": label}


# -- reading the engine --------------------------------------------------------------------------

def test_an_inspect_becomes_a_container_with_legacy_labels_read_as_balena(
        engine: DockerEngine, api: FakeApi) -> None:
    api.summaries = [summary("c1", label="io.resin.supervised")]
    api.inspects["c1"] = inspect("c1", "old_main_5_6_c0ffee", **{
        "io.resin.supervised": "true", "io.resin.app-id": "12", "io.resin.service-id": "3",
        "io.resin.service-name": "legacy", "io.balena.service-name": "main",
        CONFIG_HASH_LABEL: "hash"})
    (c,) = engine.observe().containers
    assert (c.id, c.name, c.app_id, c.app_uuid, c.service_name, c.service_id) == (
        "c1", "old_main_5_6_c0ffee", 12, "12", "main", 3)  # io.balena.* wins over io.resin.*
    assert (c.image_id, c.release_id, c.commit, c.handover_old) == (5, 6, "c0ffee", True)
    assert (c.state, c.running, c.image, c.image_name, c.restart_policy) == (
        "running", True, "sha256:abc", "registry/main:latest", "always")
    assert c.labels["io.balena.supervised"] == "true"
    assert c.env == {"A": "1", "B": "x=y", "EMPTY": ""}
    assert c.networks == {"12_default": ("main", "abc123"), "12_other": ()}
    assert (c.volumes, c.config_hash, c.network_mode) == (("12_data",), "hash", "12_default")


@pytest.mark.parametrize(("name", "labels"), [
    ("main_5_6_c0ffee", {"io.balena.supervised": "true"}),  # no app id
    ("main_5_6_c0ffee", {"io.balena.app-id": "twelve"}),
    ("not-a-supervisor-name", {"io.balena.app-id": "12"}),
])
def test_containers_with_bad_labels_or_names_are_ignored(
        engine: DockerEngine, api: FakeApi, name: str, labels: dict[str, str]) -> None:
    api.summaries = [summary("c1")]
    api.inspects["c1"] = inspect("c1", name, **labels)
    assert engine.observe().containers == ()


def test_observe_inspects_only_containers_whose_listing_changed(
        engine: DockerEngine, api: FakeApi) -> None:
    for cid in ("c1", "c2"):
        api.inspects[cid] = inspect(cid, f"main_5_6_{cid}", **{"io.balena.app-id": "12"})
    api.summaries = [summary("c1"), summary("c2")]
    assert [c.id for c in engine.observe().containers] == ["c1", "c2"]
    assert sorted(api.calls) == [("inspect_container", "c1"), ("inspect_container", "c2")]

    api.calls.clear()
    api.summaries = [summary("c1", status="Up 3 minutes"), summary("c2")]  # same state
    engine.observe()
    assert api.calls == []
    api.summaries = [summary("c1", "exited", "Exited (1) 2 seconds ago"), summary("c2")]
    engine.observe()
    assert api.calls == [("inspect_container", "c1")]
    api.calls.clear()
    engine.invalidate("c2")  # a Docker event said it changed
    engine.observe()
    assert api.calls == [("inspect_container", "c2")]

    api.calls.clear()
    del api.inspects["c2"]  # removed between the listing and the inspect
    api.summaries = [summary("c1", "exited", "Exited (1) 2 seconds ago"),
                     summary("c2", name="/renamed_5_6_c2")]
    assert [c.id for c in engine.observe().containers] == ["c1"]
    api.summaries = [summary("c1", "exited", "Exited (1) 2 seconds ago")]
    engine.observe()
    assert set(engine._inspect_cache) == {"c1"}
    api.summaries = []  # removed: forgotten
    assert engine.observe().containers == ()
    assert engine._inspect_cache == {}


def test_volumes_are_the_app_volumes(engine: DockerEngine, api: FakeApi) -> None:
    (vol,) = engine.observe().volumes
    assert (vol.name, vol.app_id, vol.labels) == ("12_data", 12, {"io.balena.supervised": "true"})


def test_labels_normalise() -> None:
    assert normalise_labels(None) == {}
    assert normalise_labels({"io.resin.a": "old", "io.balena.a": "new", "io.resin.b": "b",
                              "other": "x"}) == {"io.balena.a": "new", "io.balena.b": "b",
                                                 "other": "x"}


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("error", "expected"), [
    (api_error(404, "no such image", docker.errors.ImageNotFound), errors.ImageNotFound),
    (api_error(404, "no such container", docker.errors.NotFound), errors.EngineNotFound),
    (api_error(409, "name in use"), errors.EngineConflict),
    (api_error(500, "driver failed"), errors.EngineError),
    (requests.ConnectionError("refused"), errors.EngineError),
])
def test_docker_errors_become_engine_errors(error: Exception, expected: type) -> None:
    translated = _translate(error, "create x")
    assert type(translated) is expected
    assert str(translated).startswith("create x: ")


def test_benign_answers_are_not_errors(engine: DockerEngine, api: FakeApi) -> None:
    api.fail["start"] = api_error(304, "already started")
    engine.start("c1")
    api.fail["stop"] = api_error(304, "already stopped")
    engine.stop("c1")
    api.fail["stop"] = api_error(404, "gone", docker.errors.NotFound)
    engine.stop("c1")
    api.fail["remove"] = api_error(404, "gone", docker.errors.NotFound)
    engine.remove("c1")
    api.fail["remove"] = api_error(409, "removal of container c1 is already in progress")
    engine.remove("c1", force=True)
    assert api.calls[-1] == ("remove", "c1", True, True)  # anonymous volumes go with it


def test_real_failures_are_raised(engine: DockerEngine, api: FakeApi) -> None:
    api.fail["start"] = api_error(500, "cannot start")
    with pytest.raises(errors.EngineError, match="cannot start"):
        engine.start("c1")
    api.fail["remove"] = api_error(409, "container is running")
    with pytest.raises(errors.EngineConflict):
        engine.remove("c1")
    api.fail["stop"] = requests.ConnectionError("engine gone")
    with pytest.raises(errors.EngineError):
        engine.stop("c1")


def test_a_failed_network_connect_removes_the_half_created_container(
        engine: DockerEngine, api: FakeApi) -> None:
    spec = ContainerSpec(name="main_5_6_c0ffee", body={}, extra_networks=(
        ("12_one", {"Aliases": ["main"]}), ("12_two", {"Aliases": ["main"]})),
        config_hash="h", app_id=12, app_uuid="u", service_name="main", depends_on=())
    assert engine.create(spec) == "cid-1"
    assert api.calls == [("create", "main_5_6_c0ffee"), ("connect", "cid-1", "12_one", ["main"]),
                         ("connect", "cid-1", "12_two", ["main"])]
    api.calls.clear()
    api.fail["connect"] = api_error(404, "network 12_one not found", docker.errors.NotFound)
    with pytest.raises(errors.EngineNotFound):
        engine.create(spec)
    assert api.calls[-1] == ("remove", "cid-1", True, True)


# -- pulls -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("ref", "split"), [
    ("busybox", ("busybox", "latest")),
    ("registry.local:5000/app/main", ("registry.local:5000/app/main", "latest")),
    ("registry.local:5000/app/main:v2", ("registry.local:5000/app/main", "v2")),
    ("main@sha256:0123", ("main", "sha256:0123")),
])
def test_image_references_split_into_repo_and_tag(ref: str, split: tuple[str, str]) -> None:
    assert _split_ref(ref) == split


def test_pull_feeds_events_and_returns_the_image_id(engine: DockerEngine, api: FakeApi) -> None:
    api.pull_events = [{"status": "Downloading", "id": "l1"}, {"status": "Pull complete"}]
    api.image_ids["registry.local:5000/main:v2"] = "sha256:img"
    seen: list[dict[str, Any]] = []
    assert engine.pull("registry.local:5000/main:v2", seen.append, threading.Event()) == \
        "sha256:img"
    assert seen == api.pull_events
    assert api.calls == [("pull", "registry.local:5000/main", "v2")]


def test_pull_errors(engine: DockerEngine, api: FakeApi) -> None:
    api.pull_events = [{"status": "Downloading"}, {"error": "manifest unknown"}]
    with pytest.raises(errors.EngineError, match="pull main: manifest unknown"):
        engine.pull("main", lambda event: None, threading.Event())
    api.pull_events = [{"status": "Pull complete"}]
    with pytest.raises(errors.ImageNotFound):  # the engine says done, but has no such image
        engine.pull("main", lambda event: None, threading.Event())
    api.fail["pull"] = api_error(404, "repository not found", docker.errors.NotFound)
    with pytest.raises(errors.ImageNotFound, match="repository not found"):
        engine.pull("main", lambda event: None, threading.Event())


def test_a_cancelled_pull_stops_and_closes_the_stream(engine: DockerEngine, api: FakeApi) -> None:
    cancel = threading.Event()
    api.pull_events = [{"status": "one"}, {"status": "two"}, {"status": "three"}]
    seen: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        cancel.set()

    with pytest.raises(errors.EngineError, match="cancelled"):
        engine.pull("main", on_event, cancel)
    assert seen == [{"status": "one"}]
    assert api.closed_streams == 1
