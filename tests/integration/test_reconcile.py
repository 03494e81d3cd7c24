"""The reconciliation engine against the real Docker engine and the local registry.

Each test runs a real supervisor process (local mode) and checks what Docker shows.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import docker
import httpx

from tests.integration.dockerkit import push_random_image
from tests.integration.supervisor_proc import SupervisorProc, local_target

REPO = Path(__file__).resolve().parents[2]
# sh as PID 1 ignores SIGTERM: trap it, or every stop waits the full 10 s grace period
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def supervised(client: docker.DockerClient) -> list[Any]:
    return client.containers.list(all=True, filters={"label": "io.balena.supervised"})


def by_service(client: docker.DockerClient) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for c in supervised(client):
        out.setdefault(c.labels["io.balena.service-name"], []).append(c)
    return out


def running(client: docker.DockerClient, *names: str) -> bool:
    services = by_service(client)
    return all(
        len(services.get(n, [])) == 1 and services[n][0].status == "running" for n in names
    )


def test_demo_target_converges_with_labels_and_env(sup: Any, docker_client: Any) -> None:
    demo = json.loads((REPO / "fixtures/targets/demo.json").read_text())
    proc = sup(demo)
    proc.wait_for(lambda: running(docker_client, "web", "worker"), what="demo running")
    web = by_service(docker_client)["web"][0]
    labels = web.labels
    assert labels["io.balena.supervised"] == "true"
    assert labels["io.balena.app-id"] == "1"
    assert labels["io.balena.service-name"] == "web"
    assert web.name == "web_1_1_demo0001"
    env = dict(e.split("=", 1) for e in web.attrs["Config"]["Env"])
    assert env["BALENA_APP_ID"] == "1"
    assert env["BALENA_SERVICE_NAME"] == "web"
    assert env["RESIN_SERVICE_NAME"] == "web"
    assert env["BALENA_APP_LOCK_PATH"] == "/tmp/balena/updates.lock"
    assert len(env["BALENA_DEVICE_UUID"]) == 32
    assert len(env["BALENA_SUPERVISOR_API_KEY"]) == 32
    binds = web.attrs["HostConfig"]["Binds"]
    assert any(b.endswith(":/tmp/balena") for b in binds)
    status = proc.wait_for(
        lambda: (s := proc.status())["appState"] == "applied" and s, what="applied"
    )
    assert {c["serviceName"] for c in status["containers"]} == {"web", "worker"}
    assert all(c["status"] == "Running" for c in status["containers"])


def test_removed_service_goes_and_unlabelled_container_survives(
    sup: Any, docker_client: Any, base_image: str
) -> None:
    stranger = docker_client.containers.run(base_image, SLEEP, detach=True, name="stranger")
    try:
        two = local_target({"a": {"image": base_image, "command": SLEEP},
                            "b": {"image": base_image, "command": SLEEP}})
        proc = sup(two)
        proc.wait_for(lambda: running(docker_client, "a", "b"), what="a and b")
        one = local_target({"a": {"image": base_image, "command": SLEEP}})
        assert proc.post_target(one).status_code == 200
        proc.wait_for(lambda: "b" not in by_service(docker_client), what="b removed")
        assert running(docker_client, "a")
        stranger.reload()
        assert stranger.status == "running"
    finally:
        stranger.remove(force=True)


def test_missing_image_keeps_current_running_and_reports(
    sup: Any, docker_client: Any, base_image: str
) -> None:
    proc = sup(local_target({"a": {"image": base_image, "command": SLEEP}}))
    proc.wait_for(lambda: running(docker_client, "a"), what="a running")
    before = by_service(docker_client)["a"][0].id
    bad = local_target({"a": {"image": "127.0.0.1:5000/nope/missing:latest", "command": SLEEP}},
                       commit="c0ffee02", release_id=2)
    assert proc.post_target(bad).status_code == 200
    device = proc.wait_for(lambda: (d := proc.client.get("/v1/device").json())["update_failed"]
                           and d, what="update_failed", timeout=40)
    assert device["update_failed"] is True
    services = by_service(docker_client)
    assert [c.id for c in services["a"]] == [before]
    assert services["a"][0].status == "running"


def test_running_false_creates_without_starting(
    sup: Any, docker_client: Any, base_image: str
) -> None:
    proc = sup(local_target({"a": {"image": base_image, "command": SLEEP, "running": False}}))
    proc.wait_for(lambda: by_service(docker_client).get("a"), what="a created")
    proc.wait_for(lambda: proc.status()["appState"] == "applied", what="settled")
    (container,) = by_service(docker_client)["a"]
    assert container.status == "created"


def test_release_only_change_renames_and_keeps_container(
    sup: Any, docker_client: Any, base_image: str
) -> None:
    proc = sup(local_target({"a": {"image": base_image, "command": SLEEP}}))
    proc.wait_for(lambda: running(docker_client, "a"), what="a running")
    first = by_service(docker_client)["a"][0]
    new = local_target({"a": {"image": base_image, "command": SLEEP}}, commit="c0ffee02",
                       release_id=2)
    proc.post_target(new)
    proc.wait_for(lambda: [c.name for c in by_service(docker_client).get("a", [])]
                  == ["a_1_2_c0ffee02"], what="rename")
    (after,) = by_service(docker_client)["a"]
    assert after.id == first.id
    assert after.status == "running"


def test_depends_on_start_order(sup: Any, docker_client: Any, base_image: str) -> None:
    since = int(time.time()) - 1
    target = local_target({
        "front": {"image": base_image, "command": SLEEP, "depends_on": ["back"]},
        "back": {"image": base_image, "command": SLEEP},
    })
    proc = sup(target)
    proc.wait_for(lambda: running(docker_client, "front", "back"), what="both running")
    events = docker_client.api.events(since=since, until=int(time.time()) + 1, decode=True,
                                      filters={"type": "container", "event": "start"})
    order = [e["Actor"]["Attributes"].get("io.balena.service-name") for e in events]
    order = [o for o in order if o in ("front", "back")]
    assert order.index("back") < order.index("front"), order
    # the engine's order alone passes half the time for a planner that starts both at once;
    # the dashboard log does not: started together, both 'Starting' lines come before either
    # 'Started' (engine.md §17 texts)
    log = proc.wait_for(lambda: f"Started service 'front {base_image}'" in (
        text := proc.log(tail=None)) and text, what="front started in the log")
    assert log.index(f"Started service 'back {base_image}'") \
        < log.index(f"Starting service 'front {base_image}'"), log


def _event_reader(url: str, out: queue.Queue[tuple[str, dict[str, Any]]],
                  stop: threading.Event) -> None:
    """(name, data) of every server-sent event, in order, on a thread."""

    def run() -> None:
        name = ""
        with httpx.stream("GET", url, timeout=None) as resp:
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    out.put((name, json.loads(line[5:])))
                if stop.is_set():
                    return

    threading.Thread(target=run, daemon=True).start()


def test_pull_progress_while_old_runs_then_kill_after_pull(
    sup: Any, docker_client: Any, base_image: str
) -> None:
    proc = sup(local_target({"a": {"image": base_image, "command": SLEEP}}))
    proc.wait_for(lambda: running(docker_client, "a"), what="a running")
    old = by_service(docker_client)["a"][0]
    big = push_random_image(docker_client, "balena-py/big", 150, tag=f"t{int(time.time())}")
    # Every change the supervisor publishes is an event, in order (seq): unlike polling the
    # status, the stream cannot miss the intermediate percentages.
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    stop = threading.Event()
    _event_reader(f"http://127.0.0.1:{proc.port}/v2/events", events, stop)
    seen: list[tuple[str, dict[str, Any]]] = []
    try:
        name, _ = events.get(timeout=30)  # subscribed before the target changes
        assert name == "state"
        proc.post_target(local_target({"a": {"image": big, "command": SLEEP}},
                                      commit="c0ffee02", release_id=2))
        deadline = time.monotonic() + 120
        while not any(n == "service-status" and d["commit"] == "c0ffee02"
                      and d["status"] == "Running" for n, d in seen):
            assert time.monotonic() < deadline, f"new release never ran: {seen}"
            with contextlib.suppress(queue.Empty):
                seen.append(events.get(timeout=1))
    finally:
        stop.set()
    assert not [d for n, d in seen if n == "dropped"], "the reader lost events"
    progress = [d for n, d in seen if n == "download-progress" and d["image"] == big
                and d["progress"] is not None and 0 < d["progress"] < 100]
    assert progress, f"no intermediate download progress observed: {seen}"
    # kill after pull: the old container left Running only after the last partial progress
    old_left = [d["seq"] for n, d in seen if n == "service-status"
                and d["commit"] == "c0ffee01" and d["status"] != "Running"]
    assert old_left, f"the old container never stopped: {seen}"
    assert max(d["seq"] for d in progress) < min(old_left), \
        "old container killed before the pull finished"
    (new,) = by_service(docker_client)["a"]
    assert new.id != old.id
    assert new.image.tags and new.image.tags[0] == big
    docker_client.images.remove(big, force=True)


def test_sigkill_mid_apply_then_restart_converges(
    sup: Any, docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    names = [f"s{i}" for i in range(6)]
    target = local_target({n: {"image": base_image, "command": SLEEP} for n in names})
    proc = sup(target)
    # kill as soon as the first container exists: the apply is in the middle
    proc.wait_for(lambda: supervised(docker_client), what="first container", timeout=30)
    proc.kill()
    again = SupervisorProc(proc.root, port=proc.port)
    again.start()
    try:
        again.wait_for(lambda: running(docker_client, *names), what="all running", timeout=90)
        again.wait_for(lambda: again.status()["appState"] == "applied", what="applied")
        services = by_service(docker_client)
        assert all(len(services[n]) == 1 for n in names), {k: len(v) for k, v in services.items()}
    finally:
        again.stop()
