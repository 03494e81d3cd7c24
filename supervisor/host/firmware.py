"""The extra-firmware volume (config.md §11): the Docker volume the OS loads firmware from.

config.json `os.kernel.extraFirmwareVol` names it (balenaOS writes `extra-firmware`). The host
integration loop (`host/integration.py`) creates it at start, so the OS finds it before any
service asks for it; the engine's create is idempotent, so an existing volume and its files
stay. Services labelled `io.balena.features.extra-firmware` mount it (model/spec.py), and a
purge recreates it empty (actions/apps.py, a `recreateVolume` step).
"""

from __future__ import annotations

import logging

from supervisor.engine.runner import AsyncEngine
from supervisor.errors import ConfigError, SupervisorError
from supervisor.model.spec import VolumeSpec
from supervisor.settings import Settings

_LOGGER = logging.getLogger(__name__)


def extra_firmware_volume(os_config: object) -> str | None:
    """config.json `os.kernel.extraFirmwareVol`, or None when the OS has none."""
    kernel = os_config.get("kernel") if isinstance(os_config, dict) else None
    name = kernel.get("extraFirmwareVol") if isinstance(kernel, dict) else None
    return name if isinstance(name, str) and name else None


async def ensure_extra_firmware(engine: AsyncEngine, settings: Settings) -> bool:
    """Create the volume if config.json names one. False (logged) when the engine failed:
    the caller tries again later; True when done or nothing to do."""
    try:
        name = extra_firmware_volume(settings.config_json.os_config)
    except ConfigError as err:
        _LOGGER.warning("not creating the extra firmware volume: %s", err)
        return True
    if name is None:
        return True
    try:
        await engine.create_volume(VolumeSpec(name, "local", {}, {}, ""))
    except SupervisorError as err:
        _LOGGER.warning("could not create the extra firmware volume %s: %s", name, err)
        return False
    _LOGGER.info("Extra firmware volume %s is there", name)
    return True
