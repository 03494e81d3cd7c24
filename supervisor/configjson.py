"""config.json: the device identity on the boot partition (config.md §1.1, state.md §4.1).

Read once at start by `settings.load_settings()`; the `ConfigJson` handle it builds is then the
in-memory authority (upstream caches too: external edits are not seen until restart). Writers
(provisioning, host-config PATCH, poll interval) call `ConfigJson.update()`, which writes the
whole file atomically. The file lives on a FAT boot partition that can lose power at any time,
so a write is: temp file in the same directory, fsync, rename, fsync the directory.

Every call here blocks on disk I/O: async callers wrap it in `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import os
import threading
import uuid as uuidlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from supervisor.durable import replace_file
from supervisor.errors import ConfigError

# config.md §1: PermissiveNumber ("12abc" -> 12) and PermissiveBoolean, one implementation.
from supervisor.model.config_vars import parse_permissive_bool as permissive_bool
from supervisor.model.config_vars import parse_permissive_int as permissive_int

DEFAULT_LISTEN_PORT = 48484
DEFAULT_POLL_INTERVAL_MS = 900_000
DEFAULT_API_TIMEOUT_MS = 900_000
DEFAULT_BOOTSTRAP_RETRY_DELAY_MS = 30_000
DEFAULT_DELTA_ENDPOINT = "https://delta.balena-cloud.com"

# Serialises read-modify-write cycles of config.json within this process.
_WRITE_LOCK = threading.RLock()


def new_uuid() -> str:
    """A fresh device uuid: 32 lowercase hex characters (a uuid4 without dashes)."""
    return uuidlib.uuid4().hex


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read config.json; a missing file is created holding only a fresh `uuid`."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        data: dict[str, Any] = {"uuid": new_uuid()}
        write_atomic(target, data)
        return data
    except OSError as err:
        raise ConfigError(f"cannot read {target}: {err.strerror or err}") from err
    try:
        parsed = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"{target} is not valid JSON: {err}") from err
    if not isinstance(parsed, dict):
        raise ConfigError(f"{target} must hold a JSON object, not {type(parsed).__name__}")
    return parsed


def update(
    path: str | os.PathLike[str], changes: Mapping[str, Any], remove: Iterable[str] = ()
) -> dict[str, Any]:
    """Merge `changes` into the file and drop the `remove` keys; return the new content.

    A value of None also drops its key (upstream removes `apiKey` by setting it to null).
    """
    with _WRITE_LOCK:
        data = _merged(load(path), changes, remove)
        write_atomic(Path(path), data)
        return data


def ensure_uuid(path: str | os.PathLike[str]) -> str:
    """Return the device uuid, writing a fresh one first if the file has none."""
    with _WRITE_LOCK:
        data = load(path)
        current = data.get("uuid")
        if isinstance(current, str) and current:
            return current
        data["uuid"] = new_uuid()
        write_atomic(Path(path), data)
        return str(data["uuid"])


def write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file."""
    # Serialise first: an unencodable value must fail before anything touches the disk.
    payload = (json.dumps(data, indent=2) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, payload)
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from err


class ConfigJson:
    """The process's cached view of config.json, with typed accessors for the keys we use.

    Reads are served from memory; `update()` writes through atomically and then swaps the cache.
    Thread-safe: writers are serialised by a lock.
    """

    def __init__(self, path: str | os.PathLike[str], data: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self._data: dict[str, Any] = dict(data) if data is not None else load(self.path)

    @property
    def data(self) -> Mapping[str, Any]:
        """A read-only view of the cached content."""
        return MappingProxyType(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def update(self, changes: Mapping[str, Any], remove: Iterable[str] = ()) -> None:
        """Write `changes` (None drops a key) and drop `remove`, based on the cached content."""
        with _WRITE_LOCK:
            data = _merged(self._data, changes, remove)
            if data == self._data:
                return  # upstream writes only when something changed
            write_atomic(self.path, data)
            self._data = data

    def ensure_uuid(self) -> str:
        """Return the uuid, generating and persisting one if missing or empty."""
        if not self.uuid:
            self.update({"uuid": new_uuid()})
        return self.uuid

    # -- typed accessors (config.md §1.1) -------------------------------------------------------

    @property
    def api_endpoint(self) -> str:
        return self._str("apiEndpoint") or ""

    @property
    def unmanaged(self) -> bool:
        """No cloud: no provisioning, polling nor reporting; the API needs no key."""
        return not self.api_endpoint

    @property
    def uuid(self) -> str:
        return self._str("uuid") or ""

    @property
    def device_api_key(self) -> str:
        return self._str("deviceApiKey") or ""

    @property
    def api_key(self) -> str | None:
        """The provisioning key; removed once the device is registered."""
        return self._str("apiKey")

    @property
    def current_api_key(self) -> str:
        """The key the cloud client uses: provisioning key while present, else the device key."""
        return self.api_key or self.device_api_key

    @property
    def application_id(self) -> int | None:
        return self._int("applicationId")

    @property
    def device_type(self) -> str | None:
        return self._str("deviceType")

    @property
    def device_id(self) -> int | None:
        return self._int("deviceId")

    @property
    def registered_at(self) -> int | None:
        return self._int("registered_at")

    @property
    def provisioned(self) -> bool:
        return bool(self.uuid and self.api_endpoint and self.registered_at and self.device_id)

    @property
    def listen_port(self) -> int:
        return _or(self._int("listenPort"), DEFAULT_LISTEN_PORT)

    @property
    def app_update_poll_interval(self) -> int:
        """Milliseconds between target-state polls."""
        return _or(self._int("appUpdatePollInterval"), DEFAULT_POLL_INTERVAL_MS)

    @property
    def api_timeout(self) -> int:
        return _or(self._int("apiTimeout"), DEFAULT_API_TIMEOUT_MS)

    @property
    def bootstrap_retry_delay(self) -> int:
        return _or(self._int("bootstrapRetryDelay"), DEFAULT_BOOTSTRAP_RETRY_DELAY_MS)

    @property
    def delta_endpoint(self) -> str:
        return self._str("deltaEndpoint") or DEFAULT_DELTA_ENDPOINT

    @property
    def logs_endpoint(self) -> str | None:
        return self._str("logsEndpoint")

    @property
    def hostname(self) -> str | None:
        return self._str("hostname")

    @property
    def initial_device_name(self) -> str | None:
        return self._str("initialDeviceName")

    @property
    def persistent_logging(self) -> bool:
        return self._bool("persistentLogging")

    @property
    def development_mode(self) -> bool:
        return self._bool("developmentMode")

    @property
    def os_config(self) -> dict[str, Any]:
        """The `os` object (power mode, fan profile, extra firmware volume)."""
        value = self._data.get("os")
        if value is None:
            return {}
        if isinstance(value, str):  # StringJSON: an object or its JSON text
            try:
                value = json.loads(value)
            except ValueError:
                raise self._invalid("os", value) from None
        if not isinstance(value, dict):
            raise self._invalid("os", value)
        return value

    # -- decoding helpers -----------------------------------------------------------------------

    def _str(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self._invalid(key, value)
        return str(value)

    def _int(self, key: str) -> int | None:
        value = self._data.get(key)
        if value is None:
            return None
        parsed = permissive_int(value)
        if parsed is None:
            raise self._invalid(key, value)
        return parsed

    def _bool(self, key: str) -> bool:
        value = self._data.get(key)
        parsed = permissive_bool(value)
        if parsed is None:
            raise self._invalid(key, value)
        return parsed

    def _invalid(self, key: str, value: Any) -> ConfigError:
        return ConfigError(
            f"{self.path}: there was an error validating configuration input for key: "
            f"{key}, with value: {value!r}"
        )


def _merged(
    base: Mapping[str, Any], changes: Mapping[str, Any], remove: Iterable[str]
) -> dict[str, Any]:
    data = dict(base)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    for key in remove:
        data.pop(key, None)
    return data


def _or(value: int | None, default: int) -> int:
    return default if value is None else value
