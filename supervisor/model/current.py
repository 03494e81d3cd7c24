"""What Docker really runs, as frozen data, and the Snapshot the API reads.

`engine/docker.py` builds `Current` from inspect data; the planner compares it with the target;
the runtime wraps it (with lifecycle phases, download progress and apply state) into a
`Snapshot` that is replaced atomically and never mutated, so API handlers read it lock-free.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.model.steps import Step
    from supervisor.model.target import TargetState

SUPERVISED_LABELS = ("io.balena.supervised", "io.resin.supervised")
CONFIG_HASH_LABEL = "io.balena.supervisor-py.config-hash"


IN_FLIGHT_STATUSES = frozenset({"Downloading", "Installing", "Starting", "Stopping"})


class Phase(enum.Enum):
    """A service's lifecycle state; the values are upstream's status strings (engine.md §16)."""

    DOWNLOADING = "Downloading"
    DOWNLOADED = "Downloaded"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPING = "Stopping"
    EXITED = "exited"
    DEAD = "Dead"
    HANDING_OVER = "Handing over"
    AWAITING_HANDOVER = "Awaiting handover"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """One supervised container, identity read back from its labels and name."""

    id: str
    name: str
    app_id: int
    app_uuid: str
    service_name: str
    service_id: int
    image_id: int
    release_id: int
    commit: str
    state: str  # Docker State.Status: created, running, exited, dead, paused, restarting, removing
    running: bool
    image: str  # Docker image id (sha256:...)
    image_name: str  # Config.Image as given at create
    created: str
    started_at: str | None = None
    exit_code: int | None = None
    exit_error: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    networks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # name -> aliases
    network_mode: str = ""
    volumes: tuple[str, ...] = ()  # named volumes mounted
    config_hash: str | None = None
    restart_policy: str = ""
    handover_old: bool = False  # renamed old_<...> during a hand-over

    @property
    def status(self) -> str:
        """Upstream's Service.status mapping of the Docker state (engine.md §2.1)."""
        if self.running:
            return "Running"
        if self.state == "created":
            return "Installed"
        if self.state == "dead":
            return "Dead"
        return self.state

    @property
    def ever_started(self) -> bool:
        started = self.started_at or ""
        return started != "" and not started.startswith("0001-")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()  # repo@sha256:...
    size: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def dangling(self) -> bool:
        return not [t for t in self.tags if t != "<none>:<none>"]


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    id: str
    name: str
    app_id: int | None
    app_uuid: str | None
    driver: str = "bridge"
    labels: Mapping[str, str] = field(default_factory=dict)
    config_hash: str | None = None
    subnets: tuple[tuple[str, str], ...] = ()  # (subnet, gateway)
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    name: str
    app_id: int
    app_uuid: str | None
    driver: str = "local"
    labels: Mapping[str, str] = field(default_factory=dict)
    config_hash: str | None = None
    mountpoint: str = ""


@dataclass(frozen=True, slots=True)
class Current:
    """Everything observed from Docker in one pass."""

    containers: tuple[ContainerInfo, ...] = ()
    images: tuple[ImageInfo, ...] = ()
    networks: tuple[NetworkInfo, ...] = ()
    volumes: tuple[VolumeInfo, ...] = ()
    supervisor0_ok: bool = True

    def app_ids(self) -> set[int]:
        ids = {c.app_id for c in self.containers}
        ids |= {n.app_id for n in self.networks if n.app_id is not None}
        ids |= {v.app_id for v in self.volumes}
        return ids

    def containers_of(self, app_id: int) -> tuple[ContainerInfo, ...]:
        return tuple(c for c in self.containers if c.app_id == app_id)

    def image_by_ref(self, ref: str) -> ImageInfo | None:
        """Find an image by tag, digest or id."""
        for img in self.images:
            if ref == img.id or ref in img.tags or ref in img.digests:
                return img
        if "@" in ref:
            digest = ref.split("@", 1)[1]
            for img in self.images:
                if any(d.endswith("@" + digest) for d in img.digests):
                    return img
        return None


@dataclass(frozen=True, slots=True)
class ImageProgress:
    """A download (or delete) in flight, or the last progress recorded before a restart."""

    name: str
    app_id: int
    service_name: str
    commit: str
    status: str  # Downloading | Downloaded | Deleting
    progress: int | None  # 0..100 while downloading


@dataclass(frozen=True, slots=True)
class ServiceView:
    """One service of one release as the API and the cloud report see it."""

    app_id: int
    app_uuid: str
    app_name: str
    service_name: str
    service_id: int
    image_id: int
    release_id: int
    commit: str
    image: str
    status: str
    container_id: str | None = None
    download_progress: int | None = None
    created_at: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LockBlock:
    """A user update lock that holds back the current update."""

    app_id: int
    service_name: str
    path: str  # as the service sees it (/tmp/balena/<name>): API responses show it
    since: float


@dataclass(frozen=True, slots=True)
class DeviceView:
    uuid: str
    name: str
    api_port: int
    os_version: str
    supervisor_version: str
    device_type: str
    arch: str
    ip_address: str = ""
    mac_address: str = ""
    local_mode: bool = True
    unmanaged: bool = True


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The immutable picture the API reads. Replaced as a whole after every change."""

    seq: int
    device: DeviceView
    current: Current = field(default_factory=Current)
    target: TargetState | None = None
    services: tuple[ServiceView, ...] = ()
    images: tuple[ImageProgress, ...] = ()
    commits: Mapping[int, str] = field(default_factory=dict)
    apply_in_progress: bool = False
    update_pending: bool = False
    update_downloaded: bool = False
    update_failed: bool = False
    last_error: str | None = None
    lock_block: LockBlock | None = None
    plan: tuple[Step, ...] = ()
    engine_ok: bool = True
    loop_heartbeat: float = 0.0  # monotonic time of the reconciler's last round

    @property
    def device_status(self) -> str:
        """The seed's device-level status, derived from the service lifecycles."""
        statuses = {s.status for s in self.services}
        for phase, label in (
            ("Stopping", "Stopping"),
            ("Downloading", "Downloading"),
            ("Installing", "Installing"),
            ("Starting", "Starting"),
        ):
            if phase in statuses:
                return label
        if self.apply_in_progress and "Installed" in statuses:
            return "Installing"
        return "Idle"

    def services_of(self, app_id: int) -> tuple[ServiceView, ...]:
        return tuple(s for s in self.services if s.app_id == app_id)
