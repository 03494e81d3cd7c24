"""Raspberry Pi `config.txt` (config.md §5.3): `HOST_CONFIG_<key>` variables.

The file is rewritten whole from the target options as `key=value` lines. Array keys
(`dtparam`, `dtoverlay`, `device_tree_param`, `device_tree_overlay`, `gpio`) take the quoted
CSV `"a","b"` or one bare value. An overlay is written as `dtoverlay=<name>` followed by one
`dtparam=<p>` line per parameter, after every other line; reading folds a `dtparam` line into
the overlay above it, except the "base" params (`audio`, `spi`, `i2c*`) which stay global.
`initramfs` is written `initramfs <value>`. The power/fan keys belong to `power_fan.py`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from supervisor.board.backends import files
from supervisor.board.backends.base import BootBackend, BootOptions, OptionValue, parse_quoted_list

_LOGGER = logging.getLogger(__name__)

ARRAY_KEYS = frozenset({"dtparam", "dtoverlay", "device_tree_param", "device_tree_overlay",
                        "gpio"})
BASE_PARAMS = frozenset({"audio", "spi", "i2c", "i2c_arm", "i2c_vc", "i2c_baudrate",
                         "i2c_arm_baudrate", "i2c_vc_baudrate"})
FORBIDDEN = frozenset({"disable_commandline_tags", "cmdline", "kernel", "kernel_address",
                       "kernel_old", "ramfsfile", "ramfsaddr", "initramfs",
                       "device_tree_address", "init_emmc_clock", "avoid_safe_mode"})
# HOST_CONFIG_power_mode / fan_profile are the power/fan backend's, never config.txt lines.
POWER_FAN_OPTIONS = frozenset({"power_mode", "fan_profile"})
# Device types upstream gives a config.txt besides every `raspberry*` (ConfigTxt.matches).
OTHER_DEVICE_TYPES = frozenset({"fincm3", "rt-rpi-300", "243390-rpi3", "nebra-hnt",
                                "revpi-connect", "revpi-connect-s", "revpi-core-3",
                                "revpi-connect-4"})

_KEY_VALUE = re.compile(r"^([^=]+)=(.*)$")
_INITRAMFS = re.compile(r"^(initramfs) (.+)")
_BASE_OVERLAY = ""  # the params before any dtoverlay line


def _is_base_param(param: str) -> bool:
    match = _KEY_VALUE.match(param)
    return (match.group(1) if match else param) in BASE_PARAMS


def parse_config_txt(content: str) -> BootOptions:
    """The options a config.txt holds (upstream getBootConfig)."""
    conf: BootOptions = {}
    base_params: list[str] = []
    overlays: list[tuple[str, list[str]]] = [(_BASE_OVERLAY, base_params)]
    for line in re.split(r"\r?\n", content):
        stripped = line.lstrip()
        if stripped.startswith("#") or stripped == "":
            continue
        match = _KEY_VALUE.match(line)
        if match is not None:
            key, value = match.group(1), match.group(2)
            if key not in ARRAY_KEYS:
                conf[key] = value
            elif key == "dtparam":
                # Several params may share a line; base params are global wherever they are.
                for param in value.split(","):
                    (base_params if _is_base_param(param) else overlays[-1][1]).append(param)
            elif key == "dtoverlay":
                name, *params = value.split(",")
                overlays.append((name, params))
            else:
                values = conf.setdefault(key, [])
                assert isinstance(values, list)
                values.append(value)
            continue
        match = _INITRAMFS.match(line)
        if match is not None:
            conf["initramfs"] = match.group(2)
        else:
            _LOGGER.warning("Could not parse config.txt entry: %s. Ignoring.", line)
    for name, params in overlays:
        if name == _BASE_OVERLAY:
            if params:
                dtparams = conf.setdefault("dtparam", [])
                assert isinstance(dtparams, list)
                dtparams.extend(params)
        else:
            dtoverlays = conf.setdefault("dtoverlay", [])
            assert isinstance(dtoverlays, list)
            dtoverlays.append(",".join([name, *params]))
    return conf


def render_config_txt(options: BootOptions) -> bytes:
    """The config.txt for `options` (upstream setBootConfig): overlays last, split per param."""
    lines: list[str] = []
    for key, value in options.items():
        if key == "dtoverlay":
            continue
        if key == "initramfs":
            lines.append(f"initramfs {_scalar(value)}")
        elif isinstance(value, list):
            lines.extend(f"{key}={entry}" for entry in value)
        else:
            lines.append(f"{key}={value}")
    overlays = options.get("dtoverlay")
    for entry in [overlays] if isinstance(overlays, str) else (overlays or []):
        name, *params = entry.split(",")
        lines.append(f"dtoverlay={name}")
        lines.extend(f"dtparam={param}" for param in params)
    return ("\n".join(lines) + "\n").encode()


def _scalar(value: OptionValue) -> str:
    return ",".join(value) if isinstance(value, list) else value


class ConfigTxt(BootBackend):
    name = "config-txt"
    prefix = "HOST_CONFIG_"

    def __init__(self, boot_dir: Path) -> None:
        self.path = boot_dir / "config.txt"

    @staticmethod
    def matches(device_type: str) -> bool:
        return device_type.startswith("raspberry") or device_type in OTHER_DEVICE_TYPES

    def is_boot_var(self, name: str) -> bool:
        return super().is_boot_var(name) and self.option_name(name) not in POWER_FAN_OPTIONS

    def option_value(self, option: str, value: str) -> OptionValue:
        return parse_quoted_list(option, value) if option in ARRAY_KEYS else value

    def is_supported(self, option: str) -> bool:
        return option not in FORBIDDEN

    def ensure_required(self, device_type: str, options: BootOptions) -> BootOptions:
        if device_type != "fincm3":
            return options
        overlays = options.get("dtoverlay", [])
        listed = [overlays] if isinstance(overlays, str) else list(overlays)
        if "balena-fin" not in listed:
            listed.append("balena-fin")
        return {**options, "dtoverlay": [entry for entry in listed if entry]}

    def load(self) -> BootOptions:
        content = files.read_text(self.path)
        return {} if content is None else parse_config_txt(content)

    def store(self, options: BootOptions) -> None:
        files.write_atomic(self.path, render_config_txt(options))
