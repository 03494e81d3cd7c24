"""CloudSync: the managed device's link to its cloud (state.md §4-§8), one task of the runtime.

`run()` provisions first (retrying until it succeeds), then runs, each guarded:

* the poller: targets in (`Runtime.set_target(..., source="cloud")`, then the raw body and its
  ETag cached with `store.save_target("cloud", body, etag)`, so an offline boot runs it);
* the reporter: the snapshot out as diffed `PATCH /device/v3/state`;
* the tag reporter (`PATCH /device/v3/tags`);
* a watcher that wakes the reporter when the snapshot changes and feeds the failure budget.

The runtime calls `poll_now(force, cancel)` for `POST /v1/update`, `healthy()` for
`GET /v1/healthy`, and `set_tags()` / `get_tags()` for `/v2/device/tags`.
Nothing runs for an unmanaged device (no apiEndpoint): the runtime does not create CloudSync.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Protocol

from supervisor import COMPAT_VERSION, system
from supervisor.board.profiles import BoardProfile
from supervisor.cloud.cloudlogs import CloudLogs
from supervisor.cloud.failures import FailureBudget, config_var, limit_from, target_hash
from supervisor.cloud.http import CloudClient, tls_context
from supervisor.cloud.initial_config import report_initial_config
from supervisor.cloud.poller import Poller
from supervisor.cloud.provision import DeviceInfo, provision, registration_device_type
from supervisor.cloud.reporter import DeviceState, Reporter, device_state, reported_commits
from supervisor.cloud.tags import TagReporter
from supervisor.device_config import DeviceConfiguration
from supervisor.errors import ConfigError, SupervisorError, TargetInvalid
from supervisor.logs import LogHub
from supervisor.model.config_vars import DeviceConfig
from supervisor.model.current import Snapshot
from supervisor.model.target import TargetState, parse_target, to_v3
from supervisor.reconciler import Reconciler
from supervisor.settings import Settings
from supervisor.store import AsyncStore


class Runtime(Protocol):
    """The running supervisor as the cloud link sees it (runtime.py implements it; nothing
    here imports the runtime)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def board(self) -> BoardProfile: ...

    @property
    def device_config(self) -> DeviceConfiguration: ...

    @property
    def local_mode(self) -> bool: ...

    @property
    def logs(self) -> LogHub: ...

    @property
    def store(self) -> AsyncStore: ...

    @property
    def target(self) -> TargetState | None: ...

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def reconciler(self) -> Reconciler: ...

    def log(self, message: str) -> None: ...

    async def set_target(self, target: TargetState, *, source: str,
                         force: bool = False) -> None: ...

_LOGGER = logging.getLogger(__name__)

WATCH_EVERY_S = 0.5
NETWORK_EVERY_S = 30.0  # ip/mac addresses (state.md §6.5)
UNDERVOLT_EVERY_S = 300.0
GUARD_RESTART_S = 5.0
OS_RELEASE = Path("/etc/os-release")


class CloudSync:
    def __init__(self, runtime: Runtime, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._rt = runtime
        self._clock = clock
        self._sleep = sleep
        cfg = runtime.settings.config_json
        self._config = cfg
        self.provisioned = asyncio.Event()
        self._os: dict[str, str] = {}  # /etc/os-release, read when run() starts
        tls = _tls(cfg.get("balenaRootCA"))
        self.client = CloudClient(lambda: cfg.api_endpoint, api_key=lambda: cfg.device_api_key,
                                  user_agent=self._user_agent(), ssl_context=tls)
        self.logs = CloudLogs(runtime.logs, target=lambda: runtime.target,
                              local_mode=lambda: runtime.local_mode, ssl_context=tls)
        self.poller = Poller(client=self.client, uuid=lambda: cfg.uuid, sink=self,
                             interval_ms=self.poll_interval_ms,
                             instant_updates=self.instant_updates, clock=clock, sleep=sleep,
                             log=runtime.log)
        self.reporter = Reporter(
            client=self.client, uuid=lambda: cfg.uuid, collect=self.collect,
            cache=runtime.store, interval_ms=self.poll_interval_ms, clock=clock, sleep=sleep,
            cache_key={"endpoint": cfg.api_endpoint, "uuid": cfg.uuid,
                       "boot_time": int(system.boot_time())},
        )
        self.tags = TagReporter(client=self.client, uuid=lambda: cfg.uuid, store=runtime.store,
                                interval_ms=self.poll_interval_ms, sleep=sleep)
        self.budget = FailureBudget(runtime.store, limit=lambda: limit_from(self._target_config()),
                                    log=runtime.log)
        self._net: tuple[float, str, str] | None = None
        self._undervolt: tuple[float, bool] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._hashed: tuple[TargetState, str] | None = None

    # -- what the runtime calls ------------------------------------------------------------------

    async def run(self) -> None:
        rt = self._rt
        self._os = await asyncio.to_thread(_os_release)
        self.client.user_agent = self._user_agent()
        await provision(self.client, self._config, await self._device_info(),
                        sleep=self._sleep, log=rt.log)
        self.provisioned.set()
        await self._initial_config()  # before the first poll can rewrite the boot config
        self.poller.etag = await rt.store.target_etag("cloud")
        await self.budget.set_target(self._current_hash())
        if self.budget.exhausted:  # given up on before the restart: still given up on
            self._hold(self.budget.reason or "")
        cfg = self._config
        logs = functools.partial(self.logs.run, cfg.logs_endpoint or cfg.api_endpoint, cfg.uuid,
                                 cfg.device_api_key)
        try:
            async with asyncio.TaskGroup() as group:
                for name, job in (("cloud-poll", self.poller.run),
                                  ("cloud-report", self.reporter.run),
                                  ("cloud-tags", self.tags.run), ("cloud-watch", self._watch),
                                  ("cloud-logs", logs)):
                    group.create_task(self._guard(name, job), name=name)
        finally:
            await self.logs.close()

    def poll_now(self, force: bool = False, cancel: bool = False) -> None:
        """`POST /v1/update`: fetch the target now (a 304 re-applies with force/cancel)."""
        if force:
            self._spawn(self._reset_budget())
        if not self.provisioned.is_set():
            _LOGGER.info("update requested before provisioning finished: ignored")
            return
        self.poller.poll_now(force=force, cancel=cancel)

    def instant_updates(self) -> bool:
        """`SUPERVISOR_INSTANT_UPDATE_TRIGGER` (default true): /v1/update without force acts."""
        return DeviceConfig.of(self._target_config()).instant_updates

    def healthy(self) -> tuple[bool, str]:
        """state.md §7: unhealthy when no target poll succeeded for 2 x the poll interval."""
        return self.poller.healthy()

    async def set_tags(self, tags: Mapping[str, str]) -> None:
        await self.tags.set_tags(tags)

    async def get_tags(self) -> list[dict[str, Any]]:
        return await self.tags.get_tags()

    def poll_interval_ms(self) -> int:
        """`SUPERVISOR_POLL_INTERVAL` from the target's device config, else the setting.

        An invalid value counts as upstream's default (900000 ms); an unset one leaves the
        setting (`--poll-interval` / config.json) in charge."""
        config = self._target_config()
        if config_var(config, "SUPERVISOR_POLL_INTERVAL") is None:
            return self._rt.settings.poll_interval_ms
        value = DeviceConfig.of(config).number("SUPERVISOR_POLL_INTERVAL")
        return value if value > 0 else self._rt.settings.poll_interval_ms

    # -- TargetSink: what the poller hands over --------------------------------------------------

    async def new_target(self, body: Any, etag: str | None, *, force: bool) -> None:
        rt = self._rt
        try:
            target = parse_target(body, device_uuid=self._config.uuid)
        except TargetInvalid as err:
            rt.log(f"Could not move to new release: Invalid target state. {err}")
            raise
        await self.budget.set_target(target_hash(to_v3(target)))
        if force:
            await self.budget.reset()
        await rt.set_target(target, source="cloud", force=force)
        # After set_target, which stores the parsed target without its ETag.
        await rt.store.save_target("cloud", body, etag)
        self.reporter.changed()

    async def reapply(self, *, force: bool, cancel: bool) -> None:
        reconciler = self._rt.reconciler
        if cancel:
            reconciler.target_changed(force=force)
        else:
            reconciler.mark_dirty(force=force)

    # -- the report --------------------------------------------------------------------------

    async def collect(self) -> DeviceState:
        rt = self._rt
        snapshot = rt.snapshot
        now = self._clock()
        if self._net is None or now - self._net[0] >= NETWORK_EVERY_S:
            ips = await asyncio.to_thread(system.ip_addresses)
            macs = await asyncio.to_thread(system.mac_addresses)
            self._net = (now, " ".join(ips), " ".join(macs))
        if self._undervolt is None or now - self._undervolt[0] >= UNDERVOLT_EVERY_S:
            self._undervolt = (now, await asyncio.to_thread(system.undervoltage_detected))
        metrics: dict[str, Any] = {}
        if DeviceConfig.of(self._target_config()).hardware_metrics:
            info = await asyncio.to_thread(system.probe, rt.settings.data_dir)
            metrics = info.metrics()
        status = "Idle"
        aborted: tuple[str, ...] = ()
        if self.budget.exhausted:
            status = f"Update failed: {self.budget.reason or 'unknown error'}"
            aborted = self._pending_commits()
        return device_state(
            snapshot, api_secret=self._global_key(), os_variant=self._os_variant(),
            ip_address=self._net[1], mac_address=self._net[2], metrics=metrics,
            is_undervolted=self._undervolt[1], status=status, aborted=aborted,
            local_mode=rt.local_mode, known=self._known_commits(),
        )

    def _known_commits(self) -> set[str]:
        """Commits the cloud knows: its target's, and those it already took in a report."""
        target = self._rt.target if not self._rt.local_mode else None
        known = reported_commits(self.reporter.last)
        for app in (target.apps.values() if target is not None else ()):
            if app.release is not None:
                known.add(app.release.commit)
        return known

    # -- internals ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Wake the reporter on snapshot changes; count failed apply rounds."""
        seq, seen_failures, settled_at = -1, 0, 0.0
        while True:
            state = self._rt.reconciler.state
            snapshot = self._rt.snapshot
            if snapshot.seq != seq:
                seq = snapshot.seq
                self.reporter.changed()
            await self.budget.set_target(self._current_hash())
            # waiting on a user update lock is the app's choice, not a failing target
            if state.failures > seen_failures and state.last_error_locked is None:
                for _ in range(state.failures - seen_failures):
                    if await self.budget.failed(state.last_error or "unknown error"):
                        self._hold(self.budget.reason or "")
                        self.reporter.changed()
            seen_failures = state.failures
            if state.last_success != settled_at:
                settled_at = state.last_success
                if settled_at and not state.failures:
                    await self.budget.reset()
            await self._sleep(WATCH_EVERY_S)

    async def _reset_budget(self) -> None:
        await self.budget.reset()
        self.reporter.changed()

    def _hold(self, reason: str) -> None:
        # the loop keeps what runs and stops retrying until the target changes or an update
        # is forced (target_changed() / mark_dirty(force=True) clear the hold)
        self._rt.reconciler.hold(reason)

    def _current_hash(self) -> str | None:
        target = self._rt.target
        if target is None:
            return None
        if self._hashed is None or self._hashed[0] is not target:
            self._hashed = (target, target_hash(to_v3(target)))
        return self._hashed[1]

    def _pending_commits(self) -> tuple[str, ...]:
        """The target's releases the device is not running yet (all of them if none)."""
        target = self._rt.target
        if target is None:
            return ()
        commits = self._rt.snapshot.commits
        wanted = {app.app_id: app.release.commit for app in target.apps.values()
                  if app.release is not None}
        pending = tuple(c for app_id, c in wanted.items() if commits.get(app_id) != c)
        return pending or tuple(wanted.values())

    def _target_config(self) -> Mapping[str, str]:
        target = self._rt.target
        return target.config if target is not None else {}

    def _global_key(self) -> str | None:
        for key in self._rt.store.api_keys_cached():
            if key.app_id == 0 and key.service_name is None and key.is_global:
                return key.key
        return None

    def _os_variant(self) -> str:
        """`dev` or `prod` (openBalena drops anything else): os-release VARIANT_ID when it is
        one of them, else config.json `developmentMode`."""
        variant = self._os.get("VARIANT_ID")
        if variant in ("dev", "prod"):
            return variant
        return "dev" if self._config.development_mode else "prod"

    def _user_agent(self) -> str:
        pretty = self._os.get("PRETTY_NAME", "unknown")
        return f"Supervisor/{COMPAT_VERSION} (Linux; {pretty}; {self._os_variant()})"

    async def _device_info(self) -> DeviceInfo:
        rt = self._rt
        macs = await asyncio.to_thread(system.mac_addresses)
        return DeviceInfo(
            device_type=registration_device_type(rt.settings.device_type, rt.board.slug),
            supervisor_version=COMPAT_VERSION,
            os_version=self._os.get("PRETTY_NAME", "unknown"),
            os_variant=self._os_variant(),
            mac_address=" ".join(macs),
        )

    async def _initial_config(self) -> None:
        """state.md §4.3, retried every bootstrapRetryDelay until it succeeds."""
        cfg, rt = self._config, self._rt
        while True:
            try:
                await report_initial_config(
                    self.client, rt.store, uuid=cfg.uuid, device_id=cfg.device_id or 0,
                    api_endpoint=cfg.api_endpoint, current=rt.device_config.current)
                return
            except SupervisorError as err:  # the cloud, or a boot config file unreadable
                _LOGGER.warning("Initial configuration report failed, retrying: %s", err)
            await self._sleep(cfg.bootstrap_retry_delay / 1000)

    async def _guard(self, name: str, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Keep an eternal task alive: a crash is logged and the task restarted."""
        while True:
            try:
                await job()
                _LOGGER.error("%s returned; restarting it", name)
            except asyncio.CancelledError:
                raise
            except Exception:
                _LOGGER.exception("%s crashed; restarting it in %.0f s", name, GUARD_RESTART_S)
            await self._sleep(GUARD_RESTART_S)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _tls(root_ca: object) -> ssl.SSLContext | None:
    """The TLS context of every cloud call: the system's CAs plus config.json `balenaRootCA`."""
    if not root_ca:
        return None
    try:
        return tls_context(str(root_ca))
    except ConfigError as err:
        _LOGGER.error("%s: using the system's CAs only", err)
        return None


def _os_release(path: Path = OS_RELEASE) -> dict[str, str]:
    values: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"')
    return values
