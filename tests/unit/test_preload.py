"""Preloaded apps (state.md §9): the three apps.json formats in fixtures/apps-json/ become a
target, the images they name, and the pin request; the file is read once and retired."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from supervisor.host.preload import (
    apps_json_path,
    read_apps_json,
    retire_apps_json,
    retired_path,
)
from supervisor.model.preload import (
    V2_OFFLINE,
    PinRequest,
    PreloadError,
    PreloadImage,
    apps_json_format,
    parse_apps_json,
    v2_app_ids,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "apps-json"
DEVICE = "d1ce" * 8
APP_UUID = "5d3c8b2a9f1e4d7c8b6a5f4e3d2c1b0a"
COMMIT = "8b6a5f4e3d2c1b0a5d3c8b2a9f1e4d7c"
DIGEST = "sha256:1df4b8c5d3a0f6e2b7c9d8e1f0a3b2c5d4e7f6a9b8c1d0e3f2a5b4c7d6e9f8a1"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize(("name", "kind"), [
    ("v1-legacy.json", "v1"), ("v2.json", "v2"), ("v3.json", "v3"), ("retired.json", "v3")])
def test_format_detection(name: str, kind: str) -> None:
    assert apps_json_format(load(name)) == kind


def test_v3() -> None:
    preload = parse_apps_json(load("v3.json"), device_uuid=DEVICE)
    assert preload is not None
    target = preload.target
    assert target.device_uuid == DEVICE and target.name == ""
    assert target.config == {"RESIN_SUPERVISOR_POLL_INTERVAL": "600000",
                             "BALENA_HOST_CONFIG_gpu_mem": "16"}
    app = target.apps[APP_UUID]
    assert (app.app_id, app.name, app.app_class) == (1234, "my-fleet", "fleet")
    assert app.release is not None
    assert (app.release.commit, app.release.release_id) == (COMMIT, 557617)
    assert list(app.release.services) == ["main", "worker"]
    assert app.release.services["main"].config.network_mode == "host"
    assert set(app.release.volumes) == {"data"}
    assert preload.images == (
        PreloadImage(name="127.0.0.1:5000/balena-py/busybox:latest", app_id=1234,
                     app_uuid=APP_UUID, service_name="main", service_id=29396,
                     image_id=959262, release_id=557617, commit=COMMIT),
        PreloadImage(name=f"127.0.0.1:5000/balena-py/busybox@{DIGEST}", app_id=1234,
                     app_uuid=APP_UUID, service_name="worker", service_id=29397,
                     image_id=959263, release_id=557617, commit=COMMIT),
    )
    assert preload.pin == PinRequest(app_id=1234, commit=COMMIT)


def test_v3_without_pin_device_asks_no_pin() -> None:
    raw = load("v3.json")
    del raw["pinDevice"]
    preload = parse_apps_json(raw, device_uuid=DEVICE)
    assert preload is not None and preload.pin is None


def test_pin_takes_the_first_fleet_app() -> None:
    raw = load("v3.json")
    app = raw["apps"].pop(APP_UUID)
    raw["apps"]["b10c" * 8] = {**app, "id": 7, "class": "block"}
    raw["apps"][APP_UUID] = app
    preload = parse_apps_json(raw, device_uuid=DEVICE)
    assert preload is not None and preload.pin == PinRequest(app_id=1234, commit=COMMIT)


def test_v1_legacy_array_becomes_user_app() -> None:
    preload = parse_apps_json(load("v1-legacy.json"), device_uuid=DEVICE)
    assert preload is not None
    target = preload.target
    assert list(target.apps) == ["user-app"]
    app = target.apps["user-app"]
    assert (app.app_id, app.name, app.app_class) == (1234, "my-fleet", "fleet")
    assert app.release is not None
    assert (app.release.commit, app.release.release_id) == (COMMIT, 1)
    assert set(app.release.volumes) == {"resin-data"}
    main = app.release.services["main"]
    assert (main.service_id, main.image_id) == (1, 1)
    assert main.image == "127.0.0.1:5000/balena-py/busybox:latest"
    assert main.environment == {"GREETING": "hello"}  # RESIN_* keys left out
    assert main.labels == {
        "io.resin.features.kernel-modules": "1", "io.resin.features.firmware": "1",
        "io.resin.features.dbus": "1", "io.resin.features.supervisor-api": "1",
        "io.resin.features.resin-api": "1",
        "io.resin.update.strategy": "kill-then-download",
        "io.resin.update.handover-timeout": "", "io.resin.legacy-container": "1",
    }
    assert main.config.restart == "unless-stopped"
    assert main.config.privileged is True
    assert main.config.network_mode == "host"
    assert [(m.source, m.target) for m in main.config.volumes] == [("resin-data", "/data")]
    assert target.config == {"RESIN_SUPERVISOR_UPDATE_STRATEGY": "kill-then-download",
                             "RESIN_APP_RESTART_POLICY": "unless-stopped",
                             "RESIN_SUPERVISOR_POLL_INTERVAL": "600000"}
    assert preload.pin is None
    assert [i.name for i in preload.images] == ["127.0.0.1:5000/balena-py/busybox:latest"]


def test_v1_defaults_and_merged_config() -> None:
    raw = [{"appId": 1, "name": "a", "commit": "c1", "imageId": "img", "env": {},
            "config": {"A": "1"}},
           {"appId": 2, "name": "b", "commit": "c2", "imageId": "img2",
            "config": {"B": "2"}}]
    preload = parse_apps_json(raw, device_uuid=DEVICE)
    assert preload is not None
    app = preload.target.apps["user-app"]
    assert app.app_id == 2  # every legacy app is `user-app`: the last one wins
    assert app.release is not None
    main = app.release.services["main"]
    assert main.labels["io.resin.update.strategy"] == "download-then-kill"
    assert main.config.restart == "always"
    assert preload.target.config == {"A": "1", "B": "2"}


def test_v2_needs_the_app_uuids_from_the_cloud() -> None:
    raw = load("v2.json")
    assert v2_app_ids(raw) == (1234,)
    with pytest.raises(PreloadError) as caught:
        parse_apps_json(raw, device_uuid=DEVICE)
    assert str(caught.value) == V2_OFFLINE == (
        "Cannot migrate from v2 apps.json without Internet connectivity. "
        "Please use balenaCLI v13.5.1+ for offline preload support.")
    preload = parse_apps_json(raw, device_uuid=DEVICE, app_uuids={1234: APP_UUID})
    assert preload is not None
    app = preload.target.apps[APP_UUID]
    assert app.release is not None
    assert (app.app_id, app.release.commit, app.release.release_id) == (1234, COMMIT, 557617)
    main = app.release.services["main"]
    assert (main.service_id, main.image_id) == (29396, 959262)
    assert main.image == "127.0.0.1:5000/balena-py/busybox:latest"
    assert main.config.network_mode == "host"
    assert main.config.command == ("sh", "-c", "echo hello; sleep infinity")
    assert main.composition == {"network_mode": "host",
                                "command": ["sh", "-c", "echo hello; sleep infinity"],
                                "volumes": ["data:/data"]}
    assert preload.pin == PinRequest(app_id=1234, commit=COMMIT)


def test_the_retired_file_is_no_preload() -> None:
    assert parse_apps_json(load("retired.json"), device_uuid=DEVICE) is None
    assert parse_apps_json({"config": {}, "apps": {}}, device_uuid=DEVICE) is None


@pytest.mark.parametrize("raw", [
    {"apps": {APP_UUID: {"id": 1, "name": "a", "releases": {}}}},
    {"apps": {APP_UUID: {"id": 1, "name": "a"}}},
    {"apps": {APP_UUID: {"id": "x", "name": "a", "releases": {"c": {"id": 1}}}}},
    {"apps": {APP_UUID: {"id": 1, "name": "a", "releases": {"c": {"id": 1, "services": {
        "main": {"id": 1, "image_id": 1, "image": "i", "labels": {}}}}}}}},
    {"apps": [], "config": {}},
    {"config": {"1BAD": "x"}},
    {"pinDevice": "yes", "config": {"A": "1"}},
    [{"appId": 1, "name": "a", "imageId": "i"}],
    ["not-an-app"],
    "a string",
    {"apps": {str(i): {} for i in range(65)}},
], ids=["no-release", "releases-missing", "bad-id", "no-environment", "apps-array",
        "config-name", "pin-not-bool", "v1-no-commit", "v1-not-object", "string", "too-many"])
def test_invalid_files_raise_preload_error(raw: Any) -> None:
    with pytest.raises(PreloadError):
        parse_apps_json(raw, device_uuid=DEVICE, app_uuids={i: f"u{i}" for i in range(70)})


# ---------------------------------------------------------------------------- the file

def test_read_missing_directory_and_broken_files(tmp_path: Path) -> None:
    path = apps_json_path(tmp_path)
    assert read_apps_json(path) is None
    path.mkdir()
    assert read_apps_json(path) is None  # the engine made a directory for a missing bind
    path.rmdir()
    path.write_text("{not json")
    with pytest.raises(PreloadError, match="not valid JSON"):
        read_apps_json(path)
    path.write_bytes(b" " * (4 * 1024 * 1024 + 1))
    with pytest.raises(PreloadError, match="larger than"):
        read_apps_json(path)
    path.write_text((FIXTURES / "v3.json").read_text())
    assert read_apps_json(path) == load("v3.json")


def test_retire_renames_and_leaves_an_empty_object(tmp_path: Path) -> None:
    path = apps_json_path(tmp_path)
    original = (FIXTURES / "v3.json").read_text()
    path.write_text(original)
    assert retire_apps_json(path) is True
    assert retired_path(path).read_text() == original
    assert json.loads(path.read_text()) == {}
    assert parse_apps_json(read_apps_json(path), device_uuid=DEVICE) is None
    # a second preload file never overwrites the first one's backup
    path.write_text(original)
    assert retire_apps_json(path) is False
    assert path.read_text() == original
    assert retired_path(path).read_text() == original
