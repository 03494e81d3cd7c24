"""Planner properties (hypothesis), on generated targets and generated device states.

* fixpoint: when Docker already holds exactly what the target asks for, the plan is empty;
* convergence: a strict in-memory engine (tests/builders.ModelEngine) applying every batch
  reaches an empty plan within a bounded number of rounds, from any generated state, and the
  state it reaches is the target;
* safety: no step ever names a container that is not in Current (the engine lists only
  supervised containers, so the planner must never invent ids), and lock-needing steps run
  only under the app's lock (the model engine refuses them otherwise).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.model.current import ContainerInfo, Current, VolumeInfo
from supervisor.model.target import TargetState
from supervisor.planner import plan
from supervisor.planner.services import in_target_state
from supervisor.planner.specs import network_service
from tests import compare_oracle
from tests.builders import (
    AppDef,
    ModelEngine,
    ServiceDef,
    converged,
    image_id_of,
    image_infos,
    make_app,
    make_service,
    make_target,
    network_infos,
    service_of,
    spec_of,
    target_images,
    volume_infos,
)

SERVICE_NAMES = ("main", "web", "db", "worker")
MAX_ROUNDS = 40
# supervisor0 (lock, kill, recreate) + image housekeeping twice + fetch, lock, kill, remove
# and recreate a network or volume, start 4 levels of dependencies, settle: 15
ROUNDS_PER_BOOT = 15
PROPS = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------- targets

@st.composite
def services(draw: st.DrawFn, app_id: int, app_networks: list[str],
             app_volumes: list[str]) -> list[ServiceDef]:
    names = draw(st.lists(st.sampled_from(SERVICE_NAMES), min_size=1, max_size=4, unique=True))
    out = []
    for i, name in enumerate(names):
        earlier = names[:i]
        compose: dict[str, Any] = {}
        labels: dict[str, str] = {}
        if len(earlier) > 0 and draw(st.booleans()):
            compose["depends_on"] = draw(st.lists(st.sampled_from(earlier), min_size=1,
                                                  unique=True))
        mode = draw(st.sampled_from(["", "", "host", "service"]))
        if mode == "service" and earlier:
            compose["network_mode"] = "service:" + draw(st.sampled_from(earlier))
        elif mode == "host":
            compose["network_mode"] = "host"
        elif len(app_networks) > 0 and draw(st.booleans()):
            compose["networks"] = draw(st.lists(st.sampled_from(app_networks), min_size=1,
                                                unique=True))
        if len(app_volumes) > 0 and draw(st.booleans()):
            compose["volumes"] = [f"{v}:/mnt/{v}" for v in draw(
                st.lists(st.sampled_from(app_volumes), min_size=1, unique=True))]
        if draw(st.booleans()):
            compose["environment"] = {"LEVEL": draw(st.sampled_from(["1", "2"]))}
        strategy = draw(st.sampled_from(["", "", "kill-then-download", "delete-then-download",
                                         "hand-over"]))
        if strategy:
            labels["io.balena.update.strategy"] = strategy
        if draw(st.integers(0, 5)) == 0:
            labels["io.balena.features.supervisor-api"] = "1"
        if draw(st.integers(0, 7)) == 0:
            labels["io.balena.update.requires-reboot"] = "1"
        tag = draw(st.sampled_from(["v1", "v2"]))
        out.append(make_service(
            name, image=f"registry.local/{name}:{tag}",
            # image ids are unique across the fleet, so container names never clash
            image_id=app_id * 100 + SERVICE_NAMES.index(name) * 10 + int(tag[1]),
            running=draw(st.sampled_from([None, None, None, False])), labels=labels,
            **compose))
    return out


@st.composite
def apps(draw: st.DrawFn, app_id: int) -> AppDef:
    networks = draw(st.lists(st.sampled_from(["front", "back"]), unique=True))
    volumes = draw(st.lists(st.sampled_from(["data", "cache"]), unique=True))
    net_cfg = {n: draw(st.sampled_from([{}, {"internal": True}])) for n in networks}
    vol_cfg = {v: draw(st.sampled_from([{}, {"labels": {"tier": "a"}}])) for v in volumes}
    release = draw(st.integers(1, 3))
    commit = None if draw(st.integers(0, 9)) == 0 else f"commit{release}"
    return make_app(app_id, draw(services(app_id, networks, volumes)), commit=commit,
                    release_id=release, networks=net_cfg, volumes=vol_cfg)


@st.composite
def app_defs(draw: st.DrawFn) -> list[AppDef]:
    ids = draw(st.lists(st.sampled_from([1, 2, 3]), unique=True, max_size=3))
    return [draw(apps(i)) for i in sorted(ids)]


def targets() -> st.SearchStrategy[TargetState]:
    return app_defs().map(lambda defs: make_target(apps=defs))


@st.composite
def next_release(draw: st.DrawFn, defs: list[AppDef]) -> list[AppDef]:
    """The same apps in a new release: same services (so containers are renamed, not
    recreated), some stopped or started, sometimes one gone."""
    out = []
    for app in defs:
        raw = copy.deepcopy(app.raw)
        for commit, release in list(raw["releases"].items()):
            del raw["releases"][commit]
            release["id"] += 10
            services = release["services"]
            for name in list(services):
                choice = draw(st.sampled_from(["same", "same", "flip", "drop"]))
                if choice == "flip":
                    services[name]["running"] = not services[name].get("running", True)
                elif choice == "drop" and not any(
                        name in (s["composition"].get("depends_on") or ())
                        or s["composition"].get("network_mode") == f"service:{name}"
                        for s in services.values()):
                    del services[name]
            raw["releases"][f"next{commit}"] = release
        out.append(AppDef(app.uuid, raw))
    return out


# ---------------------------------------------------------------------------- device states

STATES = ("running", "running", "exited", "created", "dead", "paused")


@st.composite
def engines(draw: st.DrawFn) -> ModelEngine:
    """A device that converged on some older target, then drifted: containers gone, dead,
    stopped, duplicated, without our config label, leftovers of a hand-over; volumes of
    other configs or not ours; images missing; stale locks and commits."""
    old_defs = draw(app_defs())
    old = make_target(apps=old_defs)
    new = make_target(apps=draw(st.one_of(app_defs(), next_release(old_defs))))
    world = converged(old)
    containers: list[ContainerInfo] = []
    origins = {c.id: service_of(old, c.app_id, c.service_name) for c in world.current.containers}
    for n, c in enumerate(world.current.containers):
        action = draw(st.sampled_from(["keep", "keep", "drop", "state", "dup", "unlabelled",
                                       "handover"]))
        if action == "drop":
            continue
        if action == "state":
            state = draw(st.sampled_from(STATES))
            c = replace(c, state=state, running=state in ("running", "paused"))
        elif action == "unlabelled":
            c = replace(c, config_hash=None)
        elif action == "dup":
            containers.append(replace(c, id=f"dup{n}", name=f"{c.service_name}_9_9_dup{n}",
                                      created="2023-12-31T00:00:00Z"))
            origins[f"dup{n}"] = origins[c.id]
        elif action == "handover":
            containers.append(replace(c, id=f"old{n}", name=f"old_{c.name}",
                                      handover_old=True, created="2023-12-31T00:00:00Z"))
            origins[f"old{n}"] = origins[c.id]
        containers.append(c)
    volumes = list(world.current.volumes)
    if draw(st.booleans()):
        volumes.append(VolumeInfo(name="2_data", app_id=2, app_uuid=None))  # not ours
    if len(volumes) > 0 and draw(st.booleans()):
        volumes[0] = replace(volumes[0], config_hash="other-config")
    networks = [n for n in world.current.networks if draw(st.integers(0, 4)) > 0]
    all_images = sorted(target_images(old) | target_images(new) | {"registry.local/gone:v0"})
    image_names = draw(st.sets(st.sampled_from(all_images)))
    current = Current(containers=tuple(containers), images=tuple(image_infos(image_names)),
                      networks=tuple(networks), volumes=tuple(volumes),
                      supervisor0_ok=draw(st.booleans()))
    return ModelEngine(
        target=new, current=current,
        commits={a: c for a, c in world.ctx.commits.items() if draw(st.booleans())},
        locked=set(draw(st.sets(st.sampled_from([1, 2, 3, 4])))),
        leftovers=set(draw(st.sets(st.sampled_from([1, 2, 3, 4])))),
        managed={n: image_id_of(n) for n in image_names if draw(st.booleans())},
        keep_images=draw(st.booleans()), keep_volumes=draw(st.booleans()), origins=origins,
    )


# ---------------------------------------------------------------------------- properties

@PROPS
@given(targets(), st.booleans(), st.booleans())
def test_fixpoint_plan_is_empty(target: TargetState, keep_images: bool,
                                keep_volumes: bool) -> None:
    world = converged(target, keep_images=keep_images, keep_volumes=keep_volumes)
    assert plan(world.current, target, world.ctx) == ()


@PROPS
@given(engines())
def test_converges_to_the_target_from_any_state(engine: ModelEngine) -> None:
    history = engine.run(MAX_ROUNDS)
    assert history[-1] == ()
    assert_is_target(engine)
    # between reboots (an empty plan with a reboot pending) at most ROUNDS_PER_BOOT batches
    batches_per_boot = [0]
    for steps in history:
        if steps:
            batches_per_boot[-1] += 1
        else:
            batches_per_boot.append(0)
    assert max(batches_per_boot) <= ROUNDS_PER_BOOT, history
    # requires-reboot services are created without waiting for their dependencies to start,
    # so another reboot is needed only when one joins (`network_mode: service:<x>`) a plain
    # service that itself waited for a reboot: with at most 4 services an app needs 2
    assert engine.reboots <= 2


@PROPS
@given(engines())
def test_steps_name_only_containers_in_current(engine: ModelEngine) -> None:
    for _ in range(MAX_ROUNDS):
        known = {c.id for c in engine.current.containers}
        steps = plan(engine.current, engine.target, engine.ctx())
        for step in steps:
            cid = getattr(step, "container_id", None)
            assert cid is None or cid in known, step
        if not steps:
            break
        engine.apply(steps)


@PROPS
@given(engines())
def test_plan_is_deterministic(engine: ModelEngine) -> None:
    ctx = engine.ctx()
    assert plan(engine.current, engine.target, ctx) == plan(engine.current, engine.target, ctx)


def assert_is_target(engine: ModelEngine) -> None:
    """Exactly one container per target service, in its target state; nothing else."""
    target, current = engine.target, engine.current
    ctx = engine.ctx()
    expected = set()
    ids = {(c.app_id, c.service_name): c.id for c in current.containers}
    for app in target.apps.values():
        if app.release is None:
            continue
        assert engine.commits.get(app.app_id) == app.release.commit
        for svc in app.release.services.values():
            expected.add((app.app_id, svc.name))
            mine = [c for c in current.containers
                    if (c.app_id, c.service_name) == (app.app_id, svc.name)]
            assert len(mine) == 1, mine
            dep = network_service(svc)
            spec = spec_of(target, app.app_id, svc.name, ctx, container_ids={
                dep: ids[(app.app_id, dep)]} if dep else None)
            assert in_target_state(mine[0], spec, ctx.image_ids.get(svc.image))
            # judged independently: created for a service whose config §4.6 calls equal
            origin = engine.origins[mine[0].id]
            assert compare_oracle.same_config(origin, svc), (
                compare_oracle.differences(origin, svc))
            if svc.running:
                assert mine[0].running or mine[0].state == "exited"
            else:
                assert not mine[0].running
    assert {(c.app_id, c.service_name) for c in current.containers} == expected
    assert not engine.locked and not engine.leftovers
    wanted_networks = {n.name for a in target.apps.values()
                       for n in network_infos(target, a.app_id)}
    assert {n.name for n in current.networks} == wanted_networks
    wanted_volumes = {v.name for a in target.apps.values() for v in volume_infos(target, a.app_id)}
    present = {v.name: v for v in current.volumes}
    assert wanted_volumes <= set(present)
    target_ids = {a.app_id for a in target.apps.values()}
    for vol in present.values():
        if vol.app_id not in target_ids and not engine.keep_volumes:
            assert not vol.labels.get("io.balena.supervised"), vol  # only ours are removed
