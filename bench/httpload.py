"""A tiny keep-alive HTTP/1.1 load generator on asyncio streams (loopback only).

Low overhead on purpose: the client must cost less than the server it measures. Bounded by
request count; stops by itself.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any


async def _client(host: str, port: int, path: str, count: int, lat: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    try:
        for _ in range(count):
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            chunked = False
            for line in head.split(b"\r\n"):
                low = line.lower()
                if low.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                elif low.startswith(b"transfer-encoding:") and b"chunked" in low:
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                await reader.readexactly(length)
            lat.append(time.perf_counter() - start)
    finally:
        writer.close()


async def load(host: str, port: int, path: str, *, clients: int, requests: int) -> dict[str, Any]:
    """`requests` in total over `clients` keep-alive connections; latencies in ms."""
    lat: list[float] = []
    per = max(1, requests // clients)
    await _client(host, port, path, 50, [])  # warm-up
    start = time.perf_counter()
    await asyncio.gather(*(_client(host, port, path, per, lat) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    lat.sort()
    return {
        "path": path,
        "clients": clients,
        "requests": len(lat),
        "rps": round(len(lat) / elapsed, 1),
        "p50_ms": round(statistics.median(lat) * 1000, 3),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3),
    }
