"""Current-state reporting: `PATCH /device/v3/state` with only what changed (state.md §6).

The data flow's way back to the cloud. `device_state()` turns the runtime's Snapshot (plus
probes) into the full v3 device report; `Reporter` keeps the last report the cloud
acknowledged and sends the depth-2 diff against it:

* changed top-level fields individually; the whole `apps` object when anything in it changed;
  removed keys vanish; empty objects are pruned; nothing is sent when nothing changed;
* `cpu_usage`, `cpu_temp`, `memory_usage` only change when they cross a bucket (20 %, 5 °C,
  10 MB); a diff of metrics alone waits until 300 s passed since the last report;
* at most one report per 10 s (`throttle`): changes in between are deferred, not lost;
* failures back off min(15 s * 2^k, poll interval), or as long as a Retry-After header says
  (read as seconds: upstream reads it as milliseconds, which amounts to ignoring it);
* the acknowledged report is cached in SQLite with the endpoint, uuid and boot time: a
  supervisor restart sends only differences, a reboot or a new backend a full report.

What openBalena accepts shapes the body (docs/fleet.md "Works against openBalena"): in local
mode `apps` and `logs_channel` are left out (api.md §6); a release the cloud does not know (a
commit pushed locally) is never reported, since openBalena refuses the whole PATCH with 401
for it; `status` is cut at 50 characters; `os_variant` is sent only when `dev` or `prod`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, Protocol

from supervisor.cloud.http import CloudError, Requester
from supervisor.model.current import Snapshot

_LOGGER = logging.getLogger(__name__)

METRIC_KEYS = frozenset({
    "cpu_usage", "memory_usage", "memory_total", "storage_usage", "storage_total",
    "storage_block_device", "cpu_temp", "cpu_id",
})
BUCKETS = {"cpu_usage": 20, "cpu_temp": 5, "memory_usage": 10}
THROTTLE_S = 10.0
METRICS_EVERY_S = 300.0
ERROR_BASE_S = 15.0
STATUS_MAX = 50  # characters openBalena keeps of `status`
OS_VARIANTS = ("dev", "prod")

DeviceState = dict[str, Any]


# -- building the full report ------------------------------------------------------------------


def update_status(services: Iterable[Mapping[str, Any]]) -> str:
    """A release's update_status from its services (state.md §6.3, without `rejected`)."""
    svcs = list(services)
    statuses = [str(s.get("status", "")) for s in svcs]
    if "Aborted" in statuses:
        return "aborted"
    if any(s.get("download_progress") not in (None, 100) for s in svcs):
        return "downloading"
    if any(st.lower() == "downloaded" for st in statuses):
        return "downloaded"
    if any(st in ("Installing", "Installed", "Awaiting handover") for st in statuses):
        return "applying changes"
    return "done"


def apps_state(snapshot: Snapshot, aborted: Iterable[str] = (),
               known: Collection[str] | None = None) -> dict[str, Any]:
    """The `apps` report: every app of the target, with each release it has services of.

    `aborted` names release commits whose update gave up (the failure budget): they are
    reported `aborted` whatever their services say. With `known`, only those commits are
    reported (`release_uuid` included): the others are not the cloud's releases.
    """
    target = snapshot.target
    if target is None:
        return {}
    given_up = set(aborted)
    apps: dict[str, Any] = {}
    for app in target.apps.values():
        entry: dict[str, Any] = {}
        commit = snapshot.commits.get(app.app_id)
        if commit and (known is None or commit in known):
            entry["release_uuid"] = commit
        releases: dict[str, dict[str, Any]] = {}
        for view in snapshot.services:
            if view.app_id != app.app_id or not view.commit or not view.image:
                continue
            if known is not None and view.commit not in known:
                continue
            service: dict[str, Any] = {"image": view.image, "status": view.status}
            if isinstance(view.download_progress, int):
                service["download_progress"] = view.download_progress
            release = releases.setdefault(view.commit, {"services": {}})
            release["services"][view.service_name] = service
        for release_commit, release in releases.items():
            release["update_status"] = ("aborted" if release_commit in given_up
                                        else update_status(release["services"].values()))
        entry["releases"] = releases
        apps[app.uuid] = entry
    return apps


def device_state(snapshot: Snapshot, *, api_secret: str | None, os_variant: str,
                 ip_address: str, mac_address: str, metrics: Mapping[str, Any],
                 is_undervolted: bool, status: str = "Idle", aborted: Iterable[str] = (),
                 local_mode: bool = False,
                 known: Collection[str] | None = None) -> DeviceState:
    """The full v3 report of this device (the value under its uuid, state.md §6.2).

    `local_mode`: no `apps` and no `logs_channel` (api.md §6). `known`: the commits the cloud
    knows (see `apps_state`)."""
    device = snapshot.device
    state: DeviceState = {
        "api_port": device.api_port,
        "api_secret": api_secret,
        "os_version": device.os_version,
        "supervisor_version": device.supervisor_version,
        "provisioning_progress": None,
        "provisioning_state": "",
        "status": status[:STATUS_MAX],
        "ip_address": ip_address,
        "mac_address": mac_address,
        "is_undervolted": is_undervolted,
    }
    if os_variant in OS_VARIANTS:
        state["os_variant"] = os_variant
    for key in METRIC_KEYS:
        state[key] = metrics.get(key)
    if not local_mode:
        state["logs_channel"] = None
        state["apps"] = apps_state(snapshot, aborted, known)
    return state


def reported_commits(report: Mapping[str, Any]) -> set[str]:
    """The commits a report names (`release_uuid` and release keys): the ones the cloud took."""
    found: set[str] = set()
    apps = report.get("apps")
    for app in (apps.values() if isinstance(apps, dict) else ()):
        if not isinstance(app, dict):
            continue
        if isinstance(app.get("release_uuid"), str):
            found.add(app["release_uuid"])
        if isinstance(app.get("releases"), dict):
            found.update(k for k in app["releases"] if isinstance(k, str))
    return found


# -- diffing -------------------------------------------------------------------------------------


def snap_metrics(last: Mapping[str, Any], current: DeviceState) -> DeviceState:
    """Keep the last reported value of a bucketed metric that stayed in its bucket."""
    out = dict(current)
    for key, size in BUCKETS.items():
        old, new = last.get(key), current.get(key)
        if isinstance(old, int | float) and isinstance(new, int | float) \
                and not isinstance(old, bool) and not isinstance(new, bool) \
                and int(old // size) == int(new // size):
            out[key] = old
    return out


def state_diff(last: Mapping[str, Any], current: Mapping[str, Any]) -> DeviceState:
    """Depth-2 diff: changed top-level fields, whole; empty objects pruned."""
    diff = {k: v for k, v in current.items() if k not in last or last[k] != v}
    pruned = prune(diff)
    return pruned if isinstance(pruned, dict) else {}


def prune(value: Any) -> Any:
    """Drop empty objects, recursively (an object emptied by pruning goes too)."""
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        item = prune(item)
        if isinstance(item, dict) and not item:
            continue
        out[key] = item
    return out


def metrics_only(diff: Mapping[str, Any]) -> bool:
    return bool(diff) and all(key in METRIC_KEYS for key in diff)


# -- the reporter ----------------------------------------------------------------------------


class ReportCache(Protocol):
    async def report_cache(self) -> dict[str, Any] | None: ...

    async def set_report_cache(self, body: Mapping[str, Any]) -> None: ...


class Reporter:
    def __init__(
        self,
        *,
        client: Requester,
        uuid: Callable[[], str],
        collect: Callable[[], Awaitable[DeviceState]],
        cache: ReportCache,
        cache_key: Mapping[str, Any],
        interval_ms: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        throttle: float = THROTTLE_S,
        metrics_every: float = METRICS_EVERY_S,
        log: Callable[[str], None] = _LOGGER.info,
    ) -> None:
        self._client = client
        self._uuid = uuid
        self._collect = collect
        self._cache = cache
        self._cache_key = dict(cache_key)
        self._interval_ms = interval_ms
        self._clock = clock
        self._sleep = sleep
        self.throttle = throttle
        self.metrics_every = metrics_every
        self._log = log
        self._changed = asyncio.Event()
        self.last: DeviceState = {}  # the last report the cloud acknowledged (full state)
        self.last_sent: float | None = None
        self._last_attempt: float | None = None
        self.failures = 0

    def changed(self) -> None:
        """Something in the state changed: report soon (throttled)."""
        self._changed.set()

    async def load_cache(self) -> None:
        body = await self._cache.report_cache()
        if not body or not isinstance(body.get("state"), dict):
            return
        if all(body.get(k) == v for k, v in self._cache_key.items()):
            self.last = dict(body["state"])

    async def report_once(self) -> bool:
        """Collect, diff, send if worth it. True when a report was sent."""
        current = snap_metrics(self.last, await self._collect())
        diff = state_diff(self.last, current)
        if not diff:
            return False
        recent = self.last_sent is not None and \
            self._clock() - self.last_sent < self.metrics_every
        if metrics_only(diff) and recent:
            return False
        answer = await self._client.request("PATCH", "/device/v3/state",
                                            body={self._uuid(): diff})
        if not answer.ok:
            raise answer.error("state report failed")
        self.last = current
        self.last_sent = self._clock()
        await self._cache.set_report_cache({**self._cache_key, "state": current})
        return True

    def error_delay(self, err: CloudError) -> float:
        """The pause after the `failures`-th failed report in a row."""
        if err.retry_after is not None:
            return err.retry_after
        interval = max(1.0, self._interval_ms() / 1000)
        return min(ERROR_BASE_S * 2 ** (self.failures - 1), interval)

    async def run(self) -> None:
        await self.load_cache()
        self._changed.set()  # report at start
        while True:
            await self._wait(self.throttle)  # a change, or the timer (metrics, deferred)
            if self._last_attempt is not None:
                pause = self.throttle - (self._clock() - self._last_attempt)
                if pause > 0:
                    await self._sleep(pause)
            self._changed.clear()
            self._last_attempt = self._clock()
            await self.cycle()

    async def cycle(self) -> bool:
        """One attempt; a failure sleeps its backoff and leaves the report pending."""
        try:
            sent = await self.report_once()
        except CloudError as err:
            self.failures += 1
            delay = self.error_delay(err)
            self._log(f"Failed to report current state, retrying in {delay:.0f} s: {err}")
            self._changed.set()
            await self._sleep(delay)
            return False
        self.failures = 0
        return sent

    async def _wait(self, seconds: float) -> None:
        if self._changed.is_set():
            return
        waiter = asyncio.ensure_future(self._changed.wait())
        timer = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            timer.cancel()
