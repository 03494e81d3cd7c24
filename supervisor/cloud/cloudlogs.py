"""The device log to the cloud: the runtime's LogHub feeds the cloud LogStream.

`CloudSync` runs `CloudLogs.run()` once the device is provisioned: it gives the stream its
credentials (`logsEndpoint`, else `apiEndpoint`; uuid; device key), starts its sender thread,
subscribes to the LogHub and offers every line. Before each batch it refreshes what the stream
filters on: local mode (nothing goes to the cloud), `SUPERVISOR_LOG_CONTROL` (off: nothing
goes) and each service's `BALENA_LOGS_LEVEL` (config.md §10.3). The stream never blocks
(`offer_many` only appends to a bounded buffer), so the loop never waits on the network.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping

from supervisor.cloud.logstream import LogStream
from supervisor.logs import LogHub, LogMessage
from supervisor.model.config_vars import DeviceConfig
from supervisor.model.target import TargetState

BATCH = 256  # lines handed over at once


class CloudLogs:
    def __init__(self, hub: LogHub, *, target: Callable[[], TargetState | None],
                 local_mode: Callable[[], bool], ssl_context: ssl.SSLContext | None = None,
                 stream: LogStream | None = None) -> None:
        self._hub = hub
        self._target = target
        self._local_mode = local_mode
        self.stream = stream or LogStream(ssl_context=ssl_context, logs_level=self.logs_level)

    async def run(self, endpoint: str, uuid: str, api_key: str) -> None:
        """Forward the device log until cancelled (may be run again: the stream stays up)."""
        self.stream.set_credentials(endpoint, uuid, api_key)
        self.stream.start()
        with self._hub.subscribe() as sub:
            async for first in sub:
                batch = [first]
                while len(batch) < BATCH and (more := sub.get_nowait()) is not None:
                    batch.append(more)
                self.offer(batch)

    async def close(self) -> None:
        """End the stream (what is buffered goes out if it is up) and its thread."""
        await asyncio.to_thread(self.stream.stop, 2.0)

    def offer(self, batch: list[LogMessage]) -> int:
        self.stream.set_local_mode(self._local_mode())
        target = self._target()
        config = DeviceConfig.of(target.config if target else None)
        self.stream.set_log_control(config.flag("SUPERVISOR_LOG_CONTROL"))
        return self.stream.offer_many(batch)

    def logs_level(self, service_id: int) -> str:
        """The service's `BALENA_LOGS_LEVEL` (or `RESIN_`), "" when it has none."""
        target = self._target()
        for app in (target.apps.values() if target else ()):
            for svc in (app.release.services.values() if app.release else ()):
                if svc.service_id == service_id:
                    return _logs_level(svc.environment)
        return ""


def _logs_level(env: Mapping[str, str]) -> str:
    return env.get("BALENA_LOGS_LEVEL") or env.get("RESIN_LOGS_LEVEL") or ""
