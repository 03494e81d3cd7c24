"""The initial configuration report (state.md §4.3): after provisioning, the cloud learns the
device configuration the device already has.

If the store's `initialConfigReported` is not the current API endpoint (first boot, or a
device moved to another backend), the target state is fetched, and every current config
value (variables and boot config, e.g. config.txt's `HOST_CONFIG_gpu_mem`) that the target
does not set and that differs from its default becomes a device config variable
(`POST /v7/device_config_variable`, name `RESIN_<KEY>`). `SUPERVISOR_LOCAL_MODE` counts as
"false" and `SUPERVISOR_VPN_CONTROL` as "true" (so neither is ever sent: they are defaults).
Then `initialConfigReported` is set to the endpoint. A failure raises CloudError; the caller
retries after `bootstrapRetryDelay`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from supervisor.cloud.http import Requester
from supervisor.model.config_vars import CONFIG_VARS, LOCAL_MODE, VPN_CONTROL, format_config

REPORTED_KEY = "initialConfigReported"
DEFAULTS: Mapping[str, str] = {**{v.name: v.default for v in CONFIG_VARS}, VPN_CONTROL: "true"}


class ReportStore(Protocol):
    async def get_config(self, key: str, default: Any = None) -> Any: ...

    async def set_config(self, key: str, value: Any) -> None: ...


def initial_variables(current: Mapping[str, str], target: Mapping[str, str]) -> dict[str, str]:
    """The variables to create: current values the (formatted) target lacks, not defaults."""
    values = {**current, LOCAL_MODE: "false", VPN_CONTROL: "true"}
    return {name: value for name, value in values.items()
            if name not in target and value != DEFAULTS.get(name)}


async def report_initial_config(client: Requester, store: ReportStore, *, uuid: str,
                                device_id: int, api_endpoint: str,
                                current: Callable[[], Awaitable[Mapping[str, str]]]) -> bool:
    """Report once per API endpoint; True when variables were reported now."""
    if await store.get_config(REPORTED_KEY) == api_endpoint:
        return False
    answer = await client.request("GET", f"/device/v3/{uuid}/state")
    if not answer.ok:
        raise answer.error("fetching the target state for the initial config report failed")
    body = answer.json()
    device = body.get(uuid) if isinstance(body, dict) else None
    raw = device.get("config") if isinstance(device, dict) else None
    target = format_config({str(k): str(v) for k, v in raw.items()}
                           if isinstance(raw, dict) else {})
    for name, value in initial_variables(await current(), target).items():
        created = await client.request("POST", "/v7/device_config_variable", body={
            "device": device_id, "name": f"RESIN_{name}", "value": value})
        if not created.ok:
            raise created.error(f"creating device config variable RESIN_{name} failed")
    await store.set_config(REPORTED_KEY, api_endpoint)
    return True
