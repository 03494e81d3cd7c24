"""Upstream's client-visible texts, copied from the spec (../shared/spec/api.md, locks.md), never
imported from the code: tests compare the real code path's output with these."""

from __future__ import annotations

# api.md §3.6 (`messages.appNotFound`)
APP_NOT_FOUND = (
    "App not found: an app needs to be installed for this endpoint to work.\n"
    "\tIf you've recently moved this device from another app,\n"
    "\tplease push an app and wait for it to be installed first."
)
# api.md §4.1
SERVICE_NOT_FOUND = "Service not found, a container must exist for this endpoint to work"
TARGET_SERVICE_NOT_FOUND = "Service does not exist in target release"
# api.md §3.6
V2_SERVICE_ENDPOINT_ERROR = (
    "serviceName or imageId parameters were not provided or the app is multi-container. "
    "Use the v2 service action endpoints."
)
