"""Reboot breadcrumbs under the state dir (engine.md §10, api.md §3.7).

`reboot-after-apply` is touched when a change needs a reboot (boot config, a service labelled
`io.balena.update.requires-reboot`); the reconciler appends a reboot step once the plan is
otherwise empty and `is_required()` holds. Only an mtime newer than the current boot counts,
so a breadcrumb left from before the last reboot is stale (the state dir survives reboots).
A dry-run reboot (`rebooted()`) clears it, as a real reboot empties upstream's /tmp, and
returns only once the file clock (the kernel's coarse clock) has passed the new boot time:
one reboot satisfies one requirement whatever the clocks' resolutions.
The HUP rollback breadcrumbs are written by the OS while a host OS update settles; reboot and
shutdown are refused (423) while they exist unless forced.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

REBOOT_BREADCRUMB = "reboot-after-apply"
CLOCK_PROBE = ".reboot-clock-probe"
ROLLBACK_BREADCRUMBS = ("rollback-health-breadcrumb", "rollback-altboot-breadcrumb")


class RebootBreadcrumb:
    def __init__(self, state_dir: Path | str) -> None:
        self.path = Path(state_dir) / REBOOT_BREADCRUMB

    def set(self) -> None:
        """Create the breadcrumb or refresh its mtime (like `touch`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        os.utime(self.path)

    def is_required(self, boot_time: float) -> bool:
        """True if the breadcrumb was set after `boot_time` (epoch seconds)."""
        try:
            return self.path.stat().st_mtime > boot_time
        except FileNotFoundError:
            return False

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def rebooted(self, boot_time: float, limit: float = 5.0) -> None:
        """A (simulated) reboot at `boot_time` (epoch seconds, `time.time()`): clear the
        breadcrumb, then wait until a file touched now gets an mtime after `boot_time`.

        File times come from the kernel's coarse clock, which lags `time.time()` by up to a
        tick (and other filesystems round to seconds): without the wait a breadcrumb set just
        after the boot could look older than it and the requirement would be lost. Blocking.
        """
        self.clear()
        probe = self.path.with_name(CLOCK_PROBE)
        probe.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + limit
        try:
            while True:
                probe.touch()
                os.utime(probe)
                if probe.stat().st_mtime > boot_time or time.monotonic() > deadline:
                    return
                time.sleep(0.001)
        finally:
            probe.unlink(missing_ok=True)


def host_os_update_in_progress(state_dir: Path | str) -> bool:
    """A HUP rollback breadcrumb exists: reboot/shutdown must wait (`Waiting for Host OS ...`)."""
    return any((Path(state_dir) / name).exists() for name in ROLLBACK_BREADCRUMBS)
