"""build_services: the statuses the API and the cloud report show (engine.md §2.1, §16)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from supervisor.model.current import ContainerInfo, Current, ImageProgress, Phase, ServiceView
from supervisor.model.status import PhaseKey, build_services
from supervisor.model.target import TargetState
from tests.builders import (
    converged,
    image_id_of,
    make_app,
    make_container,
    make_ctx,
    make_service,
    make_target,
)

WEB = "registry.local/web:v1"
DB = "registry.local/db:v1"


def target(commit: str = "c0mm1t01", release_id: int = 1) -> TargetState:
    return make_target(apps=[make_app(1, [make_service("web", image=WEB),
                                          make_service("db", image=DB)],
                                      name="shop", commit=commit, release_id=release_id)])


def build(current: Current, tgt: TargetState | None,
          phases: dict[PhaseKey, Phase] | None = None,
          downloads: dict[str, ImageProgress] | None = None,
          present: tuple[str, ...] = ()) -> dict[tuple[str, str], ServiceView]:
    views = build_services(current, tgt, phases or {}, downloads or {},
                           {n: image_id_of(n) for n in present})
    out = {(v.service_name, v.commit): v for v in views}
    assert len(out) == len(views)  # one view per service and release
    return out


def container(current: Current, service: str) -> ContainerInfo:
    return next(c for c in current.containers if c.service_name == service)


def downloading(name: str, pct: int | None, service: str = "web") -> ImageProgress:
    return ImageProgress(name=name, app_id=1, service_name=service, commit="c0mm1t01",
                         status="Downloading", progress=pct)


def test_nothing_without_target_or_containers() -> None:
    assert build_services(Current(), None, {}, {}, {}) == ()


def test_target_services_without_containers_download_with_progress() -> None:
    views = build(Current(), target(), downloads={WEB: downloading(WEB, 42)}, present=(DB,))
    web, db = views[("web", "c0mm1t01")], views[("db", "c0mm1t01")]
    assert (web.status, web.download_progress) == ("Downloading", 42)
    assert (db.status, db.download_progress) == ("Downloaded", None)
    assert web.container_id is None and web.image == WEB
    assert (web.app_name, web.app_uuid, web.release_id) == ("shop", "0001" + "a" * 28, 1)


def test_target_service_not_fetched_yet_is_downloading_from_zero() -> None:
    views = build(Current(), target())
    assert {(v.status, v.download_progress) for v in views.values()} == {("Downloading", 0)}


def test_container_statuses_follow_docker() -> None:
    tgt = target()
    world = converged(tgt)
    web, db = container(world.current, "web"), container(world.current, "db")
    for state, expected in [("running", "Running"), ("created", "Installed"),
                            ("exited", "exited"), ("dead", "Dead"), ("removing", "removing")]:
        c = replace(web, state=state, running=state == "running")
        views = build(replace(world.current, containers=(c, db)), tgt, present=(WEB, DB))
        view = views[("web", "c0mm1t01")]
        assert view.status == expected
        assert view.container_id == web.id and view.created_at == web.created
    assert views[("db", "c0mm1t01")].status == "Running"


def test_container_view_reports_the_image_name_not_the_docker_id() -> None:
    tgt = target()
    world = converged(tgt)
    views = build(world.current, tgt, present=(WEB, DB))
    web = views[("web", "c0mm1t01")]
    assert web.image == WEB  # the container was created from sha256:... (its Config.Image)
    assert container(world.current, "web").image_name.startswith("sha256:")
    # an older release's container: the name of the same image, if known
    old = replace(container(world.current, "web"), commit="old", name="web_1_0_old")
    views = build(Current(containers=(old,)), tgt, present=(WEB,))
    assert views[("web", "old")].image == WEB
    views = build(Current(containers=(old,)), tgt)
    assert views[("web", "old")].image == old.image_name


@pytest.mark.parametrize("phase", [Phase.INSTALLING, Phase.STARTING, Phase.STOPPING])
def test_in_flight_phase_overlays_the_container(phase: Phase) -> None:
    tgt = target()
    world = converged(tgt)
    views = build(world.current, tgt, phases={(1, "web", "c0mm1t01"): phase}, present=(WEB, DB))
    assert views[("web", "c0mm1t01")].status == phase.value
    assert views[("db", "c0mm1t01")].status == "Running"


@pytest.mark.parametrize("phase", [Phase.RUNNING, Phase.EXITED, Phase.DOWNLOADED, Phase.DEAD,
                                   Phase.HANDING_OVER])
def test_settled_phases_never_hide_what_docker_shows(phase: Phase) -> None:
    tgt = target()
    world = converged(tgt)
    web, db = container(world.current, "web"), container(world.current, "db")
    stopped = replace(web, state="exited", running=False)
    views = build(replace(world.current, containers=(stopped, db)), tgt,
                  phases={(1, "web", "c0mm1t01"): phase}, present=(WEB, DB))
    assert views[("web", "c0mm1t01")].status == "exited"


def test_in_flight_phase_of_a_service_without_container() -> None:
    views = build(Current(), target(), phases={(1, "web", "c0mm1t01"): Phase.INSTALLING},
                  present=(WEB, DB))
    assert views[("web", "c0mm1t01")].status == "Installing"
    assert views[("db", "c0mm1t01")].status == "Downloaded"


def test_update_in_progress_shows_old_container_and_new_download() -> None:
    old_target = target()
    world = converged(old_target)
    new_target = target(commit="c0mm1t02", release_id=2)
    progress = ImageProgress(name=WEB, app_id=1, service_name="web", commit="c0mm1t02",
                             status="Downloading", progress=7)
    views = build(world.current, new_target, downloads={WEB: progress})
    assert views[("web", "c0mm1t01")].status == "Running"
    assert (views[("web", "c0mm1t02")].status, views[("web", "c0mm1t02")].download_progress) == (
        "Downloading", 7)


def hand_over_pair() -> tuple[TargetState, ContainerInfo, ContainerInfo]:
    old_target = target()
    new_target = target(commit="c0mm1t02", release_id=2)
    ctx = make_ctx(new_target, present=(WEB, DB))
    old = make_container(old_target, 1, "web", ctx, created="2024-01-01T00:00:00Z")
    old = replace(old, id="old", name="old_" + old.name, handover_old=True)
    new = make_container(new_target, 1, "web", ctx, id="new", created="2024-01-02T00:00:00Z")
    return new_target, old, new


def test_hand_over_statuses() -> None:
    tgt, old, new = hand_over_pair()
    views = build(Current(containers=(old, new)), tgt, present=(WEB, DB))
    assert views[("web", "c0mm1t01")].status == "Handing over"
    assert views[("web", "c0mm1t02")].status == "Awaiting handover"
    # once the old one stopped, the new one is simply running
    stopped = replace(old, state="exited", running=False)
    views = build(Current(containers=(stopped, new)), tgt, present=(WEB, DB))
    assert views[("web", "c0mm1t01")].status == "exited"
    assert views[("web", "c0mm1t02")].status == "Running"


def test_two_running_containers_of_one_release_are_not_a_hand_over() -> None:
    tgt = target()
    world = converged(tgt)
    web = container(world.current, "web")
    twin = replace(web, id="twin", created="2025-01-01T00:00:00Z")
    views = build_services(Current(containers=(web, twin)), tgt, {}, {}, {})
    assert {v.status for v in views if v.service_name == "web"} == {"Running"}


def test_containers_of_apps_outside_the_target_are_listed_without_a_name() -> None:
    world = converged(target())
    views = build(world.current, make_target(apps=[]))
    assert {(v.service_name, v.app_name, v.status) for v in views.values()} == {
        ("web", "", "Running"), ("db", "", "Running")}
