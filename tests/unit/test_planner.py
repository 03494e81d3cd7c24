"""Planner rules by example: given current and target, the expected steps (engine.md §6-§10,
locks.md §6). Each test builds Docker's state with tests/builders.py and reads the plan."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from supervisor.model.current import ContainerInfo, NetworkInfo, VolumeInfo
from supervisor.model.steps import (
    CreateNetwork,
    CreateVolume,
    EnsureSupervisorNetwork,
    Fetch,
    Handover,
    Kill,
    Noop,
    ReleaseLock,
    Remove,
    RemoveImage,
    RemoveNetwork,
    RemoveVolume,
    RequireReboot,
    Start,
    Step,
    Stop,
    TakeLock,
    UpdateCommit,
    UpdateMetadata,
)
from supervisor.model.target import TargetState
from supervisor.planner import PlanContext, clear_spec_cache, plan
from tests.builders import (
    BOOT,
    AppDef,
    ModelEngine,
    World,
    converged,
    image_id_of,
    make_app,
    make_container,
    make_ctx,
    make_current,
    make_device,
    make_service,
    make_target,
    network_infos,
    target_images,
    volume_infos,
)

S = TypeVar("S")
LOCKED_KINDS = (Kill, Stop, Start, UpdateMetadata)


def of(kind: type[S], steps: tuple[Step, ...]) -> list[S]:
    return [s for s in steps if isinstance(s, kind)]


def kinds(steps: tuple[Step, ...]) -> list[str]:
    return [s.kind for s in steps]


def acts(steps: tuple[Step, ...]) -> list[str]:
    """The kinds of the steps that do something (no noops)."""
    return [s.kind for s in steps if not isinstance(s, Noop)]


def one(kind: type[S], steps: tuple[Step, ...]) -> S:
    found = of(kind, steps)
    assert len(found) == 1, steps
    return found[0]


def locked(world: World, *app_ids: int) -> PlanContext:
    return replace(world.ctx, locked_apps=frozenset(app_ids or {1}))


def two_services(**web: Any) -> TargetState:
    return make_target(apps=[make_app(1, [make_service("web", **web), make_service("db")])])


def with_containers(world: World, containers: list[ContainerInfo]) -> World:
    return World(replace(world.current, containers=tuple(containers)), world.ctx, world.ids)


# ---------------------------------------------------------------------------- basics

def test_no_target_plans_nothing_even_with_containers() -> None:
    world = converged(two_services())
    assert plan(world.current, None, world.ctx) == ()


def test_fixpoint_is_empty() -> None:
    world = converged(two_services())
    assert plan(world.current, two_services(), world.ctx) == ()


def test_first_install_fetches_every_image_and_creates_resources() -> None:
    target = make_target(apps=[make_app(1, [make_service("web", volumes=["data:/data"]),
                                            make_service("db")], volumes={"data": {}})])
    steps = plan(make_current(), target, make_ctx(target))
    assert sorted(f.image for f in of(Fetch, steps)) == sorted(target_images(target))
    assert [v.spec.name for v in of(CreateVolume, steps)] == ["1_data"]
    assert [n.spec.name for n in of(CreateNetwork, steps)] == [f"{'0001' + 'a' * 28}_default"]
    assert not of(Start, steps) and not of(TakeLock, steps)


def test_services_sharing_an_image_fetch_it_once() -> None:
    target = make_target(apps=[make_app(1, [make_service("a", image="registry.local/x:1"),
                                            make_service("b", image="registry.local/x:1")])])
    assert len(of(Fetch, plan(make_current(), target, make_ctx(target)))) == 1


def test_image_downloading_waits_with_a_noop() -> None:
    target = two_services()
    ctx = make_ctx(target, present=["registry.local/db:v1"],
                   downloading=["registry.local/web:v1"])
    steps = plan(make_current(), target, ctx)
    assert not of(Fetch, steps) and of(Noop, steps)


def test_pairs_by_service_name() -> None:
    """web is up to date; a container of a service no longer in the target is killed."""
    world = converged(two_services())
    target = make_target(apps=[make_app(1, [make_service("web")])])
    steps = plan(world.current, target, locked(world))
    assert [k.service_name for k in of(Kill, steps)] == ["db"]
    assert not of(Start, steps)


# ---------------------------------------------------------------------------- updates

def new_release(**web: Any) -> TargetState:
    return make_target(apps=[make_app(1, [make_service("web", **web), make_service("db")],
                                      commit="c0mm1t02", release_id=2)])


def test_config_change_downloads_while_the_old_container_runs() -> None:
    world = converged(two_services())
    target = new_release(image="registry.local/web:v2")
    steps = plan(world.current, target, locked(world))
    assert [f.image for f in of(Fetch, steps)] == ["registry.local/web:v2"]
    assert not of(Kill, steps) and not of(Start, steps)
    # db's config is the same: only renamed once every image of the release is there
    assert not of(UpdateMetadata, steps)


def test_config_change_kills_only_when_all_new_images_are_present() -> None:
    world = converged(two_services())
    target = make_target(apps=[make_app(1, [
        make_service("web", image="registry.local/web:v2"),
        make_service("db", image="registry.local/db:v2", environment={"A": "1"})],
        commit="c0mm1t02", release_id=2)])
    web2 = "registry.local/web:v2"
    ctx = replace(locked(world), image_ids={**world.ctx.image_ids, web2: image_id_of(web2)})
    steps = plan(world.current, target, ctx)
    assert not of(Kill, steps)  # db's image is still missing
    assert [f.image for f in of(Fetch, steps)] == ["registry.local/db:v2"]
    ctx = replace(ctx, image_ids={**ctx.image_ids,
                                  "registry.local/db:v2": image_id_of("registry.local/db:v2")})
    steps = plan(world.current, target, ctx)
    assert sorted(k.service_name for k in of(Kill, steps)) == ["db", "web"]


def test_config_change_then_starts_the_new_container() -> None:
    world = converged(two_services())
    target = new_release(environment={"MODE": "new"})
    engine = ModelEngine(target, world.current, commits=dict(world.ctx.commits))
    history = engine.run(12)
    flat = [s for batch in history for s in batch]
    kill_at = next(i for i, b in enumerate(history) if of(Kill, b))
    start_at = next(i for i, b in enumerate(history) if of(Start, b))
    assert kill_at < start_at
    web = one(Start, tuple(s for s in flat if isinstance(s, Start)))
    assert web.spec.service_name == "web" and web.commit == "c0mm1t02"
    assert [u.service_name for u in of(UpdateMetadata, tuple(flat))] == ["db"]


def test_release_only_change_renames_without_recreating() -> None:
    world = converged(two_services())
    steps = plan(world.current, new_release(), locked(world))
    renames = of(UpdateMetadata, steps)
    assert sorted(r.service_name for r in renames) == ["db", "web"]
    assert all(r.new_name.endswith("_2_c0mm1t02") for r in renames)
    assert not of(Kill, steps) and not of(Start, steps) and not of(Fetch, steps)


def test_kill_first_strategies_kill_before_fetching() -> None:
    # engine.md §8 and §14.5: kill-then-download keeps the old image (the delta source of the
    # new one) until the new one is in; only delete-then-download removes it before fetching
    old, new = "registry.local/web:v1", "registry.local/web:v2"
    owners = {old: (1, "web"), "registry.local/db:v1": (1, "db")}
    for strategy in ("kill-then-download", "delete-then-download"):
        world = converged(two_services(image=old), image_owners=owners)
        target = new_release(image=new, labels={"io.balena.update.strategy": strategy})
        steps = plan(world.current, target, world.ctx)
        assert kinds(steps)[0] == "takeLock" and not of(Kill, steps)
        steps = plan(world.current, target, locked(world))
        assert [k.service_name for k in of(Kill, steps)] == ["web"]
        assert not of(Fetch, steps) and not of(RemoveImage, steps)
        gone = with_containers(world, [c for c in world.current.containers
                                       if c.service_name != "web"])
        steps = plan(gone.current, target, locked(world))
        if strategy == "delete-then-download":  # the old image goes first, then the fetch
            assert steps == (RemoveImage(image_id=image_id_of(old), name=old),)
            images = tuple(i for i in gone.current.images if i.id != image_id_of(old))
            ctx = replace(locked(world), managed_images={}, image_ids={
                k: v for k, v in world.ctx.image_ids.items() if k != old})
            steps = plan(replace(gone.current, images=images), target, ctx)
        assert [f.image for f in of(Fetch, steps)] == [new], (strategy, steps)
        assert not of(RemoveImage, steps), strategy
        if strategy == "kill-then-download":
            # the new image is in: now the old one goes
            fetched = replace(locked(world), image_ids={**world.ctx.image_ids,
                                                         new: image_id_of(new)})
            images = (*gone.current.images, *make_current(images=[new]).images)
            steps = plan(replace(gone.current, images=images), target, fetched)
            assert steps == (RemoveImage(image_id=image_id_of(old), name=old),), steps


def test_hand_over_starts_the_new_one_without_a_lock() -> None:
    world = converged(two_services())
    target = new_release(environment={"V": "2"},
                         labels={"io.balena.update.strategy": "hand-over",
                                 "io.balena.update.handover-timeout": "5000"})
    steps = plan(world.current, target, world.ctx)
    handover = one(Handover, steps)
    assert handover.container_id == world.ids[(1, "web")]
    assert handover.spec.name.startswith("web_") and handover.timeout_ms == 5000
    # db's rename needs the lock; the hand-over does not wait for it
    assert kinds(steps) == ["takeLock", "handover"]


def test_hand_over_leftover_old_container_is_killed() -> None:
    world = converged(two_services())
    web = next(c for c in world.current.containers if c.service_name == "web")
    old = replace(web, id="old", name="old_" + web.name, handover_old=True,
                  created="2023-01-01T00:00:00Z")
    world = with_containers(world, [*world.current.containers, old])
    steps = plan(world.current, two_services(), locked(world))
    assert [k.container_id for k in of(Kill, steps)] == ["old"]


# ---------------------------------------------------------------------------- run state

def test_running_false_creates_without_starting() -> None:
    target = two_services(running=False)
    ctx = make_ctx(target, present=target_images(target), locked=[1])
    steps = plan(make_current(images=target_images(target), networks=network_infos(target, 1)),
                 target, ctx)
    starts = {s.spec.service_name: s.start for s in of(Start, steps)}
    assert starts == {"web": False, "db": True}


def test_running_false_stops_a_running_container_and_keeps_it() -> None:
    world = converged(two_services())
    target = two_services(running=False)
    steps = plan(world.current, target, world.ctx)
    assert kinds(steps) == ["takeLock"]
    steps = plan(world.current, target, locked(world))
    assert one(Stop, steps).container_id == world.ids[(1, "web")]
    assert not of(Kill, steps)
    stopped = [replace(c, state="exited", running=False) if c.service_name == "web" else c
               for c in world.current.containers]
    assert kinds(plan(with_containers(world, stopped).current, target, locked(world))) == [
        "releaseLock"]


def test_exited_containers_are_not_restarted() -> None:
    world = converged(two_services())
    exited = [replace(c, state="exited", running=False, exit_code=1)
              for c in world.current.containers]
    assert plan(with_containers(world, exited).current, two_services(), world.ctx) == ()


def test_userland_proxy_race_is_started_again() -> None:
    world = converged(two_services())
    error = "driver failed: userland proxy: listen tcp 0.0.0.0:80: cannot assign requested address"
    exited = [replace(c, state="exited", running=False, exit_error=error)
              if c.service_name == "web" else c for c in world.current.containers]
    steps = plan(with_containers(world, exited).current, two_services(), locked(world))
    assert one(Start, steps).container_id == world.ids[(1, "web")]


def test_created_container_is_started() -> None:
    world = converged(two_services())
    created = [replace(c, state="created", running=False) if c.service_name == "db" else c
               for c in world.current.containers]
    steps = plan(with_containers(world, created).current, two_services(), locked(world))
    assert one(Start, steps).container_id == world.ids[(1, "db")]


def test_dead_containers_are_removed_without_a_lock() -> None:
    world = converged(two_services())
    dead = [replace(c, state="dead", running=False) if c.service_name == "web" else c
            for c in world.current.containers]
    steps = plan(with_containers(world, dead).current, two_services(), world.ctx)
    assert kinds(steps) == ["remove"]
    assert one(Remove, steps).container_id == world.ids[(1, "web")]
    # once removed, the service is created again
    alive = [c for c in world.current.containers if c.service_name != "web"]
    steps = plan(with_containers(world, alive).current, two_services(), locked(world))
    assert one(Start, steps).spec.service_name == "web"


def test_duplicates_keep_the_newest_and_kill_the_rest() -> None:
    target = two_services()
    world = converged(target)
    web = next(c for c in world.current.containers if c.service_name == "web")
    older = replace(web, id="older", name="web_1_1_x", created="2023-01-01T00:00:00Z")
    world = with_containers(world, [older, *world.current.containers])
    steps = plan(world.current, target, locked(world))
    assert [k.container_id for k in of(Kill, steps)] == ["older"]
    assert not of(Start, steps) and not of(UpdateMetadata, steps)


# ---------------------------------------------------------------------------- dependencies

def chain() -> TargetState:
    return make_target(apps=[make_app(1, [make_service("db"),
                                          make_service("api", depends_on=["db"]),
                                          make_service("ui", depends_on=["api"])])])


def test_dependent_waits_until_its_dependency_is_started() -> None:
    target = chain()
    world = converged(target)
    ctx = locked(world)
    steps = plan(make_current(images=target_images(target),
                              networks=network_infos(target, 1)), target, ctx)
    assert [s.spec.service_name for s in of(Start, steps)] == ["db"]
    db = make_container(target, 1, "db", ctx, state="created")
    steps = plan(make_current([db], images=target_images(target),
                              networks=network_infos(target, 1)), target, ctx)
    assert [s.container_id for s in of(Start, steps)] == [db.id]  # api still waits
    db = replace(db, state="running", running=True)
    steps = plan(make_current([db], images=target_images(target),
                              networks=network_infos(target, 1)), target, ctx)
    assert [s.spec.service_name for s in of(Start, steps)] == ["api"]


def test_dependency_with_running_false_counts_once_created() -> None:
    target = make_target(apps=[make_app(1, [make_service("db", running=False),
                                            make_service("api", depends_on=["db"])])])
    world = converged(target)
    current = with_containers(world, [c for c in world.current.containers
                                      if c.service_name == "db"]).current
    steps = plan(current, target, locked(world))
    assert [s.spec.service_name for s in of(Start, steps)] == ["api"]


def test_dependency_being_updated_holds_back_the_dependent() -> None:
    target = chain()
    world = converged(target)
    stale = [replace(c, config_hash="stale") if c.service_name == "db" else c
             for c in world.current.containers if c.service_name != "api"]
    steps = plan(with_containers(world, stale).current, target, locked(world))
    assert [k.service_name for k in of(Kill, steps)] == ["db"]
    assert not of(Start, steps)


def test_network_mode_service_joins_the_kept_container_and_follows_it() -> None:
    target = make_target(apps=[make_app(1, [make_service("vpn"),
                                            make_service("app", network_mode="service:vpn")])])
    world = converged(target)
    app = next(c for c in world.current.containers if c.service_name == "app")
    assert app.network_mode == f"container:{world.ids[(1, 'vpn')]}"
    # vpn replaced by a new container: app must be recreated to join it
    vpn = next(c for c in world.current.containers if c.service_name == "vpn")
    moved = replace(vpn, id="vpn2")
    steps = plan(with_containers(world, [moved, app]).current, target, locked(world))
    assert [k.container_id for k in of(Kill, steps)] == [app.id]
    # without any vpn container the app is not created (nothing to join) and nothing raises
    steps = plan(with_containers(world, []).current, target, locked(world))
    assert [s.spec.service_name for s in of(Start, steps)] == ["vpn"]
    steps = plan(with_containers(world, [moved]).current, target, locked(world))
    start = one(Start, steps)
    assert start.spec.body["HostConfig"]["NetworkMode"] == "container:vpn2"


# ---------------------------------------------------------------------------- networks, volumes

def storage(**volume: Any) -> TargetState:
    return make_target(apps=[make_app(
        1, [make_service("db", volumes=["data:/data"], networks=["back"]),
            make_service("web")],
        volumes={"data": volume}, networks={"back": {}})])


def test_networks_and_volumes_are_created_before_their_services() -> None:
    target = storage()
    world = converged(target)
    bare = make_current(images=target_images(target))
    steps = plan(bare, target, locked(world))
    assert sorted(acts(steps)) == ["createNetwork", "createNetwork", "createVolume"]
    with_net = make_current(images=target_images(target), networks=network_infos(target, 1))
    steps = plan(with_net, target, locked(world))
    assert [s.spec.service_name for s in of(Start, steps)] == ["web"]  # db waits for data
    assert [v.spec.name for v in of(CreateVolume, steps)] == ["1_data"]
    ready = make_current(images=target_images(target), networks=network_infos(target, 1),
                         volumes=volume_infos(target, 1))
    steps = plan(ready, target, locked(world))
    assert sorted(s.spec.service_name for s in of(Start, steps)) == ["db", "web"]


def test_changed_volume_kills_its_users_first_then_recreates() -> None:
    old = storage()
    world = converged(old)
    target = storage(driver_opts={"type": "tmpfs"})
    steps = plan(world.current, target, locked(world))
    assert [k.service_name for k in of(Kill, steps)] == ["db"]
    assert not of(RemoveVolume, steps)  # still mounted
    without_db = with_containers(world, [c for c in world.current.containers
                                         if c.service_name != "db"])
    steps = plan(without_db.current, target, locked(world))
    assert [r.name for r in of(RemoveVolume, steps)] == ["1_data"]
    assert not of(Start, steps)


def test_changed_network_kills_its_users_first() -> None:
    old = storage()
    world = converged(old)
    target = make_target(apps=[make_app(
        1, [make_service("db", volumes=["data:/data"], networks=["back"]), make_service("web")],
        volumes={"data": {}}, networks={"back": {"internal": True}})])
    steps = plan(world.current, target, locked(world))
    assert [k.service_name for k in of(Kill, steps)] == ["db"]
    assert not of(RemoveNetwork, steps)


def test_unreferenced_volumes_are_kept() -> None:
    world = converged(storage())
    target = make_target(apps=[make_app(1, [make_service("db", networks=["back"]),
                                            make_service("web")], networks={"back": {}})])
    only_web = with_containers(world, [c for c in world.current.containers
                                       if c.service_name == "web"])
    steps = plan(only_web.current, target, locked(world))
    assert not of(RemoveVolume, steps)


def test_app_removal_order_lock_kill_networks_volumes_release() -> None:
    world = converged(storage())
    gone = make_target(apps=[])
    assert kinds(plan(world.current, gone, world.ctx)) == ["takeLock"]
    ctx = locked(world)
    steps = plan(world.current, gone, ctx)
    assert sorted(k.service_name for k in of(Kill, steps)) == ["db", "web"]
    assert kinds(steps) == ["kill", "kill"]
    no_containers = with_containers(world, []).current
    ctx = replace(ctx, keep_images=True)
    steps = plan(no_containers, gone, ctx)
    assert kinds(steps) == ["removeNetwork", "removeNetwork"]
    no_networks = replace(no_containers, networks=())
    assert kinds(plan(no_networks, gone, ctx)) == ["removeVolume"]
    nothing = replace(no_networks, volumes=())
    assert kinds(plan(nothing, gone, ctx)) == ["releaseLock"]
    assert plan(nothing, gone, replace(ctx, locked_apps=frozenset())) == ()


def test_app_removal_keeps_volumes_when_asked() -> None:
    world = converged(storage())
    current = replace(world.current, containers=(), networks=())
    assert plan(current, make_target(apps=[]), replace(world.ctx, keep_volumes=True,
                                                       keep_images=True)) == ()


def test_app_removal_never_removes_volumes_it_did_not_create() -> None:
    theirs = VolumeInfo(name="1_theirs", app_id=1, app_uuid=None)
    current = make_current(volumes=[theirs])
    assert plan(current, make_target(apps=[]), make_ctx()) == ()


def test_app_removal_waits_for_dead_containers_before_resources() -> None:
    world = converged(storage())
    dead = [replace(c, state="dead", running=False) for c in world.current.containers]
    steps = plan(with_containers(world, dead).current, make_target(apps=[]), world.ctx)
    assert kinds(steps) == ["remove", "remove"]


def test_duplicate_networks_are_removed() -> None:
    target = storage()
    world = converged(target)
    net = world.current.networks[0]
    dup = replace(net, id="zz-duplicate")
    current = replace(world.current, networks=(*world.current.networks, dup))
    steps = plan(current, target, world.ctx)
    assert [(r.network_id, r.name) for r in of(RemoveNetwork, steps)] == [("zz-duplicate",
                                                                          net.name)]


def test_unlabelled_volume_with_the_target_name_is_used_as_is() -> None:
    target = storage()
    world = converged(target)
    vols = tuple(replace(v, labels={}, config_hash=None) for v in world.current.volumes)
    assert plan(replace(world.current, volumes=vols), target, world.ctx) == ()


# ---------------------------------------------------------------------------- supervisor0

def api_target(mode: str | None = None) -> TargetState:
    extra: dict[str, Any] = {"network_mode": mode} if mode else {}
    return make_target(apps=[make_app(1, [make_service(
        "web", labels={"io.balena.features.supervisor-api": "1"}, **extra)])])


def test_supervisor0_is_ensured_first_when_a_service_uses_the_api() -> None:
    target = api_target()
    steps = plan(make_current(supervisor0_ok=False), target, make_ctx(target))
    assert steps == (EnsureSupervisorNetwork(),)


def test_supervisor0_not_needed_with_host_networking_or_without_the_label() -> None:
    for target in (api_target("host"), two_services()):
        steps = plan(make_current(supervisor0_ok=False), target, make_ctx(target))
        assert not of(EnsureSupervisorNetwork, steps)


def test_supervisor0_label_in_the_composition_counts() -> None:
    # legacy io.resin.* spelling, in the composition's labels rather than the target's
    web = make_service("web", labels={"io.resin.features.supervisor-api": "true"})
    target = make_target(apps=[make_app(1, [web])])
    steps = plan(make_current(supervisor0_ok=False), target, make_ctx(target))
    assert steps == (EnsureSupervisorNetwork(),)


def test_broken_supervisor0_kills_attached_containers_first() -> None:
    target = api_target()
    world = converged(target)
    current = replace(world.current, supervisor0_ok=False)
    assert kinds(plan(current, target, world.ctx)) == ["takeLock"]
    steps = plan(current, target, locked(world))
    assert [k.service_name for k in of(Kill, steps)] == ["web"]
    gone = replace(current, containers=())
    assert plan(gone, target, locked(world)) == (EnsureSupervisorNetwork(),)


# ---------------------------------------------------------------------------- images

def test_unused_managed_images_are_removed_first_and_alone() -> None:
    target = two_services()
    world = converged(target)
    old = "registry.local/web:v0"
    current = replace(world.current, images=(*world.current.images,
                                             *make_current(images=[old]).images))
    ctx = replace(world.ctx, managed_images={**world.ctx.managed_images, old: image_id_of(old)},
                  commits={})
    steps = plan(current, target, ctx)
    assert steps == (RemoveImage(image_id=image_id_of(old), name=old),)


def test_images_not_pulled_by_us_are_never_removed() -> None:
    target = two_services()
    world = converged(target)
    theirs = "docker.io/library/alpine:latest"
    current = replace(world.current, images=(*world.current.images,
                                             *make_current(images=[theirs]).images))
    assert plan(current, target, world.ctx) == ()


def test_images_in_use_wanted_or_while_downloading_are_kept() -> None:
    target = two_services()
    world = converged(target)
    old = "registry.local/web:v0"
    current = replace(world.current, images=(*world.current.images,
                                             *make_current(images=[old]).images))
    managed = {**world.ctx.managed_images, old: image_id_of(old)}
    ctx = replace(world.ctx, managed_images=managed, downloading=frozenset({"x"}))
    assert not of(RemoveImage, plan(current, target, ctx))
    assert not of(RemoveImage, plan(current, target, replace(ctx, downloading=frozenset(),
                                                             keep_images=True)))
    used = [replace(c, image=image_id_of(old)) if c.service_name == "db" else c
            for c in world.current.containers]
    ctx = replace(world.ctx, managed_images=managed)
    assert not of(RemoveImage, plan(replace(current, containers=tuple(used)), target, ctx))


# ---------------------------------------------------------------------------- locks

def test_lock_is_taken_alone_for_every_service_of_the_app() -> None:
    world = converged(two_services())
    extra = make_container(make_target(apps=[make_app(1, [make_service("gone")])]), 1, "gone")
    world = with_containers(world, [*world.current.containers, extra])
    target = new_release(image="registry.local/web:v2")
    ctx = replace(world.ctx, image_ids={**world.ctx.image_ids, "registry.local/web:v2":
                                        image_id_of("registry.local/web:v2")})
    steps = plan(world.current, target, ctx)
    lock = one(TakeLock, steps)
    assert lock.app_id == 1 and lock.services == ("db", "gone", "web")
    assert not [s for s in steps if isinstance(s, LOCKED_KINDS)]
    steps = plan(world.current, target, replace(ctx, locked_apps=frozenset({1})))
    assert not of(TakeLock, steps)
    assert sorted(k.service_name for k in of(Kill, steps)) == ["gone", "web"]
    assert [u.service_name for u in of(UpdateMetadata, steps)] == ["db"]


def test_force_is_carried_into_the_lock() -> None:
    world = converged(two_services())
    steps = plan(world.current, new_release(), replace(world.ctx, force=True))
    assert one(TakeLock, steps).force


def test_no_lock_while_downloading() -> None:
    world = converged(two_services())
    steps = plan(world.current, new_release(image="registry.local/web:v2"), world.ctx)
    assert acts(steps) == ["fetch"]


def test_settled_app_stores_its_commit_and_releases_the_lock_together() -> None:
    target = two_services()
    world = converged(target)
    ctx = replace(locked(world), commits={})
    assert plan(world.current, target, ctx) == (UpdateCommit(app_id=1, commit="c0mm1t01"),
                                                ReleaseLock(app_id=1))
    assert plan(world.current, target, replace(world.ctx, lock_leftovers=frozenset({1}))) == (
        ReleaseLock(app_id=1),)


def test_leftover_lock_of_an_app_with_nothing_left_is_released() -> None:
    assert plan(make_current(), make_target(apps=[]),
                make_ctx(leftovers=[7])) == (ReleaseLock(app_id=7),)


def test_multi_app_targets_plan_each_app_on_its_own() -> None:
    def web2(value: str) -> AppDef:
        return make_app(2, [make_service("web", image_id=2, environment={"A": value})])

    target = make_target(apps=[make_app(1, [make_service("web")]), web2("1")])
    world = converged(target)
    app2 = make_target(apps=[make_app(1, [make_service("web")]), web2("2")])
    steps = plan(world.current, app2, locked(world, 2))
    assert [(k.app_id, k.service_name) for k in of(Kill, steps)] == [(2, "web")]
    gone = make_target(apps=[web2("1")])
    steps = plan(world.current, gone, world.ctx)
    assert one(TakeLock, steps).app_id == 1
    engine = ModelEngine(app2, world.current, commits=dict(world.ctx.commits))
    engine.run(12)
    assert {(c.app_id, c.env.get("A", "")) for c in engine.current.containers} == {
        (1, ""), (2, "2")}


# ---------------------------------------------------------------------------- reboots

REBOOT = {"io.balena.update.requires-reboot": "1"}


def test_requires_reboot_creates_requires_a_reboot_then_starts() -> None:
    target = make_target(apps=[make_app(1, [make_service("fw", labels=REBOOT)])])
    world = converged(target)
    ctx = locked(world)
    bare = make_current(images=target_images(target), networks=network_infos(target, 1))
    start = one(Start, plan(bare, target, ctx))
    assert start.start is False
    after_boot = "2024-06-01T00:00:05.000000000Z"  # BOOT is 2024-06-01T00:00:00
    fw = make_container(target, 1, "fw", ctx, state="created", created=after_boot)
    current = replace(bare, containers=(fw,))
    assert plan(current, target, ctx) == (RequireReboot(app_id=1, service_name="fw"),)
    # breadcrumb set: only waiting is left, so the plan settles (locks released) to reboot
    waiting = replace(ctx, reboot_required=True)
    assert plan(current, target, waiting) == (ReleaseLock(app_id=1),)
    assert plan(current, target, replace(waiting, locked_apps=frozenset())) == ()
    rebooted = replace(ctx, boot_time="2024-06-02T00:00:00")
    assert one(Start, plan(current, target, rebooted)).container_id == fw.id


def test_requires_reboot_is_met_by_a_reboot_in_the_same_second() -> None:
    # a dry-run reboot comes milliseconds after the container was made: the second is the
    # same, the container still predates the boot, so it starts (no second reboot)
    target = make_target(apps=[make_app(1, [make_service("fw", labels=REBOOT)])])
    ctx = locked(converged(target))
    bare = make_current(images=target_images(target), networks=network_infos(target, 1))
    fw = make_container(target, 1, "fw", ctx, state="created",
                        created="2024-06-01T10:00:00.123456789Z")
    current = replace(bare, containers=(fw,))
    rebooted = replace(ctx, boot_time="2024-06-01T10:00:00.123457Z")
    assert one(Start, plan(current, target, rebooted)).container_id == fw.id
    # made after that boot (same second, later digits): it waits for the next reboot
    before = replace(ctx, boot_time="2024-06-01T10:00:00.1234Z")
    assert plan(current, target, before) == (RequireReboot(app_id=1, service_name="fw"),)
    # a boot time without fractions is the start of its second
    assert plan(current, target, replace(ctx, boot_time="2024-06-01T10:00:00")) == \
        (RequireReboot(app_id=1, service_name="fw"),)


def test_requires_reboot_chain_needs_one_reboot() -> None:
    target = make_target(apps=[make_app(1, [
        make_service("a", labels=REBOOT), make_service("b", labels=REBOOT, depends_on=["a"])])])
    engine = ModelEngine(target, make_current())
    engine.run(20)
    assert engine.reboots == 1
    assert all(c.running for c in engine.current.containers)
    assert engine.boot_time > BOOT


# ---------------------------------------------------------------------------- robustness

def test_a_service_whose_spec_cannot_be_built_waits_alone() -> None:
    target = make_target(apps=[make_app(1, [
        make_service("api", labels={"io.balena.features.supervisor-api": "1"}),
        make_service("web")])])
    ctx = make_ctx(target, present=target_images(target), locked=[1],
                   device=make_device(None))  # no scoped API key for api
    steps = plan(make_current(images=target_images(target), networks=network_infos(target, 1)),
                 target, ctx)
    assert [s.spec.service_name for s in of(Start, steps)] == ["web"]
    assert any("api" in n.reason for n in of(Noop, steps))


def test_memoised_specs_follow_the_device_context() -> None:
    target = two_services()
    world = converged(target)
    clear_spec_cache()
    assert plan(world.current, target, world.ctx) == ()
    upgraded = replace(world.ctx, device=make_device(target, os_version="balenaOS 7.0.0"))
    steps = plan(world.current, target, replace(upgraded, locked_apps=frozenset({1})))
    assert sorted(k.service_name for k in of(Kill, steps)) == ["db", "web"]
    clear_spec_cache()
    cold = plan(world.current, target, upgraded)
    assert cold == plan(world.current, target, upgraded)


def test_steps_never_name_containers_of_other_apps_or_unknown_ids() -> None:
    world = converged(two_services())
    known = {c.id for c in world.current.containers}
    for target in (new_release(image="registry.local/web:v2"), make_target(apps=[]),
                   two_services(running=False)):
        for ctx in (world.ctx, locked(world)):
            for step in plan(world.current, target, ctx):
                assert getattr(step, "container_id", None) in (None, *known)


def test_unrelated_networks_are_left_alone() -> None:
    target = two_services()
    world = converged(target)
    foreign = NetworkInfo(id="x", name="bridge-of-someone", app_id=None, app_uuid=None)
    current = replace(world.current, networks=(*world.current.networks, foreign))
    assert plan(current, target, world.ctx) == ()


def test_hand_over_of_a_stopped_container_is_a_plain_kill() -> None:
    world = converged(two_services())
    stopped = [replace(c, state="exited", running=False) if c.service_name == "web" else c
               for c in world.current.containers]
    target = new_release(environment={"V": "2"},
                         labels={"io.balena.update.strategy": "hand-over"})
    steps = plan(with_containers(world, stopped).current, target, locked(world))
    assert not of(Handover, steps)
    assert [k.service_name for k in of(Kill, steps)] == ["web"]


def test_hand_over_fetches_first_without_a_lock() -> None:
    world = converged(two_services())
    target = new_release(image="registry.local/web:v2",
                         labels={"io.balena.update.strategy": "hand-over"})
    steps = plan(world.current, target, world.ctx)
    assert acts(steps) == ["fetch"]


def test_app_without_a_release_stops_its_services_and_keeps_its_volumes() -> None:
    world = converged(storage())
    no_release = make_target(apps=[make_app(1, commit=None)])
    steps = plan(world.current, no_release, locked(world))
    assert sorted(k.service_name for k in of(Kill, steps)) == ["db", "web"]
    empty = replace(world.current, containers=())
    steps = plan(empty, no_release, replace(locked(world), keep_images=True))
    assert sorted(r.name for r in of(RemoveNetwork, steps)) == sorted(
        n.name for n in world.current.networks)
    assert not of(RemoveVolume, steps) and not of(UpdateCommit, steps)


def test_no_service_joins_a_container_being_killed() -> None:
    """vpn is killed because its network is recreated: app must not join it meanwhile."""
    old = make_target(apps=[make_app(1, [make_service("vpn", networks=["back"])],
                                     networks={"back": {}})])
    target = make_target(apps=[make_app(1, [
        make_service("vpn", networks=["back"]), make_service("app", network_mode="service:vpn")],
        networks={"back": {"internal": True}})])
    world = converged(old)
    ctx = replace(locked(world), image_ids=make_ctx(target, present=target_images(target))
                  .image_ids)
    steps = plan(world.current, target, ctx)
    assert [k.service_name for k in of(Kill, steps)] == ["vpn"]
    assert not of(Start, steps)
