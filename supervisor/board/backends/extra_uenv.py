"""`extra_uEnv.txt` on Jetson and some i.MX8 boards (config.md §5.3).

`HOST_EXTLINUX_fdt` is the `custom_fdt_file=<v>` line; `HOST_EXTLINUX_isolcpus` is the
`isolcpus=<v>` word of `extra_os_cmdline`, a space-separated collection. Lines the supervisor
does not manage are kept. Upstream uses the backend only when the file exists already
(`matches`), so the selection checks that too.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from supervisor.board.backends import files
from supervisor.board.backends.base import BootBackend, BootOptions
from supervisor.board.backends.files import BootConfigError

_LOGGER = logging.getLogger(__name__)

FDT_ENTRY = "custom_fdt_file"
CMDLINE_ENTRY = "extra_os_cmdline"
# option -> (file entry, whether the entry is a collection of words)
SUPPORTED: dict[str, tuple[str, bool]] = {
    "fdt": (FDT_ENTRY, False),
    "isolcpus": (CMDLINE_ENTRY, True),
}
_LINES = re.compile(r"(?:\r?\n[\s#]*)+")
_OPTION = re.compile(r"^\s*(\w+)=(.*)$")
# Device types upstream gives the backend (ExtraUEnv.matches), before the file check.
_SUFFIXES = ("-nano", "-nano-emmc", "-nano-2gb-devkit", "-tx2")
_INFIXES = ("-tx2-nx", "-agx-orin-", "-orin-nx-", "-orin-nano-", "imx8mm-var-som")
_DART = re.compile(r"imx8mm?-var-dart")


def device_type_matches(device_type: str) -> bool:
    return (device_type.endswith(_SUFFIXES) or any(i in device_type for i in _INFIXES)
            or device_type in ("iot-gate-imx8plus", "iot-gate-imx8plus-d1d8")
            or _DART.search(device_type) is not None)


def _entries(content: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    if not content:
        return entries
    for line in _LINES.split(content):
        match = _OPTION.match(line)
        if match is None:
            if line.strip():
                _LOGGER.warning("Could not read extra_uEnv entry: %s", line)
            continue
        entries[match.group(1)] = match.group(2)
    return entries


def read_extra_uenv(content: str) -> BootOptions:
    """The supported options the file holds (a collection's words become options)."""
    options: BootOptions = {}
    for entry, value in _entries(content).items():
        if entry == CMDLINE_ENTRY:
            for word in value.split(" "):
                match = _OPTION.match(word)
                key, val = (match.group(1), match.group(2)) if match else (word, "")
                if key in SUPPORTED and SUPPORTED[key][1]:
                    options.setdefault(key, val)
        elif entry == FDT_ENTRY:
            options.setdefault("fdt", value)
    return options


def render_extra_uenv(content: str, options: BootOptions) -> bytes:
    """The file with the managed entries set from `options` (or dropped), the rest kept."""
    managed: dict[str, str] = {}
    for option, value in options.items():
        if option not in SUPPORTED:
            _LOGGER.warning("Not setting unsupported value: { %s: %s }", option, value)
            continue
        if isinstance(value, list):
            raise BootConfigError(f"Invalid value for {option}: a single value is expected")
        entry, collection = SUPPORTED[option]
        if collection:
            word = f"{option}={value}" if value else option
            managed[entry] = f"{managed[entry]} {word}" if managed.get(entry) else word
        else:
            managed[entry] = value
    merged = _entries(content)
    for entry in (FDT_ENTRY, CMDLINE_ENTRY):
        if entry in managed:
            merged[entry] = managed[entry]
        else:
            merged.pop(entry, None)
    return "".join(f"{key}={value}\n" for key, value in merged.items()).encode()


class ExtraUEnv(BootBackend):
    name = "extra-uenv"
    prefix = "HOST_EXTLINUX_"

    def __init__(self, boot_dir: Path) -> None:
        self.path = boot_dir / "extra_uEnv.txt"

    def present(self) -> bool:
        return self.path.is_file()

    def is_supported(self, option: str) -> bool:
        return option in SUPPORTED

    def _content(self) -> str:
        content = files.read_text(self.path)
        if content is None:
            raise BootConfigError("Could not find extra_uEnv file. Device is possibly bricked")
        return content

    def load(self) -> BootOptions:
        return read_extra_uenv(self._content())

    def store(self, options: BootOptions) -> None:
        files.write_atomic(self.path, render_extra_uenv(self._content(), options))
