"""`make bench`: planner speed, convergence time against the docker-py floor, RSS, API latency.

Every comparison is made in the same run against a floor measured on the same machine: the
same Docker calls made directly with docker-py (convergence) and a bare Starlette app on
uvicorn returning the same bytes (API). Results go to bench/results/*.json and a markdown
table to docs/benchmarks.md. Nothing here asserts: these are measurements.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.httpload import load  # noqa: E402
from tests.integration.dockerkit import ensure_base_image  # noqa: E402
from tests.integration.supervisor_proc import SupervisorProc, free_port, local_target  # noqa: E402

RESULTS = REPO / "bench" / "results"
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def docker_host() -> str:
    host = os.environ.get("DOCKER_HOST")
    if host:
        return host
    out = subprocess.run([str(REPO / "scripts/engine.sh"), "host"], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().splitlines()[-1].split("=", 1)[-1]


def clean(client: docker.DockerClient) -> None:
    for c in client.containers.list(all=True, filters={"label": "bench.floor"}):
        c.remove(force=True)
    for n in client.networks.list(filters={"label": "bench.floor"}):
        n.remove()


def floor(client: docker.DockerClient, image: str, n: int) -> float:
    """The same work done directly: one network, N containers created and started (4 threads)."""
    clean(client)
    api = client.api
    start = time.perf_counter()
    api.create_network("bench_floor", driver="bridge", labels={"bench.floor": "1"})

    def one(i: int) -> None:
        host_config = api.create_host_config(network_mode="bench_floor",
                                             restart_policy={"Name": "always"})
        cid = api.create_container(image, SLEEP, name=f"floor_{i}", labels={"bench.floor": "1"},
                                   host_config=host_config, tty=True)["Id"]
        api.start(cid)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - start
    clean(client)
    return elapsed


def converge(proc: SupervisorProc, image: str, n: int, commit: str) -> float:
    target = local_target({f"s{i}": {"image": image, "command": SLEEP} for i in range(n)},
                          commit=commit)
    start = time.perf_counter()
    assert proc.post_target(target).status_code == 200
    while True:
        status = proc.client.get("/v2/state/status").json()
        ok = [c for c in status["containers"] if c["status"] == "Running"]
        if len(ok) == n:
            return time.perf_counter() - start
        if time.perf_counter() - start > 300:
            raise RuntimeError(f"{n} services did not converge")
        time.sleep(0.01)


def empty(proc: SupervisorProc) -> None:
    body = {"local": {"name": "bench", "config": {"SUPERVISOR_LOCAL_MODE": "1"}, "apps": {}}}
    proc.post_target(body)
    proc.wait_for(lambda: not proc.client.get("/v2/state/status").json()["containers"]
                  and proc.client.get("/v2/state/status").json()["appState"] == "applied",
                  timeout=120, what="empty")


BARE = '''
import sys
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
import uvicorn
bodies = {}
for path, ctype, file in zip(sys.argv[2::3], sys.argv[3::3], sys.argv[4::3]):
    bodies[path] = (open(file, "rb").read(), ctype)
def make(path):
    body, ctype = bodies[path]
    async def handler(request):
        return Response(body, media_type=ctype)
    return handler
app = Starlette(routes=[Route(p, make(p)) for p in bodies])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
'''


def api_bench(proc: SupervisorProc, tmp: Path) -> list[dict[str, Any]]:
    paths = ["/ping", "/v1/device", "/v2/applications/state"]
    args: list[str] = []
    for path in paths:
        resp = proc.client.get(path)
        file = tmp / (path.strip("/").replace("/", "_") + ".body")
        file.write_bytes(resp.content)
        args += [path, resp.headers.get("content-type", "text/plain"), str(file)]
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE, str(port), *args])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        rows = []
        for path in paths:
            for clients in (1, 16):
                sup = asyncio.run(load("127.0.0.1", proc.port, path, clients=clients,
                                       requests=4000))
                ref = asyncio.run(load("127.0.0.1", port, path, clients=clients,
                                       requests=4000))
                rows.append({"path": path, "clients": clients, "supervisor": sup, "bare": ref,
                             "throughput_ratio": round(sup["rps"] / ref["rps"], 3)})
        return rows
    finally:
        bare.terminate()
        bare.wait()


def write(name: str, data: Any) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def render_only() -> int:
    """Rewrite docs/benchmarks.md from the last results without measuring again."""
    summary = json.loads((RESULTS / "summary.json").read_text())
    (REPO / "docs" / "benchmarks.md").write_text(render(summary))
    return 0


def main() -> int:
    os.environ["DOCKER_HOST"] = docker_host()
    meta = {"machine": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    summary: dict[str, Any] = {"meta": meta}

    try:
        from bench.plan_bench import run as plan_run
    except ImportError:
        plan_run = None
    if plan_run is not None:
        summary["plan"] = plan_run()
        write("plan", summary["plan"])

    client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
    image = ensure_base_image(client)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        proc = SupervisorProc(tmp / "sup").start()
        try:
            time.sleep(3)
            pid = proc.proc.pid if proc.proc else 0
            rss_idle = psutil.Process(pid).memory_info().rss
            converge_rows = []
            for i, n in enumerate((1, 5, 20)):
                floor_s = min(floor(client, image, n) for _ in range(3))
                sup_runs = []
                for rep in range(3):
                    sup_runs.append(converge(proc, image, n, commit=f"b{i}{rep}0000"))
                    if not (n == 20 and rep == 2):
                        empty(proc)
                sup_s = min(sup_runs)
                converge_rows.append({"services": n, "floor_s": round(floor_s, 3),
                                      "supervisor_s": round(sup_s, 3),
                                      "ratio": round(sup_s / floor_s, 3)})
            summary["converge"] = converge_rows
            write("converge", converge_rows)
            time.sleep(2)
            rss_20 = psutil.Process(pid).memory_info().rss
            summary["rss"] = {"idle_mb": round(rss_idle / 2**20, 1),
                              "after_20_services_mb": round(rss_20 / 2**20, 1)}
            write("rss", summary["rss"])
            summary["api"] = api_bench(proc, tmp)
            write("api", summary["api"])
            empty(proc)
        finally:
            proc.stop()
    write("summary", summary)
    table = render(summary)
    (REPO / "docs" / "benchmarks.md").write_text(table)
    print(table)
    return 0


def render(s: dict[str, Any]) -> str:
    out = ["# Benchmarks", "",
           f"Measured by `make bench` on {s['meta']['cpus']} CPUs, Python {s['meta']['python']},"
           f" {s['meta']['when']}. Raw numbers: `bench/results/*.json`.", ""]
    if "plan" in s:
        out += ["## plan()", "", "| case | services | median ms |", "|---|---|---|"]
        for row in s["plan"].get("rows", []):
            out.append(f"| {row['case']} | {row['services']} | {row['median_ms']} |")
        out.append("")
    out += ["## Convergence against the docker-py floor", "",
            "Time from POST of a new local target to every service Running, against the same "
            "Docker calls made directly (one network, N containers created and started on 4 "
            "threads). Best of 3.", "",
            "| services | floor s | supervisor s | ratio |", "|---|---|---|---|"]
    for row in s["converge"]:
        out.append(f"| {row['services']} | {row['floor_s']} | {row['supervisor_s']} |"
                   f" {row['ratio']} |")
    out += ["", "## Memory", "", f"- RSS idle: {s['rss']['idle_mb']} MB",
            f"- RSS after converging 20 services: {s['rss']['after_20_services_mb']} MB", "",
            "## API latency (20 services running)", "",
            "Keep-alive clients on loopback; the bare app is Starlette on uvicorn returning the "
            "same bytes.", "",
            "| path | clients | p50 ms | p99 ms | req/s | bare p99 ms | bare req/s | ratio |",
            "|---|---|---|---|---|---|---|---|"]
    for row in s["api"]:
        sup, bare = row["supervisor"], row["bare"]
        out.append(f"| {row['path']} | {row['clients']} | {sup['p50_ms']} | {sup['p99_ms']} |"
                   f" {sup['rps']} | {bare['p99_ms']} | {bare['rps']} |"
                   f" {row['throughput_ratio']} |")
    out += ["", "## Reading these numbers", "",
            "- Targets: plan() for 1,000 services under 20 ms; 20 services within 1.15x the "
            "floor; idle RSS under 50 MB; API p99 under 2 ms and at least 70% of the bare "
            "app's throughput. Upstream, on this kind of machine, idles at 108-120 MB and "
            "answers GET /v2/state/status in 7-29 ms at p99.",
            "- The machine has 2 cores shared by dockerd, the load generator and the "
            "supervisor: convergence floors vary by 10-20% between runs, and the ratios with "
            "them. With one client the latency is bound by the Python load generator (the "
            "bare app shows the same p99).",
            "- plan() \"cold\" (the first round after a new target, when every container "
            "spec is built and hashed) is slower than the converged rounds measured here; "
            "see `cold_ms` in bench/results/plan.json."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(render_only() if sys.argv[1:] == ["--render"] else main())
