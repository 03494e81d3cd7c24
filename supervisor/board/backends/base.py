"""What every boot-config backend is, and the pure rules they share (config.md §5.2, §5.3).

A backend maps device config variables (`HOST_CONFIG_gpu_mem`) to *options* of one boot
file (`gpu_mem`), reads the options the file holds and writes new ones. Each backend class
has a pure side (`read(content) -> options`, `render(options, ...) -> bytes`, the name and
value rules) and a thin I/O side (`load()`, `store(options)`) that goes through `files.py`.

Shared here, as upstream's config/utils.ts and device-config.ts have them:
`env_to_options` (envToBootConfig), `options_to_env` (bootConfigToEnv: a list becomes the
quoted CSV `"a","b"`), and `change_required` (bootConfigChangeRequired: the forbidden-key
check, then a deep comparison, with the ODMDATA special case).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

from supervisor.board.backends.files import BootConfigError

OptionValue = str | list[str]
BootOptions = dict[str, OptionValue]

# ODMDATA's option: a target without it is not a change (devices that predate the backend).
SPECIAL_CASE = "configuration"


class ForbiddenBootConfig(BootConfigError):
    """A target changes a key the backend refuses (config.txt's `kernel`, ...)."""

    retryable = False

    def __init__(self, key: str) -> None:
        super().__init__(f"Attempt to change blacklisted config value {key}")
        self.key = key


class BootBackend(ABC):
    """One boot-config backend. Subclasses set `name` and `prefix` (after BALENA_/RESIN_)."""

    name: ClassVar[str]
    prefix: ClassVar[str]

    # -- names and values (pure) ----------------------------------------------------------------

    def is_boot_var(self, name: str) -> bool:
        """A device config variable (prefix already stripped) that this backend handles."""
        return name.startswith(self.prefix)

    def option_name(self, var: str) -> str:
        return var[len(self.prefix):]

    def option_value(self, option: str, value: str) -> OptionValue:
        return value

    def var_name(self, option: str) -> str | None:
        return self.prefix + option if option else None

    @abstractmethod
    def is_supported(self, option: str) -> bool:
        """False for keys the backend refuses to change."""

    def ensure_required(self, device_type: str, options: BootOptions) -> BootOptions:
        """Options some device types always need, added to a target (config.txt's fincm3)."""
        return options

    def reboot_required(self, current: BootOptions, target: BootOptions) -> bool:
        """Whether changing from `current` to `target` needs a reboot (all but power/fan)."""
        return True

    # -- the device (I/O) -----------------------------------------------------------------------

    def present(self) -> bool:
        """Whether the device has what this backend configures (upstream's matches() checks
        beyond the device type: extra_uEnv.txt exists, the splash directory exists)."""
        return True

    def initialise(self) -> None:
        """Once, before first use (upstream's initialise); most backends need nothing."""
        return None

    @abstractmethod
    def load(self) -> BootOptions:
        """The options the device has now."""

    @abstractmethod
    def store(self, options: BootOptions) -> None:
        """Make the device hold `options` (atomically, through files.py)."""


def env_to_options(backend: BootBackend, env: Mapping[str, str]) -> BootOptions:
    """The backend's options named by a device config (without prefixes), in its order."""
    options: BootOptions = {}
    for var, value in env.items():
        if not backend.is_boot_var(var):
            continue
        option = backend.option_name(var)
        if option:  # a bare prefix (`HOST_CONFIG_`) names nothing
            options[option] = backend.option_value(option, value or "")
    return options


def options_to_env(backend: BootBackend, options: Mapping[str, OptionValue]) -> dict[str, str]:
    """The options as device config variables, as the current config reports them."""
    env: dict[str, str] = {}
    for option, value in options.items():
        var = backend.var_name(option)
        if var is not None:
            env[var] = quoted_list(value) if isinstance(value, list) else value
    return env


def change_required(backend: BootBackend, current_env: Mapping[str, str],
                    target_env: Mapping[str, str], device_type: str) -> bool:
    """Whether the target needs this backend's files rewritten.

    Raises `ForbiddenBootConfig` (upstream's message) when the target changes a key the
    backend refuses; nothing has been written at that point.
    """
    target = backend.ensure_required(device_type, env_to_options(backend, target_env))
    current = env_to_options(backend, current_env)
    for key, value in target.items():
        if not backend.is_supported(key) and current.get(key) != value:
            raise ForbiddenBootConfig(key)
    if current == target:
        return False
    # The only difference is a target without an ODMDATA configuration: no change (such a
    # device reports its value to the cloud on provisioning).
    return not (SPECIAL_CASE not in target and SPECIAL_CASE in current
                and {**target, SPECIAL_CASE: current[SPECIAL_CASE]} == current)


def quoted_list(values: list[str]) -> str:
    """["a", "b"] -> `"a","b"` (JSON.stringify without the brackets)."""
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))[1:-1]


def parse_quoted_list(option: str, value: str) -> list[str]:
    """`"a","b"` -> ["a", "b"]; a value without a leading quote is one bare item."""
    if not value.startswith('"'):
        return [value]
    try:
        items = json.loads(f"[{value}]")
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise BootConfigError(
            f"Invalid value for {option}: {value} (expected \"a\",\"b\" or a single value)")
    return items
