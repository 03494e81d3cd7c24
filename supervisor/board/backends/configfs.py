"""ConfigFS ACPI tables on the UP board (config.md §5.3): `HOST_CONFIGFS_ssdt`.

The wanted SSDT table names live in `<boot>/configfs.json` as `{"ssdt": [...]}`. At start
(`initialise`) the `acpi_configfs` module is loaded and each listed table is copied from
`<root>/boot/acpi-tables/<name>.aml` into `<configfs>/acpi/table/<name>/aml`. The kernel
side (modprobe, configfs) sits behind `AcpiLoader`, whose real driver works on paths: the
tests give it a temp dir standing in for `/sys/kernel/config`.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from supervisor.board.backends import files
from supervisor.board.backends.base import BootBackend, BootOptions, OptionValue, parse_quoted_list

_LOGGER = logging.getLogger(__name__)


class AcpiLoader:
    """Loads AML tables through configfs. `modprobe` is None where no module is loaded."""

    def __init__(self, tables_dir: Path, configfs_dir: Path,
                 modprobe: tuple[str, ...] | None = ("modprobe", "acpi_configfs")) -> None:
        self.tables_dir = tables_dir
        self.configfs_dir = configfs_dir
        self.modprobe = modprobe

    def load_module(self) -> None:
        if self.modprobe is not None:
            subprocess.run(self.modprobe, check=True, capture_output=True, timeout=30)

    def load_table(self, name: str) -> bool:
        source = self.tables_dir / f"{name}.aml"
        if not name or "/" in name or not source.is_file():
            _LOGGER.error("Missing AML for '%s'. Unable to load.", name)
            return False
        target = self.configfs_dir / "acpi" / "table" / name
        try:
            target.mkdir(parents=True, exist_ok=True)
            # configfs takes the table in one write of the whole content, as `cat` does.
            (target / "aml").write_bytes(source.read_bytes())
            _LOGGER.info("Loading AML %s", name)
        except OSError as err:
            _LOGGER.error("Issue while loading AML %s: %s", name, err)
        return True


def read_configfs(content: str | None) -> dict[str, Any]:
    if content is None:
        return {}
    try:
        data = json.loads(content)
    except ValueError as err:
        _LOGGER.error("Unable to deserialise ConfigFS configuration: %s", err)
        return {}
    return data if isinstance(data, dict) else {}


class ConfigFs(BootBackend):
    name = "configfs"
    prefix = "HOST_CONFIGFS_"

    def __init__(self, boot_dir: Path, loader: AcpiLoader) -> None:
        self.path = boot_dir / "configfs.json"
        self.loader = loader

    def is_boot_var(self, name: str) -> bool:
        return name == "HOST_CONFIGFS_ssdt"

    def option_value(self, option: str, value: str) -> OptionValue:
        return parse_quoted_list(option, value)

    def is_supported(self, option: str) -> bool:
        return option == "ssdt"

    def initialise(self) -> None:
        try:
            self.loader.load_module()
            config = read_configfs(files.read_text(self.path))
            files.write_atomic(self.path, json.dumps(config).encode())  # normalised
            ssdt = config.get("ssdt")
            for name in ssdt if isinstance(ssdt, list) else []:
                if isinstance(name, str):
                    self.loader.load_table(name)
        except (OSError, subprocess.SubprocessError) as err:
            _LOGGER.error("Unable to initialise ConfigFS: %s", err)

    def load(self) -> BootOptions:
        ssdt = read_configfs(files.read_text(self.path)).get("ssdt")
        if isinstance(ssdt, list) and ssdt and all(isinstance(s, str) for s in ssdt):
            return {"ssdt": list(ssdt)}
        return {}

    def store(self, options: BootOptions) -> None:
        config = read_configfs(files.read_text(self.path))
        ssdt = options.get("ssdt")
        if ssdt:
            config["ssdt"] = [ssdt] if isinstance(ssdt, str) else list(ssdt)
        else:
            config.pop("ssdt", None)
        files.write_atomic(self.path, json.dumps(config).encode())
