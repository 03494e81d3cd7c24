"""The store: migrations, durability settings, every table's methods, and the async facade."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.errors import InternalError, NotFound
from supervisor.store import (
    MIGRATIONS,
    ApiKey,
    AsyncStore,
    ImageRecord,
    Store,
    read_global_api_key,
)

HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "database.sqlite"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path) as opened:
        yield opened


def reopen(store: Store) -> Store:
    store.close()
    return Store(store.path)


# -- opening ----------------------------------------------------------------------------------


def test_migrations_are_applied_once(db_path: Path) -> None:
    with Store(db_path) as first:
        names = first.applied_migrations()
        applied_at = first._db.execute("SELECT applied_at FROM _sqlite_migrations").fetchall()
        tables = set(first._db.table_names())
    assert names == [m.name for m in MIGRATIONS._migrations]
    assert {"config", "api_key", "target", "current_commit", "image", "service_status",
            "journal", "host_action", "tags", "report_cache", "failure"} <= tables
    with Store(db_path) as second:
        assert second.applied_migrations() == names
        again = second._db.execute("SELECT applied_at FROM _sqlite_migrations").fetchall()
        assert again == applied_at  # nothing re-applied


def test_wal_and_full_sync(store: Store) -> None:
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("busy_timeout") == 5000


def test_unopenable_path_is_an_internal_error(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(InternalError, match="cannot open database"):
        Store(tmp_path / "dir.sqlite")


def test_store_refuses_other_threads(store: Store) -> None:
    errors: list[BaseException] = []

    def use() -> None:
        try:
            store.current_commits()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "thread" in str(errors[0])


# -- config -------------------------------------------------------------------------------------


def test_config_keys(store: Store) -> None:
    assert store.get_config("name", "local") == "local"
    store.set_config("name", "my-device")
    store.set_config_many({"delta": True, "pinDevice": {"app": 1, "commit": "abc"}})
    store = reopen(store)
    assert store.get_config("name") == "my-device"
    assert store.all_config() == {
        "name": "my-device", "delta": True, "pinDevice": {"app": 1, "commit": "abc"}
    }
    store.delete_config("name")
    assert store.get_config("name") is None
    store.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=30, deadline=None,  # fsyncs: seconds on a loaded disk
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(), value=json_values)
def test_config_round_trips_any_json(store: Store, key: str, value: Any) -> None:
    store.set_config(key, value)
    assert store.get_config(key, "missing") == value


# -- API keys -----------------------------------------------------------------------------------


def test_global_key_is_created_once_and_survives(store: Store) -> None:
    key = store.global_api_key()
    assert HEX32.fullmatch(key)
    assert store.global_api_key() == key
    store = reopen(store)
    assert store.global_api_key() == key
    found = store.lookup_api_key(key)
    assert found == ApiKey(key, 0, None, ({"type": "global"},))
    assert found.is_global and found.allows_app(123)
    store.close()


def test_scoped_keys_per_app_and_service(store: Store) -> None:
    a_main = store.scoped_api_key(1, "main")
    a_side = store.scoped_api_key(1, "side")
    b_main = store.scoped_api_key(2, "main")
    assert len({a_main, a_side, b_main, store.global_api_key()}) == 4
    assert store.scoped_api_key(1, "main") == a_main
    found = store.lookup_api_key(a_main)
    assert found == ApiKey(a_main, 1, "main", ({"type": "app", "appId": 1},))
    assert found.allows_app(1) and not found.allows_app(2) and not found.is_global
    assert len(store.all_api_keys()) == 4


def test_scoped_key_is_replaced_when_scopes_change(store: Store) -> None:
    old = store.scoped_api_key(1, "main")
    both = [{"type": "app", "appId": 1}, {"type": "app", "appId": 2}]
    new = store.scoped_api_key(1, "main", both)
    assert new != old
    assert store.lookup_api_key(old) is None
    found = store.lookup_api_key(new)
    assert found is not None and found.allows_app(1) and found.allows_app(2)
    assert store.scoped_api_key(1, "main", both) == new


def test_regenerate_invalidates_the_old_key_at_once(store: Store) -> None:
    glob = store.global_api_key()
    new_glob = store.regenerate_api_key(glob)
    assert HEX32.fullmatch(new_glob) and new_glob != glob
    assert store.lookup_api_key(glob) is None
    assert store.global_api_key() == new_glob
    assert store.lookup_api_key(new_glob).scopes == ({"type": "global"},)  # type: ignore[union-attr]

    two_apps = [{"type": "app", "appId": 5}, {"type": "app", "appId": 6}]
    scoped = store.scoped_api_key(5, "web", two_apps)
    new_scoped = store.regenerate_api_key(scoped)
    assert store.lookup_api_key(scoped) is None
    found = store.lookup_api_key(new_scoped)
    assert found is not None
    assert (found.app_id, found.service_name) == (5, "web")
    assert found.allows_app(6)
    with pytest.raises(NotFound):
        store.regenerate_api_key(scoped)
    with pytest.raises(NotFound):
        store.regenerate_api_key("")


def test_delete_api_keys_never_touches_the_global_key(store: Store) -> None:
    glob = store.global_api_key()
    store.scoped_api_key(1, "a")
    store.scoped_api_key(1, "b")
    kept = store.scoped_api_key(2, "a")
    assert store.delete_api_keys(0) == 0
    assert store.delete_api_keys(1, "a") == 1
    assert store.delete_api_keys(1) == 1
    assert {k.key for k in store.all_api_keys()} == {glob, kept}


def test_read_global_api_key(db_path: Path) -> None:
    assert read_global_api_key(db_path, create=False) is None
    assert not db_path.exists()
    key = read_global_api_key(db_path)
    assert key is not None and HEX32.fullmatch(key)
    assert read_global_api_key(db_path, create=False) == key
    assert read_global_api_key(db_path) == key


# -- target, commits, images, statuses ----------------------------------------------------------


def test_targets_survive_reopen(store: Store) -> None:
    assert store.load_target("cloud") is None
    cloud = {"uuid1": {"apps": {"a": {"id": 1, "releases": {}}}, "config": {}}}
    store.save_target("cloud", cloud, etag='W/"1"')
    store.save_target("local", {"local": {"name": "x"}})
    store = reopen(store)
    assert store.load_target("cloud") == cloud
    assert store.target_etag("cloud") == 'W/"1"'
    assert store.load_target("local") == {"local": {"name": "x"}}
    assert store.target_etag("local") is None
    store.save_target("cloud", {"v": 2}, etag='W/"2"')
    assert store.load_target("cloud") == {"v": 2}
    store.delete_target("local")
    assert store.load_target("local") is None
    store.close()


def test_current_commits(store: Store) -> None:
    store.set_current_commit(1, "aaa")
    store.set_current_commit(2, "bbb")
    store.set_current_commit(1, "ccc")
    assert store.current_commits() == {1: "ccc", 2: "bbb"}
    store.delete_current_commit(2)
    assert reopen(store).current_commits() == {1: "ccc"}


def test_images_and_download_progress(store: Store) -> None:
    image = ImageRecord(name="registry/app@sha256:1", app_id=1, app_uuid="u", service_name="main",
                        commit="c", release_id=3, image_id=4)
    store.upsert_image(image)
    store.set_download_progress(image.name, 40)
    got = store.get_image(image.name)
    assert got is not None and got.download_progress == 40 and got.service_name == "main"
    assert got.updated_at is not None
    store.upsert_image(ImageRecord(name=image.name, docker_image_id="sha256:abc", app_id=1))
    store.set_image_status(image.name, "Downloaded")
    got = store.get_image(image.name)
    assert got is not None
    assert (got.docker_image_id, got.status, got.commit) == ("sha256:abc", "Downloaded", None)
    store.set_download_progress("other", 5)  # a row is created for an unknown image
    assert [i.name for i in store.images()] == ["other", image.name]
    store.delete_image("other")
    assert [i.name for i in store.images()] == [image.name]
    assert store.get_image("other") is None


def test_service_statuses(store: Store) -> None:
    store.set_service_status(1, "main", "c1", "Downloading")
    store.set_service_status(1, "main", "c1", "Running")
    store.set_service_status(1, "side", "c1", "Stopped")
    store.set_service_status(2, "main", "c9", "Running")
    assert [(s.service_name, s.status) for s in store.service_statuses(1)] == [
        ("main", "Running"), ("side", "Stopped")]
    store.delete_service_status(1, "main")
    assert [(s.app_id, s.service_name) for s in store.service_statuses()] == [
        (1, "side"), (2, "main")]
    store.delete_service_status(2, commit="other")
    assert len(store.service_statuses(2)) == 1
    store.delete_service_status(2, commit="c9")
    assert store.service_statuses(2) == []


# -- journal, host actions, tags, report cache, failures ----------------------------------------


def test_journal_open_and_close(store: Store) -> None:
    first = store.journal_begin("fetch", {"image": "x"}, app_id=1, service_name="main")
    second = store.journal_begin("kill", {"container": "abc"})
    assert second > first
    store.journal_end(first, "ok")
    store = reopen(store)  # as after a crash: the unfinished step is still open
    (open_entry,) = store.journal_open()
    assert (open_entry.id, open_entry.kind) == (second, "kill")
    assert open_entry.step == {"container": "abc"}
    assert open_entry.finished_at is None and open_entry.outcome is None
    store.journal_end(second, "interrupted")
    assert store.journal_open() == []
    with pytest.raises(NotFound):
        store.journal_end(second, "again")
    recent = store.journal_recent()
    assert [(e.id, e.outcome) for e in recent] == [(second, "interrupted"), (first, "ok")]
    assert recent[1].app_id == 1 and recent[1].service_name == "main"
    store.close()


def test_journal_prunes_old_finished_entries(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("supervisor.store.JOURNAL_KEEP", 3)
    stuck = store.journal_begin("start", {})
    ids = [store.journal_begin("noop", {"n": n}) for n in range(6)]
    for entry_id in ids:
        store.journal_end(entry_id, "ok")
    remaining = {e.id for e in store.journal_recent()}
    assert remaining == {stuck, *ids[-3:]}  # open entries are never pruned
    assert [e.id for e in store.journal_open()] == [stuck]


def test_host_actions(store: Store) -> None:
    first = store.record_host_action("reboot", False, "dry-run")
    second = store.record_host_action("shutdown", True, "systemd", "refused: locked")
    store.finish_host_action(first, "done")
    actions = store.host_actions()
    assert [(a.id, a.action, a.force, a.outcome) for a in actions] == [
        (second, "shutdown", True, "refused: locked"), (first, "reboot", False, "done")]
    with pytest.raises(NotFound):
        store.finish_host_action(999, "x")


def test_tags(store: Store) -> None:
    store.set_tags("target", {"a": "1", "b": "2"})
    store.set_tags("reported", {"a": "0"})
    store.set_tags("target", {"c": "3"})
    assert store.tags("target") == {"c": "3"}
    assert store.tags("reported") == {"a": "0"}
    store.set_tags("reported", {})
    assert store.tags("reported") == {}


def test_report_cache(store: Store) -> None:
    assert store.report_cache() is None
    store.set_report_cache({"local": {"status": "Idle"}})
    store.set_report_cache({"local": {"status": "Downloading"}})
    assert reopen(store).report_cache() == {"local": {"status": "Downloading"}}


def test_failure_counters(store: Store) -> None:
    assert store.failure("h1") is None
    assert store.record_failure("h1", "boom") == 1
    assert store.record_failure("h1", "bang") == 2
    assert store.record_failure("h2", "x") == 1
    found = store.failure("h1")
    assert found is not None and (found.count, found.last_error) == (2, "bang")
    store.clear_failures("h1")
    assert store.failure("h1") is None and store.failure("h2") is not None
    store.clear_failures()
    assert store.failure("h2") is None


# -- AsyncStore ---------------------------------------------------------------------------------


def test_async_store_runs_on_one_store_thread(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    original = Store.current_commits

    def spy(self: Store) -> dict[int, str]:
        threads.add(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(Store, "current_commits", spy)

    async def scenario() -> None:
        astore = await AsyncStore.open(db_path)
        assert astore.thread_name.startswith("store")
        assert astore.thread_name != threading.current_thread().name
        await asyncio.gather(*(astore.set_current_commit(i, f"c{i}") for i in range(10)))
        for _ in range(3):
            assert await astore.current_commits() == {i: f"c{i}" for i in range(10)}
        await astore.close()
        await astore.close()  # idempotent

    asyncio.run(scenario())
    assert len(threads) == 1
    (name,) = threads
    assert name.startswith("store")


def test_async_store_round_trips(db_path: Path) -> None:
    async def scenario() -> None:
        async with await AsyncStore.open(db_path) as astore:
            await astore.save_target("local", {"a": 1}, etag="e")
            assert await astore.load_target("local") == {"a": 1}
            await astore.set_config("name", "dev")
            assert await astore.get_config("name") == "dev"
            entry = await astore.journal_begin("fetch", {"x": 1}, 1, "main")
            assert [e.id for e in await astore.journal_open()] == [entry]
            await astore.journal_end(entry, "ok")
            with pytest.raises(NotFound):
                await astore.journal_end(entry, "ok")
            await astore.set_tags("target", {"k": "v"})
            assert await astore.tags("target") == {"k": "v"}
            assert await astore.record_failure("t", "e") == 1

    asyncio.run(scenario())
    with Store(db_path) as store:
        assert store.load_target("local") == {"a": 1}
        assert store.get_config("name") == "dev"


def test_async_key_cache_follows_every_change(db_path: Path) -> None:
    with Store(db_path) as store:
        existing = store.scoped_api_key(9, "old")

    async def scenario() -> None:
        astore = await AsyncStore.open(db_path)
        try:
            # Keys already in the database are cached at open.
            cached = astore.lookup_api_key_cached(existing)
            assert cached is not None and cached.app_id == 9
            glob = await astore.global_api_key()
            scoped = await astore.scoped_api_key(1, "main")
            assert astore.lookup_api_key_cached(glob) == await astore.lookup_api_key(glob)
            assert astore.lookup_api_key_cached(scoped).service_name == "main"  # type: ignore[union-attr]
            new = await astore.regenerate_api_key(scoped)
            assert astore.lookup_api_key_cached(scoped) is None
            assert astore.lookup_api_key_cached(new) is not None
            assert await astore.delete_api_keys(9) == 1
            assert astore.lookup_api_key_cached(existing) is None
            # Near misses and empty keys are unknown.
            assert astore.lookup_api_key_cached(glob[:-1]) is None
            assert astore.lookup_api_key_cached(glob[:-1] + ("0" if glob[-1] != "0" else "1")) \
                is None
            assert astore.lookup_api_key_cached("") is None
            assert astore.lookup_api_key_cached("é" * 32) is None
            assert {k.key for k in astore.api_keys_cached()} == {glob, new}
        finally:
            await astore.close()

    asyncio.run(scenario())


def test_cancelled_key_change_still_updates_the_cache(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    original = Store.regenerate_api_key

    def slow_regenerate(self: Store, old_key: str) -> str:
        started.set()
        release.wait(10)
        return original(self, old_key)

    monkeypatch.setattr(Store, "regenerate_api_key", slow_regenerate)

    async def scenario() -> None:
        astore = await AsyncStore.open(db_path)
        try:
            old = await astore.global_api_key()
            task = asyncio.create_task(astore.regenerate_api_key(old))
            assert await asyncio.to_thread(started.wait, 10)
            task.cancel()  # the client hung up while the database was changing
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            await astore.current_commits()  # queued behind the regeneration
            await asyncio.sleep(0)
            assert astore.lookup_api_key_cached(old) is None
            (current,) = astore.api_keys_cached()
            assert current.key == await astore.global_api_key() != old
        finally:
            await astore.close()

    asyncio.run(scenario())


def test_calls_after_close_fail_cleanly(db_path: Path) -> None:
    async def scenario() -> None:
        astore = await AsyncStore.open(db_path)
        await astore.close()
        with pytest.raises(InternalError, match="closed"):
            await astore.current_commits()

    asyncio.run(scenario())
