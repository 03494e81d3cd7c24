"""What clients see: response helpers with Express' content types, and JSON views of a Snapshot.

The view functions are pure: Snapshot (+ the caller's app scope) in, JSON-ready dict out. They
never do I/O, so GET handlers stay cheap, and `ViewCache` keeps their encoded bytes for as long
as the snapshot they were built from is the latest one.
"""

from __future__ import annotations

import html
import json as _json
from collections.abc import Callable, Hashable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, NamedTuple

from starlette.responses import Response

from supervisor.errors import BadRequest
from supervisor.model.current import ContainerInfo, ServiceView, Snapshot
from supervisor.model.steps import describe

TEXT = "text/plain; charset=utf-8"  # Express res.sendStatus()
HTML = "text/html; charset=utf-8"  # Express res.send('string')
JSON = "application/json; charset=utf-8"  # Express res.json()

_HIDDEN_ENV = frozenset({
    "RESIN_SUPERVISOR_API_KEY", "RESIN_API_KEY", "BALENA_SUPERVISOR_API_KEY", "BALENA_API_KEY",
})

Apps = frozenset[int] | None  # the caller's scope; None means every app


# -- responses ---------------------------------------------------------------------------------

def dumps(obj: object) -> bytes:
    """JSON.stringify: compact, UTF-8, keys whose value is None are kept (callers omit them)."""
    return _json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _response(body: bytes, status: int, ctype: str | None,
              headers: Mapping[str, str] | None = None) -> Response:
    out = dict(headers or {})
    if ctype is not None:
        out["content-type"] = ctype
    return Response(body, status_code=status, headers=out)


def text(body: str, status: int = 200) -> Response:
    """text/plain, as Express' `sendStatus` (and a few plain-text errors)."""
    return _response(body.encode(), status, TEXT)


def html_text(body: str, status: int = 200) -> Response:
    """text/html, as Express' `send('string')` (upstream's `OK`, the new API key...)."""
    return _response(body.encode(), status, HTML)


def json(obj: object, status: int = 200) -> Response:
    return _response(dumps(obj), status, JSON)


def json_bytes(body: bytes, status: int = 200) -> Response:
    return _response(body, status, JSON)


def send_status(status: int) -> Response:
    """Express `sendStatus(N)`: the status phrase as text/plain; 204 has no body at all."""
    if status == 204:
        return Response(b"", status_code=204)
    return text(HTTPStatus(status).phrase, status)


def failed(message: str, status: int) -> Response:
    """The v2 error body `{"status": "failed", "message": ...}`."""
    return json({"status": "failed", "message": message}, status)


def express_not_found(method: str, path: str) -> Response:
    """Express' default 404 page (finalhandler), for unknown routes once authenticated."""
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>Error</title>\n</head>\n<body>\n"
        f"<pre>Cannot {html.escape(method)} {html.escape(path)}</pre>\n</body>\n</html>\n"
    )
    return _response(page.encode(), 404, HTML, {
        "content-security-policy": "default-src 'none'", "x-content-type-options": "nosniff"})


class ViewCache:
    """Encoded views of the latest snapshot. Single-threaded use (the event loop) only."""

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._views: dict[Hashable, bytes] = {}

    def get(self, snapshot: Snapshot, key: Hashable, build: Callable[[], object]) -> bytes:
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self._views = {}
        cached = self._views.get(key)
        if cached is None:
            cached = self._views[key] = dumps(build())
        return cached


# -- helpers -----------------------------------------------------------------------------------

def _in_scope(apps: Apps, app_id: int) -> bool:
    return apps is None or app_id in apps


def _js_number(value: float) -> int | float:
    """JSON.stringify prints 50.0 as 50."""
    return int(value) if float(value).is_integer() else value


def _mean(values: Iterable[int | float]) -> int | float | None:
    items = list(values)
    return _js_number(sum(items) / len(items)) if items else None


def _omit_none(obj: dict[str, Any]) -> dict[str, Any]:
    """JSON.stringify drops `undefined` members."""
    return {k: v for k, v in obj.items() if v is not None}


class TargetAppRow(NamedTuple):
    """One target app as `GET /v2/applications/state` needs it (upstream's `app` table row)."""

    app_id: int
    uuid: str
    name: str
    commit: str | None
    release_id: int | None


def target_apps(snapshot: Snapshot) -> list[TargetAppRow]:
    target = snapshot.target
    if target is None:
        return []
    rows = []
    for app in target.apps.values():
        release = app.release
        rows.append(TargetAppRow(
            app_id=app.app_id, uuid=app.uuid, name=app.name,
            commit=release.commit if release is not None else None,
            release_id=release.release_id if release is not None else None,
        ))
    return rows


# -- v1 ----------------------------------------------------------------------------------------

def first_app_id(snapshot: Snapshot) -> int | None:
    """Upstream's legacy single-app view uses the lowest app id (JS sorts integer keys)."""
    ids = {s.app_id for s in snapshot.services} | {c.app_id for c in snapshot.current.containers}
    return min(ids) if ids else None


def v1_device(snapshot: Snapshot) -> dict[str, Any]:
    """`GET /v1/device` (seed fields). `status` is the engine's activity (deliberate fix), and
    `download_progress` the mean of the downloads in flight, null when none."""
    device = snapshot.device
    out: dict[str, Any] = {
        "api_port": device.api_port,
        "ip_address": device.ip_address,
        "mac_address": device.mac_address,
        "os_version": device.os_version,
        "supervisor_version": device.supervisor_version,
        "update_pending": snapshot.update_pending,
        "update_downloaded": snapshot.update_downloaded,
        "update_failed": snapshot.update_failed,
    }
    app_id = first_app_id(snapshot)
    commit = snapshot.commits.get(app_id) if app_id is not None else None
    if commit and not snapshot.apply_in_progress:
        out["commit"] = commit
    out["status"] = snapshot.device_status
    out["download_progress"] = _mean(
        img.progress for img in snapshot.images
        if img.status == "Downloading" and img.progress is not None)
    return out


def _public_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items()
            if k not in _HIDDEN_ENV and not k.endswith("_DEVICE_NAME_AT_INIT")}


def v1_app(snapshot: Snapshot, app_id: int) -> dict[str, Any]:
    """`GET /v1/apps/:appId` for a single-container app; BadRequest texts as upstream."""
    containers = [c for c in snapshot.current.containers if c.app_id == app_id]
    if not containers:
        raise BadRequest("App not found")
    if len({c.service_name for c in containers}) > 1:
        raise BadRequest("Some v1 endpoints are only allowed on single-container apps")
    # During a hand-over the renamed old container is not the app's container any more.
    container = next((c for c in containers if not c.handover_old), containers[-1])
    return _omit_none({
        "appId": app_id,
        "commit": snapshot.commits.get(app_id),
        "containerId": container.id,
        "env": _public_env(container.env),
        "imageId": container.image,
        "releaseId": container.release_id,
    })


# -- v2 ----------------------------------------------------------------------------------------

_UPDATE_RANK = {"done": 0, "applying changes": 1, "downloaded": 2, "downloading": 3, "aborted": 4}


def _update_status(services: Iterable[ServiceView]) -> str:
    """A release's `update_status` from its services, upstream's precedence order."""
    best = "done"
    for svc in services:
        if svc.status == "Aborted":
            status = "aborted"
        elif svc.download_progress is not None and svc.download_progress != 100:
            status = "downloading"
        elif svc.download_progress == 100 or svc.status == "Downloaded":
            status = "downloaded"
        elif svc.status.lower() in ("installing", "installed", "awaiting handover"):
            status = "applying changes"
        else:
            continue
        if _UPDATE_RANK[status] > _UPDATE_RANK[best]:
            best = status
    return best


def applications_state(snapshot: Snapshot, apps: Apps) -> dict[str, Any]:
    """`GET /v2/applications/state`: target apps keyed by name, services of the target commit."""
    out: dict[str, Any] = {}
    for row in target_apps(snapshot):
        if not _in_scope(apps, row.app_id):
            continue
        services = [s for s in snapshot.services
                    if s.app_id == row.app_id and row.commit is not None
                    and s.commit == row.commit]
        out[row.name] = {
            "appId": row.app_id,
            "appUuid": row.uuid,
            "commit": row.commit,
            "updateStatus": _update_status(services),
            "services": {
                s.service_name: {
                    "status": s.status,
                    "image": s.image,
                    "downloadProgress": s.download_progress,
                    "releaseId": row.release_id,
                } for s in services
            },
        }
    return out


def app_legacy_state(snapshot: Snapshot, app_id: int) -> dict[str, Any] | None:
    """`GET /v2/applications/:appId/state`, keyed by imageId; None when the app is unknown."""
    services: dict[str, dict[str, Any]] = {}
    created: dict[str, str] = {}
    mine = snapshot.services_of(app_id)
    for svc in mine:
        if svc.container_id is None:
            continue
        key = str(svc.image_id)
        if key not in services:
            services[key] = {"status": svc.status, "releaseId": svc.release_id,
                             "download_progress": None}
            created[key] = svc.created_at or ""
        else:  # two containers of one image: a hand-over; report the older one's release
            services[key]["status"] = "Handing over"
            if (svc.created_at or "") < created[key]:
                services[key]["releaseId"] = svc.release_id
                created[key] = svc.created_at or ""
    for svc in mine:
        key = str(svc.image_id)
        if svc.container_id is None and key not in services:
            services[key] = {"status": svc.status, "releaseId": svc.release_id,
                             "download_progress": svc.download_progress}
    if not services:
        return None
    return _omit_none({"commit": snapshot.commits.get(app_id),
                       "local": {str(app_id): {"services": services}}})


def _image_entries(snapshot: Snapshot, apps: Apps) -> list[dict[str, Any]]:
    """`images[]` of `/v2/state/status`: one per service image, plus other transfers in flight."""
    progress = {img.name: img for img in snapshot.images}
    containers: dict[str, ContainerInfo] = {c.id: c for c in snapshot.current.containers}
    seen: set[tuple[int, str, str]] = set()  # upstream keeps one image row per service
    out: list[dict[str, Any]] = []
    for svc in snapshot.services:
        key = (svc.app_id, svc.service_name, svc.image)
        if not _in_scope(apps, svc.app_id) or key in seen:
            continue
        seen.add(key)
        local = snapshot.current.image_by_ref(svc.image)
        container = containers.get(svc.container_id or "")
        docker_id = local.id if local else (container.image if container else None)
        inflight = progress.get(svc.image)
        if inflight is not None:
            status, pct = inflight.status, inflight.progress
        elif docker_id is not None:
            status, pct = "Downloaded", None
        else:
            # not on the engine and no fetch running (api.md §4.12: images come from the
            # engine and from running tasks): under kill-then-download the old container
            # still runs, and nothing is downloading yet
            continue
        out.append(_omit_none({
            "name": svc.image, "appId": svc.app_id, "serviceName": svc.service_name,
            "imageId": svc.image_id, "dockerImageId": docker_id, "status": status,
        }) | {"downloadProgress": pct})
    for img in snapshot.images:
        if _in_scope(apps, img.app_id) and (img.app_id, img.service_name, img.name) not in seen:
            out.append({"name": img.name, "appId": img.app_id, "serviceName": img.service_name,
                        "status": img.status, "downloadProgress": img.progress})
    return out


def state_status(snapshot: Snapshot, apps: Apps) -> dict[str, Any]:
    """`GET /v2/state/status`: the first in-scope app's containers and images."""
    containers = [
        _omit_none({
            "status": s.status, "serviceName": s.service_name, "appId": s.app_id,
            "imageId": s.image_id, "serviceId": s.service_id, "containerId": s.container_id,
            "createdAt": s.created_at,
        })
        for s in snapshot.services if s.container_id is not None and _in_scope(apps, s.app_id)
    ]
    images = _image_entries(snapshot, apps)
    order = [c["appId"] for c in containers] + [i["appId"] for i in images]
    app_id = order[0] if order else None
    out: dict[str, Any] = {
        "status": "success",
        "appState": "applying" if snapshot.apply_in_progress else "applied",
        "overallDownloadProgress": _mean(
            i["downloadProgress"] for i in images if i["downloadProgress"] is not None),
        "containers": [c for c in containers if c["appId"] == app_id],
        "images": [i for i in images if i["appId"] == app_id],
    }
    commit = snapshot.commits.get(app_id) if app_id is not None else None
    if commit is not None:
        out["release"] = commit
    block = snapshot.lock_block
    if block is not None and _in_scope(apps, block.app_id):
        # ours, beyond upstream: which update lock holds the current update back
        out["blockedBy"] = {"appId": block.app_id, "serviceName": block.service_name,
                            "path": block.path, "since": block.since}
    return out


def scoped_containers(snapshot: Snapshot, apps: Apps) -> list[ContainerInfo]:
    """Supervised containers of in-scope apps, in engine order (for `/v2/containerId`)."""
    return [c for c in snapshot.current.containers if _in_scope(apps, c.app_id)]


def container_id_map(snapshot: Snapshot, apps: Apps) -> dict[str, Any]:
    """`GET /v2/containerId` without a name: the last container of a name wins."""
    return {"status": "success",
            "services": {c.service_name: c.id for c in scoped_containers(snapshot, apps)}}


def plan_view(snapshot: Snapshot, apps: Apps) -> dict[str, Any]:
    """`GET /v2/plan`: the steps the reconciler would apply next (ours, not upstream's)."""
    steps = [describe(step) for step in snapshot.plan]
    return {
        "status": "success",
        "applying": snapshot.apply_in_progress,
        "steps": [s for s in steps
                  if not isinstance(s.get("appId"), int) or _in_scope(apps, s["appId"])],
    }
