"""The Step union: what the planner asks for and the executor does, one function per kind.

Steps are plain frozen data so that a plan can be logged, journalled in SQLite, shown by
GET /v2/plan and compared in tests. `kind` is the upstream action name (engine.md §5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from supervisor.model.spec import ContainerSpec, NetworkSpec, VolumeSpec


@dataclass(frozen=True, slots=True)
class Fetch:
    kind: ClassVar[str] = "fetch"
    image: str
    app_id: int
    service_name: str
    commit: str


@dataclass(frozen=True, slots=True)
class RemoveImage:
    kind: ClassVar[str] = "removeImage"
    image_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Kill:
    """Stop and remove a container (upstream `kill`)."""

    kind: ClassVar[str] = "kill"
    container_id: str
    name: str
    app_id: int
    service_name: str
    commit: str
    intent: int | None = None  # the API intent this step carries out (model/intents.py)


@dataclass(frozen=True, slots=True)
class Stop:
    kind: ClassVar[str] = "stop"
    container_id: str
    name: str
    app_id: int
    service_name: str
    commit: str
    intent: int | None = None  # the API intent this step carries out (model/intents.py)


@dataclass(frozen=True, slots=True)
class Remove:
    """Remove a Dead (or duplicate, already stopped) container."""

    kind: ClassVar[str] = "remove"
    container_id: str
    name: str
    app_id: int
    service_name: str


@dataclass(frozen=True, slots=True)
class Start:
    """Create the container when none matches the spec, then start it unless `running: false`."""

    kind: ClassVar[str] = "start"
    spec: ContainerSpec
    commit: str
    start: bool = True
    container_id: str | None = None  # an existing created container to start
    intent: int | None = None  # the API intent this step carries out (model/intents.py)


@dataclass(frozen=True, slots=True)
class UpdateMetadata:
    """Release-only change: rename, do not recreate."""

    kind: ClassVar[str] = "updateMetadata"
    container_id: str
    old_name: str
    new_name: str
    app_id: int
    service_name: str
    commit: str


@dataclass(frozen=True, slots=True)
class Handover:
    kind: ClassVar[str] = "handover"
    container_id: str
    name: str
    spec: ContainerSpec
    commit: str
    timeout_ms: int = 60000


@dataclass(frozen=True, slots=True)
class UpdateCommit:
    kind: ClassVar[str] = "updateCommit"
    app_id: int
    commit: str


@dataclass(frozen=True, slots=True)
class CreateNetwork:
    kind: ClassVar[str] = "createNetwork"
    spec: NetworkSpec


@dataclass(frozen=True, slots=True)
class RemoveNetwork:
    kind: ClassVar[str] = "removeNetwork"
    network_id: str
    name: str
    app_id: int


@dataclass(frozen=True, slots=True)
class CreateVolume:
    kind: ClassVar[str] = "createVolume"
    spec: VolumeSpec


@dataclass(frozen=True, slots=True)
class RemoveVolume:
    kind: ClassVar[str] = "removeVolume"
    name: str
    app_id: int
    intent: int | None = None  # the API intent this step carries out (model/intents.py)


@dataclass(frozen=True, slots=True)
class RecreateVolume:
    """Remove and create again a volume the OS owns (a purge's extra firmware volume); one in
    use by another app is kept, with a log line (api.md §5.2)."""

    kind: ClassVar[str] = "recreateVolume"
    spec: VolumeSpec
    intent: int | None = None


@dataclass(frozen=True, slots=True)
class EnsureSupervisorNetwork:
    kind: ClassVar[str] = "ensureSupervisorNetwork"


@dataclass(frozen=True, slots=True)
class TakeLock:
    kind: ClassVar[str] = "takeLock"
    app_id: int
    services: tuple[str, ...]
    force: bool = False
    intent: int | None = None  # the API intent this step carries out (model/intents.py)


@dataclass(frozen=True, slots=True)
class ReleaseLock:
    kind: ClassVar[str] = "releaseLock"
    app_id: int


@dataclass(frozen=True, slots=True)
class RequireReboot:
    kind: ClassVar[str] = "requireReboot"
    app_id: int
    service_name: str


@dataclass(frozen=True, slots=True)
class ChangeConfig:
    """Device config variables to set (config.md §5.2 step 1): `target` is (name, value) pairs
    in the table's order; `warnings` are upstream's texts for invalid values replaced by the
    default; `reboot` when a changed variable takes effect only after a reboot."""

    kind: ClassVar[str] = "changeConfig"
    target: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...] = ()
    reboot: bool = False


@dataclass(frozen=True, slots=True)
class SetBootConfig:
    """Write every boot-config backend from the target's boot variables (§5.2 step 3)."""

    kind: ClassVar[str] = "setBootConfig"
    target: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SetRebootBreadcrumb:
    """Before a change that needs a reboot: the reboot then follows once the apply settles."""

    kind: ClassVar[str] = "setRebootBreadcrumb"


@dataclass(frozen=True, slots=True)
class Noop:
    """Nothing to do now, but the loop must come back (waiting for a download, a stop...)."""

    kind: ClassVar[str] = "noop"
    reason: str = ""
    app_id: int | None = field(default=None)


Step = (
    Fetch | RemoveImage | Kill | Stop | Remove | Start | UpdateMetadata | Handover | UpdateCommit
    | CreateNetwork | RemoveNetwork | CreateVolume | RemoveVolume | RecreateVolume
    | EnsureSupervisorNetwork | TakeLock | ReleaseLock | RequireReboot | ChangeConfig
    | SetBootConfig | SetRebootBreadcrumb | Noop
)
DEVICE_CONFIG_STEPS = (ChangeConfig, SetBootConfig, SetRebootBreadcrumb)


def describe(step: Step) -> dict[str, Any]:
    """A JSON-ready description (for the journal, logs and GET /v2/plan)."""
    out: dict[str, Any] = {"action": step.kind}
    for key, value in asdict(step).items():
        if key == "intent" and value is None:
            continue  # the loop's own step: no API intent behind it
        if key == "spec":
            out["name"] = value.get("name")
            out["serviceName"] = value.get("service_name")
            out["appId"] = value.get("app_id")
            continue
        if key == "target":  # device config steps: {name: value}, as upstream shows them
            value = dict(value)
        out[_camel(key)] = value
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
