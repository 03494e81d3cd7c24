"""Provisioning: turn a provisioning key into a registered device (state.md §4.2).

First step of the cloud flow, run by `sync.CloudSync` before polling and reporting start. It
reads and writes config.json only through `ConfigJson.update()` (atomic), in a worker thread:

1. registered but no `deviceId` -> key exchange;
2. not registered -> `POST /device/register` with the provisioning key (409: the uuid is
   already registered -> key exchange);
3. registered and a provisioning `apiKey` still present -> key exchange;
4. then `{registered_at, deviceId}` are written and `apiKey` dropped in ONE write, so a device
   never registers twice: after a crash it either registers again (409 -> exchange, with the
   same deviceApiKey) or is done.

A key exchange the cloud refuses (device unknown to the provisioning key, or the device key not
accepted) regenerates `uuid` and `deviceApiKey` (a new identity), as upstream does, and also
drops `registered_at` so the new identity registers (upstream would retry the exchange forever).
Unlike upstream, a network failure during the exchange regenerates nothing: only an answer
from the cloud does. The runtime keeps the uuid it started with until it restarts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from supervisor.board.profiles import GENERIC_SLUG
from supervisor.cloud.http import CloudError, Requester
from supervisor.configjson import ConfigJson, new_uuid
from supervisor.errors import ConfigError

_LOGGER = logging.getLogger(__name__)

RETRY_CAP_S = 300.0


@dataclass(frozen=True)
class DeviceInfo:
    """What registration tells the cloud about the device."""

    device_type: str
    supervisor_version: str
    os_version: str
    os_variant: str
    mac_address: str


def registration_device_type(device_type: str | None, board: str) -> str:
    """The device type slug to register with: config.json `deviceType`, else the board profile
    chosen with `--board`; "" when neither names one (the `generic` fallback board is not a
    device type: the cloud refuses it, so registration refuses to send it)."""
    if device_type:
        return device_type
    return "" if board == GENERIC_SLUG else board


class ExchangeKeyError(CloudError):
    """The cloud answered, and refused the key exchange."""


def needs_provisioning(config: ConfigJson) -> bool:
    return not config.provisioned or config.api_key is not None


async def provision(client: Requester, config: ConfigJson, info: DeviceInfo, *,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                    log: Callable[[str], None] = _LOGGER.info) -> None:
    """Retry `provision_once` until the device is provisioned; backoff from
    config.json `bootstrapRetryDelay`, doubling, capped at 5 minutes."""
    failures = 0
    while True:
        try:
            await provision_once(client, config, info, log=log)
            return
        except (CloudError, ConfigError) as err:
            delay = min(config.bootstrap_retry_delay / 1000 * 2 ** failures, RETRY_CAP_S)
            failures += 1
            log(f"Provisioning failed, retrying in {delay:.0f} s: {err}")
            await sleep(delay)


async def provision_once(client: Requester, config: ConfigJson, info: DeviceInfo, *,
                         log: Callable[[str], None] = _LOGGER.info) -> bool:
    """One attempt. True when something was done, False when already provisioned."""
    if not config.device_api_key:
        await _write(config, {"deviceApiKey": new_uuid()})
    if not needs_provisioning(config):
        return False
    registered_at = config.registered_at
    device: Mapping[str, Any]
    if registered_at is not None and config.device_id is None:
        log("Device is registered but has no device id, attempting a key exchange")
        device = await exchange_key(client, config)
    elif registered_at is None:
        device = await register(client, config, info, log=log)
        registered_at = int(time.time() * 1000)
    else:
        log("Device is registered but still has a provisioning key, attempting a key exchange")
        device = await exchange_key(client, config)
    device_id = _device_id(device)
    fresh = config.device_id is None
    await _write(config, {"registered_at": registered_at, "deviceId": device_id},
                 remove=("apiKey",))
    log(f"Device provisioned (id {device_id})")
    if fresh and config.initial_device_name:
        await _set_initial_name(client, device_id, config.initial_device_name, log)
    return True


async def register(client: Requester, config: ConfigJson, info: DeviceInfo, *,
                   log: Callable[[str], None] = _LOGGER.info) -> Mapping[str, Any]:
    """`POST /device/register` with the provisioning key; 409 -> key exchange."""
    key, app_id, uuid = config.api_key, config.application_id, config.uuid
    if not key:
        raise ConfigError(f"{config.path}: cannot register, apiKey (provisioning key) is missing")
    if app_id is None:
        raise ConfigError(f"{config.path}: cannot register, applicationId is missing")
    if not info.device_type:
        raise ConfigError(f"{config.path}: cannot register, deviceType is missing (the "
                          "fleet's device type slug, e.g. raspberrypi4-64 or generic-amd64)")
    log("New device detected, provisioning")
    answer = await client.request("POST", "/device/register", key=key, body={
        "application": app_id, "uuid": uuid, "device_type": info.device_type,
        "api_key": config.device_api_key, "supervisor_version": info.supervisor_version,
        "os_version": info.os_version, "os_variant": info.os_variant,
        "mac_address": info.mac_address,
    })
    if answer.status == 409:
        log("UUID already registered, trying a key exchange")
        return await exchange_key(client, config)
    if answer.status not in (200, 201):
        raise answer.error("device registration failed")
    body = answer.json()
    if not isinstance(body, dict):
        raise CloudError("device registration answered without a device object")
    return body


async def exchange_key(client: Requester, config: ConfigJson) -> Mapping[str, Any]:
    """Make the cloud accept our deviceApiKey; regenerate the identity if it refuses."""
    try:
        return await _exchange_key(client, config)
    except ExchangeKeyError:
        _LOGGER.error("Exchanging key failed, re-registering with a new uuid")
        # A new identity is an unregistered one: the next attempt registers it afresh.
        await _write(config, {"uuid": new_uuid(), "deviceApiKey": new_uuid()},
                     remove=("registered_at", "deviceId"))
        raise


async def _exchange_key(client: Requester, config: ConfigJson) -> Mapping[str, Any]:
    uuid, device_key, prov_key = config.uuid, config.device_api_key, config.api_key
    device = await fetch_device(client, uuid, device_key)
    if device is not None:
        return device
    if not prov_key:
        raise ConfigError(f"{config.path}: the device key is refused and there is no "
                          "provisioning key (apiKey) to exchange it")
    device = await fetch_device(client, uuid, prov_key)
    if device is None:
        raise ExchangeKeyError("couldn't fetch the device with the provisioning key")
    answer = await client.request("POST", f"/api-key/device/{_device_id(device)}/device-key",
                                  key=prov_key, body={"apiKey": device_key})
    if answer.status != 200:
        raise ExchangeKeyError(
            f"couldn't register the device key with the provisioning key: HTTP {answer.status}",
            status=answer.status)
    return device


async def fetch_device(client: Requester, uuid: str, key: str) -> Mapping[str, Any] | None:
    """`GET /v7/device` by uuid with `key`; None when that key does not see the device.
    No answer at all raises CloudError (and regenerates nothing)."""
    query = quote(f"uuid eq '{uuid}'", safe="")
    answer = await client.request("GET", f"/v7/device?$select=id&$filter={query}", key=key)
    if not answer.ok:
        if answer.status >= 500:
            raise answer.error("device lookup failed")
        return None
    body = answer.json()
    found = body.get("d") if isinstance(body, dict) else None
    if isinstance(found, list) and found and isinstance(found[0], dict) and "id" in found[0]:
        return dict(found[0])
    return None


async def _set_initial_name(client: Requester, device_id: int, name: str,
                            log: Callable[[str], None]) -> None:
    try:
        answer = await client.request("PATCH", f"/v7/device({device_id})",
                                      body={"device_name": name})
        if not answer.ok:
            raise answer.error("setting the initial device name failed")
    except CloudError as err:  # upstream only logs it
        log(f"Could not set the initial device name: {err}")


def _device_id(device: Mapping[str, Any]) -> int:
    value = device.get("id")
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise CloudError(f"the cloud sent a device without a numeric id: {value!r}")
    return int(value)


async def _write(config: ConfigJson, changes: Mapping[str, Any],
                 remove: tuple[str, ...] = ()) -> None:
    await asyncio.to_thread(config.update, changes, remove)
