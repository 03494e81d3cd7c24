"""Long-lived streams are capped: 8 per API key (429), 32 on the device (503), counted across
`/v2/events`, `/v2/local/logs` and `/v2/journal-logs`; a stream that ends or whose client goes
away gives its slot back. Through the real app (`build_app` with the stream endpoints)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.api.streams import StreamSlots
from tests.api.conftest import TestClient
from tests.api.fakes import APP1_KEY, APP2_KEY, GLOBAL_KEY, FakeContext
from tests.api.test_streams import Streams, make_client, wait_for

PER_KEY_REFUSED = {"status": "failed", "message": "Too many open streams for this API key "
                                                  "(at most 8): close one first"}
TOTAL_REFUSED = {"status": "failed", "message": "Too many open streams on this device "
                                                "(at most 32): try again later"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def streams(tmp_path: Path) -> Streams:
    return Streams(data_dir=tmp_path)


def refusal(client: TestClient, method: str, path: str, key: str,
            **kwargs: Any) -> tuple[int, Any]:
    """(status, JSON body) of a request expected to be refused; streamed, so that a stream
    that is wrongly accepted does not hang the test (its first line is not JSON: it fails)."""
    with client.stream(method, path, headers=bearer(key), **kwargs) as resp:
        first = next(resp.iter_lines())
        return resp.status_code, json.loads(first)


def slots_of(client: object) -> StreamSlots:
    slots = client.app.state.stream_slots  # type: ignore[attr-defined]
    assert isinstance(slots, StreamSlots)
    return slots


def test_per_key_cap_is_429_and_a_closed_stream_frees_its_slot(streams: Streams) -> None:
    with make_client(FakeContext(), streams) as client, contextlib.ExitStack() as open_:
        held = []
        for _ in range(8):
            resp = open_.enter_context(client.stream("GET", "/v2/events",
                                                     headers=bearer(APP1_KEY)))
            assert resp.status_code == 200
            next(resp.iter_lines())  # the stream runs
            held.append(resp)
        assert refusal(client, "GET", "/v2/events", APP1_KEY) == (429, PER_KEY_REFUSED)
        assert refusal(client, "GET", "/v2/local/logs", APP1_KEY) == (429, PER_KEY_REFUSED)
        # another key is not affected
        with client.stream("GET", "/v2/events", headers=bearer(APP2_KEY)) as other:
            assert other.status_code == 200
        held[0].close()
        wait_for(lambda: slots_of(client).open == 7, "the closed stream's slot")
        with client.stream("GET", "/v2/local/logs", headers=bearer(APP1_KEY)) as again:
            assert again.status_code == 200
    wait_for(lambda: slots_of(client).open == 0, "every slot back")
    assert streams.events.subscribers == 0


def test_total_cap_is_503(streams: Streams) -> None:
    # local mode: no authentication, but the key a client sends still counts as its key
    with make_client(FakeContext(local_mode=True), streams) as client, \
            contextlib.ExitStack() as open_:
        for i in range(32):
            resp = open_.enter_context(client.stream(
                "GET", "/v2/events" if i % 2 else "/v2/local/logs",
                headers=bearer(f"client{i // 8}")))
            assert resp.status_code == 200
            next(resp.iter_lines())
        assert refusal(client, "GET", "/v2/events", "client9") == (503, TOTAL_REFUSED)
        assert slots_of(client).open == 32
    wait_for(lambda: slots_of(client).open == 0, "every slot back")


def test_journal_follows_count_and_end_their_slot(streams: Streams) -> None:
    ctx = FakeContext()
    started: list[int] = []

    async def follow() -> AsyncIterator[bytes]:
        started.append(1)
        yield b"-- journal begins --\n"
        await asyncio.sleep(3600)  # journalctl --follow: until the client goes away

    ctx.actions._journal = follow  # type: ignore[method-assign]
    with make_client(ctx, streams) as client, contextlib.ExitStack() as open_:
        for _ in range(7):
            resp = open_.enter_context(client.stream(
                "POST", "/v2/journal-logs", json={"follow": True}, headers=bearer(GLOBAL_KEY)))
            assert resp.status_code == 200
            assert next(resp.iter_bytes()) == b"-- journal begins --\n"
        events = open_.enter_context(client.stream("GET", "/v2/events",
                                                   headers=bearer(GLOBAL_KEY)))
        assert events.status_code == 200
        assert refusal(client, "POST", "/v2/journal-logs", GLOBAL_KEY,
                       json={"follow": True}) == (429, PER_KEY_REFUSED)
        assert len(started) == 7  # the refused one started no journalctl
    wait_for(lambda: slots_of(client).open == 0, "every slot back")
    # a journal read that ends by itself gives its slot back too
    ctx.actions._journal = FakeContext().actions._journal  # type: ignore[method-assign]
    with make_client(ctx, streams) as client:
        for _ in range(10):
            res = client.post("/v2/journal-logs", json={}, headers=bearer(GLOBAL_KEY))
            assert (res.status_code, res.content) == (200, b"line 1\nline 2\n")
        assert slots_of(client).open == 0


def test_slots_count_per_key_and_release_once() -> None:
    slots = StreamSlots(per_key=2, total=3)
    a1, a2 = slots.acquire("a"), slots.acquire("a")
    with pytest.raises(Exception, match="at most 2") as per_key:
        slots.acquire("a")
    assert getattr(per_key.value, "http_status", None) == 429
    slots.acquire("b")
    with pytest.raises(Exception, match="at most 3") as total:
        slots.acquire("c")
    assert getattr(total.value, "http_status", None) == 503
    a1.release()
    a1.release()  # idempotent: the second call frees nothing more
    assert slots.open == 2
    a2.release()
    slots.acquire("a")
    assert slots.open == 2
