"""Runs the blocking Docker adapter on a dedicated, bounded thread pool.

The reconciler and the executor `await` these methods; the event loop never blocks on Docker.
Pull progress and Docker events come back to the loop with `call_soon_threadsafe`. A cancelled
await never orphans a thread: the pull is told to stop and we wait for the worker to finish.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from supervisor.engine.docker import DockerEngine
from supervisor.engine.progress import PullProgress
from supervisor.model.current import Current
from supervisor.model.spec import ContainerSpec, NetworkSpec, VolumeSpec

_LOGGER = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class AsyncEngine:
    def __init__(self, engine: DockerEngine, *, workers: int = 4) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docker")
        self._events_thread: threading.Thread | None = None
        self._events_stop = threading.Event()

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            # let the worker finish so the pool is not left with an orphaned call
            await asyncio.wait([fut])
            raise

    async def ping(self) -> bool:
        return await self._run(self.engine.ping)

    async def observe(self) -> Current:
        return await self._run(self.engine.observe)

    async def image_id(self, ref: str) -> str | None:
        return await self._run(self.engine.image_id, ref)

    async def pull(
        self,
        ref: str,
        on_progress: Callable[[int], None],
        auth: dict[str, str] | None = None,
    ) -> str:
        """Pull an image; `on_progress(percent)` runs on the event loop. Cancellable."""
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        tracker = PullProgress()
        last = [-1]

        def on_event(event: dict[str, Any]) -> None:
            pct = tracker.feed(event)
            if pct != last[0]:
                last[0] = pct
                loop.call_soon_threadsafe(on_progress, pct)

        fut = loop.run_in_executor(
            self._pool, functools.partial(self.engine.pull, ref, on_event, cancel, auth)
        )
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancel.set()
            await asyncio.wait([fut])
            raise

    async def remove_image(self, image: str) -> None:
        await self._run(self.engine.remove_image, image)

    async def create(self, spec: ContainerSpec) -> str:
        return await self._run(self.engine.create, spec)

    async def find_container(self, name: str) -> str | None:
        return await self._run(self.engine.find_container, name)

    async def start(self, cid: str) -> None:
        await self._run(self.engine.start, cid)

    async def stop(self, cid: str, grace: int | None = None) -> None:
        """Stop with the container's own stop timeout unless `grace` seconds are given."""
        await self._run(self.engine.stop, cid, grace)

    async def remove(self, cid: str, *, force: bool = False) -> None:
        await self._run(self.engine.remove, cid, force=force)

    async def rename(self, cid: str, name: str) -> None:
        await self._run(self.engine.rename, cid, name)

    async def clear_restart_policy(self, cid: str) -> None:
        await self._run(self.engine.clear_restart_policy, cid)

    async def create_network(self, spec: NetworkSpec) -> None:
        await self._run(self.engine.create_network, spec)

    async def remove_network(self, net_id: str) -> None:
        await self._run(self.engine.remove_network, net_id)

    async def ensure_supervisor_network(self) -> None:
        await self._run(self.engine.ensure_supervisor_network)

    async def create_volume(self, spec: VolumeSpec) -> None:
        await self._run(self.engine.create_volume, spec)

    async def remove_volume(self, name: str) -> None:
        await self._run(self.engine.remove_volume, name)

    def start_events(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        """Follow Docker container events on a dedicated thread; reconnects after 1 s."""
        loop = asyncio.get_running_loop()
        self._events_stop.clear()

        def follow() -> None:
            while not self._events_stop.is_set():
                try:
                    for event in self.engine.events(self._events_stop):
                        cid = event.get("id") or (event.get("Actor") or {}).get("ID")
                        if cid:
                            self.engine.invalidate(cid)
                        loop.call_soon_threadsafe(on_event, event)
                except Exception as err:  # engine restarted or socket closed: retry
                    _LOGGER.debug("docker events stream ended: %s", err)
                self._events_stop.wait(1.0)

        self._events_thread = threading.Thread(target=follow, name="docker-events", daemon=True)
        self._events_thread.start()

    def close(self) -> None:
        self._events_stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()  # shuts the events stream's socket: the thread ends at once
        if self._events_thread is not None:
            self._events_thread.join(timeout=1)
