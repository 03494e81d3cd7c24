"""Device-wide actions: reboot, shutdown, host config and update triggers (api.md §3.7,
§3.10-3.12, locks.md §8-§10, config.md §7).

Data flow: API route -> `RuntimeActions` -> here. Reboot, shutdown and a host-config patch
first hold the update locks of every app (lock dirs on disk plus running services, locks.md
§5.1), so a user lock refuses them with 423 unless forced. Reboot and shutdown then submit a
`StopAll` intent: the loop stops every running container (the seed's "first try to stop
applications") and stays held until the device comes back. The host itself is reached through
`host.actions` (logind over D-Bus, or a dry run that is recorded in SQLite).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Literal

from supervisor.actions.gate import ActionGate, all_app_services, update_locks
from supervisor.actions.ports import Device
from supervisor.device_flags import instant_updates, lock_override
from supervisor.errors import UpdatesLocked
from supervisor.host.actions import restart_host_services
from supervisor.host.breadcrumb import host_os_update_in_progress
from supervisor.host.hostconfig import apply_patch, read_host_config, read_hostname, validate_patch
from supervisor.model.current import Current
from supervisor.model.intents import StopAll

_LOGGER = logging.getLogger(__name__)

POWER_DELAY = 1.0  # upstream fires logind's Reboot/PowerOff 1 s after replying
HOST_ROOT = Path("/mnt/root")  # the host's root filesystem inside the supervisor container
HUP_MESSAGE = "Waiting for Host OS update to finish"


class DeviceActions:
    def __init__(self, runtime: Device, gate: ActionGate) -> None:
        self._rt = runtime
        self._gate = gate
        self._tasks: set[asyncio.Task[None]] = set()
        self.power_delay = POWER_DELAY
        self.host_root = HOST_ROOT

    # -- reboot and shutdown (api.md §3.7) -------------------------------------------------------

    async def power(self, action: Literal["reboot", "shutdown"], force: bool) -> None:
        """Check the HUP breadcrumbs and every app's locks, stop the apps, log, and fire the
        host call after a short delay so that the reply goes out first. The locks are released
        right away (upstream releases them before the device goes down, too)."""
        rt = self._rt
        if not force and await asyncio.to_thread(host_os_update_in_progress,
                                                 rt.settings.state_dir):
            raise UpdatesLocked(HUP_MESSAGE)
        services = await all_app_services(rt.locks, rt.snapshot.current)
        force = force or lock_override(rt.target)
        reason = "Rebooting" if action == "reboot" else "Shutting down"
        async with self._gate.hold(services), update_locks(rt.locks, services, force=force,
                                                           log=rt.log):
            # the seed: "this will first try to stop applications"; then nothing more is
            # applied until the device comes back (a dry run resumes, see runtime)
            current = rt.reconciler.current or Current()  # kept fresh by Docker events
            running = [c for c in current.containers if c.running]
            if running:
                await rt.reconciler.submit(StopAll(reason, force))  # holds the loop when done
            else:
                rt.reconciler.hold(reason)
            rt.stopped_for_power = running
            rt.log(reason)
            task = asyncio.create_task(self._power_later(action), name=f"host-{action}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _power_later(self, action: Literal["reboot", "shutdown"]) -> None:
        await asyncio.sleep(self.power_delay)
        host = self._rt.host
        try:
            await (host.reboot() if action == "reboot" else host.shutdown())
        except Exception as err:  # after the reply: nobody to tell but the log
            _LOGGER.error("host %s failed: %s", action, err)
            self._rt.log(f"Failed to {action}: {err}")

    # -- host config (api.md §3.11-3.12, config.md §7) ----------------------------------------

    async def get_host_config(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._read_host_config)

    def _read_host_config(self) -> dict[str, Any]:
        return read_host_config(self._rt.settings.boot_dir, self._hostname())

    def _hostname(self) -> str:
        """The host's /etc/hostname; off-device (no host root mounted) what config.json asks
        for, else balenaOS's default, the first 7 characters of the uuid."""
        try:
            return read_hostname(self.host_root / "etc" / "hostname")
        except OSError:
            settings = self._rt.settings
            return str(settings.config_json.get("hostname") or settings.uuid[:7])

    async def patch_host_config(self, body: object, force: bool) -> None:
        rt = self._rt
        patch = validate_patch(body)  # BadRequest with upstream's 400 text
        force = force or patch.force or lock_override(rt.target)
        # A host-config change may restart balenaEngine: under every app's locks (§3.12).
        services = await all_app_services(rt.locks, rt.snapshot.current)
        async with self._gate.hold(services), update_locks(rt.locks, services, force=force,
                                                           log=rt.log):
            units = await asyncio.to_thread(
                apply_patch, rt.settings.boot_dir, patch, rt.settings.uuid, self._write_hostname)
            if units:
                await restart_host_services(rt.host, units)

    def _write_hostname(self, hostname: str) -> None:
        # The OS applies config.json's hostname itself; /etc/hostname follows later.
        self._rt.settings.config_json.update({"hostname": hostname})

    # -- update (api.md §3.10) -------------------------------------------------------------------

    async def update(self, force: bool, cancel: bool) -> bool:
        """Apply now when forced or with instant updates on. There is no cloud poller to ask
        yet, so this re-applies the stored target (what local mode does anyway)."""
        rt = self._rt
        if not (force or instant_updates(rt.target)):
            return False
        if rt.cloud is not None:
            rt.cloud.poll_now(force, cancel)
            return True
        if cancel:
            # aborts a batch that only downloads and restarts the apply, like upstream's cancel
            rt.reconciler.target_changed(force=force)
        else:
            rt.reconciler.mark_dirty(force=force)
        return True

    async def close(self) -> None:
        """Wait for a pending host call (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
