"""Jetson `extlinux/extlinux.conf` (config.md §5.3): `HOST_EXTLINUX_isolcpus`, `_fdt`.

Only the default label's entry is touched: `isolcpus` is a `key=value` word of its `APPEND`
line (other words kept, in order), `fdt` is its `FDT` directive. The rest of the file is
kept, though it is rewritten in upstream's normal form (`DIRECTIVE value` lines, comments and
blank lines dropped). Upstream uses this backend on Jetson OS releases before 2.47.0 (later
ones keep extlinux.conf read-only and use extra_uEnv.txt); the board profile says which.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.board.backends import files
from supervisor.board.backends.base import BootBackend, BootOptions
from supervisor.board.backends.files import BootConfigError

_LOGGER = logging.getLogger(__name__)

SUPPORTED = ("isolcpus", "fdt")
APPEND_OPTIONS = ("isolcpus",)  # the supported options that are APPEND words
_LINES = re.compile(r"(?:\r?\n[\s#]*)+")
_DIRECTIVE = re.compile(r"^\s*(\w+)\s?(.*)$")


@dataclass
class ExtlinuxFile:
    globals: dict[str, str] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)

    def default_entry(self) -> dict[str, str]:
        label = self.globals.get("DEFAULT")
        if not label:
            raise BootConfigError("Could not find default entry for extlinux.conf file")
        entry = self.labels.get(label)
        if entry is None:
            raise BootConfigError(
                f"Cannot find label entry (label: {label}) for extlinux.conf file")
        return entry


def parse_file(content: str) -> ExtlinuxFile:
    parsed = ExtlinuxFile()
    label: str | None = None
    for line in _LINES.split(content):
        match = _DIRECTIVE.match(line)
        if match is None:
            if line.strip():
                _LOGGER.warning("Could not read extlinux entry: %s", line)
            continue
        directive, value = match.group(1).upper(), match.group(2)
        if directive == "MENU":
            first, _, rest = value.partition(" ")
            directive, value = f"MENU {first}", rest
        if directive == "LABEL":
            label = value
            parsed.labels[label] = {}
        elif label is None:
            parsed.globals[directive] = value
        else:
            parsed.labels[label][directive] = value
    return parsed


def render_file(parsed: ExtlinuxFile) -> bytes:
    lines = [f"{directive} {value}" for directive, value in parsed.globals.items()]
    for label, directives in parsed.labels.items():
        lines.append(f"LABEL {label}")
        lines.extend(f"{directive} {value}" for directive, value in directives.items())
    return "".join(line + "\n" for line in lines).encode()


def parse_append(append: str | None) -> dict[str, str]:
    """`ro rootwait isolcpus=0,4` -> {"ro": "", "rootwait": "", "isolcpus": "0,4"}."""
    if append is None:
        raise BootConfigError(
            "Could not find APPEND directive in default extlinux.conf boot entry")
    options: dict[str, str] = {}
    for word in append.split(" "):
        key, _, value = word.partition("=")
        if not key:
            continue
        if "=" in value:
            raise BootConfigError(f"Unable to parse invalid value: {word}")
        options.setdefault(key, value)  # upstream keeps the first of repeated words
    return options


def render_append(options: dict[str, str], existing: str) -> str:
    """The APPEND line: existing words without the managed ones, then the managed options."""
    kept = [word for word in existing.split(" ") if word.split("=", 1)[0] not in APPEND_OPTIONS]
    words = []
    for key, value in options.items():
        if "=" in key or "=" in value:
            raise BootConfigError("One of the values being set contains an invalid character: "
                                  f"[ value: {value}, key: {key} ]")
        words.append(f"{key}={value}" if value else key)
    return " ".join(kept + words).strip()


def read_extlinux(content: str) -> BootOptions:
    entry = parse_file(content).default_entry()
    options: BootOptions = {k: v for k, v in parse_append(entry.get("APPEND")).items()
                            if k in SUPPORTED}
    if entry.get("FDT"):
        options["fdt"] = entry["FDT"]
    return options


def render_extlinux(content: str, options: BootOptions) -> bytes:
    parsed = parse_file(content)
    entry = parsed.default_entry()
    fdt = options.get("fdt")
    if fdt is not None:
        if not isinstance(fdt, str) or not fdt:
            raise BootConfigError("Cannot set FDT of an empty value.")
        entry["FDT"] = fdt
    append = {k: str(v) for k, v in options.items() if k in APPEND_OPTIONS}
    entry["APPEND"] = render_append(append, entry.get("APPEND", ""))
    return render_file(parsed)


class Extlinux(BootBackend):
    name = "extlinux"
    prefix = "HOST_EXTLINUX_"

    def __init__(self, boot_dir: Path) -> None:
        self.path = boot_dir / "extlinux" / "extlinux.conf"

    def is_supported(self, option: str) -> bool:
        return option in SUPPORTED

    def _content(self) -> str:
        content = files.read_text(self.path)
        if content is None:
            raise BootConfigError("Could not find extlinux file. Device is possibly bricked")
        return content

    def load(self) -> BootOptions:
        return read_extlinux(self._content())

    def store(self, options: BootOptions) -> None:
        files.write_atomic(self.path, render_extlinux(self._content(), options))
