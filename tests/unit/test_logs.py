"""The log hub (fan-out, bounded queues, drop announcements) and the pure parts of the
container log followers (frame/line splitting, timestamps, labels, BALENA_LOGS_LEVEL)."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from supervisor.engine.logs import (
    MAX_LINE,
    LineSplitter,
    logs_level,
    parse_timestamp,
    run_start,
    source_of,
)
from supervisor.logs import STREAMING, Closed, LogHub, LogMessage, Subscription

T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(fn(), 10))


def line(n: int, service: str = "main") -> LogMessage:
    return LogMessage(message=f"line {n}", timestamp=1_700_000_000_000 + n, is_stderr=False,
                      service_name=service, service_id=7, app_id=1, image_id=3)


def drain(sub: Subscription[LogMessage]) -> list[str]:
    out = []
    while (item := sub.get_nowait()) is not None:
        out.append(item.message)
    return out


# -- wire format -----------------------------------------------------------------------------

def test_system_message_json_has_is_stderr_only_when_true() -> None:
    plain = LogMessage.system("Supervisor starting", timestamp=1234)
    assert plain.to_json() == {"message": "Supervisor starting", "isSystem": True,
                               "timestamp": 1234}
    err = LogMessage.system("Failed to kill service 'main x'", is_stderr=True, timestamp=5)
    assert err.to_json()["isStdErr"] is True


def test_service_message_json_carries_the_service_identity() -> None:
    msg = LogMessage(message="hello", timestamp=99, is_stderr=True, service_name="main",
                     service_id=7, app_id=1, image_id=3)
    assert json.loads(msg.ndjson()) == {
        "message": "hello", "isStdErr": True, "timestamp": 99, "serviceId": 7,
        "serviceName": "main", "appId": 1, "imageId": 3}
    assert msg.ndjson().endswith(b"\n") and msg.ndjson().count(b"\n") == 1
    assert "isSystem" not in msg.to_json()


def test_first_line_is_upstreams() -> None:
    assert json.loads(STREAMING) == {"message": "Streaming logs", "isSystem": True}


def test_multiline_message_stays_one_ndjson_line() -> None:
    msg = LogMessage.system("a\nb", timestamp=1)
    assert msg.ndjson().count(b"\n") == 1
    assert json.loads(msg.ndjson())["message"] == "a\nb"


# -- fan-out ---------------------------------------------------------------------------------

def test_every_subscriber_gets_every_line_in_order() -> None:
    async def main() -> tuple[list[str], list[str]]:
        hub = LogHub()
        a, b = hub.subscribe(), hub.subscribe()
        hub.publish_many(line(i) for i in range(5))
        hub.system("Supervisor starting")
        return drain(a), drain(b)

    a, b = run(main)
    expected = [f"line {i}" for i in range(5)] + ["Supervisor starting"]
    assert a == expected and b == expected


def test_lines_before_subscribing_are_not_replayed_by_default() -> None:
    async def main() -> list[str]:
        hub = LogHub()
        hub.publish(line(1))
        sub = hub.subscribe(replay=True)  # no backlog configured: upstream keeps none
        hub.publish(line(2))
        return drain(sub)

    assert run(main) == ["line 2"]


def test_backlog_is_replayed_on_request() -> None:
    async def main() -> tuple[list[str], list[str]]:
        hub = LogHub(backlog=2)
        hub.publish_many(line(i) for i in range(4))
        return drain(hub.subscribe(replay=True)), drain(hub.subscribe())

    replayed, fresh = run(main)
    assert replayed == ["line 2", "line 3"]
    assert fresh == []


def test_slow_subscriber_drops_and_is_told_where_the_gap_is() -> None:
    async def main() -> tuple[list[str], list[str], int, int]:
        hub = LogHub(queue_size=100)
        fast = hub.subscribe()
        slow = hub.subscribe(maxsize=3)
        hub.publish_many(line(i) for i in range(10))
        first = [(await slow.get()).message for _ in range(3)]  # it catches up...
        hub.publish_many([line(10), line(11)])  # ...and new lines come after the gap
        rest = drain(slow)
        return drain(fast), first + rest, slow.total_dropped, hub.total_dropped

    fast, slow, slow_dropped, hub_dropped = run(main)
    assert fast == [f"line {i}" for i in range(12)]
    assert slow[:3] == ["line 0", "line 1", "line 2"]
    assert slow[3] == "Warning: 7 log lines dropped: this reader is too slow"
    assert slow[4:] == ["line 10", "line 11"]
    assert slow_dropped == 7 and hub_dropped == 7


def test_announcement_is_delivered_when_the_reader_drains_without_new_lines() -> None:
    async def main() -> tuple[list[LogMessage], LogMessage | None]:
        hub = LogHub()
        slow = hub.subscribe(maxsize=2)
        hub.publish_many(line(i) for i in range(3))
        got = [await slow.get() for _ in range(3)]
        return got, slow.get_nowait()

    got, after = run(main)
    assert [m.message for m in got[:2]] == ["line 0", "line 1"]
    assert got[2].message == "Warning: 1 log line dropped: this reader is too slow"
    assert got[2].is_system and got[2].is_stderr
    assert after is None


def test_blocked_reader_wakes_up_on_publish_and_fast_reader_is_not_held_back() -> None:
    async def main() -> tuple[list[str], int]:
        hub = LogHub()
        fast = hub.subscribe()
        stuck = hub.subscribe(maxsize=1)  # never read: must not slow the others down
        received: list[str] = []

        async def reader() -> None:
            async for msg in fast:
                received.append(msg.message)
                if len(received) == 500:
                    return

        task = asyncio.create_task(reader())
        for i in range(500):
            hub.publish(line(i))
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the reader run between bursts
        await task
        return received, stuck.total_dropped

    received, dropped = run(main)
    assert received == [f"line {i}" for i in range(500)]
    assert dropped == 499


def test_close_unsubscribes_and_ends_iteration_after_draining() -> None:
    async def main() -> tuple[int, list[str], int, bool]:
        hub = LogHub()
        sub = hub.subscribe()
        hub.publish(line(1))
        with sub:
            pass  # leaving the block closes it
        hub.publish(line(2))  # not delivered any more
        got = [m.message async for m in sub]
        with pytest.raises(Closed):
            await sub.get()
        return hub.subscribers, got, len(sub), sub.closed

    subscribers, got, left, closed = run(main)
    assert subscribers == 0 and got == ["line 1"] and left == 0 and closed


def test_hub_close_wakes_blocked_readers() -> None:
    async def main() -> list[str]:
        hub = LogHub()
        sub = hub.subscribe()

        async def reader() -> list[str]:
            return [m.message async for m in sub]

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.01)
        hub.publish(line(1))
        hub.close()
        return await task

    assert run(main) == ["line 1"]


def test_cancelled_get_loses_nothing() -> None:
    async def main() -> list[str]:
        hub = LogHub()
        sub = hub.subscribe()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub.get(), 0.01)
        hub.publish(line(1))
        return [(await sub.get()).message]

    assert run(main) == ["line 1"]


def test_publish_from_another_thread_is_forwarded_to_the_loop() -> None:
    async def main() -> tuple[str, bool]:
        hub = LogHub()
        sub = hub.subscribe()
        loop_thread = threading.get_ident()
        seen_on: list[int] = []
        original = hub._fanout.deliver

        def spy(items: Any) -> None:
            seen_on.append(threading.get_ident())
            original(items)

        hub._fanout.deliver = spy  # type: ignore[method-assign]
        thread = threading.Thread(target=hub.publish, args=(line(1),))
        thread.start()
        thread.join()
        msg = await asyncio.wait_for(sub.get(), 2)
        return msg.message, seen_on[-1] == loop_thread

    message, delivered_on_loop = run(main)
    assert message == "line 1" and delivered_on_loop


def test_runtime_log_listener_converts_seconds_to_ms() -> None:
    async def main() -> LogMessage:
        hub = LogHub()
        sub = hub.subscribe()
        hub.on_system_log((1_700_000_000.25, "Supervisor starting"))
        return await sub.get()

    msg = run(main)
    assert msg.to_json() == {"message": "Supervisor starting", "isSystem": True,
                             "timestamp": 1_700_000_000_250}


def test_subscription_rejects_zero_size() -> None:
    with pytest.raises(ValueError):
        Subscription(0, lambda n: n)


# -- container log parsing -----------------------------------------------------------------

def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


TS1 = b"2024-05-01T12:00:00.123456789Z"
TS2 = b"2024-05-01T12:00:01Z"
NS1 = int(datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()) * 10**9 + 123456789
NS2 = int(datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC).timestamp()) * 10**9


def test_parse_timestamp() -> None:
    assert parse_timestamp(TS1) == NS1
    assert parse_timestamp(TS2) == NS2
    assert parse_timestamp(b"2024-05-01T14:00:00.5+02:00") == NS1 - 123456789 + 500_000_000
    assert parse_timestamp(b"yesterday") is None
    assert parse_timestamp(b"2024-13-01T12:00:00Z") is None


def test_multiplexed_frames_split_across_reads_keep_stdout_and_stderr_apart() -> None:
    data = (frame(1, TS1 + b" out line\n") + frame(2, TS2 + b" err line\n")
            + frame(1, TS2 + b" tail"))
    splitter = LineSplitter(tty=False)
    lines = []
    for i in range(0, len(data), 5):  # a few bytes at a time: headers cut in half too
        lines += splitter.feed(data[i:i + 5])
    assert lines == [(False, NS1, "out line"), (True, NS2, "err line")]
    assert splitter.flush() == [(False, NS2, "tail")]
    assert splitter.flush() == []


def test_tty_stream_is_all_stdout_and_loses_carriage_returns() -> None:
    splitter = LineSplitter(tty=True)
    lines = splitter.feed(TS1 + b" hello\r\n" + TS2 + b" wor")
    lines += splitter.feed(b"ld\r\n")
    assert lines == [(False, NS1, "hello"), (False, NS2, "world")]


def test_line_without_timestamp_is_kept_whole() -> None:
    (is_err, ns, text), = LineSplitter(tty=True).feed(b"no stamp here\n")
    assert text == "no stamp here" and not is_err and ns > NS1


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    (_, _, text), = LineSplitter(tty=True).feed(TS1 + b" caf\xe9\n")
    assert text == "caf\ufffd"


def test_endless_line_is_cut() -> None:
    splitter = LineSplitter(tty=True)
    lines = splitter.feed(TS1 + b" " + b"x" * (MAX_LINE * 2 + 10))
    assert len(lines) == 2
    assert len(splitter.flush()) == 1


def inspect(labels: dict[str, str], env: list[str] | None = None,
            name: str = "/main_31_41_abc", **extra: Any) -> dict[str, Any]:
    return {"Name": name, "Config": {"Labels": labels, "Env": env or []}, **extra}


SUPERVISED = {"io.balena.supervised": "true", "io.balena.app-id": "1",
              "io.balena.service-id": "7", "io.balena.service-name": "main"}


def test_source_of_reads_labels_and_name() -> None:
    src = source_of(inspect(SUPERVISED))
    assert src is not None
    assert (src.app_id, src.service_name, src.service_id, src.image_id) == (1, "main", 7, 31)
    legacy = {"io.resin.supervised": "true", "io.resin.app-id": "2",
              "io.resin.service-name": "old"}
    src = source_of(inspect(legacy, name="/old_5_6"))
    assert src is not None and (src.app_id, src.service_name, src.image_id) == (2, "old", 5)
    assert source_of(inspect({"com.example": "x"})) is None
    assert source_of(inspect({**SUPERVISED, "io.balena.app-id": "one"})) is None


def test_logs_level_from_env() -> None:
    assert logs_level(inspect(SUPERVISED, ["A=1", "BALENA_LOGS_LEVEL=None"])) == "none"
    assert logs_level(inspect(SUPERVISED, ["BALENA_LOGS_LEVEL=err"])) == "err"
    assert logs_level(inspect(SUPERVISED)) == ""


def test_run_start_prefers_previous_finish_then_creation() -> None:
    never = "0001-01-01T00:00:00Z"
    created = TS1.decode()
    assert run_start({"Created": created, "State": {"FinishedAt": never}}) == NS1 + 1
    assert run_start({"Created": created, "State": {"FinishedAt": TS2.decode()}}) == NS2 + 1
    assert run_start({"State": {}}) is None


def test_rejected_lines_take_no_queue_slot() -> None:
    async def main() -> tuple[list[str], int]:
        hub = LogHub()
        sub = hub.subscribe(maxsize=2, accept=lambda m: m.service_name == "main")
        hub.publish_many([line(1, "other"), line(2, "other"), line(3), line(4, "other"),
                          line(5)])
        return drain(sub), sub.total_dropped

    assert run(main) == (["line 3", "line 5"], 0)
