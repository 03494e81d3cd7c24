"""Device configuration steps (config.md §5.2): `changeConfig`, `setBootConfig`,
`setRebootBreadcrumb`, planned before any app step.

1. Variables first: every variable whose target differs (by type: bools by truthiness, ints
   by value) is changed in one `changeConfig`; an invalid target value becomes the default,
   with upstream's warning. A change that needs a reboot is preceded by the breadcrumb.
2. Boot config only when step 1 planned nothing (a config.json change may restart the
   supervisor first): one `setBootConfig` writing every backend, preceded by the breadcrumb
   when a changed backend needs a reboot.

The reboot itself is not a step here: once the whole apply settles, the runtime reboots if
the breadcrumb is newer than the boot (engine.md §10), honouring update locks.
"""

from __future__ import annotations

from supervisor.model.config_vars import diff_variables
from supervisor.model.steps import ChangeConfig, SetBootConfig, SetRebootBreadcrumb, Step
from supervisor.planner.context import DeviceConfigInput


def device_config_steps(config: DeviceConfigInput | None) -> tuple[Step, ...]:
    if config is None:
        return ()
    diff = diff_variables(config.current, config.target)
    if diff.changes:
        change = ChangeConfig(tuple(diff.changes.items()), diff.warnings, diff.reboot)
        return (SetRebootBreadcrumb(), change) if diff.reboot else (change,)
    if config.boot_changed:
        write = SetBootConfig(config.boot_target)
        return (SetRebootBreadcrumb(), write) if config.boot_reboot else (write,)
    return ()
