"""What the planner may know beyond Docker's containers: images, locks, commits, flags, and
the intents of API actions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from supervisor.model.intents import IntentView
from supervisor.model.spec import DeviceContext


@dataclass(frozen=True, slots=True)
class DeviceConfigInput:
    """The device config half of the plan (config.md §5.1): the current variables (values as
    strings, boot backends rendered as variables), the target with defaults filled, and what
    the boot backends said about the target (they hold the file formats, so the runtime asks
    them and hands the answer here)."""

    current: Mapping[str, str]
    target: Mapping[str, str]
    boot_changed: tuple[str, ...] = ()  # backends whose files differ from the target
    boot_reboot: bool = False
    boot_target: tuple[tuple[str, str], ...] = ()  # the target's boot variables


@dataclass(frozen=True, slots=True)
class PlanContext:
    device: DeviceContext
    # normalised image name -> local Docker image id, for every image present in the engine
    image_ids: Mapping[str, str] = field(default_factory=dict)
    # image names with a fetch in flight
    downloading: frozenset[str] = frozenset()
    # images this supervisor pulled for services (name -> docker id): the only ones it may delete
    managed_images: Mapping[str, str] = field(default_factory=dict)
    # the app and service each of those images was pulled for (name -> (app id, service name))
    image_owners: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    # apps whose supervisor update lock is held, and apps with leftover supervisor lock files
    locked_apps: frozenset[int] = frozenset()
    lock_leftovers: frozenset[int] = frozenset()
    # apps whose lock a one-shot operation (an API restart, a reboot) holds: the loop may act
    # under that lock but never takes or releases it
    foreign_locked: frozenset[int] = frozenset()
    # current commit per app id (SQLite)
    commits: Mapping[int, str] = field(default_factory=dict)
    force: bool = False
    keep_images: bool = False
    keep_volumes: bool = False
    # reboot breadcrumb set, and the boot time as an ISO timestamp like Docker's (UTC, to the
    # microsecond) for requires-reboot
    reboot_required: bool = False
    boot_time: str = ""
    # (app_id, service_name) pairs whose new container signalled handover-complete
    handover_done: frozenset[tuple[int, str]] = frozenset()
    # None: device configuration is not managed in this run (no target, or a test)
    device_config: DeviceConfigInput | None = None
    # what API actions asked for and is not carried out yet (the reconciler's IntentBook)
    intents: IntentView = field(default_factory=IntentView)
