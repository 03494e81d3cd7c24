"""The device's boot configuration: the backends its board profile names, as one object.

`BootConfig.for_board()` builds the backends the profile's `[boot] backends` lists (plus the
splash image, which every device has, as upstream), keeping only those present on the device
(extra_uEnv.txt must exist). The rest of the supervisor sees three operations, in the words
of upstream's device-config.ts (config.md §5.1-§5.3):

- `current_env()`: every backend's current options as device config variables
  (`HOST_CONFIG_dtparam: "\"i2c_arm=on\",\"spi=on\""`), the boot half of the current config;
- `changes(current, target)`: which backends must be rewritten and whether that needs a
  reboot (raises `ForbiddenBootConfig` before anything is written);
- `apply(target)`: write every backend from the target (the `setBootConfig` step).

Blocking file I/O: callers on the event loop use `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from supervisor.board.backends.base import (
    BootBackend,
    change_required,
    env_to_options,
    options_to_env,
)
from supervisor.board.backends.config_txt import ConfigTxt
from supervisor.board.backends.configfs import AcpiLoader, ConfigFs
from supervisor.board.backends.extlinux import Extlinux
from supervisor.board.backends.extra_uenv import ExtraUEnv
from supervisor.board.backends.odmdata import Odmdata
from supervisor.board.backends.power_fan import PowerFan
from supervisor.board.backends.splash import SplashImage
from supervisor.configjson import ConfigJson

_LOGGER = logging.getLogger(__name__)

# The names a board profile's `[boot] backends` may list; the splash image is implicit.
BACKEND_NAMES = ("config-txt", "extlinux", "extra-uenv", "configfs", "odmdata", "power-fan")


@dataclass(frozen=True)
class BootPaths:
    """Where the backends find the device. `host_root` is the host's `/` (the block device
    and sysfs files of ODMDATA, the ACPI tables and configfs of the UP board)."""

    boot_dir: Path
    config_json: ConfigJson
    host_root: Path = Path("/")


def build_backend(name: str, paths: BootPaths) -> BootBackend:
    root = paths.host_root
    if name == "config-txt":
        return ConfigTxt(paths.boot_dir)
    if name == "extlinux":
        return Extlinux(paths.boot_dir)
    if name == "extra-uenv":
        return ExtraUEnv(paths.boot_dir)
    if name == "configfs":
        return ConfigFs(paths.boot_dir, AcpiLoader(root / "boot" / "acpi-tables",
                                                   root / "sys" / "kernel" / "config"))
    if name == "odmdata":
        return Odmdata(root / "dev" / "mmcblk0boot0",
                       root / "sys" / "block" / "mmcblk0boot0" / "force_ro")
    if name == "power-fan":
        return PowerFan(paths.config_json)
    if name == "splash-image":
        return SplashImage(paths.boot_dir)
    raise ValueError(f"unknown boot-config backend {name!r}")


@dataclass(frozen=True)
class BootChange:
    backends: tuple[str, ...] = ()  # the backends whose files differ from the target
    reboot: bool = False


class BootConfig:
    """The device's boot-config backends, initialised once."""

    def __init__(self, backends: Sequence[BootBackend], device_type: str) -> None:
        self.backends = tuple(backends)
        self.device_type = device_type
        self._initialised = False

    @classmethod
    def for_board(cls, names: Sequence[str], paths: BootPaths, device_type: str) -> BootConfig:
        backends = [build_backend(name, paths) for name in (*names, "splash-image")]
        # extra_uEnv is used only where the OS ships the file (upstream's matches()); the OS
        # releases that ship it keep extlinux.conf read-only (upstream: OS >= 2.47.0), so a
        # profile naming both uses extlinux only where extra_uEnv.txt is absent.
        uenv = any(isinstance(b, ExtraUEnv) and b.present() for b in backends)
        present = [b for b in backends
                   if b.present() and not (isinstance(b, Extlinux) and uenv)]
        return cls(present, device_type)

    def initialise(self) -> None:
        if self._initialised:
            return
        for backend in self.backends:
            backend.initialise()
        self._initialised = True

    def is_boot_var(self, name: str) -> bool:
        return any(backend.is_boot_var(name) for backend in self.backends)

    def current_env(self) -> dict[str, str]:
        """The boot half of the current config: each backend's options as variables."""
        self.initialise()
        env: dict[str, str] = {}
        for backend in self.backends:
            env.update(options_to_env(backend, backend.load()))
        return env

    def changes(self, current: Mapping[str, str], target: Mapping[str, str]) -> BootChange:
        """Which backends the target changes. Raises ForbiddenBootConfig (nothing written)."""
        changed: list[str] = []
        reboot = False
        for backend in self.backends:
            if change_required(backend, current, target, self.device_type):
                changed.append(backend.name)
                wanted = backend.ensure_required(self.device_type,
                                                 env_to_options(backend, target))
                reboot = reboot or backend.reboot_required(env_to_options(backend, current),
                                                           wanted)
        return BootChange(tuple(changed), reboot)

    def apply(self, target: Mapping[str, str]) -> dict[str, dict[str, object]]:
        """Write every backend from the target; the options written, per backend.

        The forbidden-key check runs for every backend before the first write, so a refused
        target changes no file."""
        self.initialise()
        current = self.current_env()
        for backend in self.backends:
            change_required(backend, current, target, self.device_type)
        written: dict[str, dict[str, object]] = {}
        for backend in self.backends:
            options = backend.ensure_required(self.device_type, env_to_options(backend, target))
            backend.store(options)
            written[backend.name] = dict(options)
        return written
