"""The boot splash logo (config.md §5.3): `HOST_SPLASH_image`, on every device.

The value is a `data:image/<type>;base64,<data>` URI or raw base64 of a PNG. It replaces
`<boot>/splash/balena-logo.png` (or `resin-logo.png` when that is the file present); data
that is not a PNG is logged and not written. `initialise` copies the original logo to
`balena-logo-default.png` once; an empty target restores that default. The current value is
reported only while the logo differs from the default.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from pathlib import Path

from supervisor.board.backends import files
from supervisor.board.backends.base import BootBackend, BootOptions, OptionValue
from supervisor.board.backends.files import BootConfigError

_LOGGER = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FILENAMES = ("balena-logo.png", "resin-logo.png")
DEFAULT_NAME = "balena-logo-default.png"
_DATA_URI = re.compile(r"^data:(.+);base64,(.*)$", re.DOTALL)


def is_png(data: bytes) -> bool:
    return data[:8] == PNG_MAGIC


def decode_image(value: str) -> bytes:
    """The image bytes of a data URI or raw base64 text (upstream's Buffer.from: lenient)."""
    data = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    cleaned = re.sub(r"[^A-Za-z0-9+/=_-]", "", data).replace("-", "+").replace("_", "/")
    cleaned = cleaned.split("=", 1)[0]
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return b""


class SplashImage(BootBackend):
    name = "splash-image"
    prefix = "HOST_SPLASH_"

    def __init__(self, boot_dir: Path) -> None:
        self.dir = boot_dir / "splash"
        self.default = self.dir / DEFAULT_NAME

    def present(self) -> bool:
        # Upstream assumes every device has <boot>/splash; a boot dir without it (a dev
        # machine) has no logo to configure.
        return self.dir.is_dir()

    def is_boot_var(self, name: str) -> bool:
        return name.startswith(self.prefix) and self.option_name(name) == "image"

    def option_name(self, var: str) -> str:
        return var[len(self.prefix):].lower()

    def option_value(self, option: str, value: str) -> OptionValue:
        match = _DATA_URI.match(value)
        if match is not None:
            media_type = match.group(1).split(";")[0]  # parameters dropped
            return f"data:{media_type};base64,{match.group(2)}"
        if value.strip():
            return f"data:image/png;base64,{value}"  # assumed base64; checked when written
        return value.strip()

    def is_supported(self, option: str) -> bool:
        return option == "image"

    def ensure_required(self, device_type: str, options: BootOptions) -> BootOptions:
        # An empty value from the cloud is the same as none.
        image = options.get("image")
        if isinstance(image, str) and not image.strip():
            return {k: v for k, v in options.items() if k != "image"}
        return options

    def logo_path(self) -> Path:
        try:
            present = sorted(p.name for p in self.dir.iterdir() if p.name in FILENAMES)
        except OSError as err:
            raise BootConfigError(f"Cannot read {self.dir}: {err.strerror or err}") from err
        return self.dir / (present[0] if present else FILENAMES[0])

    def initialise(self) -> None:
        try:
            if self.default.exists():
                return
            logo = files.read_bytes(self.logo_path())
            if logo is not None and is_png(logo):
                files.write_atomic(self.default, logo)
                _LOGGER.info("Initialised splash image backend")
        except BootConfigError as err:
            _LOGGER.warning("Could not initialise splash image backend: %s", err)

    def load(self) -> BootOptions:
        try:
            default = files.read_bytes(self.default)
            logo = files.read_bytes(self.logo_path())
        except BootConfigError as err:
            _LOGGER.warning("Failed to read splash image: %s", err)
            return {}
        if logo is None or default is None or logo == default:
            return {}
        return {"image": "data:image/png;base64," + base64.b64encode(logo).decode()}

    def store(self, options: BootOptions) -> None:
        value = options.get("image")
        if isinstance(value, str) and value:
            image = decode_image(value)
        else:
            default = files.read_bytes(self.default)
            if default is None:
                raise BootConfigError(f"No default splash image at {self.default}")
            image = default
        if not is_png(image):
            _LOGGER.error("Expected splash image to be a base64 encoded PNG image. "
                          "Skipping write.")
            return
        files.write_atomic(self.logo_path(), image)
