"""Device config flags that API actions read from the target's `config` (config.md §5).

Pure. The target stores the cloud's configuration variables with their `BALENA_`/`RESIN_`
prefixes; these helpers accept every spelling upstream accepts and its truthy values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from supervisor.model.target import TargetState

_PREFIXES = ("BALENA_", "RESIN_", "")
_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no"})


def config_flag(config: Mapping[str, str], names: Iterable[str], default: bool) -> bool:
    """The first of `names` (each tried with BALENA_, RESIN_ and no prefix) that holds a
    boolean; `default` when none does (an unreadable value counts as unset)."""
    for name in names:
        for prefix in _PREFIXES:
            raw = config.get(prefix + name)
            if raw is None:
                continue
            value = str(raw).strip().lower()
            if value in _TRUE:
                return True
            if value in _FALSE:
                return False
    return default


def lock_override(target: TargetState | None) -> bool:
    """`SUPERVISOR_OVERRIDE_LOCK` (legacy `OVERRIDE_LOCK`): every lock taken as if forced."""
    if target is None:
        return False
    return config_flag(target.config, ("SUPERVISOR_OVERRIDE_LOCK", "OVERRIDE_LOCK"), False)


def instant_updates(target: TargetState | None) -> bool:
    """`SUPERVISOR_INSTANT_UPDATE_TRIGGER` (default on): `/v1/update` without force acts."""
    if target is None:
        return True
    return config_flag(target.config, ("SUPERVISOR_INSTANT_UPDATE_TRIGGER",), True)
