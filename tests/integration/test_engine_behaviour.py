"""How the running supervisor behaves around the engine: signals, Docker events, a new
target during a pull, progress across a crash."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import docker

from tests.integration.dockerkit import push_random_image
from tests.integration.supervisor_proc import SupervisorProc, local_target

# sh as PID 1 ignores SIGTERM: trap it, or every stop waits the full 10 s grace period
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def test_sigterm_stops_the_supervisor_cleanly(
    tmp_path: Path, docker_client: Any, base_image: str
) -> None:
    # how fast is `make bench`'s question; here: it exits, with 0, and leaves the apps running
    proc = SupervisorProc(tmp_path / "sup",
                          target=local_target({"a": {"image": base_image, "command": SLEEP}}))
    proc.start()
    proc.wait_for(lambda: proc.status()["appState"] == "applied" and proc.status()["containers"],
                  what="applied")
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    proc.proc.wait(timeout=60)
    assert proc.proc.returncode == 0
    # the containers keep running without the supervisor (it is not their parent)
    (container,) = docker_client.containers.list(filters={"label": "io.balena.supervised"})
    assert container.status == "running"


def test_a_container_that_dies_shows_as_exited_and_stays_so(
    tmp_path: Path, docker_client: Any, base_image: str
) -> None:
    proc = SupervisorProc(tmp_path / "sup", target=local_target(
        {"a": {"image": base_image, "command": SLEEP, "restart": "no"}})).start()
    try:
        proc.wait_for(lambda: proc.status()["appState"] == "applied"
                      and proc.status()["containers"], what="applied")
        (container,) = docker_client.containers.list(filters={"label": "io.balena.supervised"})
        container.kill()
        proc.wait_for(lambda: [c["status"] for c in proc.status()["containers"]] == ["exited"],
                      what="exited in the status")
        # and the supervisor does not restart it (the restart policy decides): once it has
        # planned from the exited container, it has nothing to do and the container is down
        proc.wait_for(lambda: proc.status()["appState"] == "applied"
                      and proc.client.get("/v2/plan").json()["steps"] == [], what="settled")
        container.reload()
        assert container.status == "exited"
    finally:
        proc.stop()


def test_a_new_target_abandons_a_pull_in_progress(
    tmp_path: Path, docker_client: docker.DockerClient, base_image: str
) -> None:
    big = push_random_image(docker_client, "balena-py/abandoned", 300, tag=f"t{time.time_ns()}")
    proc = SupervisorProc(tmp_path / "sup").start()
    try:
        proc.post_target(local_target({"a": {"image": big, "command": SLEEP}}))
        proc.wait_for(lambda: (proc.status().get("overallDownloadProgress") or 0) > 0,
                      what="the pull to start", timeout=60)
        proc.post_target(local_target({"a": {"image": base_image, "command": SLEEP}},
                                      commit="c0ffee02", release_id=2))
        proc.wait_for(lambda: proc.status()["appState"] == "applied"
                      and any(c["status"] == "Running" for c in proc.status()["containers"]),
                      what="the new target", timeout=120)
        # NB: the engine's events show the abandoned pull still completes (and the image is
        # then removed as unused): the transfer is not cancelled at the engine (reported)
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.get(big)
            raise AssertionError("the abandoned image was pulled anyway")
    finally:
        proc.stop()


def test_progress_after_a_crash_is_the_last_recorded_not_zero(
    tmp_path: Path, docker_client: docker.DockerClient, base_image: str
) -> None:
    big = push_random_image(docker_client, "balena-py/resumed", 300, tag=f"t{time.time_ns()}")
    proc = SupervisorProc(tmp_path / "sup").start()
    seen = 0
    try:
        proc.post_target(local_target({"a": {"image": big, "command": SLEEP}}))
        seen = proc.wait_for(lambda: (p := proc.status().get("overallDownloadProgress") or 0)
                             >= 10 and p, what="progress", timeout=60)
        proc.kill(signal.SIGKILL)
        again = SupervisorProc(proc.root, port=proc.port)
        again.start()
        try:
            first = again.status().get("overallDownloadProgress")
            assert first is not None and first >= seen, (first, seen)
            again.wait_for(lambda: any(c["status"] == "Running"
                                       for c in again.status()["containers"]),
                           what="converged after the restart", timeout=120)
        finally:
            again.stop()
    finally:
        proc.stop()
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(big, force=True)


def test_reboot_stops_the_apps_first_and_a_dry_run_boots_them_again(
    sup: Any, docker_client: Any, base_image: str
) -> None:
    proc = sup(local_target({"a": {"image": base_image, "command": SLEEP}}))
    proc.wait_for(lambda: proc.status()["appState"] == "applied"
                  and proc.status()["containers"], what="applied")
    (container,) = docker_client.containers.list(filters={"label": "io.balena.supervised"})
    # a user lock refuses the reboot, and nothing is stopped
    container.exec_run(["touch", "/tmp/balena/updates.lock"])
    refused = proc.client.post("/v1/reboot")
    assert refused.status_code == 423
    assert refused.json() == {"Data": "", "Error": "Lockfile exists for { appId: 1, service: a }"}
    container.reload()
    assert container.status == "running"
    container.exec_run(["rm", "/tmp/balena/updates.lock"])

    since = int(time.time()) - 1
    resp = proc.client.post("/v1/reboot")
    assert resp.status_code == 202 and resp.json() == {"Data": "OK", "Error": None}
    proc.wait_for(lambda: "Rebooting" in proc.log(), what="the reboot", timeout=60)
    # the (dry-run) device comes back: the container runs again, same container
    proc.wait_for(lambda: docker_client.containers.get(container.id).status == "running"
                  and [e for e in docker_client.api.events(
                      since=since, until=int(time.time()), decode=True,
                      filters={"type": "container", "event": "start", "container": container.id})],
                  what="started again after the reboot", timeout=60)
    died = list(docker_client.api.events(since=since, until=int(time.time()), decode=True,
                                         filters={"type": "container", "event": "die",
                                                  "container": container.id}))
    assert died, "the app was not stopped before the reboot"


def test_shutdown_stops_the_apps_and_applies_nothing_more(
    sup: Any, docker_client: Any, base_image: str
) -> None:
    proc = sup(local_target({"a": {"image": base_image, "command": SLEEP}}))
    proc.wait_for(lambda: proc.status()["appState"] == "applied"
                  and proc.status()["containers"], what="applied")
    assert proc.client.post("/v1/shutdown").status_code == 202
    proc.wait_for(lambda: [c["status"] for c in proc.status()["containers"]] == ["exited"],
                  what="the app stopped", timeout=60)
    # The positive end of the shutdown: the host call fires (after POWER_DELAY) once the apps
    # are stopped and the loop is held; until then every Docker event of the stop has woken
    # the loop, which must not have started the app again.
    proc.wait_for(lambda: "Dry run: would shut down" in proc.log(tail=None),
                  what="the (dry-run) host shutdown", timeout=60)
    (container,) = docker_client.containers.list(all=True,
                                                  filters={"label": "io.balena.supervised"})
    assert container.status == "exited"
