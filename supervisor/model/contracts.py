"""Container contracts (state.md §3): can this device run a release's services?

Data flow: whoever stores a target (the cloud poller, a local push, a preload) first calls
`check_target(target, universe)`. An invalid contract anywhere raises
`ContractValidationError` and the whole target is refused (nothing stored). Otherwise the
result carries the target to store (optional services with unmet requirements removed), the
uuids of the apps to store as rejected (a non-optional service has unmet requirements: the
engine leaves such an app untouched and the report says `update_status: rejected`), and the
system log lines upstream writes. The device's facts (`Universe`) are plain data built once at
start by `build_universe` from what the runtime reads (uname, os-release, the board profile).

Version ranges are evaluated with `node-semver` (PyPI; module `nodesemver`), a maintained port
of npm's `semver` package, the range engine behind upstream's contract checks. It accepts the
same grammar (`>=16.0.0`, `5.*`, `5.5`, `~1.2`, `^1.2`, `1.0.0 - 2.0.0`, `a || b`), treats build
metadata the same way (`5.5.5+rev3` satisfies `5.5.5+rev420`), and answers "no" for a range it
cannot parse instead of raising; upstream's contract tests pass unchanged with it. The other
candidates do not fit: `semver` (python-semver) has no npm ranges, `packaging` speaks PEP 440,
`semantic_version`'s NpmSpec has had no release since 2022.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import nodesemver

from supervisor.errors import BadRequest
from supervisor.model.target import TargetApp, TargetState

REQUIREMENT_TYPES = ("sw.supervisor", "sw.l4t", "sw.os", "sw.kernel", "hw.device-type",
                     "arch.sw")
OPTIONAL_LABEL = "io.balena.features.optional"
DEFAULT_CONTRACT_TYPE = "sw.container"
MAX_REQUIREMENTS = 64  # per list (`requires`, or one `or`)
MAX_DEPTH = 4  # nested `or` clauses
MAX_TEXT = 1024  # a type, slug or version range
_TRUTHY = frozenset({"1", "true", "on"})
_L4T = re.compile(r"-l4t-r(\d+)\.(\d+)(?:\.(\d+))?")
_KERNEL = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


class ContractValidationError(BadRequest):
    """A service's contract cannot be parsed: the whole target is refused (upstream's text)."""

    def __init__(self, service: str, error: str) -> None:
        self.service = service
        self.error = error
        super().__init__(
            f"The contract for service {service} failed validation, with error: {error}")


# ============================================================================ contracts

@dataclass(frozen=True, slots=True)
class Requirement:
    """One atomic requirement: a component of `type`, with `slug` if given, whose version
    satisfies the range `version` if given, and whose data holds `data` if given."""

    type: str
    slug: str | None = None
    version: str | None = None
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AnyOf:
    """`{"or": [...]}`: met when one of its options is."""

    options: tuple[Requirement | AnyOf, ...]


Clause = Requirement | AnyOf


@dataclass(frozen=True, slots=True)
class Contract:
    type: str = DEFAULT_CONTRACT_TYPE
    slug: str | None = None
    requires: tuple[Clause, ...] = ()


def parse_contract(service: str, raw: object) -> Contract:
    """A service's `contract` object -> Contract; `ContractValidationError` when malformed.

    Keys other than type/slug/requires are ignored, and so are requirement keys other than
    type/slug/version/data (upstream drops them, e.g. a legacy `name`).
    """
    try:
        if not isinstance(raw, dict):
            raise ValueError("the contract must be an object")
        kind = _opt_text(raw.get("type"), "type")
        requires = raw.get("requires")
        if requires is not None and not isinstance(requires, list):
            raise ValueError("requires must be an array")
        return Contract(
            type=DEFAULT_CONTRACT_TYPE if kind is None else kind,
            slug=_opt_text(raw.get("slug"), "slug"),
            requires=_clauses(requires or [], "requires", depth=0),
        )
    except ValueError as err:
        raise ContractValidationError(service, str(err)) from None


def _clauses(items: list[Any], path: str, depth: int) -> tuple[Clause, ...]:
    if len(items) > MAX_REQUIREMENTS:
        raise ValueError(f"{path} has more than {MAX_REQUIREMENTS} requirements")
    return tuple(_clause(item, f"{path}.{i}", depth) for i, item in enumerate(items))


def _clause(raw: object, path: str, depth: int) -> Clause:
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must be an object")
    if "or" in raw:
        options = raw["or"]
        if not isinstance(options, list) or not options:
            raise ValueError(f"{path}.or must be a non-empty array")
        if depth >= MAX_DEPTH:
            raise ValueError(f"{path}: `or` clauses nested more than {MAX_DEPTH} deep")
        return AnyOf(_clauses(options, f"{path}.or", depth + 1))
    kind = _opt_text(raw.get("type"), f"{path}.type")
    if kind is None:
        raise ValueError(f"{path}.type is required")
    if kind not in REQUIREMENT_TYPES:
        raise ValueError(f"{kind} is not a valid contract requirement type")
    data = raw.get("data")
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}.data must be an object")
    return Requirement(type=kind, slug=_opt_text(raw.get("slug"), f"{path}.slug"),
                       version=_opt_text(raw.get("version"), f"{path}.version"),
                       data=data or None)


def _opt_text(value: object, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{path} must be a string")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{path} is longer than {MAX_TEXT} characters")
    return value


# ============================================================================ the device

@dataclass(frozen=True, slots=True)
class Component:
    """One fact about the device, as a requirement sees it."""

    type: str
    slug: str | None = None
    version: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Universe:
    components: tuple[Component, ...]


def build_universe(*, supervisor_version: str, device_type: str, arch: str,
                   uname_release: str | None = None, uname_sysname: str | None = None,
                   os_release: Mapping[str, str] | None = None) -> Universe:
    """The device's facts (state.md §3): supervisor version, device type, arch, and when known
    the L4T version (from `uname -r`), the OS (os-release ID + VERSION) and the kernel
    (`uname -s` lowercased + the x.y.z of `uname -r`)."""
    parts = [
        Component("sw.supervisor", version=supervisor_version),
        Component("sw.application", slug="balena-supervisor", version=supervisor_version),
        Component("hw.device-type", slug=device_type),
        Component("arch.sw", slug=arch),
    ]
    l4t = l4t_version(uname_release or "")
    if l4t is not None:
        parts.append(Component("sw.l4t", version=l4t))
    os_id, os_version = (os_release or {}).get("ID"), (os_release or {}).get("VERSION")
    if os_id and os_version:
        parts.append(Component("sw.os", slug=os_id, version=os_version))
    kernel = kernel_version(uname_release or "")
    if uname_sysname and kernel is not None:
        parts.append(Component("sw.kernel", slug=uname_sysname.lower(), version=kernel))
    return Universe(tuple(parts))


def l4t_version(uname_release: str) -> str | None:
    """`4.9.140-l4t-r32.2` -> `32.2.0` (padded to three components); None without L4T."""
    match = _L4T.search(uname_release)
    if match is None:
        return None
    return f"{match[1]}.{match[2]}.{match[3] or 0}"


def kernel_version(uname_release: str) -> str | None:
    """`5.15.150-yocto-standard` -> `5.15.150`; None when it does not start with x.y."""
    match = _KERNEL.match(uname_release.strip())
    if match is None:
        return None
    return f"{match[1]}.{match[2]}.{match[3] or 0}"


# ============================================================================ evaluation

def is_met(contract: Contract, universe: Universe) -> bool:
    return all(_clause_met(c, universe) for c in contract.requires)


def _clause_met(clause: Clause, universe: Universe) -> bool:
    if isinstance(clause, AnyOf):
        return any(_clause_met(option, universe) for option in clause.options)
    return any(_satisfies(component, clause) for component in universe.components)


def _satisfies(component: Component, req: Requirement) -> bool:
    if component.type != req.type:
        return False
    if req.slug is not None and component.slug != req.slug:
        return False
    if req.version is not None:
        if component.version is None:
            return False
        try:
            if not nodesemver.satisfies(component.version, req.version, loose=False):
                return False
        except (ValueError, TypeError):  # a range the library cannot read: unmet
            return False
    return all(component.data.get(k) == v for k, v in (req.data or {}).items())


def is_optional(labels: Mapping[str, str]) -> bool:
    return str(labels.get(OPTIONAL_LABEL, "")).strip().lower() in _TRUTHY


@dataclass(frozen=True, slots=True)
class ContractCheck:
    """What `check_target` decided. `target` is what to store; `rejected` holds app uuids;
    `unmet` every app's services with unmet requirements; `dropped` the optional ones removed
    from apps that are not rejected; `messages` are (system log line, is_error)."""

    target: TargetState
    rejected: frozenset[str] = frozenset()
    unmet: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dropped: dict[str, tuple[str, ...]] = field(default_factory=dict)
    messages: tuple[tuple[str, bool], ...] = ()


def check_target(target: TargetState, universe: Universe) -> ContractCheck:
    """Validate every contract of every app's release, then decide per app (state.md §3)."""
    apps: dict[str, TargetApp] = {}
    rejected: list[str] = []
    unmet_by_app: dict[str, tuple[str, ...]] = {}
    dropped: dict[str, tuple[str, ...]] = {}
    messages: list[tuple[str, bool]] = []
    parsed = {uuid: _app_contracts(app) for uuid, app in target.apps.items()}  # raises first
    for uuid, app in target.apps.items():
        unmet = [name for name, (contract, _) in parsed[uuid].items()
                 if contract is not None and not is_met(contract, universe)]
        apps[uuid] = app
        if not unmet:
            continue
        unmet_by_app[uuid] = tuple(unmet)
        optional = {name for name in unmet if parsed[uuid][name][1]}
        if len(optional) < len(unmet):
            rejected.append(uuid)
            continue
        assert app.release is not None  # services with contracts live in a release
        kept = {n: s for n, s in app.release.services.items() if n not in optional}
        apps[uuid] = replace(app, release=replace(app.release, services=kept))
        dropped[uuid] = tuple(unmet)
        messages.append(("Not running containers because of contract violations: "
                         + ". ".join(unmet), False))
    if rejected:
        lines = [f"{target.apps[uuid].name}: Services with unmet requirements: "
                 + ", ".join(unmet_by_app[uuid]) for uuid in rejected]
        messages.append(("Some releases were rejected due to having unmet requirements:\n  "
                         + "\n  ".join(lines), True))
    return ContractCheck(target=replace(target, apps=apps), rejected=frozenset(rejected),
                         unmet=unmet_by_app, dropped=dropped, messages=tuple(messages))


def _app_contracts(app: TargetApp) -> dict[str, tuple[Contract | None, bool]]:
    """service name -> (its parsed contract or None, optional?)."""
    if app.release is None:
        return {}
    return {
        name: (None if svc.contract is None else parse_contract(name, svc.contract),
               is_optional(svc.labels))
        for name, svc in app.release.services.items()
    }
