"""The connectivity check against a real TCP listener on 127.0.0.1 that the test opens and
closes. The interval is shortened; every assertion waits for a state change (generous limit),
never for time to pass."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from supervisor.host.connectivity import ConnectivityMonitor, api_host_port

LIMIT = 30.0  # seconds to wait for a change on a loaded machine; never a threshold


async def _listen(port: int = 0) -> asyncio.Server:
    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("https://api.balena-cloud.com", ("api.balena-cloud.com", 443)),
    ("http://api.local", ("api.local", 80)),
    ("https://api.example.com:8443/", ("api.example.com", 8443)),
    ("http://[::1]:99", ("::1", 99)),
    ("", None),
    ("not a url", None),
    ("https://host:99999", None),
])
def test_api_host_port(endpoint: str, expected: tuple[str, int] | None) -> None:
    assert api_host_port(endpoint) == expected


def test_online_offline_online_and_the_vpn_pause(tmp_path: Path) -> None:
    vpn_dir = tmp_path / "vpn_status"
    vpn_dir.mkdir()

    async def scenario() -> list[bool]:
        server = await _listen()
        port = _port(server)
        monitor = ConnectivityMonitor(f"http://127.0.0.1:{port}", vpn_status_dir=vpn_dir,
                                      interval=0.02)
        changes: asyncio.Queue[bool] = asyncio.Queue()
        monitor.on_change(changes.put_nowait)
        assert monitor.online is None and monitor.connected  # nothing known yet
        task = asyncio.create_task(monitor.run())
        seen = [await asyncio.wait_for(changes.get(), LIMIT)]  # listener up
        server.close()
        await server.wait_closed()
        seen.append(await asyncio.wait_for(changes.get(), LIMIT))  # refused
        assert monitor.online is False and not monitor.connected
        (vpn_dir / "active").touch()  # the VPN is up: the check pauses, counting as online
        seen.append(await asyncio.wait_for(changes.get(), LIMIT))
        (vpn_dir / "active").unlink()
        seen.append(await asyncio.wait_for(changes.get(), LIMIT))
        server = await _listen(port)  # the cloud comes back
        seen.append(await asyncio.wait_for(changes.get(), LIMIT))
        assert monitor.online is True
        task.cancel()
        server.close()
        await server.wait_closed()
        return seen

    assert asyncio.run(scenario()) == [True, False, True, False, True]


def test_disabling_the_check_counts_as_online_at_once(tmp_path: Path) -> None:
    async def scenario() -> list[bool]:
        server = await _listen()
        port = _port(server)
        server.close()
        await server.wait_closed()  # nothing listens: the check fails
        # A long interval: only set_enabled() can bring the next check forward.
        monitor = ConnectivityMonitor(f"http://127.0.0.1:{port}", vpn_status_dir=tmp_path,
                                      interval=3600)
        changes: asyncio.Queue[bool] = asyncio.Queue()
        monitor.on_change(changes.put_nowait)
        task = asyncio.create_task(monitor.run())
        seen = [await asyncio.wait_for(changes.get(), LIMIT)]
        monitor.set_enabled(False)
        seen.append(await asyncio.wait_for(changes.get(), LIMIT))
        monitor.set_enabled(True)
        seen.append(await asyncio.wait_for(changes.get(), LIMIT))
        task.cancel()
        return seen

    assert asyncio.run(scenario()) == [False, True, False]


def test_unmanaged_devices_are_not_checked(tmp_path: Path) -> None:
    monitor = ConnectivityMonitor("", vpn_status_dir=tmp_path)
    asyncio.run(asyncio.wait_for(monitor.run(), LIMIT))  # returns at once
    assert monitor.online is None and monitor.connected
    assert asyncio.run(monitor.check_once()) is True


def test_a_failing_callback_does_not_stop_the_check(tmp_path: Path) -> None:
    async def scenario() -> list[bool]:
        server = await _listen()
        monitor = ConnectivityMonitor(f"http://127.0.0.1:{_port(server)}",
                                      vpn_status_dir=tmp_path, interval=0.02)
        changes: asyncio.Queue[bool] = asyncio.Queue()

        async def broken(online: bool) -> None:
            raise RuntimeError("listener bug")

        monitor.on_change(broken)
        monitor.on_change(changes.put_nowait)
        task = asyncio.create_task(monitor.run())
        seen = [await asyncio.wait_for(changes.get(), LIMIT)]
        server.close()
        await server.wait_closed()
        seen.append(await asyncio.wait_for(changes.get(), LIMIT))
        task.cancel()
        return seen

    assert asyncio.run(scenario()) == [True, False]
