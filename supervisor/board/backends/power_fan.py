"""Jetson Orin power mode and fan profile (config.md §5.3), kept in config.json.

`HOST_CONFIG_power_mode` is config.json `os.power.mode`, `HOST_CONFIG_fan_profile` is
`os.fan.profile` (any string); an unset variable removes its object. The OS applies them at
boot, so a power mode change needs a reboot; a fan profile change alone does not. Writes go
through the process's `ConfigJson` (atomic, cache kept in step).
"""

from __future__ import annotations

import logging
from typing import Any

from supervisor.board.backends.base import BootBackend, BootOptions
from supervisor.board.backends.files import BootConfigError
from supervisor.configjson import ConfigJson
from supervisor.errors import ConfigError

_LOGGER = logging.getLogger(__name__)

OPTIONS = ("power_mode", "fan_profile")


def read_power_fan(os_config: dict[str, Any]) -> BootOptions:
    options: BootOptions = {}
    power, fan = os_config.get("power"), os_config.get("fan")
    if isinstance(power, dict) and isinstance(power.get("mode"), str):
        options["power_mode"] = power["mode"]
    if isinstance(fan, dict) and isinstance(fan.get("profile"), str):
        options["fan_profile"] = fan["profile"]
    return options


def render_power_fan(os_config: dict[str, Any], options: BootOptions) -> dict[str, Any]:
    """The new `os` object: power/fan set from `options` or removed, the rest kept."""
    new = dict(os_config)
    for option, (obj, key) in (("power_mode", ("power", "mode")),
                               ("fan_profile", ("fan", "profile"))):
        if option in options:
            new[obj] = {key: options[option]}
        else:
            new.pop(obj, None)
    return new


class PowerFan(BootBackend):
    name = "power-fan"
    prefix = "HOST_CONFIG_"

    def __init__(self, config_json: ConfigJson) -> None:
        self.config_json = config_json

    def is_boot_var(self, name: str) -> bool:
        return name.startswith(self.prefix) and self.option_name(name) in OPTIONS

    def is_supported(self, option: str) -> bool:
        return option in OPTIONS

    def reboot_required(self, current: BootOptions, target: BootOptions) -> bool:
        return current.get("power_mode") != target.get("power_mode")

    def load(self) -> BootOptions:
        try:
            return read_power_fan(self.config_json.os_config)
        except ConfigError as err:
            _LOGGER.error("Failed to read config.json while getting power / fan configs: %s",
                          err)
            return {}

    def store(self, options: BootOptions) -> None:
        try:
            current = self.config_json.os_config
        except ConfigError as err:
            raise BootConfigError(f"Failed to decode current os config: {err}") from err
        try:
            self.config_json.update({"os": render_power_fan(current, options)})
        except OSError as err:
            raise BootConfigError(f"Cannot write {self.config_json.path}: {err}") from err
