"""Upstream's exact texts of the app and service actions (`src/device-api/messages.ts`):
the actions raise `BadRequest`/`NotFound` with them, so clients see the same bodies."""

from __future__ import annotations

from typing import Literal

APP_NOT_FOUND = (
    "App not found: an app needs to be installed for this endpoint to work.\n"
    "\tIf you've recently moved this device from another app,\n"
    "\tplease push an app and wait for it to be installed first."
)
SERVICE_NOT_FOUND = "Service not found, a container must exist for this endpoint to work"
TARGET_SERVICE_NOT_FOUND = "Service does not exist in target release"
V2_SERVICE_ENDPOINT_ERROR = (
    "serviceName or imageId parameters were not provided or the app is multi-container. "
    "Use the v2 service action endpoints."
)

ServiceAction = Literal["restart", "stop", "start"]
