"""Settings: command-line flags + environment + config.json -> one frozen `Settings`.

The first step of the data flow: `cli.py` parses flags, `load_settings()` resolves every value
with the precedence flag > environment variable > config.json > device default (DESIGN.md,
"Settings contract"), and `runtime.py` builds everything else from the result. `OPTIONS` is the
single table of flags, variables and defaults; the CLI builds `run --help` from it.

Loading reads config.json and, as upstream does at first start, creates it (or adds a `uuid`)
when missing. Any unusable value raises ConfigError naming the flag or variable it came from.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from supervisor.configjson import ConfigJson
from supervisor.errors import ConfigError

HostActions = Literal["systemd", "dry-run", "auto"]
HOST_ACTIONS: tuple[HostActions, ...] = ("systemd", "dry-run", "auto")
FirewallSetting = Literal["apply", "dry-run", "auto"]
FIREWALL: tuple[FirewallSetting, ...] = ("apply", "dry-run", "auto")
ScopedKeys = Literal["any-endpoint", "own-apps"]
SCOPED_KEYS: tuple[ScopedKeys, ...] = ("any-endpoint", "own-apps")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DB_FILENAME = "database.sqlite"
DEFAULT_STATUS_ADDRESS = "127.0.0.1:48484"

_BOARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Option:
    """One setting: its `run` flag, its environment variable and its default, for people."""

    dest: str
    flag: str
    env: str
    default: str
    help: str
    metavar: str = "VALUE"


OPTIONS: tuple[Option, ...] = (
    Option("data_dir", "--data-dir", "SUPERVISOR_DATA_DIR", "/data",
           "SQLite database and other state", "DIR"),
    Option("boot_dir", "--boot-dir", "SUPERVISOR_BOOT_DIR", "/mnt/boot",
           "boot partition: config.json, system-proxy/, config.txt", "DIR"),
    Option("config", "--config", "SUPERVISOR_CONFIG_PATH", "<boot-dir>/config.json",
           "balenaOS config.json (created with a fresh uuid when missing)", "FILE"),
    Option("state_dir", "--state-dir", "SUPERVISOR_STATE_DIR", "/mnt/state",
           "host state partition (breadcrumbs)", "DIR"),
    Option("locks_dir", "--locks-dir", "SUPERVISOR_LOCKS_DIR", "/tmp/balena-supervisor",
           "holds services/<appId>/<service>/ update lock dirs", "DIR"),
    Option("listen", "--listen", "SUPERVISOR_LISTEN", "0.0.0.0:<config.json listenPort or 48484>",
           "device API address, HOST:PORT", "HOST:PORT"),
    Option("docker_host", "--docker-host", "DOCKER_HOST", "unix:///var/run/docker.sock",
           "container engine", "URL"),
    Option("board", "--board", "SUPERVISOR_BOARD", "config.json deviceType, else generic",
           "board profile in board-configs/", "NAME"),
    Option("led_file", "--led-file", "SUPERVISOR_LED_FILE", "from the board profile",
           "LED brightness file used by identify/blink", "FILE"),
    Option("host_actions", "--host-actions", "SUPERVISOR_HOST_ACTIONS", "auto",
           "reboot/shutdown backend: systemd, dry-run, or auto (systemd where logind answers, "
           "else dry-run)", "BACKEND"),
    Option("firewall", "--firewall", "SUPERVISOR_FIREWALL", "auto",
           "firewall rules: apply, dry-run (log the ruleset only), or auto (apply when "
           "iptables-restore exists and we are root)", "MODE"),
    Option("scoped_keys", "--scoped-keys", "SUPERVISOR_SCOPED_KEYS", "any-endpoint",
           "what a service's scoped API key may call: any-endpoint (upstream: reboot, update, "
           "host-config... too) or own-apps (only its own apps' endpoints; docs/security.md)",
           "POLICY"),
    Option("local_target", "--local-target", "SUPERVISOR_LOCAL_TARGET", "none",
           "target state file applied at start (local mode)", "FILE"),
    Option("blink_seconds", "--blink-seconds", "SUPERVISOR_BLINK_SECONDS", "15",
           "how long POST /v1/blink flashes the LED", "SECONDS"),
    Option("log_level", "--log-level", "SUPERVISOR_LOG_LEVEL", "info",
           "one of " + ", ".join(LOG_LEVELS), "LEVEL"),
    Option("poll_interval", "--poll-interval", "SUPERVISOR_POLL_INTERVAL",
           "config.json appUpdatePollInterval, else 900000",
           "milliseconds between target state polls", "MS"),
    Option("vpn_status_dir", "--vpn-status-dir", "SUPERVISOR_VPN_STATUS_DIR",
           "/mnt/root/run/openvpn/vpn_status",
           "openvpn's status dir: a file named active there means the VPN is connected",
           "DIR"),
)
OPTIONS_BY_DEST: Mapping[str, Option] = {opt.dest: opt for opt in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """Everything the runtime needs to start, resolved and validated once."""

    data_dir: Path
    boot_dir: Path
    config_path: Path
    state_dir: Path
    locks_dir: Path
    listen_host: str
    listen_port: int
    docker_host: str
    board: str
    led_file: Path | None  # None: use the board profile's LED
    host_actions: HostActions  # "auto" is probed by the host package, not here
    firewall: FirewallSetting  # "auto" is decided by host/firewall.py, not here
    scoped_keys: ScopedKeys
    local_target: Path | None
    blink_seconds: float
    log_level: str
    poll_interval_ms: int
    vpn_status_dir: Path
    # From config.json, read at start:
    uuid: str
    api_endpoint: str
    device_type: str | None
    # The process-wide cached config.json; later writers (provisioning, host-config) use it.
    config_json: ConfigJson = field(compare=False, repr=False)

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILENAME

    @property
    def unmanaged(self) -> bool:
        """No apiEndpoint in config.json: local mode, no cloud, no API authentication."""
        return not self.api_endpoint

    @property
    def listen(self) -> str:
        return format_address(self.listen_host, self.listen_port)


def load_settings(
    args: argparse.Namespace | Mapping[str, str | None], env: Mapping[str, str]
) -> Settings:
    """Resolve every setting: flag > environment > config.json > default."""
    src = _Sources(args, env)
    # Everything the flags and environment give is validated before config.json is touched.
    boot_dir = _path(src.get("boot_dir")) or Path("/mnt/boot")
    config_path = _path(src.get("config")) or boot_dir / "config.json"
    listen = src.get("listen")
    address = parse_address(*listen, default_host="0.0.0.0") if listen else None
    board = src.get("board")
    board_name = _board(board) if board else None
    poll = src.get("poll_interval")
    poll_ms = _positive_int(poll) if poll else None
    host_actions = _host_actions(src.get("host_actions"))
    firewall = _firewall(src.get("firewall"))
    scoped_keys = _scoped_keys(src.get("scoped_keys"))
    blink_seconds = _blink_seconds(src.get("blink_seconds"))
    log_level = _log_level(src.get("log_level"))

    config = ConfigJson(config_path)
    uuid = config.ensure_uuid()
    if address is None:
        port = config.listen_port
        if not 0 <= port <= 65535:
            raise ConfigError(f"{config_path}: listenPort {port} is not a port (0-65535)")
        address = ("0.0.0.0", port)
    if board_name is None and config.device_type:
        board_name = _board((config.device_type, f"{config_path} deviceType"))

    return Settings(
        data_dir=_path(src.get("data_dir")) or Path("/data"),
        boot_dir=boot_dir,
        config_path=config_path,
        state_dir=_path(src.get("state_dir")) or Path("/mnt/state"),
        locks_dir=_path(src.get("locks_dir")) or Path("/tmp/balena-supervisor"),
        listen_host=address[0],
        listen_port=address[1],
        docker_host=_value(src.get("docker_host")) or "unix:///var/run/docker.sock",
        board=board_name or "generic",
        led_file=_path(src.get("led_file")),
        host_actions=host_actions,
        firewall=firewall,
        scoped_keys=scoped_keys,
        local_target=_path(src.get("local_target")),
        blink_seconds=blink_seconds,
        log_level=log_level,
        poll_interval_ms=poll_ms or config.app_update_poll_interval,
        vpn_status_dir=(_path(src.get("vpn_status_dir"))
                        or Path("/mnt/root/run/openvpn/vpn_status")),
        uuid=uuid,
        api_endpoint=config.api_endpoint,
        device_type=config.device_type,
        config_json=config,
    )


def resolve_data_dir(
    args: argparse.Namespace | Mapping[str, str | None], env: Mapping[str, str]
) -> Path:
    """The data dir alone (flag > SUPERVISOR_DATA_DIR > /data), for commands that need no more."""
    return _path(_Sources(args, env).get("data_dir")) or Path("/data")


def parse_address(text: str, source: str, *, default_host: str) -> tuple[str, int]:
    """Parse HOST:PORT, [IPV6]:PORT, :PORT or PORT; errors name `source`."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"{source}: {text!r} is not [IPV6]:PORT")
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ConfigError(f"{source}: {text!r}: write IPv6 addresses as [ADDRESS]:PORT")
    else:
        host, port_text = "", text
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{source}: {text!r} is not HOST:PORT with a port number 0-65535")
    return host or default_host, int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Sources:
    """Raw values with the name of where each came from, for error messages."""

    def __init__(
        self, args: argparse.Namespace | Mapping[str, str | None], env: Mapping[str, str]
    ) -> None:
        raw = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
        self._args = {key.replace("-", "_"): value for key, value in raw.items()}
        self._env = env

    def get(self, dest: str) -> tuple[str, str] | None:
        """(value, source) from the flag, else the environment; empty strings count as unset."""
        opt = OPTIONS_BY_DEST[dest]
        flag_value = self._args.get(dest)
        if flag_value is not None and str(flag_value) != "":
            return str(flag_value), opt.flag
        env_value = self._env.get(opt.env)
        if env_value:
            return env_value, opt.env
        return None


def _value(found: tuple[str, str] | None) -> str | None:
    return found[0] if found else None


def _path(found: tuple[str, str] | None) -> Path | None:
    # Absolute, so a later chdir cannot move the data; symlinks are left as the user gave them.
    return Path(found[0]).expanduser().absolute() if found else None


def _board(found: tuple[str, str]) -> str:
    value, source = found
    if not _BOARD_NAME.fullmatch(value):
        raise ConfigError(f"{source}: {value!r} is not a board profile name")
    return value


def _host_actions(found: tuple[str, str] | None) -> HostActions:
    if found is None:
        return "auto"
    value, source = found
    lowered = value.strip().lower()
    if lowered not in HOST_ACTIONS:
        raise ConfigError(
            f"{source}: unknown host actions backend {value!r} "
            f"(expected one of {', '.join(HOST_ACTIONS)})"
        )
    return cast(HostActions, lowered)


def _scoped_keys(found: tuple[str, str] | None) -> ScopedKeys:
    if found is None:
        return "any-endpoint"
    value, source = found
    lowered = value.strip().lower()
    if lowered not in SCOPED_KEYS:
        raise ConfigError(f"{source}: unknown scoped key policy {value!r} "
                          f"(expected one of {', '.join(SCOPED_KEYS)})")
    return cast(ScopedKeys, lowered)


def _firewall(found: tuple[str, str] | None) -> FirewallSetting:
    if found is None:
        return "auto"
    value, source = found
    lowered = value.strip().lower()
    if lowered not in FIREWALL:
        raise ConfigError(
            f"{source}: unknown firewall setting {value!r} "
            f"(expected one of {', '.join(FIREWALL)})"
        )
    return cast(FirewallSetting, lowered)


def _blink_seconds(found: tuple[str, str] | None) -> float:
    if found is None:
        return 15.0
    value, source = found
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{source}: {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{source}: {value!r} must be a positive number of seconds")
    return seconds


def _log_level(found: tuple[str, str] | None) -> str:
    if found is None:
        return "info"
    value, source = found
    lowered = value.strip().lower()
    lowered = "warning" if lowered == "warn" else lowered
    if lowered not in LOG_LEVELS:
        raise ConfigError(
            f"{source}: unknown log level {value!r} (expected one of {', '.join(LOG_LEVELS)})"
        )
    return lowered


def _positive_int(found: tuple[str, str]) -> int:
    value, source = found
    text = value.strip()
    if not text.isdigit() or int(text) <= 0:
        raise ConfigError(f"{source}: {value!r} is not a positive whole number")
    return int(text)
