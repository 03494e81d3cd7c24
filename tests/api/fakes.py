"""A fake runtime for API tests: real Snapshot objects, in-memory keys, recording actions.

`FakeActions` records every call in `calls` and can be told to fail (`fail[name] = exc`) or to
return something else (`results[name] = value`), so each test sets up exactly the outcome it
checks. `FakeContext` implements `ApiContext` over a snapshot the test may replace.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from supervisor.actions.messages import ServiceAction
from supervisor.api.context import ApiContext
from supervisor.journal import JournalParams
from supervisor.model.current import (
    ContainerInfo,
    Current,
    DeviceView,
    ImageInfo,
    ImageProgress,
    ServiceView,
    Snapshot,
)
from supervisor.model.target import TargetApp, TargetRelease, TargetService, TargetState

GLOBAL_KEY = "globalkey0000000000000000000000a"
APP1_KEY = "app1key00000000000000000000000b1"
APP2_KEY = "app2key00000000000000000000000b2"
MULTI_KEY = "multikey000000000000000000000012"

MAIN_IMAGE = "registry2.example/v2/aaa@sha256:" + "1" * 64
WEB_IMAGE = "registry2.example/v2/bbb@sha256:" + "2" * 64
WORKER_IMAGE = "registry2.example/v2/ccc@sha256:" + "3" * 64
OLD_IMAGE = "registry2.example/v2/ddd@sha256:" + "4" * 64


@dataclass(frozen=True)
class FakeKey:
    key: str
    app_id: int
    service_name: str | None
    scopes: tuple[Mapping[str, Any], ...]


def _scope(*app_ids: int) -> tuple[Mapping[str, Any], ...]:
    return tuple({"type": "app", "appId": a} for a in app_ids)


def device(**overrides: Any) -> DeviceView:
    values: dict[str, Any] = {
        "uuid": "deadbeef" * 4, "name": "shy-frost", "api_port": 48484,
        "os_version": "balenaOS 6.0.0", "supervisor_version": "19.0.5",
        "device_type": "raspberrypi4-64", "arch": "aarch64",
        "ip_address": "192.168.1.10 10.114.104.1", "mac_address": "DC:A6:32:00:00:01",
        "local_mode": False, "unmanaged": False,
    }
    values.update(overrides)
    return DeviceView(**values)


def container(app_id: int, service: str, cid: str, *, image_id: int, release_id: int,
              commit: str, image: str, running: bool = True, created: str = "",
              env: Mapping[str, str] | None = None, handover_old: bool = False) -> ContainerInfo:
    return ContainerInfo(
        id=cid, name=f"{service}_{image_id}_{release_id}_{commit}", app_id=app_id,
        app_uuid=f"uuid{app_id}", service_name=service, service_id=app_id * 100 + 1,
        image_id=image_id, release_id=release_id, commit=commit,
        state="running" if running else "exited", running=running,
        image="sha256:" + cid.ljust(64, "0")[:64], image_name=image,
        created=created or "2024-01-01T00:00:00.000Z", env=dict(env or {}),
        handover_old=handover_old,
    )


def target(apps: Mapping[int, tuple[str, str | None, int, tuple[tuple[str, int, str], ...]]],
           ) -> TargetState:
    """{app_id: (name, commit, release_id, ((service, image_id, image), ...))}."""
    out: dict[str, TargetApp] = {}
    for app_id, (name, commit, release_id, services) in apps.items():
        release = None
        if commit is not None:
            release = TargetRelease(commit=commit, release_id=release_id, services={
                svc: TargetService(name=svc, service_id=app_id * 100 + i, image_id=image_id,
                                   image=image)
                for i, (svc, image_id, image) in enumerate(services, start=1)})
        out[f"uuid{app_id}"] = TargetApp(app_id=app_id, uuid=f"uuid{app_id}", name=name,
                                         release=release)
    return TargetState(device_uuid="deadbeef" * 4, name="shy-frost", apps=out)


def standard_snapshot(seq: int = 1, **overrides: Any) -> Snapshot:
    """App 1 `main-app`: one running service. App 2 `multi`: `web` running, `worker` downloading
    (35 %), and an old image being deleted."""
    main = container(1, "main", "c1main", image_id=1000, release_id=10, commit="c0ffee1",
                     image=MAIN_IMAGE, created="2024-01-01T00:00:01.000Z",
                     env={"FOO": "bar", "BALENA_SUPERVISOR_API_KEY": APP1_KEY,
                          "BALENA_API_KEY": "secret", "RESIN_SUPERVISOR_API_KEY": APP1_KEY,
                          "RESIN_API_KEY": "secret", "BALENA_DEVICE_NAME_AT_INIT": "x",
                          "RESIN_DEVICE_NAME_AT_INIT": "x", "BALENA_APP_ID": "1"})
    web = container(2, "web", "c2web", image_id=2001, release_id=20, commit="beef",
                    image=WEB_IMAGE, created="2024-01-02T00:00:00.000Z")
    services = (
        ServiceView(app_id=1, app_uuid="uuid1", app_name="main-app", service_name="main",
                    service_id=101, image_id=1000, release_id=10, commit="c0ffee1",
                    image=MAIN_IMAGE, status="Running", container_id="c1main",
                    created_at="2024-01-01T00:00:01.000Z"),
        ServiceView(app_id=2, app_uuid="uuid2", app_name="multi", service_name="web",
                    service_id=201, image_id=2001, release_id=20, commit="beef",
                    image=WEB_IMAGE, status="Running", container_id="c2web",
                    created_at="2024-01-02T00:00:00.000Z"),
        ServiceView(app_id=2, app_uuid="uuid2", app_name="multi", service_name="worker",
                    service_id=202, image_id=2002, release_id=20, commit="beef",
                    image=WORKER_IMAGE, status="Downloading", download_progress=35),
    )
    values: dict[str, Any] = {
        "seq": seq,
        "device": device(),
        "current": Current(
            containers=(main, web),
            images=(ImageInfo(id="sha256:" + "a" * 64, digests=(MAIN_IMAGE,)),
                    ImageInfo(id="sha256:" + "b" * 64, digests=(WEB_IMAGE,))),
        ),
        "target": target({
            1: ("main-app", "c0ffee1", 10, (("main", 1000, MAIN_IMAGE),)),
            2: ("multi", "beef", 20, (("web", 2001, WEB_IMAGE), ("worker", 2002, WORKER_IMAGE))),
        }),
        "services": services,
        "images": (
            ImageProgress(name=WORKER_IMAGE, app_id=2, service_name="worker", commit="beef",
                          status="Downloading", progress=35),
            ImageProgress(name=OLD_IMAGE, app_id=2, service_name="web", commit="old",
                          status="Deleting", progress=None),
        ),
        "commits": {1: "c0ffee1", 2: "0ldc0mmit"},
        "apply_in_progress": True,
        "update_pending": True,
        "update_downloaded": False,
        "update_failed": False,
    }
    values.update(overrides)
    return Snapshot(**values)


def empty_snapshot(seq: int = 1) -> Snapshot:
    return Snapshot(seq=seq, device=device())


class FakeActions:
    """Records calls; `fail[name]` makes a method raise, `results[name]` overrides its value."""

    def __init__(self, ctx: FakeContext) -> None:
        self._ctx = ctx
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: dict[str, BaseException] = {}
        self.results: dict[str, Any] = {}
        self.journal_chunks: list[bytes] = [b"line 1\n", b"line 2\n"]
        self.journal_closed = False

    def _record(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        if name in self.fail:
            raise self.fail[name]
        return self.results.get(name)

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for call, args in self.calls if call == name]

    async def update(self, force: bool, cancel: bool) -> bool:
        result = self._record("update", force, cancel)
        return True if result is None else bool(result)

    async def blink(self) -> None:
        self._record("blink")

    async def reboot(self, force: bool) -> None:
        self._record("reboot", force)

    async def shutdown(self, force: bool) -> None:
        self._record("shutdown", force)

    async def restart_app(self, app_id: int, force: bool) -> None:
        self._record("restart_app", app_id, force)

    async def purge_app(self, app_id: int, force: bool) -> None:
        self._record("purge_app", app_id, force)

    async def service_action(self, action: ServiceAction, app_id: int,
                             service_name: str | None, image_id: int | None,
                             force: bool) -> None:
        self._record("service_action", action, app_id, service_name, image_id, force)

    async def v1_stop(self, app_id: int, force: bool) -> str:
        return self._record("v1_stop", app_id, force) or f"container-of-{app_id}"

    async def v1_start(self, app_id: int) -> str:
        return self._record("v1_start", app_id) or f"container-of-{app_id}"

    async def regenerate_api_key(self, old_key: str) -> str:
        self._record("regenerate_api_key", old_key)
        found = self._ctx.keys.pop(old_key, None)
        if found is None:
            raise KeyError(old_key)
        new = uuid.uuid4().hex
        self._ctx.keys[new] = FakeKey(new, found.app_id, found.service_name, found.scopes)
        return new

    async def get_host_config(self) -> dict[str, Any]:
        return self._record("get_host_config") or {"network": {"hostname": "abc1234"}}

    async def patch_host_config(self, body: object, force: bool) -> None:
        self._record("patch_host_config", body, force)

    async def health(self) -> tuple[bool, str]:
        result = self._record("health")
        return (True, "") if result is None else result

    async def set_local_target(self, body: object, force: bool) -> None:
        self._record("set_local_target", body, force)

    async def get_local_target(self) -> dict[str, Any]:
        return self._record("get_local_target") or {
            "local": {"name": "shy-frost", "config": {}, "apps": {}}}

    async def get_tags(self) -> list[dict[str, Any]]:
        return self._record("get_tags") or [{"id": 1, "name": "where", "value": "shelf"}]

    async def set_tags(self, tags: Mapping[str, str]) -> None:
        self._record("set_tags", dict(tags))

    async def vpn_status(self) -> tuple[bool, bool]:
        result = self._record("vpn_status")
        return (True, False) if result is None else result

    async def cleanup_volumes(self, app_ids: frozenset[int] | None) -> list[str]:
        return self._record("cleanup_volumes", app_ids) or []

    async def journal_logs(self, params: JournalParams) -> AsyncIterator[bytes]:
        self._record("journal_logs", params)
        return self._journal()

    async def _journal(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.journal_chunks:
                yield chunk
        finally:
            self.journal_closed = True


@dataclass
class FakeContext:
    """An `ApiContext` over a replaceable snapshot and an in-memory key table."""

    snapshot: Snapshot = field(default_factory=standard_snapshot)
    local_mode: bool = False
    unmanaged: bool = False
    keys: dict[str, FakeKey] = field(default_factory=dict)
    held_locks: list[dict[str, Any]] = field(default_factory=list)
    lookup_error: Exception | None = None
    lookups: int = 0

    def __post_init__(self) -> None:
        self.actions = FakeActions(self)
        if not self.keys:
            self.keys = {
                GLOBAL_KEY: FakeKey(GLOBAL_KEY, 0, None, ({"type": "global"},)),
                APP1_KEY: FakeKey(APP1_KEY, 1, "main", _scope(1)),
                APP2_KEY: FakeKey(APP2_KEY, 2, "web", _scope(2)),
                MULTI_KEY: FakeKey(MULTI_KEY, 1, "main", _scope(1, 2)),
            }

    def lookup_key(self, key: str) -> FakeKey | None:
        self.lookups += 1
        if self.lookup_error is not None:
            raise self.lookup_error
        return self.keys.get(key)

    async def locks(self) -> list[dict[str, Any]]:
        return list(self.held_locks)


def _typecheck(ctx: FakeContext) -> ApiContext:
    return ctx  # mypy: FakeContext satisfies the protocol
