"""The OpenAPI 3.1 description of the device API, served at `GET /openapi.json` (no key needed:
it only describes the public API, like upstream's docs/API.md).

Written by hand from api.md, one operation per route; `tests/api/test_openapi.py` checks that
the documented (method, path) pairs and the app's routes are the same set, both ways.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from supervisor import COMPAT_VERSION

Op = dict[str, Any]


def _content(ctype: str, schema: Mapping[str, Any], example: object = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": dict(schema)}
    if example is not None:
        media["example"] = example
    return {ctype: media}


def _html(description: str, example: str | None = None) -> dict[str, Any]:
    return {"description": description,
            "content": _content("text/html", {"type": "string"}, example)}


def _text(description: str, example: str | None = None) -> dict[str, Any]:
    return {"description": description,
            "content": _content("text/plain", {"type": "string"}, example)}


def _json(description: str, schema: Mapping[str, Any] | str,
          example: object = None) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"description": description, "content": _content("application/json", ref, example)}


_FAILED = "V2Result"
_GO = "GoResult"
_UNAUTH_TEXT = _text("No valid API key (managed device, not in local mode)", "Unauthorized")
_UNAUTH_JSON = _json("App not in the key's scope", _FAILED,
                     {"status": "failed", "message": "Unauthorized"})
_LOCKED = _json("An update lock is held (retry with force)", _FAILED)
_FAILED_503 = _json("The action failed", _FAILED)
_MALFORMED = _json("Malformed JSON body", _FAILED)
_APP_ID = [{"name": "appId", "in": "path", "required": True,
            "schema": {"type": ["integer", "string"]}}]


def _body(properties: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    return {"required": False, "content": {
        "application/json": {"schema": schema},
        "application/x-www-form-urlencoded": {"schema": schema},
    }}


_FORCE = {"force": {"$ref": "#/components/schemas/Truthy"}}
_APP_BODY = _body({"appId": {"type": ["integer", "string"]}, **_FORCE}, ("appId",))


def _op(summary: str, tag: str, responses: Mapping[str | int, Any], *, open_: bool = False,
        body: Mapping[str, Any] | None = None, params: list[dict[str, Any]] | None = None,
        description: str | None = None) -> Op:
    op: Op = {"summary": summary, "tags": [tag],
              "responses": {str(k): v for k, v in responses.items()}}
    if description:
        op["description"] = description
    if open_:
        op["security"] = []
    else:
        op["responses"].setdefault("401", _UNAUTH_TEXT)
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = dict(body)
        op["responses"].setdefault("400", _MALFORMED)
    return op


def _service_action(verb: str) -> Op:
    return _op(
        f"{verb.capitalize()} one service of an app", "v2",
        {200: _html("Done", "OK"),
         400: _json("Invalid app id (JSON) or neither serviceName nor imageId (text)", _FAILED),
         401: _UNAUTH_JSON,
         404: _html("App, container or target service not found"),
         423: _LOCKED, 503: _FAILED_503},
        params=_APP_ID,
        body=_body({"serviceName": {"type": "string"},
                    "imageId": {"type": ["integer", "string"]}, **_FORCE}),
    )


OPERATIONS: dict[tuple[str, str], Op] = {
    ("GET", "/openapi.json"): _op(
        "This document", "meta",
        {200: _json("OpenAPI 3.1 document", {"type": "object"})}, open_=True),
    ("GET", "/v1/healthy"): _op(
        "Supervisor health", "v1",
        {200: _text("Healthy", "OK"), 500: _html("Unhealthy", "Unhealthy")}, open_=True),
    ("GET", "/ping"): _op("Liveness", "v1", {200: _html("Alive", "OK")}, open_=True),
    ("POST", "/v1/blink"): _op(
        "Blink the identification LED for 15 s", "v1", {200: _text("Started", "OK")}),
    ("POST", "/v1/regenerate-api-key"): _op(
        "Replace the key used for this request", "v1",
        {200: _html("The new key"), 503: _FAILED_503},
        description="The old key stops working at once."),
    ("POST", "/v1/restart"): _op(
        "Recreate every container of an app", "v1",
        {200: _html("Done", "OK"), 400: _html("Missing app id"), 401: _UNAUTH_JSON,
         423: _LOCKED, 503: _FAILED_503}, body=_APP_BODY),
    ("POST", "/v1/apps/{appId}/stop"): _op(
        "Stop the container of a single-container app", "v1",
        {200: _json("Stopped", {"type": "object",
                                "properties": {"containerId": {"type": "string"}}}),
         400: _html("Invalid app id, no app, or a multi-container app"),
         401: _UNAUTH_TEXT, 404: _html("Service does not exist in target release"),
         423: _LOCKED, 503: _FAILED_503},
        params=_APP_ID, body=_body(_FORCE)),
    ("POST", "/v1/apps/{appId}/start"): _op(
        "Start the container of a single-container app", "v1",
        {200: _json("Started", {"type": "object",
                                "properties": {"containerId": {"type": "string"}}}),
         400: _html("Invalid app id, no app, or a multi-container app"),
         401: _UNAUTH_TEXT, 404: _html("Service does not exist in target release"),
         503: _FAILED_503},
        params=_APP_ID, body=_body({})),
    ("POST", "/v1/reboot"): _op(
        "Reboot the device", "v1",
        {202: _json("Rebooting", _GO, {"Data": "OK", "Error": None}),
         423: _json("Locked", _GO), 500: _json("Failed", _GO)}, body=_body(_FORCE)),
    ("POST", "/v1/shutdown"): _op(
        "Shut the device down", "v1",
        {202: _json("Shutting down", _GO, {"Data": "OK", "Error": None}),
         423: _json("Locked", _GO), 500: _json("Failed", _GO)}, body=_body(_FORCE)),
    ("GET", "/v1/apps/{appId}"): _op(
        "The single container of an app", "v1",
        {200: _json("The app", "V1App"), 400: _html("Missing app id / not single-container"),
         401: _json("Out of scope", _FAILED,
                    {"status": "failed", "message": "Application is not available"}),
         503: _FAILED_503}, params=_APP_ID),
    ("POST", "/v1/purge"): _op(
        "Recreate an app with empty volumes", "v1",
        {200: _json("Done", _GO, {"Data": "OK", "Error": ""}),
         400: _html("Invalid or missing appId"), 401: _UNAUTH_JSON, 423: _LOCKED,
         503: _FAILED_503}, body=_APP_BODY),
    ("POST", "/v1/update"): _op(
        "Check for a new target now", "v1",
        {204: {"description": "Fetch started"}, 202: _text("Instant updates off", "Accepted")},
        body=_body({**_FORCE, "cancel": {"$ref": "#/components/schemas/Truthy"}})),
    ("GET", "/v1/device/host-config"): _op(
        "Host proxy and hostname", "v1",
        {200: _json("Host config", "HostConfig"), 503: _FAILED_503}),
    ("PATCH", "/v1/device/host-config"): _op(
        "Change the host proxy and hostname", "v1",
        {200: _html("Done", "OK"), 400: _html("Could not parse host config input"),
         423: _html("Locked"), 503: _html("Failed")},
        body=_body({"network": {"$ref": "#/components/schemas/HostNetwork"}, **_FORCE},
                   ("network",))),
    ("GET", "/v1/device"): _op(
        "Device state", "v1", {200: _json("Device state", "V1Device"), 503: _FAILED_503}),
    ("POST", "/v2/applications/{appId}/restart-service"): _service_action("restart"),
    ("POST", "/v2/applications/{appId}/stop-service"): _service_action("stop"),
    ("POST", "/v2/applications/{appId}/start-service"): _service_action("start"),
    ("POST", "/v2/applications/{appId}/purge"): _op(
        "Recreate an app with empty volumes", "v2",
        {200: _html("Done", "OK"), 400: _json("Missing app id", _FAILED),
         401: _UNAUTH_JSON, 423: _LOCKED, 503: _FAILED_503},
        params=_APP_ID, body=_body(_FORCE)),
    ("POST", "/v2/applications/{appId}/restart"): _op(
        "Recreate every container of an app", "v2",
        {200: _html("Done", "OK"), 400: _json("Missing app id", _FAILED),
         401: _UNAUTH_JSON, 423: _LOCKED, 503: _FAILED_503},
        params=_APP_ID, body=_body(_FORCE)),
    ("GET", "/v2/applications/state"): _op(
        "Target apps and their services' state, keyed by app name", "v2",
        {200: _json("Apps", {"type": "object",
                             "additionalProperties": {"$ref": "#/components/schemas/AppState"}}),
         503: _FAILED_503}),
    ("GET", "/v2/applications/{appId}/state"): _op(
        "One app's services keyed by imageId (legacy shape)", "v2",
        {200: _json("App", {"type": "object"}),
         400: _json("Invalid application ID", _FAILED),
         409: _json("Application ID does not exist (or out of scope)", _FAILED),
         500: _json("Unable to retrieve state", _FAILED)}, params=_APP_ID),
    ("GET", "/v2/local/target-state"): _op(
        "The instantiated target state", "v2",
        {200: _json("Target", {"type": "object", "properties": {
            "status": {"const": "success"}, "state": {"type": "object"}}})}),
    ("POST", "/v2/local/target-state"): _op(
        "Set the target state (local mode only)", "v2",
        {200: _json("Stored; the apply runs in the background", _FAILED,
                    {"status": "success", "message": "OK"}),
         400: _json("Not in local mode, or invalid target", _FAILED)},
        body={"required": True, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"local": {"type": "object"},
                                             "force": {"type": "boolean"}}}}}}),
    ("GET", "/v2/local/device-info"): _op(
        "Device type and architecture", "v2",
        {200: _json("Info", {"type": "object", "properties": {
            "status": {"const": "success"},
            "info": {"type": "object", "properties": {"arch": {"type": "string"},
                                                      "deviceType": {"type": "string"}}}}}),
         500: _json("Failed", _FAILED)}),
    ("GET", "/v2/version"): _op(
        "Supervisor version (upstream compatible)", "v2",
        {200: _json("Version", {"type": "object"},
                    {"status": "success", "version": COMPAT_VERSION})}),
    ("GET", "/v2/containerId"): _op(
        "Container ids by service name", "v2",
        {200: _json("One id, or a name -> id map", {"type": "object"}),
         503: _json("Could not find service with that name", _FAILED)},
        params=[{"name": "serviceName", "in": "query", "schema": {"type": "string"}},
                {"name": "service", "in": "query", "schema": {"type": "string"}}]),
    ("GET", "/v2/state/status"): _op(
        "Apply state, containers and images of the first app", "v2",
        {200: _json("Status", "StateStatus")}),
    ("GET", "/v2/device/name"): _op(
        "Device name", "v2", {200: _json("Name", {"type": "object", "properties": {
            "status": {"const": "success"}, "deviceName": {"type": "string"}}})}),
    ("GET", "/v2/device/tags"): _op(
        "Device tags (from the cloud)", "v2",
        {200: _json("Tags", {"type": "object"}), 500: _json("Failed", _FAILED)}),
    ("PATCH", "/v2/device/tags"): _op(
        "Set device tags (reported to the cloud)", "v2",
        {202: _json("Queued", {"type": "object"}, {"status": "success"}),
         400: _json("Invalid tags body / whitespace in a key", _FAILED),
         500: _json("Failed", _FAILED)},
        body={"required": True, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": {"type": "string"}}}}}),
    ("GET", "/v2/device/vpn"): _op(
        "VPN state", "v2", {200: _json("VPN", {"type": "object", "properties": {
            "status": {"const": "success"},
            "vpn": {"type": "object", "properties": {"enabled": {"type": "boolean"},
                                                     "connected": {"type": "boolean"}}}}})}),
    ("GET", "/v2/cleanup-volumes"): _op(
        "Remove orphaned volumes (of the key's apps for a scoped key)", "v2",
        {200: _json("Done", {"type": "object"}, {"status": "success"}), 503: _FAILED_503}),
    ("POST", "/v2/journal-logs"): _op(
        "Stream journalctl output", "v2",
        {200: {"description": "journalctl stdout, streamed",
               "content": {"application/octet-stream": {"schema": {"type": "string"}}}}},
        body=_body({"all": {"$ref": "#/components/schemas/Truthy"},
                    "follow": {"$ref": "#/components/schemas/Truthy"},
                    "count": {"type": ["integer", "string"]}, "unit": {"type": "string"},
                    "containerId": {"type": "string"}, "format": {"type": "string"},
                    "since": {"type": "string"}, "until": {"type": "string"}})),
    ("GET", "/v2/locks"): _op(
        "Update locks held now (not upstream)", "extensions",
        {200: _json("Locks", {"type": "object", "properties": {
            "status": {"const": "success"}, "locks": {"type": "array",
                                                      "items": {"type": "object"}}}})}),
    ("GET", "/v2/plan"): _op(
        "The steps the reconciler plans next (not upstream)", "extensions",
        {200: _json("Plan", {"type": "object", "properties": {
            "status": {"const": "success"}, "applying": {"type": "boolean"},
            "steps": {"type": "array", "items": {"type": "object"}}}})}),
}

SCHEMAS: dict[str, Any] = {
    "V2Result": {"type": "object", "required": ["status"], "properties": {
        "status": {"enum": ["success", "failed"]}, "message": {"type": "string"}}},
    "GoResult": {"type": "object", "properties": {
        "Data": {"type": "string"}, "Error": {"type": ["string", "null"]}}},
    "Truthy": {"description": "true, 1, \"1\", \"true\" or \"on\" (any case) mean true",
               "type": ["boolean", "integer", "string"]},
    "V1App": {"type": "object", "properties": {
        "appId": {"type": "integer"}, "commit": {"type": "string"},
        "containerId": {"type": "string"}, "env": {"type": "object"},
        "imageId": {"type": "string"}, "releaseId": {"type": "integer"}}},
    "V1Device": {"type": "object", "properties": {
        "api_port": {"type": "integer"}, "commit": {"type": "string"},
        "ip_address": {"type": "string"}, "mac_address": {"type": "string"},
        "status": {"enum": ["Stopping", "Starting", "Downloading", "Installing", "Idle"]},
        "download_progress": {"type": ["integer", "number", "null"]},
        "os_version": {"type": "string"}, "supervisor_version": {"type": "string"},
        "update_pending": {"type": "boolean"}, "update_downloaded": {"type": "boolean"},
        "update_failed": {"type": "boolean"}}},
    "HostNetwork": {"type": "object", "properties": {
        "hostname": {"type": "string"},
        "proxy": {"type": "object", "properties": {
            "type": {"enum": ["socks4", "socks5", "http-connect", "http-relay"]},
            "ip": {"type": "string"}, "port": {"type": ["integer", "string"]},
            "login": {"type": "string"}, "password": {"type": "string"},
            "dns": {"type": ["boolean", "string"]},
            "noProxy": {"type": "array", "items": {"type": "string"}}}}}},
    "HostConfig": {"type": "object", "properties": {
        "network": {"$ref": "#/components/schemas/HostNetwork"}}},
    "AppState": {"type": "object", "properties": {
        "appId": {"type": "integer"}, "appUuid": {"type": "string"},
        "commit": {"type": ["string", "null"]}, "updateStatus": {"type": "string"},
        "services": {"type": "object", "additionalProperties": {
            "type": "object", "properties": {
                "status": {"type": "string"}, "image": {"type": "string"},
                "downloadProgress": {"type": ["integer", "null"]},
                "releaseId": {"type": ["integer", "null"]}}}}}},
    "StateStatus": {"type": "object", "properties": {
        "status": {"const": "success"}, "appState": {"enum": ["applying", "applied"]},
        "overallDownloadProgress": {"type": ["number", "null"]},
        "containers": {"type": "array", "items": {"type": "object"}},
        "images": {"type": "array", "items": {"type": "object"}},
        "release": {"type": "string"}}},
}


def document(extra: Mapping[tuple[str, str], Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The whole document; `extra` documents routes added with `build_app(extra=...)`."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in {**OPERATIONS, **(extra or {})}.items():
        paths.setdefault(path, {})[method.lower()] = dict(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "balena Supervisor device API", "version": COMPAT_VERSION,
                 "description": "Wire-compatible with balena Supervisor v19.0.5. See docs/api.md."},
        "servers": [{"url": "http://127.0.0.1:48484"}],
        "security": [{"apikeyQuery": []}, {"bearer": []}, {"apiKeyHeader": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apikeyQuery": {"type": "apiKey", "in": "query", "name": "apikey"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "Authorization",
                                 "description": "`ApiKey <key>` (scheme case-insensitive)"},
            },
            "schemas": SCHEMAS,
        },
    }
