"""The composition root: builds every part, owns the tasks, signals and the snapshot.

Start order: settings -> store (keys, cached target) -> engine -> locks (crash leftovers
cleaned) -> lifecycles/executor/reconciler -> API server. `publish()` replaces the immutable
Snapshot the API reads; it runs after every observation, phase change and progress event.
SIGTERM/SIGINT stop the loop and the server; the store is closed last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.handlers
import queue
import signal
import time
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

from supervisor import COMPAT_VERSION, device_flags, system
from supervisor.board.bootconfig import BootConfig, BootPaths
from supervisor.board.led import Led, make_led
from supervisor.board.profiles import BoardProfile, configs_dir, load_board
from supervisor.cloud.registry_auth import image_auth_hook
from supervisor.cloud.sync import CloudSync
from supervisor.device_config import DeviceConfiguration
from supervisor.engine.docker import DockerEngine
from supervisor.engine.logs import LogFollowers
from supervisor.engine.runner import AsyncEngine
from supervisor.errors import ConfigError, SupervisorError, TargetInvalid
from supervisor.events import EventBus
from supervisor.executor import Executor, ExecutorHooks
from supervisor.fsperm import owned_directory, secure_files
from supervisor.health import FetchTimer
from supervisor.host.actions import HostActions, choose_host_actions
from supervisor.host.breadcrumb import RebootBreadcrumb
from supervisor.host.hostconfig import secret_host_files
from supervisor.host.integration import HostIntegration
from supervisor.lifecycle import Key, Lifecycles, phase_from_container
from supervisor.locks import UpdateLocks, container_path
from supervisor.logs import LogHub
from supervisor.logsafe import EscapingFormatter
from supervisor.model.config_vars import DeviceConfig
from supervisor.model.current import (
    ContainerInfo,
    Current,
    DeviceView,
    ImageProgress,
    LockBlock,
    Phase,
    Snapshot,
)
from supervisor.model.intents import StartService
from supervisor.model.spec import DeviceContext, wants_supervisor_api
from supervisor.model.status import build_services
from supervisor.model.steps import Fetch
from supervisor.model.target import TargetState, parse_local_target, parse_target, to_v3
from supervisor.planner import PlanContext
from supervisor.reconciler import Reconciler
from supervisor.settings import Settings
from supervisor.store import AsyncStore, ImageRecord

_LOGGER = logging.getLogger(__name__)


class Runtime:
    """Everything the supervisor is, wired together. `api/actions.py` drives it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: AsyncStore
        self.engine: AsyncEngine
        self.locks = UpdateLocks(settings.locks_dir)
        self.lifecycles = Lifecycles(self._phase_changed)
        self.board: BoardProfile = load_board(settings.board, configs_dir())
        self.led: Led = make_led(self.board, str(settings.led_file) if settings.led_file else None)
        self.breadcrumb = RebootBreadcrumb(settings.state_dir)
        self.host_features = HostIntegration(settings, self.led)  # firewall, VPN, LED, ...
        self.host: HostActions
        self.target: TargetState | None = None
        self.target_source = "local" if settings.unmanaged else "cloud"
        self.downloads: dict[str, ImageProgress] = {}
        self.commits: dict[int, str] = {}
        self.image_ids: dict[str, str] = {}
        self.device_name = ""
        self.system_log: deque[tuple[float, str]] = deque(maxlen=500)
        self.log_listeners: list[Any] = []
        self.logs = LogHub()
        self.events = EventBus()
        self.log_listeners.append(self.logs.on_system_log)
        self._snapshot: Snapshot | None = None
        self._seq = 0
        self._scoped_keys: dict[tuple[int, str], str] = {}
        self._stop = asyncio.Event()
        self._boot_time = system.boot_time()
        self.reconciler: Reconciler
        self.started_at = time.monotonic()
        self._pulling: set[str] = set()
        self.fetches = FetchTimer()  # pull time, which the health check does not count
        self.cloud: CloudSync | None = None
        self._device: DeviceView
        self._refresh: asyncio.Future[None] | None = None
        # containers stopped by POST /v1/reboot|shutdown (a dry-run reboot starts them again)
        self.stopped_for_power: list[ContainerInfo] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recorded_images: dict[tuple[int, str, str], str] = {}

    # -- the snapshot --------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        assert self._snapshot is not None
        return self._snapshot

    @property
    def local_mode(self) -> bool:
        return self.target_source == "local"

    @property
    def downloading(self) -> bool:
        """An image pull is in flight (the health check does not count pull time)."""
        return bool(self._pulling)

    def device_view(self) -> DeviceView:
        return DeviceView(
            uuid=self.settings.uuid,
            name=self.device_name,
            api_port=self.settings.listen_port,
            os_version=_os_version(),
            supervisor_version=COMPAT_VERSION,
            device_type=self.settings.device_type or self.board.slug,
            arch=self.board.arch,
            ip_address=" ".join(system.ip_addresses()),
            local_mode=self.local_mode,
            unmanaged=self.settings.unmanaged,
        )

    def publish(self) -> None:
        """Replace the snapshot (cheap; called on every change)."""
        self._seq += 1
        current = self.reconciler.current if hasattr(self, "reconciler") else None
        current = current or Current()
        state = self.reconciler.state if hasattr(self, "reconciler") else None
        phases = dict(self.lifecycles.items())
        services = build_services(current, self.target, phases, self.downloads, self.image_ids)
        pending = bool(state and state.applying and state.plan)
        downloading = any(d.status == "Downloading" for d in self.downloads.values())
        lock_block = None
        if state is not None and state.last_error_locked is not None:
            err = state.last_error_locked
            lock_block = LockBlock(app_id=err.app_id or 0, service_name=err.service or "",
                                   path=container_path(err.path or ""),
                                   since=state.locked_since or time.time())
        old = self._snapshot
        self._snapshot = Snapshot(
            seq=self._seq,
            device=self._device if self._device.name == self.device_name
            else replace(self._device, name=self.device_name),
            current=current,
            target=self.target,
            services=services,
            images=tuple(self.downloads.values()),
            commits=dict(self.commits),
            apply_in_progress=bool(state and state.applying),
            update_pending=pending,
            update_downloaded=pending and not downloading,
            update_failed=bool(state and state.failures),
            last_error=state.last_error if state else None,
            lock_block=lock_block,
            plan=state.plan if state else (),
            engine_ok=True,
            loop_heartbeat=state.heartbeat if state else 0.0,
        )
        self.events.snapshot_changed(old, self._snapshot)
        self.host_features.observe(self.target, self.local_mode)

    def _phase_changed(self, key: Key, phase: Phase) -> None:
        if hasattr(self, "reconciler"):
            self.publish()

    def log(self, message: str) -> None:
        """A system message for the device log (dashboard-style, engine.md §17)."""
        _LOGGER.info("%s", message)
        entry = (time.time(), message)
        self.system_log.append(entry)
        for listener in list(self.log_listeners):
            listener(entry)

    # -- targets ---------------------------------------------------------------------------------

    async def set_target(self, target: TargetState, *, source: str, force: bool = False) -> None:
        """Store a new target (SQLite first: a crash after this still applies it) and apply."""
        await self.store.save_target(source, to_v3(target))  # type: ignore[arg-type]
        if source == "cloud" and not self.settings.unmanaged:
            await self._switch_mode(local=device_flags.local_mode(target.config), force=force)
        if source == self.target_source:
            self.target = target
            self.device_name = target.name or self.device_name
            await self.ensure_scoped_keys(target)
            self.publish()
            self.reconciler.target_changed(force=force)

    async def _switch_mode(self, *, local: bool, force: bool) -> None:
        """The cloud's SUPERVISOR_LOCAL_MODE: local targets (no API key) or the cloud's.

        Local and cloud targets are stored apart; entering local mode applies the stored local
        target (or, without one, touches nothing), leaving it restores the cloud target.
        """
        source = "local" if local else "cloud"
        if source == self.target_source:
            return
        await self.store.set_config("localMode", local)
        self.target_source = source
        self.log("Entering local mode" if local else "Leaving local mode: back to the cloud target")
        self.target = await self._stored_target(source)
        self._device = replace(self._device, local_mode=local)
        if self.target is not None:
            await self.ensure_scoped_keys(self.target)
        self.publish()
        self.reconciler.target_changed(force=force)

    async def _stored_target(self, source: str) -> TargetState | None:
        body = await self.store.load_target(source)  # type: ignore[arg-type]
        if body is None:
            return None
        try:
            return parse_target(body, device_uuid=self.settings.uuid)
        except TargetInvalid as err:
            _LOGGER.error("stored %s target is invalid, ignoring it: %s", source, err)
            return None

    async def _load_target(self) -> None:
        if not self.settings.unmanaged and await self.store.get_config("localMode", False):
            self.target_source = "local"
        self.target = await self._stored_target(self.target_source)
        if self.target is not None:
            self.device_name = self.target.name
        local = self.settings.local_target
        if local is not None and self.local_mode:
            try:
                raw = json.loads(await asyncio.to_thread(Path(local).read_text))
            except (OSError, ValueError) as err:
                raise ConfigError(f"--local-target {local}: {err}") from err
            target = parse_local_target(raw, device_uuid=self.settings.uuid)
            await self.store.save_target("local", to_v3(target))
            self.target = target
            self.device_name = target.name or self.device_name
            self.log(f"Applying local target from {local}")
        if self.target is not None:
            await self.ensure_scoped_keys(self.target)

    async def ensure_scoped_keys(self, target: TargetState) -> None:
        """A key for every service of `target` that asks for one; the keys of services that
        left it are revoked (upstream keeps them valid forever: docs/security.md)."""
        wanted = sorted((app.app_id, svc.name) for app in target.apps.values()
                        if app.release is not None for svc in app.release.services.values()
                        if wants_supervisor_api(svc))
        self._scoped_keys = {key: await self.store.scoped_api_key(*key) for key in wanted}
        for gone in await self.store.revoke_scoped_keys_except(wanted):
            _LOGGER.info("revoked the API key of service %s of app %s: no longer in the "
                         "target", gone.service_name, gone.app_id)

    # -- planning context --------------------------------------------------------------------------

    def device_context(self) -> DeviceContext:
        cfg = self.settings.config_json.data
        host = self.settings.docker_host
        return DeviceContext(
            device_uuid=self.settings.uuid,
            device_type=self.settings.device_type or self.board.slug,
            device_arch=self.board.arch,
            os_version=self._device.os_version,
            device_name=self.device_name,
            hostname=str(cfg.get("hostname") or self.settings.uuid[:7]),
            listen_port=self.settings.listen_port,
            api_endpoint=self.settings.api_endpoint or None,
            device_api_key=cfg.get("deviceApiKey") or None,
            locks_dir=str(self.settings.locks_dir),
            docker_socket=host[len("unix://"):] if host.startswith("unix://") else
            "/var/run/docker.sock",
            supervisor_api_keys=dict(self._scoped_keys),
        )

    async def plan_context(self, current: Current) -> PlanContext:
        names = set()
        if self.target is not None:
            for app in self.target.apps.values():
                if app.release is not None:
                    names |= {s.image for s in app.release.services.values()}
        image_ids = {}
        for name in names:
            img = current.image_by_ref(name)
            if img is not None:
                image_ids[name] = img.id
        self.image_ids = image_ids
        records = [r for r in await self.store.images() if r.docker_image_id]
        self._recorded_images = {(r.app_id, r.service_name, r.commit): r.name for r in records
                                 if r.app_id is not None and r.service_name and r.commit}
        managed = {r.name: r.docker_image_id or "" for r in records}
        owners = {r.name: (r.app_id, r.service_name) for r in records
                  if r.app_id is not None and r.service_name}
        self.commits = await self.store.current_commits()
        # to the microsecond: a dry-run reboot can fall in the second its container was made
        boot = datetime.fromtimestamp(self._boot_time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return PlanContext(
            device=self.device_context(),
            image_ids=image_ids,
            downloading=frozenset(n for n, d in self.downloads.items()
                                  if d.status == "Downloading" and n in self._pulling),
            managed_images=managed,
            image_owners=owners,
            locked_apps=self.locks.held_apps(),
            foreign_locked=self.locks.foreign_apps(),
            force=self.lock_override,
            lock_leftovers=await self.locks.leftover_apps(),
            commits=dict(self.commits),
            # only images we pulled are ever removed, so local mode's built images are safe
            keep_images=False,
            keep_volumes=self.local_mode,
            reboot_required=self.breadcrumb.is_required(self._boot_time),
            boot_time=boot,
            device_config=await self.device_config.plan_input(self.target),
        )

    @property
    def lock_override(self) -> bool:
        """Device config SUPERVISOR_OVERRIDE_LOCK (or its legacy names): user locks ignored."""
        return device_flags.lock_override(self.target)

    # -- executor hooks --------------------------------------------------------------------------

    def _progress(self, step: Fetch, status: str, pct: int | None) -> None:
        if status == "Downloading":
            self._pulling.add(step.image)
            previous = self.downloads.get(step.image)
            if previous is not None and previous.progress is not None and pct is not None:
                # never backwards: a pull resumed after a restart starts its count at 0
                pct = max(pct, previous.progress)
            self.downloads[step.image] = ImageProgress(
                name=step.image, app_id=step.app_id, service_name=step.service_name,
                commit=step.commit, status="Downloading", progress=pct,
            )
            if previous is None or previous.progress != pct:
                self._spawn(self.store.upsert_image(ImageRecord(
                    name=step.image, app_id=step.app_id, service_name=step.service_name,
                    commit=step.commit, download_progress=pct, status="Downloading",
                )))
        else:
            self._pulling.discard(step.image)
            self.downloads.pop(step.image, None)
        self.fetches.set_active(bool(self._pulling))
        self.publish()

    def image_name(self, app_id: int, service: str, commit: str) -> str:
        """The image of a service of a release: the target's, else the one we pulled for it."""
        for app in self.target.apps.values() if self.target is not None else ():
            if app.app_id == app_id and app.release is not None \
                    and app.release.commit == commit and service in app.release.services:
                return app.release.services[service].image
        return self._recorded_images.get((app_id, service, commit), "")

    def _log_control(self, config: DeviceConfig) -> None:
        """SUPERVISOR_LOG_CONTROL as applied: off, no log line reaches any reader."""
        enabled = config.flag("SUPERVISOR_LOG_CONTROL")
        if enabled != self.logs.enabled:
            _LOGGER.info("Logs %s by SUPERVISOR_LOG_CONTROL", "enabled" if enabled else
                         "disabled")
            self.logs.enabled = enabled

    async def _require_reboot(self) -> None:
        await asyncio.to_thread(self.breadcrumb.set)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle of the process ------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        # the lock root may be in /tmp: it must be ours, not a symlink (docs/security.md)
        await asyncio.to_thread(owned_directory, s.locks_dir, "--locks-dir")
        for path in (s.data_dir, s.state_dir):
            await asyncio.to_thread(Path(path).mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(secure_files, [s.config_path, *secret_host_files(s.boot_dir)])
        self.store = await AsyncStore.open(s.db_path)
        await self.store.global_api_key()
        self.host = await asyncio.to_thread(choose_host_actions, s.host_actions, None,
                                            self._record_host_action)
        if self.host.name != "systemd":
            self.host = _SimulatedReboot(self.host, self._simulated_reboot)
        self.engine = AsyncEngine(DockerEngine(s.docker_host))
        self.host_features.bind(self.host, self._record_host_action, engine=self.engine)
        self.log_followers = LogFollowers(s.docker_host, self.logs.publish_many)
        for entry in await self.store.journal_open():
            _LOGGER.warning("step %s was interrupted by a restart", entry.kind)
            await self.store.journal_end(entry.id, "interrupted")
        cleaned = await self.locks.clean_leftovers()
        if cleaned:
            self.log(f"Removed {cleaned} supervisor update lock(s) left by a crash")
        self._device = self.device_view()
        boot = await asyncio.to_thread(
            BootConfig.for_board, self.board.boot.backends, BootPaths(s.boot_dir, s.config_json),
            s.device_type or self.board.slug)
        self.device_config = DeviceConfiguration(store=self.store, config_json=s.config_json,
                                                 boot=boot, log=self.log, unmanaged=s.unmanaged)
        self.device_config.listeners.append(self._log_control)
        executor = Executor(
            engine=self.engine, store=self.store, lifecycles=self.lifecycles, locks=self.locks,
            hooks=ExecutorHooks(progress=self._progress, log=self.log,
                                require_reboot=self._require_reboot,
                                image_auth=image_auth_hook(lambda: (
                                    s.config_json.uuid, s.config_json.current_api_key)),
                                image_name=self.image_name,
                                device_config=self.device_config),
        )
        self.reconciler = Reconciler(
            observe=self._observe, target=lambda: self.target, context=self.plan_context,
            executor=executor, publish=self.publish, log=self.log,
            on_settled=self._on_settled,
            poll_interval_s=lambda: self.settings.poll_interval_ms / 1000,
        )
        await self._load_target()
        await self._restore_progress()
        self.publish()
        self.log("Supervisor starting")

    async def _restore_progress(self) -> None:
        """Show the last recorded progress of downloads a restart interrupted, not zero."""
        wanted = {svc.image for app in (self.target.apps.values() if self.target else ())
                  if app.release is not None for svc in app.release.services.values()}
        for rec in await self.store.images():
            if rec.status == "Downloading" and rec.download_progress is not None \
                    and rec.name in wanted:
                self.downloads[rec.name] = ImageProgress(
                    name=rec.name, app_id=rec.app_id or 0, service_name=rec.service_name or "",
                    commit=rec.commit or "", status="Downloading", progress=rec.download_progress,
                )

    async def _on_settled(self) -> None:
        """Everything applied: reboot now if a change asked for it (engine.md §10)."""
        if not self.breadcrumb.is_required(self._boot_time):
            return
        current = self.reconciler.current or Current()
        apps = sorted({c.app_id for c in current.containers})
        taken: list[int] = []
        try:
            for app_id in apps:
                services = {c.service_name for c in current.containers_of(app_id)}
                await self.locks.take(app_id, sorted(services), force=False, owner="reboot")
                taken.append(app_id)
            self.log("Rebooting")
            await self.host.reboot()
        except SupervisorError as err:
            self.log(f"Reboot postponed: {err}")
        finally:
            for app_id in taken:
                await self.locks.release(app_id, owner="reboot")

    async def _simulated_reboot(self) -> None:
        """A dry-run reboot: behave as a device that just booted. The boot time moves (what
        waited for a reboot proceeds; the breadcrumb is cleared as a reboot would), the
        containers stopped for it start again as Docker's restart policy would at boot, and
        the loop resumes."""
        boot = time.time()
        await asyncio.to_thread(self.breadcrumb.rebooted, boot)
        self._boot_time = boot
        stopped, self.stopped_for_power = self.stopped_for_power, []
        self._spawn(self._boot(stopped))

    async def _boot(self, stopped: list[ContainerInfo]) -> None:
        """Start what the reboot preparation stopped: intents the loop carries out."""
        self.reconciler.resume()
        starts = [self.reconciler.submit(StartService(c.app_id, c.service_name, c.id))
                  for c in stopped]
        for c, outcome in zip(stopped, await asyncio.gather(*starts, return_exceptions=True),
                              strict=True):
            if isinstance(outcome, BaseException):
                _LOGGER.warning("could not start %s after the reboot: %s", c.id[:12], outcome)

    async def _observe(self) -> Current:
        current = await self.engine.observe()
        observed = {}
        for c in current.containers:
            observed[(c.app_id, c.service_name, c.commit)] = phase_from_container(c)
        self.lifecycles.sync(observed)
        return current

    async def _record_host_action(self, action: str, details: dict[str, Any]) -> None:
        await self.store.record_host_action(action, bool(details.get("force")), "dry-run",
                                            json.dumps(details))

    def _on_docker_event(self, event: dict[str, Any]) -> None:
        self.log_followers.on_docker_event(event)
        if event.get("Action") in ("die", "start", "destroy", "stop", "kill", "oom"):
            self.reconciler.mark_dirty()
            # the loop may be sleeping out a backoff: refresh the snapshot now. Not while a
            # batch changes containers: those events are ours and the loop observes next.
            if self.reconciler.batch_in_flight:
                return
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.ensure_future(self._refresh_snapshot())

    async def _refresh_snapshot(self) -> None:
        await asyncio.sleep(0.05)  # one observation for a burst of events
        try:
            current = await self._observe()
        except SupervisorError:
            return  # the loop reports engine trouble
        self.reconciler.current = current
        self.publish()

    async def run(self) -> None:
        await self.start()
        from supervisor.api.actions import RuntimeApi
        from supervisor.api.app import build_app
        from supervisor.api.server import server_config
        from supervisor.api.streams import stream_endpoints

        api = RuntimeApi(self)
        app = build_app(api, extra=stream_endpoints(api),
                        scoped_keys_own_apps=self.settings.scoped_keys == "own-apps")
        server = _Server(server_config(app, self.settings.listen_host, self.settings.listen_port))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self.engine.start_events(self._on_docker_event)
        try:
            for container in (await self.engine.observe()).containers:
                if container.running:
                    self.log_followers.follow(container.id)
        except SupervisorError as err:
            _LOGGER.warning("cannot attach to container logs yet: %s", err)
        tasks = [
            asyncio.create_task(self.reconciler.run(), name="reconciler"),
            asyncio.create_task(_guard_server(server), name="api"),
            asyncio.create_task(self.host_features.run(), name="host"),
        ]
        self.reconciler_task = tasks[0]
        if not self.settings.unmanaged:
            self.cloud = CloudSync(self)
            tasks.append(asyncio.create_task(self.cloud.run(), name="cloud"))
        await self._stop.wait()
        _LOGGER.info("stopping")
        server.should_exit = True
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
        self.logs.close()
        self.events.close()
        await asyncio.to_thread(self.log_followers.close)
        self.engine.close()
        await self.store.close()



class _SimulatedReboot:
    """Wraps a non-systemd backend so that a recorded reboot moves the boot time forward."""

    def __init__(self, inner: HostActions, rebooted: Any) -> None:
        self._inner = inner
        self._rebooted = rebooted
        self.name = inner.name

    async def reboot(self) -> None:
        await self._inner.reboot()
        await self._rebooted()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the runtime owns the process."""

    def install_signal_handlers(self) -> None:
        return None

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def _guard_server(server: uvicorn.Server) -> None:
    """A failed bind must not stop reconciliation: log and retry."""
    while True:
        try:
            await server.serve()
            return
        except (OSError, SystemExit) as err:
            _LOGGER.error("API server failed (%s); retrying in 5 s", err)
            await asyncio.sleep(5)


def _os_version() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "unknown"


def _setup_logging(level: str) -> logging.handlers.QueueListener:
    """Log records are written by a listener thread: a slow console or disk never stalls the
    event loop (every API request is logged, as upstream does)."""
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, console)
    handler = logging.handlers.QueueHandler(records)
    handler.setFormatter(EscapingFormatter())  # a request cannot forge lines (logsafe.py)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # transitions logs every callback at INFO and warns about our declared trigger stubs
    logging.getLogger("transitions").setLevel(logging.ERROR)
    listener.start()
    return listener


def run_supervisor(settings: Settings) -> int:
    listener = _setup_logging(settings.log_level)
    runtime = Runtime(settings)
    try:
        asyncio.run(runtime.run())
    except SupervisorError as err:
        _LOGGER.error("%s", err)
        return 1
    finally:
        listener.stop()  # flushes what is queued
    return 0
