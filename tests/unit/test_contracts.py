"""Container contracts (state.md §3): parsing, the device universe, range evaluation, and what
happens to a target whose contracts are invalid or unmet. The range cases are upstream's own
contract tests (OS 5.5.5+rev3, kernel 5.15.150, L4T 31.0.0), so they pin the semver library's
behaviour to npm's."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.errors import BadRequest
from supervisor.model.contracts import (
    AnyOf,
    Contract,
    ContractValidationError,
    Requirement,
    Universe,
    build_universe,
    check_target,
    is_met,
    kernel_version,
    l4t_version,
    parse_contract,
)
from supervisor.model.target import TargetState, parse_target

DEVICE = "d1ce" * 8
OS_VERSION = "5.5.5+rev3"
KERNEL = "5.15.150"

UNIVERSE = build_universe(
    supervisor_version="19.0.5", device_type="intel-nuc", arch="amd64",
    uname_release=f"{KERNEL}-l4t-r32.2", uname_sysname="Linux",
    os_release={"ID": "balena-os", "VERSION": OS_VERSION},
)


def met(*requires: dict[str, Any], universe: Universe = UNIVERSE) -> bool:
    return is_met(parse_contract("svc", {"slug": "user-container", "requires": list(requires)}),
                  universe)


# ---------------------------------------------------------------------------- parsing

def test_defaults_and_ignored_fields() -> None:
    contract = parse_contract("main", {"slug": "c", "name": "c", "version": "3.0.0", "requires": [
        {"type": "sw.l4t", "version": "32.2", "name": "l4t", "unsupported": "x"},
        {"type": "hw.device-type", "slug": "raspberrypi3", "name": "raspberrypi3"},
    ]})
    assert contract == Contract(type="sw.container", slug="c", requires=(
        Requirement("sw.l4t", version="32.2"), Requirement("hw.device-type", "raspberrypi3")))
    assert parse_contract("main", {}) == Contract()
    assert parse_contract("main", {"requires": None}) == Contract()


def test_or_clauses_parse_into_disjunctions() -> None:
    contract = parse_contract("main", {"requires": [{"or": [
        {"type": "sw.os", "slug": "balena-os", "version": OS_VERSION},
        {"type": "sw.os", "slug": "ubuntu", "version": "20.04"},
    ]}]})
    assert contract.requires == (AnyOf((Requirement("sw.os", "balena-os", OS_VERSION),
                                        Requirement("sw.os", "ubuntu", "20.04"))),)


@pytest.mark.parametrize("kind", ["sw.supervisor", "sw.l4t", "sw.os", "sw.kernel",
                                  "hw.device-type", "arch.sw"])
def test_every_requirement_type_of_the_spec_is_accepted(kind: str) -> None:
    assert parse_contract("main", {"requires": [{"type": kind}]}).requires == (Requirement(kind),)


@pytest.mark.parametrize("requires", [
    [{"type": "sw.unsupported"}],
    [{"or": [{"type": "sw.unsupported"}, {"type": "sw.supervisor"}]}],
    [{"type": "sw.supervisor"}, {"or": [{"or": [{"type": "sw.unsupported"}]}]}],
], ids=["atomic", "in-or", "nested-or"])
def test_unknown_requirement_type_has_upstreams_message(requires: list[Any]) -> None:
    with pytest.raises(ContractValidationError) as caught:
        parse_contract("frontend", {"slug": "c", "requires": requires})
    assert str(caught.value) == ("The contract for service frontend failed validation, "
                                 "with error: sw.unsupported is not a valid contract "
                                 "requirement type")
    assert isinstance(caught.value, BadRequest)  # a local push answers 400


@pytest.mark.parametrize("raw", [
    {"type": 1234}, {"slug": True, "name": "test"}, {"requires": "my-requirement"},
    {"requires": [{"version": ">3.0.0"}]}, {"requires": ["sw.os"]},
    {"requires": [{"or": []}]}, {"requires": [{"or": {"type": "sw.os"}}]},
    {"requires": [{"type": "sw.os", "version": 5}]},
    {"requires": [{"type": "sw.os", "data": "x"}]},
    {"requires": [{"type": "sw.os"}] * 65},
    {"requires": [{"type": "sw.os", "version": "1" * 1025}]},
    {"requires": [{"or": [{"or": [{"or": [{"or": [{"or": [{"type": "sw.os"}]}]}]}]}]}]},
    "sw.os", [],
], ids=lambda r: str(r)[:40])
def test_malformed_contracts_fail_validation(raw: Any) -> None:
    with pytest.raises(ContractValidationError, match=r"^The contract for service main "
                                                      r"failed validation, with error: "):
        parse_contract("main", raw)


# ---------------------------------------------------------------------------- the universe

@pytest.mark.parametrize(("release", "l4t"), [
    ("4.9.140-l4t-r32.2", "32.2.0"), ("4.9.140-l4t-r32.4.3", "32.4.3"),
    ("5.10.104-l4t-r35.1+g1234", "35.1.0"), ("5.15.0-91-generic", None), ("", None),
])
def test_l4t_version_from_uname(release: str, l4t: str | None) -> None:
    assert l4t_version(release) == l4t


@pytest.mark.parametrize(("release", "kernel"), [
    ("5.15.150-yocto-standard", "5.15.150"), ("6.1.0-18-amd64", "6.1.0"), ("6.1", "6.1.0"),
    ("weird", None),
])
def test_kernel_version_from_uname(release: str, kernel: str | None) -> None:
    assert kernel_version(release) == kernel


def test_universe_holds_the_device_facts() -> None:
    facts = {(c.type, c.slug, c.version) for c in UNIVERSE.components}
    assert facts == {
        ("sw.supervisor", None, "19.0.5"), ("sw.application", "balena-supervisor", "19.0.5"),
        ("hw.device-type", "intel-nuc", None), ("arch.sw", "amd64", None),
        ("sw.l4t", None, "32.2.0"), ("sw.os", "balena-os", OS_VERSION),
        ("sw.kernel", "linux", KERNEL),
    }
    bare = build_universe(supervisor_version="19.0.5", device_type="generic", arch="amd64")
    assert {c.type for c in bare.components} == {"sw.supervisor", "sw.application",
                                                 "hw.device-type", "arch.sw"}


# ---------------------------------------------------------------------------- evaluation

@pytest.mark.parametrize(("requires", "expected"), [
    ([], True),
    ([{"type": "sw.supervisor", "version": ">18.0.0"}, {"type": "hw.device-type",
                                                        "slug": "intel-nuc"}], True),
    ([{"type": "sw.supervisor", "version": "<20.0.0"}, {"type": "arch.sw", "slug": "amd64"}],
     True),
    ([{"type": "sw.supervisor", "version": ">=16.0.0"}], True),
    ([{"type": "sw.supervisor", "version": ">=20.0.0"}], False),
    ([{"type": "sw.supervisor", "version": "<=18.0.0"}], False),
    ([{"type": "hw.device-type"}], True),
    ([{"type": "hw.device-type", "slug": "raspberrypi3"}], False),
    ([{"type": "arch.sw", "slug": "armv7hf"}], False),
    ([{"type": "sw.l4t", "version": "32.2"}], True),
    ([{"type": "sw.l4t", "version": "28.2"}], False),
    ([{"type": "sw.os", "data": {"variant": "dev"}}], False),
    ([{"or": [{"type": "hw.device-type", "slug": "raspberrypi3"},
              {"type": "hw.device-type", "slug": "intel-nuc"}]}], True),
    ([{"or": [{"type": "hw.device-type", "slug": "raspberrypi3"},
              {"type": "arch.sw", "slug": "aarch64"}]}], False),
    ([{"or": [{"type": "sw.kernel", "slug": "linux", "version": KERNEL},
              {"type": "sw.kernel", "slug": "darwin", "version": "1.2.3"}]}], True),
])
def test_requirements(requires: list[dict[str, Any]], expected: bool) -> None:
    assert met(*requires) is expected


OS_MET = [f">={OS_VERSION}", f"<={OS_VERSION}", "5", "5.*", "5.5", "5.5.*", "5.5.5",
          "5.5.5+rev*", "5.5.5+rev420", ">5.4.5", "<5.6.5"]
OS_UNMET = ["<=2.0.0", ">=420.0.0", f">{OS_VERSION}", f"<{OS_VERSION}", "6.*", "5.5.6"]


@pytest.mark.parametrize("version", OS_MET)
def test_os_version_ranges_met(version: str) -> None:
    assert met({"type": "sw.os", "slug": "balena-os", "version": version})


@pytest.mark.parametrize("version", OS_UNMET)
def test_os_version_ranges_unmet(version: str) -> None:
    assert not met({"type": "sw.os", "slug": "balena-os", "version": version})


def test_os_slug() -> None:
    assert met({"type": "sw.os", "slug": "balena-os", "version": OS_VERSION})
    assert not met({"type": "sw.os", "slug": "ubuntu", "version": OS_VERSION})


@pytest.mark.parametrize(("version", "expected"), [
    (f">={KERNEL}", True), (f"<={KERNEL}", True), ("5", True), ("5.*", True), ("5.15", True),
    ("5.15.*", True), ("<=2.0.0", False), (">=420.0.0", False), (f">{KERNEL}", False),
    (f"<{KERNEL}", False), ("6.*", False), ("5.15.151", False), ("invalid-version", False),
])
def test_kernel_version_ranges(version: str, expected: bool) -> None:
    assert met({"type": "sw.kernel", "slug": "linux", "version": version}) is expected
    assert not met({"type": "sw.kernel", "slug": "darwin", "version": KERNEL})


@pytest.mark.parametrize(("l4t", "at_least_31", "below_31"), [
    ("31.0.0", True, False), ("31.0.1", True, False)])
def test_l4t_ranges(l4t: str, at_least_31: bool, below_31: bool) -> None:
    universe = build_universe(supervisor_version="19.0.5", device_type="jetson-tx2",
                              arch="aarch64", uname_release=f"4.9.140-l4t-r{l4t}")
    assert met({"type": "sw.l4t", "version": ">=31.0.0"}, universe=universe) is at_least_31
    assert met({"type": "sw.l4t", "version": "<31.0.0"}, universe=universe) is below_31


def test_a_component_the_device_lacks_is_unmet() -> None:
    no_l4t = build_universe(supervisor_version="19.0.5", device_type="intel-nuc", arch="amd64")
    assert not met({"type": "sw.l4t"}, universe=no_l4t)
    assert not met({"type": "sw.os"}, universe=no_l4t)


# ---------------------------------------------------------------------------- targets

def service(contract: dict[str, Any] | None = None, optional: bool = False,
            sid: int = 1) -> dict[str, Any]:
    svc: dict[str, Any] = {"id": sid, "image_id": sid, "image": "busybox", "environment": {},
                           "labels": {"io.balena.features.optional": "true"} if optional else {}}
    if contract is not None:
        svc["contract"] = contract
    return svc


def target(apps: dict[str, tuple[str, dict[str, dict[str, Any]]]]) -> TargetState:
    raw = {uuid: {"id": i + 1, "name": name, "releases": {f"commit{i}": {
        "id": i + 1, "services": services}}}
        for i, (uuid, (name, services)) in enumerate(apps.items())}
    return parse_target({DEVICE: {"name": "dev", "config": {}, "apps": raw}},
                        device_uuid=DEVICE)


NEEDS_PI = {"requires": [{"type": "hw.device-type", "slug": "raspberrypi3"}]}
NEEDS_NUC = {"requires": [{"type": "hw.device-type", "slug": "intel-nuc"}]}


def test_all_contracts_met_keeps_the_target_as_is() -> None:
    t = target({"a": ("app", {"main": service(NEEDS_NUC), "plain": service(sid=2)})})
    check = check_target(t, UNIVERSE)
    assert check.target == t
    assert check.rejected == frozenset()
    assert check.messages == ()


def test_unmet_optional_service_is_dropped_and_logged() -> None:
    t = target({"a": ("app", {"main": service(NEEDS_NUC),
                              "gpu": service(NEEDS_PI, optional=True, sid=2),
                              "tpu": service(NEEDS_PI, optional=True, sid=3)})})
    check = check_target(t, UNIVERSE)
    release = check.target.apps["a"].release
    assert release is not None
    assert list(release.services) == ["main"]
    assert check.rejected == frozenset()
    assert check.dropped == {"a": ("gpu", "tpu")}
    assert check.messages == (
        ("Not running containers because of contract violations: gpu. tpu", False),)


def test_unmet_required_service_rejects_its_app_only() -> None:
    t = target({"a": ("fleet-a", {"main": service(NEEDS_PI),
                                  "opt": service(NEEDS_PI, optional=True, sid=2),
                                  "ok": service(NEEDS_NUC, sid=3)}),
                "b": ("fleet-b", {"main": service(NEEDS_NUC, sid=4)}),
                "c": ("fleet-c", {"x": service(NEEDS_PI, sid=5)})})
    check = check_target(t, UNIVERSE)
    assert check.rejected == frozenset({"a", "c"})
    assert check.target == t  # rejected apps are stored whole, flagged
    assert check.unmet == {"a": ("main", "opt"), "c": ("x",)}
    assert check.messages == ((
        "Some releases were rejected due to having unmet requirements:\n"
        "  fleet-a: Services with unmet requirements: main, opt\n"
        "  fleet-c: Services with unmet requirements: x", True),)


def test_one_invalid_contract_rejects_the_whole_target() -> None:
    t = target({"a": ("fleet-a", {"main": service(NEEDS_NUC)}),
                "b": ("fleet-b", {"main": service({"requires": [{"type": "sw.blah"}]})})})
    with pytest.raises(ContractValidationError) as caught:
        check_target(t, UNIVERSE)
    assert str(caught.value) == ("The contract for service main failed validation, with "
                                 "error: sw.blah is not a valid contract requirement type")


def test_app_without_release_passes() -> None:
    raw = {DEVICE: {"name": "d", "config": {}, "apps": {"a": {"id": 1, "name": "a"}}}}
    t = parse_target(raw, device_uuid=DEVICE)
    assert check_target(t, UNIVERSE).target == t
