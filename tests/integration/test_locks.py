"""Update locks and update strategies on the real engine (spec locks.md, engine.md §8).

Images are pulled from the local registry so that the order of Docker events (pull, kill,
start, image delete) shows what each strategy does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from supervisor.store import Store
from tests.integration.dockerkit import push_random_image
from tests.integration.supervisor_proc import SupervisorProc, local_target

# sh as PID 1 ignores SIGTERM: trap it, or every stop waits the full 10 s grace period
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
SUPERVISOR_UID = 65534


def containers(client: docker.DockerClient, service: str = "a") -> list[Any]:
    return client.containers.list(all=True, filters={
        "label": ["io.balena.supervised", f"io.balena.service-name={service}"]})


def running_image(client: docker.DockerClient, image: str, service: str = "a") -> bool:
    try:
        found = containers(client, service)
        return len(found) == 1 and found[0].status == "running" and image in found[0].image.tags
    except docker.errors.NotFound:
        return False  # a container listed went away before we inspected it


@pytest.fixture
def two_images(docker_client: docker.DockerClient) -> Any:
    stamp = f"{os.getpid()}-{time.time_ns()}"
    first = push_random_image(docker_client, "balena-py/lock-a", 8, tag=f"v1-{stamp}")
    second = push_random_image(docker_client, "balena-py/lock-a", 8, tag=f"v2-{stamp}")
    yield first, second
    for ref in (first, second):
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(ref, force=True)


def service(image: str, strategy: str | None = None, **extra: Any) -> dict[str, Any]:
    labels = {"io.balena.update.strategy": strategy} if strategy else {}
    labels.update(extra.pop("labels", {}))
    return {"image": image, "command": extra.pop("command", SLEEP), "labels": labels, **extra}


def docker_stamp(ns: int) -> str:
    """A time as the events API takes it, to the nanosecond (`<seconds>.<nanoseconds>`)."""
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def events(client: docker.DockerClient, since_ns: int) -> list[dict[str, Any]]:
    """The engine's events from `since_ns` until now (same host, same clock). The engine
    records an event before it answers the call that caused it, so every event of what we
    waited for is in; `until` in the past makes the call return at once."""
    return list(client.api.events(since=docker_stamp(since_ns),
                                  until=docker_stamp(time.time_ns()), decode=True))


def first(evts: list[dict[str, Any]], kind: str, action: str, match: Any) -> int:
    for index, evt in enumerate(evts):
        if evt.get("Type") == kind and evt.get("Action") == action and match(evt):
            return index
    seen = [(e.get("Type"), e.get("Action")) for e in evts]
    raise AssertionError(f"no {kind} {action} event in {seen}")


def update_and_order(sup: Any, client: docker.DockerClient, images: tuple[str, str],
                     strategy: str, **extra: Any) -> tuple[dict[str, int], SupervisorProc]:
    img1, img2 = images
    proc = sup(local_target({"a": service(img1, strategy)}))
    proc.wait_for(lambda: running_image(client, img1), what="v1 running", timeout=90)
    proc.wait_for(lambda: proc.status()["appState"] == "applied", what="v1 applied")
    old = containers(client)[0]
    old_image = old.image.id
    # from now on, to the nanosecond: the fixture's own pushes and removals of these images
    # happened just before and must stay out of the window
    since = time.time_ns()
    proc.post_target(local_target({"a": service(img2, strategy, **extra)}, commit="c0ffee02",
                                  release_id=2))
    proc.wait_for(lambda: running_image(client, img2), what="v2 running", timeout=120)
    proc.wait_for(lambda: proc.status()["appState"] == "applied", what="v2 applied")
    evts = events(client, since)
    order = {
        "pull": first(evts, "image", "pull", lambda e: e["id"] == img2),
        "old_killed": first(evts, "container", "destroy", lambda e: e["id"] == old.id),
        "new_started": first(evts, "container", "start",
                             lambda e: e["Actor"]["Attributes"].get("io.balena.service-name") == "a"
                             and e["id"] != old.id),
        "old_image_removed": first(evts, "image", "delete", lambda e: e["id"] == old_image),
    }
    return order, proc


def test_download_then_kill_order(sup: Any, docker_client: Any, two_images: Any) -> None:
    o, _ = update_and_order(sup, docker_client, two_images, "download-then-kill")
    assert o["pull"] < o["old_killed"] < o["new_started"], o
    assert o["old_killed"] < o["old_image_removed"], o


def test_kill_then_download_order(sup: Any, docker_client: Any, two_images: Any) -> None:
    o, _ = update_and_order(sup, docker_client, two_images, "kill-then-download")
    assert o["old_killed"] < o["pull"] < o["new_started"], o
    # the old image stays (the new one's delta source) until the new one is in (engine.md §8)
    assert o["pull"] < o["old_image_removed"], o


def test_delete_then_download_order(sup: Any, docker_client: Any, two_images: Any) -> None:
    o, _ = update_and_order(sup, docker_client, two_images, "delete-then-download")
    assert o["old_killed"] < o["old_image_removed"] < o["pull"] < o["new_started"], o


@pytest.mark.parametrize("strategy", ["kill-then-download", "delete-then-download"])
def test_kill_first_reports_no_download_while_the_old_container_exists(
    sup: Any, docker_client: Any, two_images: Any, strategy: str
) -> None:
    # the old container ignores SIGTERM: its kill takes the 3 s grace period, a window that
    # /v2/state/status is sampled in
    img1, img2 = two_images
    slow = ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    proc = sup(local_target({"a": service(img1, strategy, command=slow,
                                          stop_grace_period="3s")}))
    proc.wait_for(lambda: running_image(docker_client, img1), what="v1 running", timeout=90)
    proc.wait_for(lambda: proc.status()["appState"] == "applied", what="v1 applied")
    old = containers(docker_client)[0]
    proc.post_target(local_target({"a": service(img2, strategy, command=slow,
                                                stop_grace_period="3s")},
                                  commit="c0ffee02", release_id=2))
    samples = 0
    deadline = time.monotonic() + 120
    while not running_image(docker_client, img2):
        assert time.monotonic() < deadline, "v2 never ran"
        body = proc.status()
        try:
            docker_client.api.inspect_container(old.id)  # after the status: it existed then
        except docker.errors.NotFound:
            continue
        samples += 1
        assert not [i for i in body["images"] if i["name"] == img2], body
        assert body["overallDownloadProgress"] is None, body
    assert samples > 0, "the old container was never seen beside a status"


def event_ns(evts: list[dict[str, Any]], action: str, container_id: str) -> int:
    """The engine's time (ns) of a container's first `action` event among `evts`."""
    return int(evts[first(evts, "container", action, lambda e: e["id"] == container_id)]
               ["timeNano"])


def hand_over_until_both_run(sup: Any, client: docker.DockerClient, images: tuple[str, str],
                             labels: dict[str, str], command: list[str] = SLEEP,
                             ) -> tuple[SupervisorProc, Any, Any]:
    """v1 then v2 under hand-over: (the supervisor, the old and the new container) once the
    new one runs."""
    img1, img2 = images
    proc = sup(local_target({"a": service(img1, "hand-over", labels=labels)}))
    proc.wait_for(lambda: running_image(client, img1), what="v1", timeout=90)
    proc.wait_for(lambda: proc.status()["appState"] == "applied", what="v1 applied")
    old = containers(client)[0]
    proc.post_target(local_target({"a": service(img2, "hand-over", labels=labels,
                                                command=command)},
                                  commit="c0ffee02", release_id=2))
    new = proc.wait_for(lambda: [c for c in containers(client)
                                 if c.id != old.id and c.status == "running"],
                        what="the new container running", timeout=120)[0]
    return proc, old, new


def test_hand_over_kills_the_old_container_when_the_file_appears(
    sup: Any, docker_client: Any, two_images: Any
) -> None:
    # engine.md §8.4: the old container goes when the new one signals completion; the timeout
    # (10 min) is far beyond every wait below, so only the file can end the hand-over
    labels = {"io.balena.update.handover-timeout": "600000"}
    # the new container says when it has run 3 s (a file in the lock dir both containers
    # share): an implementation that kills at once has done it by then
    alive = ["sh", "-c", "trap 'exit 0' TERM; sleep 3; touch /tmp/balena/alive; "
             "while true; do sleep 1; done"]
    proc, old, new = hand_over_until_both_run(sup, docker_client, two_images, labels, alive)
    lock_dir = proc.root / "locks" / "services" / "1" / "a"
    proc.wait_for(lambda: (lock_dir / "alive").exists(), what="the new container 3 s in")
    old.reload()
    assert old.status == "running", "the old container went before the hand-over signal"
    signalled = time.time_ns()
    assert new.exec_run(["touch", "/tmp/balena/handover-complete"]).exit_code == 0
    proc.wait_for(lambda: running_image(docker_client, two_images[1]), what="old killed",
                  timeout=120)
    # the engine saw the kill after the file was written (same host clock, ns stamps)
    assert event_ns(events(docker_client, signalled), "kill", old.id) >= signalled


def test_hand_over_without_file_waits_for_timeout(
    sup: Any, docker_client: Any, two_images: Any
) -> None:
    labels = {"io.balena.update.handover-timeout": "4000"}
    since = time.time_ns()
    proc, old, new = hand_over_until_both_run(sup, docker_client, two_images, labels)
    proc.wait_for(lambda: running_image(docker_client, two_images[1]), what="old killed",
                  timeout=60)
    # both times from the engine's clock: the kill waited the whole timeout after the start
    evts = events(docker_client, since)
    assert event_ns(evts, "kill", old.id) - event_ns(evts, "start", new.id) >= 4 * 10**9


def test_user_lock_blocks_kill_until_released(
    sup: Any, docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    proc = sup(local_target({"a": service(base_image, "kill-then-download")}))
    proc.wait_for(lambda: len(containers(docker_client)) == 1
                  and containers(docker_client)[0].status == "running", what="running")
    proc.wait_for(lambda: proc.status()["appState"] == "applied", what="applied")
    old = containers(docker_client)[0]
    # the app takes its lock from inside its container, as the docs tell app developers
    assert old.exec_run(["sh", "-c", "touch /tmp/balena/updates.lock"]).exit_code == 0
    lock = tmp_path / "sup0" / "locks" / "services" / "1" / "a" / "updates.lock"
    assert lock.exists()
    proc.post_target(local_target({"a": service(base_image, "kill-then-download",
                                                environment={"V": "2"})},
                                  commit="c0ffee02", release_id=2))
    # the dashboard line of locks.md §6, to the byte: the first retry waits 2^1 x 500 ms
    refused = ("Updates are locked, retrying in 1s. "
               "Reason: Lockfile exists for { appId: 1, service: a }")
    proc.wait_for(lambda: refused in proc.log(tail=None), what="the lock refusal", timeout=60)
    old.reload()
    assert old.status == "running", "a user lock must block the kill"
    blocked = proc.status()["blockedBy"]
    # the lock file as the service sees it, never the host path of the locks dir
    assert blocked["appId"] == 1 and blocked["serviceName"] == "a"
    assert blocked["path"] == "/tmp/balena/updates.lock"
    locks = proc.client.get("/v2/locks").json()["locks"]
    assert [(lk["owner"], lk["serviceName"], lk["path"]) for lk in locks] == \
        [("user", "a", "/tmp/balena/updates.lock")]
    lock.unlink()
    proc.wait_for(lambda: [c for c in containers(docker_client) if c.id != old.id
                           and c.status == "running"], what="updated", timeout=60)


def test_force_overrides_user_lock(sup: Any, docker_client: Any, base_image: str,
                                   tmp_path: Path) -> None:
    proc = sup(local_target({"a": service(base_image)}))
    proc.wait_for(lambda: proc.status()["appState"] == "applied"
                  and containers(docker_client), what="applied")
    old = containers(docker_client)[0]
    assert old.exec_run(["sh", "-c", "touch /tmp/balena/updates.lock"]).exit_code == 0
    body = local_target({"a": service(base_image, environment={"V": "2"})}, commit="c0ffee02",
                        release_id=2)
    body["force"] = True
    proc.post_target(body)
    proc.wait_for(lambda: [c for c in containers(docker_client) if c.id != old.id
                           and c.status == "running"], what="forced update", timeout=30)


def test_supervisor_locks_held_during_kill_and_gone_after(
    sup: Any, docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    # SIGTERM ignored: the kill waits the 10 s stop grace period, long enough to look even
    # on a loaded machine
    slow = ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    svcs = {"a": service(base_image, command=slow, stop_grace_period="10s"),
            "b": service(base_image)}
    proc = sup(local_target(svcs))
    proc.wait_for(lambda: proc.status()["appState"] == "applied"
                  and len(containers(docker_client, "a")) == 1, what="applied")
    root = tmp_path / "sup0" / "locks" / "services" / "1"
    changed = {"a": service(base_image, command=slow, stop_grace_period="10s",
                            environment={"V": "2"}), "b": service(base_image)}
    proc.post_target(local_target(changed, commit="c0ffee02", release_id=2))
    seen = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not seen:
        files = [root / s / n for s in ("a", "b") for n in ("updates.lock", "resin-updates.lock")]
        if all(f.exists() for f in files):
            assert all(f.lstat().st_uid == SUPERVISOR_UID for f in files)
            seen = True
        time.sleep(0.05)
    assert seen, "supervisor locks never seen on every service"
    proc.wait_for(lambda: proc.status()["appState"] == "applied", what="applied", timeout=60)
    proc.wait_for(lambda: not list(root.glob("*/*updates.lock")), what="the locks released")


def test_crash_while_holding_locks_leaves_none(
    sup: Any, docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    slow = ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    proc = sup(local_target({"a": service(base_image, command=slow, stop_grace_period="10s")}))
    proc.wait_for(lambda: proc.status()["appState"] == "applied"
                  and containers(docker_client), what="applied")
    root = tmp_path / "sup0" / "locks" / "services" / "1" / "a"
    proc.post_target(local_target({"a": service(base_image, command=slow,
                                                stop_grace_period="10s",
                                                environment={"V": "2"})},
                                  commit="c0ffee02", release_id=2))
    proc.wait_for(lambda: (root / "updates.lock").exists(), what="locks taken")
    proc.kill(signal.SIGKILL)
    again = SupervisorProc(proc.root, port=proc.port).start()
    try:
        again.wait_for(lambda: again.status()["appState"] == "applied", what="applied",
                       timeout=60)
        assert not list(root.glob("*updates.lock"))
    finally:
        again.stop()


def test_requires_reboot_starts_only_after_the_reboot(
    sup: Any, docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    labels = {"io.balena.update.requires-reboot": "1"}
    proc = sup(local_target({"a": service(base_image, labels=labels)}))
    proc.wait_for(lambda: containers(docker_client)
                  and containers(docker_client)[0].status == "running",
                  what="started after the (dry-run) reboot", timeout=60)
    proc.wait_for(lambda: proc.status()["appState"] == "applied", what="applied")
    # the log is written by a listener thread: wait for the line rather than race it
    # the dashboard's text names '<service> <image>' (engine.md §17)
    log = proc.wait_for(lambda: f"Started service 'a {base_image}'" in (
        text := proc.log(tail=None)) and text, what="the start in the log", timeout=60)
    scheduled = log.index("Reboot has been scheduled to apply changes")
    rebooted = log.index("Rebooting")
    started = log.index(f"Started service 'a {base_image}'")
    assert scheduled < rebooted < started
    installed = log.index(f"Installed service 'a {base_image}'")
    assert installed < scheduled
    # exactly one reboot for the one requirement: in the log and in the host actions
    lines = log.splitlines()
    assert sum(line.endswith(": Rebooting") for line in lines) == 1, log
    assert sum('Reboot has been scheduled to apply changes: {"serviceName":"a"}' in line
               for line in lines) == 1, log
    with Store(tmp_path / "sup0" / "data" / "database.sqlite") as store:
        # (the dry-run host also records unit starts, e.g. avahi's: only power actions count)
        assert [a.action for a in store.host_actions()
                if a.action in ("reboot", "shutdown")] == ["reboot"]
    # the reboot met the requirement: the breadcrumb is gone (a reboot empties /tmp)
    assert not (tmp_path / "sup0" / "state" / "reboot-after-apply").exists()


def test_override_lock_config_ignores_user_lock(
    sup: Any, docker_client: Any, base_image: str
) -> None:
    proc = sup(local_target({"a": service(base_image)}))
    proc.wait_for(lambda: proc.status()["appState"] == "applied"
                  and containers(docker_client), what="applied")
    old = containers(docker_client)[0]
    assert old.exec_run(["sh", "-c", "touch /tmp/balena/resin-updates.lock"]).exit_code == 0
    body = local_target({"a": service(base_image, environment={"V": "2"})}, commit="c0ffee02",
                        release_id=2)
    body["local"]["config"] = {"RESIN_SUPERVISOR_OVERRIDE_LOCK": "1"}
    proc.post_target(body)
    proc.wait_for(lambda: [c for c in containers(docker_client) if c.id != old.id
                           and c.status == "running"], what="update despite the lock", timeout=30)
