"""Change events derived from snapshots, for `GET /v2/events` (server-sent events).

Data flow: `Runtime.publish()` builds a new Snapshot and calls
`EventBus.snapshot_changed(old, new)`; `diff(old, new)` (pure) turns the difference into events,
which the bus fans out to every subscriber through a bounded queue (`logs.Subscription`): a slow
client loses events, gets one `dropped` event where the gap is, and the route follows it with
a fresh `state` event so the client can resynchronise. Loop thread only.

Events (name -> data):
  state             the whole picture: sent first on connect and after a gap
  service-status    a service's status changed (or it appeared / went away: status null)
  download-progress an image download's status or percentage changed (null: no longer in flight)
  apply-start       an apply run started; apply-end: it ended (`success`, `error`)
  lock-wait         an update lock holds the update back; lock-released: it no longer does
  error             the apply failed with a new error message
  dropped           this client was too slow and lost `count` events
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from supervisor.logs import Fanout, Subscription
from supervisor.model.current import ImageProgress, LockBlock, ServiceView, Snapshot

DEFAULT_QUEUE = 256


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event. `app_id` (not sent) lets a scoped caller see only its apps."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    app_id: int | None = None

    def sse(self) -> bytes:
        """`event: <name>\\ndata: <json>\\n\\n` (the JSON is one line: no `\\n` inside)."""
        body = json.dumps(self.data, separators=(",", ":"), ensure_ascii=False)
        return f"event: {self.name}\ndata: {body}\n\n".encode()


def dropped_event(count: int) -> Event:
    return Event("dropped", {"count": count})


# -- views -------------------------------------------------------------------------------------

ServiceKey = tuple[int, str, str, int]


def _service_key(svc: ServiceView) -> ServiceKey:
    # Two entries of one service coexist during an update (old and new release).
    return (svc.app_id, svc.service_name, svc.commit, svc.image_id)


def _service(svc: ServiceView) -> dict[str, Any]:
    return {
        "appId": svc.app_id,
        "serviceName": svc.service_name,
        "serviceId": svc.service_id,
        "imageId": svc.image_id,
        "releaseId": svc.release_id,
        "commit": svc.commit,
        "status": svc.status,
        "containerId": svc.container_id,
        "downloadProgress": svc.download_progress,
    }


def _download(img: ImageProgress) -> dict[str, Any]:
    return {"image": img.name, "appId": img.app_id, "serviceName": img.service_name,
            "commit": img.commit, "status": img.status, "progress": img.progress}


def _lock(block: LockBlock) -> dict[str, Any]:
    return {"appId": block.app_id, "serviceName": block.service_name, "path": block.path}


def _lock_key(block: LockBlock | None) -> tuple[int, str, str] | None:
    # `since` is refreshed on every publish: it is not part of the identity.
    return None if block is None else (block.app_id, block.service_name, block.path)


def state_event(snapshot: Snapshot, apps: frozenset[int] | None = None) -> Event:
    """Everything a client needs to start from, filtered to `apps` (None: all)."""

    def visible(app_id: int) -> bool:
        return apps is None or app_id in apps

    lock = snapshot.lock_block
    return Event("state", {
        "seq": snapshot.seq,
        "appState": "applying" if snapshot.apply_in_progress else "applied",
        "status": snapshot.device_status,
        "services": [_service(s) for s in snapshot.services if visible(s.app_id)],
        "downloads": [_download(i) for i in snapshot.images if visible(i.app_id)],
        "lock": _lock(lock) if lock is not None and visible(lock.app_id) else None,
        "error": snapshot.last_error,
        "updateFailed": snapshot.update_failed,
    })


# -- the diff ----------------------------------------------------------------------------------

def diff(old: Snapshot | None, new: Snapshot) -> list[Event]:
    """The events that lead from `old` to `new` (None: nothing was published before)."""
    events: list[Event] = []
    seq = {"seq": new.seq}

    if new.apply_in_progress and (old is None or not old.apply_in_progress):
        events.append(Event("apply-start", seq))

    before = {_service_key(s): s for s in (old.services if old else ())}
    after = {_service_key(s): s for s in new.services}
    for key, svc in after.items():
        prev = before.get(key)
        if prev is None or prev.status != svc.status:
            data = {**seq, **_service(svc), "previous": prev.status if prev else None}
            events.append(Event("service-status", data, svc.app_id))
    for key, prev in before.items():
        if key not in after:
            data = {**seq, **_service(prev), "status": None, "previous": prev.status}
            events.append(Event("service-status", data, prev.app_id))

    imgs_before = {i.name: i for i in (old.images if old else ())}
    imgs_after = {i.name: i for i in new.images}
    for name, img in imgs_after.items():
        prev_img = imgs_before.get(name)
        if prev_img is None or (prev_img.status, prev_img.progress) != (img.status, img.progress):
            events.append(Event("download-progress", {**seq, **_download(img)}, img.app_id))
    for name, prev_img in imgs_before.items():
        if name not in imgs_after:
            data = {**seq, **_download(prev_img), "status": None, "progress": None}
            events.append(Event("download-progress", data, prev_img.app_id))

    old_lock = old.lock_block if old else None
    if _lock_key(old_lock) != _lock_key(new.lock_block):
        if old_lock is not None:
            events.append(Event("lock-released", {**seq, **_lock(old_lock)}, old_lock.app_id))
        if new.lock_block is not None:
            events.append(Event("lock-wait", {**seq, **_lock(new.lock_block)},
                                new.lock_block.app_id))

    if new.last_error is not None and new.last_error != (old.last_error if old else None):
        events.append(Event("error", {**seq, "message": new.last_error,
                                      "updateFailed": new.update_failed}))
    # Last: the services' final statuses come before the news that the run is over.
    if old is not None and old.apply_in_progress and not new.apply_in_progress:
        events.append(Event("apply-end", {**seq, "success": not new.update_failed,
                                          "error": new.last_error}))
    return events


class EventBus:
    """Snapshot changes -> events -> every subscriber. `latest` is the last snapshot seen."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE) -> None:
        self._fanout: Fanout[Event] = Fanout(queue_size=queue_size, announce=dropped_event)
        self.latest: Snapshot | None = None

    @property
    def subscribers(self) -> int:
        return self._fanout.subscribers

    def snapshot_changed(self, old: Snapshot | None, new: Snapshot) -> None:
        """Call after every publish. Cheap when nobody listens: no diff is computed."""
        self.latest = new
        if self._fanout.subscribers:
            self._fanout.deliver(diff(old, new))

    def subscribe(self, *, maxsize: int | None = None,
                  accept: Callable[[Event], bool] | None = None) -> Subscription[Event]:
        return self._fanout.subscribe(maxsize=maxsize, accept=accept)

    def close(self) -> None:
        self._fanout.close()
