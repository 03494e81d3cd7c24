"""`GET /v2/local/target-state`: the target in upstream's internal, instantiated shape.

Pure. The route answers `{"status": "success", "state": local_target_state(...)}`:
`{"local": {"name", "config", "apps": {"<appId>": App}}}` where an App lists its services,
networks (always with `default`) and volumes as arrays (api.md §4.6). Built from the typed
target the runtime holds (the v3 form is what the store keeps).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from supervisor.model.config_vars import target_config
from supervisor.model.spec import app_networks
from supervisor.model.target import TargetApp, TargetService, TargetState

_SNAKE = re.compile(r"_([a-z0-9])")


def camel_case(key: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), key)


def local_target_state(target: TargetState | None, *, device_name: str, source: str,
                       image_ids: Mapping[str, str], unmanaged: bool = False) -> dict[str, Any]:
    """`image_ids` maps image names to the engine's image ids (`dockerImageId`). The config is
    the device config target: prefixes stripped, every default filled (api.md §4.6)."""
    if target is None:
        return {"local": {"name": device_name, "config": {}, "apps": {}}}
    return {"local": {
        "name": target.name or device_name,
        "config": target_config(target.config, unmanaged=unmanaged),
        "apps": {str(app.app_id): _app(app, source, image_ids)
                 for app in sorted(target.apps.values(), key=lambda a: a.app_id)},
    }}


def _app(app: TargetApp, source: str, image_ids: Mapping[str, str]) -> dict[str, Any]:
    release = app.release
    out: dict[str, Any] = {
        "appId": app.app_id, "appUuid": app.uuid, "appName": app.name, "source": source,
        "isHost": app.is_host, "isRejected": False, "isTargetState": True,
    }
    if release is not None:
        out["commit"] = release.commit
        out["releaseId"] = release.release_id
    ids = {"appId": app.app_id, "appUuid": app.uuid}
    out["services"] = [_service(app, svc, image_ids) for svc in
                       (release.services.values() if release is not None else ())]
    out["networks"] = [{"name": name, **ids, "config": cfg.to_compose()}
                       for name, cfg in sorted(app_networks(app).items())]
    out["volumes"] = [{"name": name, **ids, "config": cfg.to_compose()}
                      for name, cfg in sorted((release.volumes if release else {}).items())]
    return out


def _service(app: TargetApp, svc: TargetService, image_ids: Mapping[str, str]) -> dict[str, Any]:
    release = app.release
    assert release is not None
    config: dict[str, Any] = {camel_case(k): copy.deepcopy(v) for k, v in svc.composition.items()}
    config.update(image=svc.image, running=svc.running, environment=dict(svc.environment),
                  labels=dict(svc.labels))
    out: dict[str, Any] = {
        "appId": app.app_id, "appUuid": app.uuid, "imageId": svc.image_id,
        "serviceName": svc.name, "commit": release.commit, "releaseId": release.release_id,
        "serviceId": svc.service_id, "imageName": svc.image,
        "dependsOn": list(svc.config.depends_on) or None, "config": config,
    }
    docker_id = image_ids.get(svc.image)
    if docker_id is not None:
        out["dockerImageId"] = docker_id
    return out
