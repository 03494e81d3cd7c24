"""Board profiles: what this device type has (LED, boot config file, architecture).

One TOML file per device type lives in `board-configs/`. `settings.py` picks the slug
(`--board`, else config.json `deviceType`, else `generic`) and calls `load_board()`; the LED
driver (`board/led.py`) and the boot-config code read the resulting frozen `BoardProfile`.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from supervisor.errors import ConfigError

_LOGGER = logging.getLogger(__name__)

GENERIC_SLUG = "generic"
ENV_CONFIGS_DIR = "SUPERVISOR_BOARD_CONFIGS"

LedDriver = Literal["sysfs-brightness", "sysfs-trigger", "none"]
LED_DRIVERS: tuple[LedDriver, ...] = ("sysfs-brightness", "sysfs-trigger", "none")
# The boot-config backends a profile may name (board/bootconfig.py builds them); the splash
# image backend is every device's and is not listed.
BOOT_BACKENDS = ("config-txt", "extlinux", "extra-uenv", "configfs", "odmdata", "power-fan")

# balena architecture names for `arch = "auto"` (the generic profile).
_MACHINE_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv7l": "armv7hf",
    "armv6l": "rpi",
    "i686": "i386",
    "i386": "i386",
}
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class OfflinePattern:
    """What the LED shows while the cloud is unreachable (config.md §8): `blinks` times
    `on_ms` on / `off_ms` off, then `pause_ms` dark, repeated. `[led.offline]` in a profile."""

    blinks: int = 4
    on_ms: int = 200
    off_ms: int = 200
    pause_ms: int = 1000


DEFAULT_OFFLINE_PATTERN = OfflinePattern()


@dataclass(frozen=True)
class LedSpec:
    """How to drive the identify LED. `file` is a sysfs path (brightness or trigger file)."""

    driver: LedDriver = "none"
    file: str | None = None
    # Tried in order when `file` is missing (e.g. led0 on kernels before the ACT rename).
    fallback_files: tuple[str, ...] = ()
    active_low: bool = False
    on_trigger: str = "default-on"
    off_trigger: str = "none"
    offline: OfflinePattern = DEFAULT_OFFLINE_PATTERN

    @property
    def candidates(self) -> tuple[str, ...]:
        return ((self.file,) if self.file else ()) + self.fallback_files


@dataclass(frozen=True)
class BootSpec:
    """The boot-config backends of the device type (`[boot] backends`), in apply order."""

    backends: tuple[str, ...] = ()


@dataclass(frozen=True)
class BoardProfile:
    slug: str
    name: str
    arch: str
    aliases: tuple[str, ...] = ()
    led: LedSpec = LedSpec()
    boot: BootSpec = BootSpec()


BUILTIN_GENERIC = BoardProfile(slug=GENERIC_SLUG, name="Generic device", arch="auto")


def configs_dir() -> Path:
    """`$SUPERVISOR_BOARD_CONFIGS`, else `board-configs/` of the repository checkout."""
    env = os.environ.get(ENV_CONFIGS_DIR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "board-configs"


def host_arch() -> str:
    machine = platform.machine().lower()
    return _MACHINE_ARCH.get(machine, machine)


def load_board(slug: str, configs_dir: Path | str) -> BoardProfile:
    """The profile for `slug` (file name or alias); unknown slugs get the generic profile."""
    directory = Path(configs_dir)
    path = _find(slug, directory)
    if path is None:
        _LOGGER.warning("No board profile for device type %r; using the generic profile", slug)
        generic = directory / f"{GENERIC_SLUG}.toml"
        profile = parse_profile(_read(generic), str(generic)) if generic.is_file() \
            else BUILTIN_GENERIC
    else:
        profile = parse_profile(_read(path), str(path))
    if profile.arch == "auto":
        profile = BoardProfile(slug=profile.slug, name=profile.name, arch=host_arch(),
                               aliases=profile.aliases, led=profile.led, boot=profile.boot)
    return profile


def _find(slug: str, directory: Path) -> Path | None:
    if not _SLUG_RE.match(slug):  # also keeps "../x" out of the path
        return None
    direct = directory / f"{slug}.toml"
    if direct.is_file():
        return direct
    if not directory.is_dir():
        return None
    for path in sorted(directory.glob("*.toml")):
        aliases = _read(path).get("aliases", [])
        if isinstance(aliases, list) and slug in aliases:
            return path
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"Cannot read board profile {path}: {err}") from err


def parse_profile(data: dict[str, Any], where: str = "<profile>") -> BoardProfile:
    """Validate one decoded TOML document into a `BoardProfile`."""

    def text(table: dict[str, Any], key: str, default: str | None = None) -> str | None:
        value = table.get(key, default)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string")
        return value

    slug, name, arch = text(data, "slug"), text(data, "name"), text(data, "arch")
    if not slug or not name or not arch:
        raise ConfigError(f"{where}: slug, name and arch are required")
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ConfigError(f"{where}: aliases must be a list of strings")

    led_t = _table(data, "led", where)
    driver = text(led_t, "driver", "none")
    if driver not in LED_DRIVERS:
        raise ConfigError(f"{where}: led.driver must be one of {', '.join(LED_DRIVERS)}")
    fallback = led_t.get("fallback_files", [])
    if not isinstance(fallback, list) or not all(isinstance(f, str) for f in fallback):
        raise ConfigError(f"{where}: led.fallback_files must be a list of strings")
    active_low = led_t.get("active_low", False)
    if not isinstance(active_low, bool):
        raise ConfigError(f"{where}: led.active_low must be a boolean")
    led = LedSpec(
        driver=cast(LedDriver, driver),
        file=text(led_t, "file"),
        fallback_files=tuple(fallback),
        active_low=active_low,
        on_trigger=text(led_t, "on_trigger", "default-on") or "default-on",
        off_trigger=text(led_t, "off_trigger", "none") or "none",
        offline=_offline_pattern(_table(led_t, "offline", f"{where}: led"), where),
    )
    if led.driver != "none" and not led.candidates:
        raise ConfigError(f"{where}: led.file is required for driver {led.driver}")

    boot_t = _table(data, "boot", where)
    if "backend" in boot_t or "file" in boot_t:  # the old one-backend form: say so, loudly
        raise ConfigError(f"{where}: [boot] takes `backends = [...]` (backend/file are gone)")
    backends = boot_t.get("backends", [])
    if not isinstance(backends, list) or not all(b in BOOT_BACKENDS for b in backends):
        raise ConfigError(f"{where}: boot.backends must be a list of "
                          f"{', '.join(BOOT_BACKENDS)}")
    boot = BootSpec(backends=tuple(backends))

    return BoardProfile(slug=slug, name=name, arch=arch, aliases=tuple(aliases), led=led,
                        boot=boot)


def _offline_pattern(table: dict[str, Any], where: str) -> OfflinePattern:
    default = OfflinePattern()
    values: dict[str, int] = {}
    for key, low in (("blinks", 1), ("on_ms", 1), ("off_ms", 1), ("pause_ms", 0)):
        value = table.get(key, getattr(default, key))
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 60_000:
            raise ConfigError(f"{where}: led.offline.{key} must be a whole number "
                              f"from {low} to 60000")
        values[key] = value
    return OfflinePattern(**values)


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return table
