"""Jetson TX2 ODMDATA (config.md §5.3): `HOST_ODMDATA_configuration` = 1..6.

The mode is one byte, repeated at offsets 1659, 5243 and 18043 of the eMMC boot partition
`/dev/mmcblk0boot0` (bytes 0x0, 0x1, 0x6, 0x7, 0x2, 0x3 for modes 1-6). The partition is
read-only until `/sys/block/mmcblk0boot0/force_ro` says 0; it is set back to 1 after the
write. Both paths are constructor arguments: tests use a plain file for the block device.
"""

from __future__ import annotations

import logging
from pathlib import Path

from supervisor.board.backends import files
from supervisor.board.backends.base import BootBackend, BootOptions
from supervisor.board.backends.files import BootConfigError
from supervisor.model.config_vars import parse_permissive_int

_LOGGER = logging.getLogger(__name__)

OFFSETS = (1659, 5243, 18043)
MODE_BYTES = (0x0, 0x1, 0x6, 0x7, 0x2, 0x3)


def mode_of(data: bytes) -> str:
    """The configuration mode ("1".."6") the three bytes at OFFSETS say."""
    if len(data) != len(OFFSETS) or len(set(data)) != 1:
        raise BootConfigError(
            "Unable to parse ODMDATA configuration. Data at offsets do not match.")
    if data[0] not in MODE_BYTES:
        raise BootConfigError(
            "Unable to parse ODMDATA configuration. Unsupported configuration byte set.")
    return str(MODE_BYTES.index(data[0]) + 1)


class Odmdata(BootBackend):
    name = "odmdata"
    prefix = "HOST_ODMDATA_"

    def __init__(self, device: Path, force_ro: Path) -> None:
        self.device = device
        self.force_ro = force_ro

    def is_supported(self, option: str) -> bool:
        return option == "configuration"

    def load(self) -> BootOptions:
        try:
            with self.device.open("rb") as dev:
                data = b""
                for offset in OFFSETS:
                    dev.seek(offset)
                    data += dev.read(1)
        except FileNotFoundError as err:
            raise BootConfigError(f"File not found at: {self.device}") from err
        except OSError as err:
            raise BootConfigError(f"Issue reading '{self.device}': {err.strerror}") from err
        return {"configuration": mode_of(data)}

    def store(self, options: BootOptions) -> None:
        value = options.get("configuration")
        if not value or not isinstance(value, str):
            _LOGGER.info("No changes made to ODMDATA configuration.")
            return
        mode = parse_permissive_int(value)  # parseInt(v, 10)
        if mode is None or not 1 <= mode <= 6:
            _LOGGER.error("Configuration mode of: %s is not supported.", value)
            _LOGGER.info("No changes made to ODMDATA configuration.")
            return
        _LOGGER.info("Setting ODMDATA Configuration Mode #%d.", mode)
        byte = bytes([MODE_BYTES[mode - 1]])
        self._set_read_only(False)
        try:
            files.write_in_place(self.device, [(offset, byte) for offset in OFFSETS])
        finally:
            self._set_read_only(True)
        _LOGGER.info("Successfully set ODMDATA Configuration Mode #%d.", mode)

    def _set_read_only(self, value: bool) -> None:
        files.write_in_place(self.force_ro, [(0, b"1" if value else b"0")])
