"""Device config flags that API actions read from the target's `config` (config.md §5).

Pure. Thin helpers over `model.config_vars`, the one place that knows how a configuration
variable is spelled (BALENA_/RESIN_/no prefix, legacy OVERRIDE_LOCK) and parsed (upstream's
booleans: 1/true/on, 0/false/off; anything else counts as the default).
"""

from __future__ import annotations

from supervisor.model.config_vars import DeviceConfig
from supervisor.model.target import TargetState


def lock_override(target: TargetState | None) -> bool:
    """`SUPERVISOR_OVERRIDE_LOCK` (legacy `OVERRIDE_LOCK`): every lock taken as if forced."""
    return target is not None and DeviceConfig.of(target.config).lock_override


def instant_updates(target: TargetState | None) -> bool:
    """`SUPERVISOR_INSTANT_UPDATE_TRIGGER` (default on): `/v1/update` without force acts."""
    return target is None or DeviceConfig.of(target.config).instant_updates


def local_mode(config: dict[str, str]) -> bool:
    """`SUPERVISOR_LOCAL_MODE` of a cloud target (default off)."""
    return DeviceConfig.of(config).local_mode
