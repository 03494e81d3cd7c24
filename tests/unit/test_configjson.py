"""config.json: creation with a uuid, atomic writes, typed accessors."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import configjson
from supervisor.configjson import ConfigJson
from supervisor.errors import ConfigError

HEX32 = re.compile(r"[0-9a-f]{32}")


def write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "config.json")


def test_missing_file_is_created_with_a_fresh_uuid(tmp_path: Path) -> None:
    path = tmp_path / "boot" / "config.json"  # the directory does not exist either
    data = configjson.load(path)
    assert set(data) == {"uuid"}
    assert HEX32.fullmatch(data["uuid"])
    assert json.loads(path.read_text()) == data
    # A second load reads the same identity rather than generating another.
    assert configjson.load(path)["uuid"] == data["uuid"]
    other = tmp_path / "other.json"
    assert configjson.load(other)["uuid"] != data["uuid"]


def test_load_rejects_bad_content(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        configjson.load(path)
    write(path, [1, 2])
    with pytest.raises(ConfigError, match="JSON object"):
        configjson.load(path)


def test_update_merges_removes_and_drops_none(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write(path, {"uuid": "a" * 32, "apiKey": "prov", "hostname": "old", "keep": 1})
    new = configjson.update(
        path, {"hostname": "new", "deviceId": 7, "apiKey": None}, remove=["keep"]
    )
    assert new == {"uuid": "a" * 32, "hostname": "new", "deviceId": 7}
    assert json.loads(path.read_text()) == new
    assert leftovers(tmp_path) == []


def test_update_of_a_missing_file_creates_it_with_a_uuid(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    data = configjson.update(path, {"hostname": "dev"})
    assert data["hostname"] == "dev"
    assert HEX32.fullmatch(data["uuid"])


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failing_write_leaves_the_old_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "config.json"
    original = {"uuid": "b" * 32, "apiEndpoint": "https://api.example"}
    write(path, original)
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(configjson.os, failing, boom)
    with pytest.raises(ConfigError, match="No space left"):
        configjson.update(path, {"hostname": "x"})
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_unencodable_value_fails_before_touching_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write(path, {"uuid": "c" * 32})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        configjson.update(path, {"bad": object()})
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_write_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write(path, {"uuid": "d" * 32})
    path.chmod(0o644)
    configjson.update(path, {"hostname": "h"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_ensure_uuid_adds_one_only_when_missing(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write(path, {"apiEndpoint": "https://api.example", "uuid": ""})
    uuid = configjson.ensure_uuid(path)
    assert HEX32.fullmatch(uuid)
    assert configjson.load(path) == {"apiEndpoint": "https://api.example", "uuid": uuid}
    assert configjson.ensure_uuid(path) == uuid


def test_accessor_defaults_for_an_empty_file(tmp_path: Path) -> None:
    cfg = ConfigJson(tmp_path / "config.json", {})
    assert cfg.listen_port == 48484
    assert cfg.app_update_poll_interval == 900_000
    assert cfg.api_timeout == 900_000
    assert cfg.bootstrap_retry_delay == 30_000
    assert cfg.delta_endpoint == "https://delta.balena-cloud.com"
    assert cfg.api_endpoint == ""
    assert cfg.unmanaged is True
    assert cfg.provisioned is False
    assert cfg.device_api_key == ""
    assert cfg.api_key is None
    assert cfg.application_id is None
    assert cfg.device_type is None
    assert cfg.persistent_logging is False
    assert cfg.os_config == {}


def test_accessors_read_values(tmp_path: Path) -> None:
    cfg = ConfigJson(
        tmp_path / "config.json",
        {
            "apiEndpoint": "https://api.example",
            "uuid": "e" * 32,
            "deviceApiKey": "devkey",
            "applicationId": "123",  # PermissiveNumber: strings are parsed
            "deviceType": "raspberrypi4-64",
            "listenPort": "12abc",  # parseInt semantics
            "appUpdatePollInterval": 60000,
            "registered_at": 1700000000000,
            "deviceId": 42,
            "hostname": "my-device",
            "persistentLogging": "on",
            "developmentMode": 1,
            "os": '{"power": {"mode": "high"}}',
        },
    )
    assert cfg.unmanaged is False
    assert cfg.uuid == "e" * 32
    assert cfg.application_id == 123
    assert cfg.device_type == "raspberrypi4-64"
    assert cfg.listen_port == 12
    assert cfg.app_update_poll_interval == 60000
    assert cfg.provisioned is True
    assert cfg.current_api_key == "devkey"
    assert cfg.hostname == "my-device"
    assert cfg.persistent_logging is True
    assert cfg.development_mode is True
    assert cfg.os_config == {"power": {"mode": "high"}}


def test_provisioning_key_wins_while_present(tmp_path: Path) -> None:
    cfg = ConfigJson(tmp_path / "c.json", {"apiKey": "prov", "deviceApiKey": "dev"})
    assert cfg.current_api_key == "prov"


@pytest.mark.parametrize(
    ("key", "value", "accessor"),
    [
        ("listenPort", "abc", "listen_port"),
        ("listenPort", True, "listen_port"),
        ("deviceId", 1.5, "device_id"),
        ("persistentLogging", "maybe", "persistent_logging"),
        ("apiEndpoint", {"x": 1}, "api_endpoint"),
        ("os", "[1]", "os_config"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, key: str, value: Any, accessor: str) -> None:
    cfg = ConfigJson(tmp_path / "config.json", {key: value})
    with pytest.raises(ConfigError, match=f"key: {key}"):
        getattr(cfg, accessor)


def test_cached_view_writes_through_and_ignores_external_edits(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write(path, {"uuid": "f" * 32, "apiEndpoint": "https://api.example"})
    cfg = ConfigJson(path)
    write(path, {"uuid": "f" * 32, "apiEndpoint": "https://elsewhere"})
    assert cfg.api_endpoint == "https://api.example"  # read once, like upstream
    cfg.update({"deviceId": 9, "apiKey": None})
    assert cfg.device_id == 9
    assert json.loads(path.read_text()) == {
        "uuid": "f" * 32,
        "apiEndpoint": "https://api.example",
        "deviceId": 9,
    }
    with pytest.raises(TypeError):
        cfg.data["x"] = 1  # type: ignore[index]


def test_cached_view_skips_writes_that_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write(path, {"uuid": "0" * 32, "hostname": "h"})
    cfg = ConfigJson(path)
    os.utime(path, (1, 1))
    cfg.update({"hostname": "h"}, remove=["absent"])
    assert path.stat().st_mtime == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=40, deadline=None,  # fsyncs: seconds on a loaded disk
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(min_size=1), json_values.filter(lambda v: v is not None)))
def test_update_round_trips_any_json(tmp_path: Path, changes: dict[str, Any]) -> None:
    path = tmp_path / "config.json"
    path.unlink(missing_ok=True)
    written = configjson.update(path, changes)
    assert configjson.load(path) == written
    assert {k: written[k] for k in changes} == changes
