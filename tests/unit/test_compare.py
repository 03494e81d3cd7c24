"""Container comparison (engine.md §4.6): which target changes keep a container, judged by an
oracle written from the spec (tests/compare_oracle.py), not by the code's own config hash.

Each case converges a device on an "old" target, then runs the strict model engine
(tests/builders.ModelEngine) to the "new" target and looks at what survived: the container of
a service is kept (same id, renamed when the release changed) exactly when the oracle says
the two configs are equal.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.model.spec import HASH_LABEL
from supervisor.model.target import TargetState
from supervisor.planner import plan
from tests import compare_oracle
from tests.builders import (
    ModelEngine,
    converged,
    make_app,
    make_service,
    make_target,
    service_of,
)

IMAGE = "registry.local/main:v1"
APP_VOLUMES = {"data": {}, "cache": {}, "logs": {}}
APP_NETWORKS = {"front": {}, "back": {}}

# Two or more distinct values of every array field §4.6 lists, in compose syntax.
FIELD_VALUES: dict[str, Any] = {
    "volumes": ["data:/data", "cache:/cache:ro", "/anon1", "/anon2",
                {"type": "volume", "source": "logs", "target": "/logs"},
                {"type": "tmpfs", "target": "/scratch"}],
    "devices": ["/dev/ttyUSB0:/dev/ttyUSB0:r", "/dev/ttyUSB1", "/dev/i2c-1:/dev/i2c-1"],
    "cap_add": ["NET_ADMIN", "SYS_ADMIN", "SYS_TIME"],
    "cap_drop": ["CHOWN", "MKNOD", "NET_RAW"],
    "dns_opt": ["ndots:2", "use-vc", "timeout:3"],
    "tmpfs": ["/run1:size=1m", "/run2", "/run3:size=2m"],
    "extra_hosts": ["a.local:10.0.0.1", "b.local=10.0.0.2", "c.local:10.0.0.3"],
    "group_add": ["audio", "video", "dialout"],
    "security_opt": ["apparmor=unconfined", "seccomp=unconfined", "no-new-privileges"],
    "dns": ["1.1.1.1", "8.8.8.8", "9.9.9.9"],
    "dns_search": ["a.local", "b.local", "c.local"],
}
# compose's ulimits is a map: its "array" is the order of the keys
ULIMITS = {"nofile": {"soft": 1024, "hard": 2048}, "nproc": 100, "core": 0}
ORDER_INSENSITIVE = ("volumes", "devices", "cap_add", "cap_drop", "dns_opt", "tmpfs",
                     "extra_hosts", "ulimits", "group_add", "security_opt")
ORDER_SENSITIVE = ("dns", "dns_search")


def target_of(composition: dict[str, Any], *, release: int = 1) -> TargetState:
    svc = make_service("main", image=IMAGE, image_id=10 + release, **composition)
    return make_target(apps=[make_app(1, [svc], commit=f"commit{release}", release_id=release,
                                      volumes=APP_VOLUMES, networks=APP_NETWORKS)])


def apply(old: TargetState, new: TargetState) -> tuple[str, str, ModelEngine]:
    """Converge on `old`, run the model engine to `new`; (id before, id after, engine)."""
    world = converged(old)
    (before,) = world.current.containers
    engine = ModelEngine(target=new, current=world.current, commits=dict(world.ctx.commits),
                         managed=dict(world.ctx.managed_images))
    engine.run(20)
    (after,) = engine.current.containers
    return before.id, after.id, engine


def kept(old: TargetState, new: TargetState) -> bool:
    before, after, engine = apply(old, new)
    (container,) = engine.current.containers
    release = next(iter(new.apps.values())).release
    assert release is not None
    assert container.release_id == release.release_id  # renamed or recreated: in the target
    return before == after


def reordered(field: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if field == "ulimits":
        return {"ulimits": ULIMITS}, {"ulimits": dict(reversed(list(ULIMITS.items())))}
    values = FIELD_VALUES[field]
    return {field: values}, {field: list(reversed(values))}


# ---------------------------------------------------------------------------- every field

def test_the_oracle_lists_exactly_the_spec_fields() -> None:
    assert set(compare_oracle.ORDER_INSENSITIVE) == set(ORDER_INSENSITIVE)
    assert set(compare_oracle.ORDER_SENSITIVE) == set(ORDER_SENSITIVE)


@pytest.mark.parametrize("field", ORDER_INSENSITIVE)
@pytest.mark.parametrize("release", [1, 2], ids=["same-release", "new-release"])
def test_reordering_an_order_insensitive_field_keeps_the_container(field: str,
                                                                   release: int) -> None:
    first, second = reordered(field)
    old, new = target_of(first), target_of(second, release=release)
    assert compare_oracle.same_config(service_of(old, 1, "main"), service_of(new, 1, "main"))
    if release == 1:  # same release: nothing at all to do
        world = converged(old)
        assert plan(world.current, new, world.ctx) == ()
    assert kept(old, new)


@pytest.mark.parametrize("field", ORDER_SENSITIVE)
def test_reordering_dns_or_dns_search_recreates_the_container(field: str) -> None:
    first, second = reordered(field)
    old, new = target_of(first), target_of(second, release=2)
    assert compare_oracle.differences(service_of(old, 1, "main"),
                                      service_of(new, 1, "main")) == [field]
    assert not kept(old, new)


@pytest.mark.parametrize("field", [*ORDER_INSENSITIVE, *ORDER_SENSITIVE])
def test_changing_the_content_of_a_listed_field_recreates_the_container(field: str) -> None:
    first, _ = reordered(field)
    second = copy.deepcopy(first)
    if field == "ulimits":
        del second["ulimits"]["core"]
    else:
        second[field] = second[field][1:]
    old, new = target_of(first), target_of(second, release=2)
    assert compare_oracle.differences(service_of(old, 1, "main"),
                                      service_of(new, 1, "main")) == [field]
    assert not kept(old, new)


def test_network_aliases_and_networks_compare_by_name_not_order() -> None:
    old = target_of({"network_mode": "front",
                     "networks": {"front": {"aliases": ["x", "y"]}, "back": {}}})
    new = target_of({"network_mode": "front",
                     "networks": {"back": {}, "front": {"aliases": ["y", "x"]}}}, release=2)
    assert compare_oracle.same_config(service_of(old, 1, "main"), service_of(new, 1, "main"))
    assert kept(old, new)


def test_all_fields_reordered_at_once_keep_the_container() -> None:
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    for field in ORDER_INSENSITIVE:
        a, b = reordered(field)
        first.update(a)
        second.update(b)
    old, new = target_of(first), target_of(second, release=2)
    assert kept(old, new)


# ---------------------------------------------------------------------------- property

PROPS = settings(max_examples=200, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def compositions(draw: st.DrawFn) -> dict[str, Any]:
    comp: dict[str, Any] = {}
    for field in draw(st.sets(st.sampled_from([*FIELD_VALUES, "ulimits", "networks"]))):
        if field == "ulimits":
            names = draw(st.lists(st.sampled_from(list(ULIMITS)), min_size=1, unique=True))
            comp["ulimits"] = {n: ULIMITS[n] for n in names}
        elif field == "networks":
            names = draw(st.lists(st.sampled_from(list(APP_NETWORKS)), min_size=1, unique=True))
            comp["networks"] = {n: {"aliases": draw(st.lists(st.sampled_from(["x", "y", "z"]),
                                                             unique=True))} for n in names}
            if draw(st.booleans()):
                comp["network_mode"] = draw(st.sampled_from(names))
        else:
            comp[field] = draw(st.lists(st.sampled_from(FIELD_VALUES[field]), min_size=1,
                                        unique_by=_identity))
    if draw(st.booleans()):
        comp["privileged"] = True
    if draw(st.booleans()):
        comp["environment"] = {"LEVEL": "1", "MODE": "a"}
    return comp


def _identity(value: Any) -> str:
    return repr(value)


@st.composite
def mutated(draw: st.DrawFn, comp: dict[str, Any]) -> dict[str, Any]:
    """Reorder some fields (what the spec says must not matter), and now and then change one."""
    out = copy.deepcopy(comp)
    for field in list(out):
        value = out[field]
        if isinstance(value, list) and draw(st.booleans()):
            out[field] = draw(st.permutations(value))
        elif isinstance(value, dict) and field != "environment" and draw(st.booleans()):
            out[field] = dict(draw(st.permutations(list(value.items()))))
            if field == "networks":
                for net in out[field].values():
                    net["aliases"] = draw(st.permutations(net["aliases"]))
    change = draw(st.sampled_from(["none", "none", "drop", "add", "privileged", "env"]))
    lists = sorted(f for f, v in out.items() if isinstance(v, list))
    if change == "drop" and lists:
        field = draw(st.sampled_from(lists))
        out[field] = out[field][1:] or None
    elif change == "add":
        field = draw(st.sampled_from(sorted(FIELD_VALUES)))
        extra = [v for v in FIELD_VALUES[field] if v not in (out.get(field) or [])]
        if extra:
            out[field] = [*(out.get(field) or []), extra[0]]
    elif change == "privileged":
        out["privileged"] = not out.get("privileged", False)
    elif change == "env":
        out["environment"] = {**out.get("environment", {}), "LEVEL": "2"}
    return {k: v for k, v in out.items() if v is not None}


@st.composite
def pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], int]:
    comp = draw(compositions())
    return comp, draw(mutated(comp)), draw(st.sampled_from([1, 2]))


@PROPS
@given(pairs())
def test_a_container_is_kept_exactly_when_the_oracle_says_equal(
        case: tuple[dict[str, Any], dict[str, Any], int]) -> None:
    first, second, release = case
    old, new = target_of(first), target_of(second, release=release)
    expected = compare_oracle.same_config(service_of(old, 1, "main"),
                                          service_of(new, 1, "main"))
    assert kept(old, new) == expected, compare_oracle.differences(
        service_of(old, 1, "main"), service_of(new, 1, "main"))
    if expected and release == 1:
        world = converged(old)
        assert plan(world.current, new, world.ctx) == ()



# ---------------------------------------------------------------------------- upgrade

# Containers created by the previous release carry a hash computed the old way (the exact
# create body, list order included). These are the labels that release (main at 854d7ac)
# put on the containers of these two targets, recorded by running it: literal values, so
# the test does not depend on the code under test to know what an old container looks like.
LEGACY_LISTS = {
    "cap_add": ["SYS_ADMIN", "NET_ADMIN"],
    "cap_drop": ["MKNOD", "CHOWN"],
    "devices": ["/dev/ttyUSB1:/dev/ttyUSB1", "/dev/ttyUSB0:/dev/ttyUSB0:r"],
    "volumes": ["data:/data", "cache:/cache", "/anon2", "/anon1",
                {"type": "volume", "source": "logs", "target": "/logs"},
                {"type": "tmpfs", "target": "/scratch"}],
    "tmpfs": ["/run2", "/run1:size=1m"],
    "extra_hosts": ["b.local:10.0.0.2", "a.local:10.0.0.1"],
    "ulimits": {"nproc": 100, "nofile": {"soft": 1024, "hard": 2048}},
    "group_add": ["video", "audio"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "dns_opt": ["use-vc", "ndots:2"],
    "dns": ["8.8.8.8", "1.1.1.1"],
    "dns_search": ["b.local", "a.local"],
    "ports": ["8081:80", "8080:80"],
    "networks": {"front": {"aliases": ["y", "x"]}, "back": {}},
}
LEGACY_CASES = [
    ("main", LEGACY_LISTS, "4b68c9d854c82ee0484d7158a30eab75ccbe1bb4b6c38554acd168d092e74dd4"),
    ("web", {"command": ["sleep", "1"]},
     "ba760fcdb48f0236165479d891491f9f9221ec6f3f65c6bdab2837f7f7a4bbe2"),
]


def legacy_target(name: str, composition: dict[str, Any], *, release: int = 1,
                  **changes: Any) -> TargetState:
    svc = make_service(name, image_id=None if release == 1 else 99,
                       **{**copy.deepcopy(composition), **changes})
    return make_target(apps=[make_app(1, [svc], volumes=APP_VOLUMES, networks=APP_NETWORKS,
                                      commit="c0mm1t01" if release == 1 else "c0mm1t02",
                                      release_id=release)])


def legacy_world(name: str, composition: dict[str, Any], legacy_hash: str) -> Any:
    world = converged(legacy_target(name, composition))
    (container,) = world.current.containers
    old = replace(container, config_hash=legacy_hash,
                  labels={**container.labels, HASH_LABEL: legacy_hash})
    world.current = replace(world.current, containers=(old,))
    return world


@pytest.mark.parametrize(("name", "composition", "legacy_hash"), LEGACY_CASES,
                         ids=[c[0] for c in LEGACY_CASES])
def test_containers_of_the_previous_release_are_kept_after_an_upgrade(
        name: str, composition: dict[str, Any], legacy_hash: str) -> None:
    world = legacy_world(name, composition, legacy_hash)
    assert plan(world.current, legacy_target(name, composition), world.ctx) == ()
    # a new release of the same config renames the old container, never recreates it
    new = legacy_target(name, composition, release=2)
    engine = ModelEngine(target=new, current=world.current, commits=dict(world.ctx.commits),
                         managed=dict(world.ctx.managed_images))
    history = engine.run(20)
    assert [s.kind for steps in history for s in steps if s.kind in ("kill", "handover")] == []
    (after,) = engine.current.containers
    assert (after.id, after.release_id) == (world.current.containers[0].id, 2)


@pytest.mark.parametrize(("name", "composition", "legacy_hash"), LEGACY_CASES,
                         ids=[c[0] for c in LEGACY_CASES])
def test_a_changed_config_still_recreates_a_container_of_the_previous_release(
        name: str, composition: dict[str, Any], legacy_hash: str) -> None:
    world = legacy_world(name, composition, legacy_hash)
    new = legacy_target(name, composition, release=2, privileged=True)
    engine = ModelEngine(target=new, current=world.current, commits=dict(world.ctx.commits),
                         managed=dict(world.ctx.managed_images))
    engine.run(20)
    (after,) = engine.current.containers
    assert after.id != world.current.containers[0].id
