"""Settings: flag > environment > config.json > default, for every setting; clear errors."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest

from supervisor.errors import ConfigError
from supervisor.settings import OPTIONS, OPTIONS_BY_DEST, Settings, load_settings


@pytest.fixture
def boot(tmp_path: Path) -> Path:
    boot_dir = tmp_path / "boot"
    boot_dir.mkdir()
    return boot_dir


def write_config(boot: Path, data: dict[str, Any]) -> Path:
    path = boot / "config.json"
    path.write_text(json.dumps(data))
    return path


def load(boot: Path, args: dict[str, str | None] | None = None,
         env: dict[str, str] | None = None) -> Settings:
    # Tests always point the boot dir somewhere safe; /mnt/boot must never be touched.
    return load_settings({"boot_dir": str(boot), **(args or {})}, env or {})


def test_device_defaults(boot: Path) -> None:
    s = load(boot)
    assert s.data_dir == Path("/data")
    assert s.db_path == Path("/data/database.sqlite")
    assert s.config_path == boot / "config.json"
    assert s.state_dir == Path("/mnt/state")
    assert s.locks_dir == Path("/tmp/balena-supervisor")
    assert (s.listen_host, s.listen_port) == ("0.0.0.0", 48484)
    assert s.listen == "0.0.0.0:48484"
    assert s.docker_host == "unix:///var/run/docker.sock"
    assert s.board == "generic"
    assert s.led_file is None
    assert s.host_actions == "auto"
    assert s.firewall == "auto"
    assert s.local_target is None
    assert s.blink_seconds == 15.0
    assert s.log_level == "info"
    assert s.poll_interval_ms == 900_000
    assert s.unmanaged is True
    assert s.api_endpoint == ""


def test_the_boot_dir_default_is_mnt_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []

    class FakeConfig:  # records the path instead of creating /mnt/boot/config.json
        def __init__(self, path: Path) -> None:
            seen.append(path)
            self.listen_port, self.device_type, self.api_endpoint = 48484, None, ""
            self.app_update_poll_interval = 900_000

        def ensure_uuid(self) -> str:
            return "0" * 32

    monkeypatch.setattr("supervisor.settings.ConfigJson", FakeConfig)
    s = load_settings({}, {})
    assert s.boot_dir == Path("/mnt/boot")
    assert seen == [Path("/mnt/boot/config.json")]


# (dest, flag value, env value, attribute, expected from flag, expected from env)
PRECEDENCE = [
    ("data_dir", "/f/data", "/e/data", "data_dir", Path("/f/data"), Path("/e/data")),
    ("state_dir", "/f/state", "/e/state", "state_dir", Path("/f/state"), Path("/e/state")),
    ("locks_dir", "/f/locks", "/e/locks", "locks_dir", Path("/f/locks"), Path("/e/locks")),
    ("listen", "127.0.0.1:1111", "[::1]:2222", "listen", "127.0.0.1:1111", "[::1]:2222"),
    ("docker_host", "tcp://127.0.0.1:2375", "unix:///e.sock", "docker_host",
     "tcp://127.0.0.1:2375", "unix:///e.sock"),
    ("board", "flagboard", "envboard", "board", "flagboard", "envboard"),
    ("led_file", "/f/led", "/e/led", "led_file", Path("/f/led"), Path("/e/led")),
    ("host_actions", "systemd", "dry-run", "host_actions", "systemd", "dry-run"),
    ("firewall", "apply", "DRY-RUN", "firewall", "apply", "dry-run"),
    ("scoped_keys", "any-endpoint", "OWN-APPS", "scoped_keys", "any-endpoint", "own-apps"),
    ("local_target", "/f/t.json", "/e/t.json", "local_target", Path("/f/t.json"),
     Path("/e/t.json")),
    ("blink_seconds", "0.5", "2", "blink_seconds", 0.5, 2.0),
    ("log_level", "DEBUG", "warn", "log_level", "debug", "warning"),
    ("poll_interval", "1000", "2000", "poll_interval_ms", 1000, 2000),
    ("vpn_status_dir", "/f/vpn", "/e/vpn", "vpn_status_dir", Path("/f/vpn"), Path("/e/vpn")),
]


def test_precedence_table_covers_every_option() -> None:
    covered = {row[0] for row in PRECEDENCE} | {"boot_dir", "config"}
    assert covered == {opt.dest for opt in OPTIONS}


@pytest.mark.parametrize(
    ("dest", "flag", "env_value", "attr", "from_flag", "from_env"), PRECEDENCE
)
def test_flag_beats_env_beats_default(
    boot: Path, dest: str, flag: str, env_value: str, attr: str, from_flag: Any, from_env: Any
) -> None:
    env_name = OPTIONS_BY_DEST[dest].env
    default = getattr(load(boot), attr)
    assert getattr(load(boot, env={env_name: env_value}), attr) == from_env
    assert getattr(load(boot, {dest: flag}, {env_name: env_value}), attr) == from_flag
    assert from_env != default and from_flag != from_env
    # An empty variable counts as unset.
    assert getattr(load(boot, env={env_name: ""}), attr) == default


def test_boot_dir_and_config_path_precedence(tmp_path: Path) -> None:
    env = {"SUPERVISOR_BOOT_DIR": str(tmp_path / "eboot")}
    assert load_settings({}, env).config_path == tmp_path / "eboot" / "config.json"
    s = load_settings({"boot_dir": str(tmp_path / "fboot")}, env)
    assert s.boot_dir == tmp_path / "fboot"
    assert s.config_path == tmp_path / "fboot" / "config.json"
    env["SUPERVISOR_CONFIG_PATH"] = str(tmp_path / "env.json")
    assert load_settings({}, env).config_path == tmp_path / "env.json"
    s = load_settings({"config": str(tmp_path / "flag.json")}, env)
    assert s.config_path == tmp_path / "flag.json"
    assert (tmp_path / "flag.json").exists()


@pytest.mark.parametrize(
    ("dest", "config", "from_config", "attr"),
    [
        ("listen", {"listenPort": 5555}, "0.0.0.0:5555", "listen"),
        ("board", {"deviceType": "raspberrypi4-64"}, "raspberrypi4-64", "board"),
        ("poll_interval", {"appUpdatePollInterval": 60000}, 60000, "poll_interval_ms"),
    ],
)
def test_config_json_sits_between_env_and_default(
    boot: Path, dest: str, config: dict[str, Any], from_config: Any, attr: str
) -> None:
    row = next(r for r in PRECEDENCE if r[0] == dest)
    _, flag, env_value, _, from_flag, from_env = row
    env_name = OPTIONS_BY_DEST[dest].env
    default = getattr(load(boot), attr)
    write_config(boot, config)
    assert getattr(load(boot), attr) == from_config != default
    assert getattr(load(boot, env={env_name: env_value}), attr) == from_env
    assert getattr(load(boot, {dest: flag}, {env_name: env_value}), attr) == from_flag


def test_argparse_namespace_and_dashed_keys(boot: Path) -> None:
    ns = argparse.Namespace(boot_dir=str(boot), listen="127.0.0.1:9", command="run", data_dir=None)
    s = load_settings(ns, {"SUPERVISOR_DATA_DIR": "/e"})
    assert s.listen == "127.0.0.1:9"
    assert s.data_dir == Path("/e")  # a None flag is "not given"
    assert load_settings({"boot-dir": str(boot), "log-level": "error"}, {}).log_level == "error"


def test_relative_paths_become_absolute(
    boot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = load(boot, {"data_dir": ".run/data"})
    assert s.data_dir == tmp_path / ".run" / "data"


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("1.2.3.4:80", "1.2.3.4", 80), (":8080", "0.0.0.0", 8080), ("8080", "0.0.0.0", 8080),
     ("[::]:48484", "::", 48484), ("localhost:0", "localhost", 0)],
)
def test_listen_forms(boot: Path, listen: str, host: str, port: int) -> None:
    s = load(boot, {"listen": listen})
    assert (s.listen_host, s.listen_port) == (host, port)


def test_config_json_is_created_with_a_uuid(boot: Path) -> None:
    s = load(boot)
    on_disk = json.loads((boot / "config.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{32}", s.uuid)
    assert on_disk == {"uuid": s.uuid}
    assert load(boot).uuid == s.uuid
    assert s.config_json.uuid == s.uuid


def test_a_uuid_is_added_to_an_existing_config(boot: Path) -> None:
    write_config(boot, {"apiEndpoint": "https://api.example", "deviceType": "fincm3"})
    s = load(boot)
    assert json.loads((boot / "config.json").read_text()) == {
        "apiEndpoint": "https://api.example",
        "deviceType": "fincm3",
        "uuid": s.uuid,
    }
    assert s.unmanaged is False
    assert s.api_endpoint == "https://api.example"
    assert s.device_type == "fincm3"
    assert s.board == "fincm3"


@pytest.mark.parametrize(
    ("dest", "value", "message"),
    [
        ("listen", "host:http", "is not HOST:PORT"),
        ("listen", "host:70000", "is not HOST:PORT"),
        ("listen", "::1:80", "IPv6"),
        ("host_actions", "upstart", "unknown host actions backend"),
        ("firewall", "on", "unknown firewall setting"),
        ("blink_seconds", "soon", "not a number"),
        ("blink_seconds", "-1", "positive"),
        ("log_level", "loud", "unknown log level"),
        ("poll_interval", "1m", "positive whole number"),
        ("board", "../etc", "not a board profile name"),
    ],
)
def test_bad_values_name_their_flag_or_variable(
    boot: Path, dest: str, value: str, message: str
) -> None:
    opt = OPTIONS_BY_DEST[dest]
    with pytest.raises(ConfigError, match=re.escape(opt.flag)) as from_flag:
        load(boot, {dest: value})
    assert message in str(from_flag.value)
    with pytest.raises(ConfigError, match=re.escape(opt.env)):
        load(boot, env={opt.env: value})
    # Rejected before config.json is read: nothing was created.
    assert not (boot / "config.json").exists()


def test_bad_config_json_values_name_the_file(boot: Path) -> None:
    write_config(boot, {"listenPort": "nope"})
    with pytest.raises(ConfigError, match="listenPort"):
        load(boot)
    write_config(boot, {"listenPort": 99999})
    with pytest.raises(ConfigError, match="listenPort 99999"):
        load(boot)
    # A flag makes the config.json port irrelevant.
    assert load(boot, {"listen": "127.0.0.1:1"}).listen_port == 1


def test_settings_are_frozen(boot: Path) -> None:
    s = load(boot)
    with pytest.raises(AttributeError):
        s.board = "x"  # type: ignore[misc]
