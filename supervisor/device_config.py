"""Device configuration on this device: what it has now, and the steps that change it.

The planner decides (planner/device_config.py); this module is the device side around it,
in the words of upstream's device-config.ts (config.md §5):

- `plan_input(target)` observes the current config (variables from the store and config.json,
  every boot backend rendered as variables), fills the target's defaults and asks the boot
  backends what the target changes. A forbidden boot key raises here, with upstream's
  message, so the apply fails before any file is touched.
- `change_config`, `set_boot_config` carry out the `changeConfig` and `setBootConfig` steps
  for the one executor, with upstream's dashboard messages.

The variables' values are stored under upstream's config keys (`appUpdatePollInterval`,
...); `SUPERVISOR_PERSISTENT_LOGGING` lives in config.json, read by the OS at boot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from supervisor.board.bootconfig import BootConfig
from supervisor.configjson import ConfigJson
from supervisor.errors import SupervisorError
from supervisor.model.config_vars import (
    BY_NAME,
    CONFIG_VARS,
    DeviceConfig,
    current_value,
    target_config,
    typed_value,
)
from supervisor.model.steps import ChangeConfig, SetBootConfig
from supervisor.model.target import TargetState
from supervisor.planner.context import DeviceConfigInput

_LOGGER = logging.getLogger(__name__)

PERSISTENT_LOGGING = "SUPERVISOR_PERSISTENT_LOGGING"
CONFIG_JSON_KEYS = {PERSISTENT_LOGGING: "persistentLogging"}


class ConfigStore(Protocol):
    async def all_config(self) -> dict[str, Any]: ...

    async def set_config_many(self, values: Mapping[str, Any]) -> None: ...


class DeviceConfiguration:
    def __init__(self, *, store: ConfigStore, config_json: ConfigJson, boot: BootConfig,
                 log: Callable[[str], None], unmanaged: bool) -> None:
        self.store = store
        self.config_json = config_json
        self.boot = boot
        self._log = log
        self.unmanaged = unmanaged
        self.last_current: dict[str, str] = {}
        # Called with the current config every time it is read (each round of the loop), so
        # a variable applied by changeConfig takes effect at once, without a restart.
        self.listeners: list[Callable[[DeviceConfig], None]] = [self._deltas]
        self._delta_said = False

    async def current(self) -> dict[str, str]:
        """The current config: each variable's value as a string (its default when never
        set), then the boot backends' options as variables."""
        stored = await self.store.all_config()
        out: dict[str, str] = {}
        for var in CONFIG_VARS:
            if var.name in CONFIG_JSON_KEYS:
                value: Any = self.config_json.get(CONFIG_JSON_KEYS[var.name], var.default)
            else:
                value = stored.get(var.key, typed_value(var, None))
            out[var.name] = current_value(value)
        out.update(await asyncio.to_thread(self.boot.current_env))
        self.last_current = out
        view = DeviceConfig(out)
        for listener in self.listeners:
            listener(view)
        return out

    def _deltas(self, config: DeviceConfig) -> None:
        # balena deltas need balenaEngine; stock Docker has no delta support (README).
        if config.flag("SUPERVISOR_DELTA") and not self._delta_said:
            self._delta_said = True
            _LOGGER.warning("SUPERVISOR_DELTA is set, but deltas are not applied on this engine "
                            "(stock Docker has no delta support): images are pulled whole")

    def target(self, target: TargetState) -> dict[str, str]:
        return target_config(target.config, unmanaged=self.unmanaged)

    async def plan_input(self, target: TargetState | None) -> DeviceConfigInput | None:
        if target is None:
            return None
        current = await self.current()
        wanted = self.target(target)
        change = self.boot.changes(current, wanted)  # ForbiddenBootConfig: the apply fails
        boot_target = tuple((k, v) for k, v in wanted.items() if self.boot.is_boot_var(k))
        return DeviceConfigInput(current=current, target=wanted, boot_changed=change.backends,
                                 boot_reboot=change.reboot, boot_target=boot_target)

    # -- the steps (called by the executor) -----------------------------------------------------

    async def change_config(self, step: ChangeConfig) -> None:
        changes = dict(step.target)
        for warning in step.warnings:
            self._log(warning)
        self._log(f"Applying configuration change {_js(changes)}")
        try:
            in_store = {BY_NAME[n].key: typed_value(BY_NAME[n], v) for n, v in changes.items()
                        if n not in CONFIG_JSON_KEYS}
            in_json = {CONFIG_JSON_KEYS[n]: typed_value(BY_NAME[n], v)
                       for n, v in changes.items() if n in CONFIG_JSON_KEYS}
            if in_json:
                await asyncio.to_thread(self.config_json.update, in_json)
            await self.store.set_config_many(in_store)
        except (OSError, SupervisorError) as err:
            self._log(f"Error applying configuration change: {err}")
            raise
        self._log(f"Applied configuration change {_js(changes)}")

    async def set_boot_config(self, step: SetBootConfig) -> None:
        target = dict(step.target)
        self._log(f"Applying boot config: {_js(target)}")
        try:
            await asyncio.to_thread(self.boot.apply, target)
        except SupervisorError as err:
            self._log(f"Error setting boot config: {err}")
            raise
        self._log(f"Applied boot config: {_js(target)}")


def _js(value: Mapping[str, object]) -> str:
    """JSON.stringify: no spaces."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
