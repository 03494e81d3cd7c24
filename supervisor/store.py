"""The store: every SQL statement of the supervisor, on one thread (DESIGN.md, "Persistence").

What survives a restart lives here: the target state cache, API keys, current commits, image
records and download progress, service statuses, the journal of steps in flight (so a restart
resumes cleanly), device config keys, tags, host actions, the report cache and failure counters.

`Store` is synchronous and must only be used on the thread that opened it (sqlite3 enforces it).
`AsyncStore` is what the event loop uses: it owns a one-thread executor named `store*`, opens the
`Store` there and runs every call there. It also keeps the API keys in memory so that request
authentication never leaves the event loop thread.

The database runs in WAL mode with synchronous=FULL: a write that returned survives a power cut.
Schema changes are named migrations (sqlite-utils `Migrations`), applied at open; multi-row
changes run inside `db.atomic()`.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import sqlite3
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from sqlite_utils import Database
from sqlite_utils.db import Table
from sqlite_utils.migrations import Migrations

from supervisor.errors import BadRequest, InternalError, NotFound
from supervisor.fsperm import private_dir, secure_file, secure_files

P = ParamSpec("P")
T = TypeVar("T")

TargetSource = Literal["local", "cloud"]
TagKind = Literal["reported", "target"]
Scope = dict[str, Any]

GLOBAL_SCOPES: tuple[Scope, ...] = ({"type": "global"},)
JOURNAL_KEEP = 1000  # finished journal rows kept for diagnosis; older ones are pruned
_BUSY_TIMEOUT_MS = 5000  # `balena-supervisor api-key` may open the DB while the agent runs


def new_api_key() -> str:
    """32 lowercase hex characters, like upstream's generateUniqueKey()."""
    return uuidlib.uuid4().hex


def app_scopes(app_id: int) -> tuple[Scope, ...]:
    return ({"type": "app", "appId": app_id},)


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    """An API key row. The global key has app_id 0 and no service."""

    key: str
    app_id: int
    service_name: str | None
    scopes: tuple[Scope, ...]

    @property
    def is_global(self) -> bool:
        return any(scope.get("type") == "global" for scope in self.scopes)

    def allows_app(self, app_id: int) -> bool:
        """upstream isScoped({apps: [app_id]}): a global scope, or an app scope for it."""
        return any(
            scope.get("type") == "global"
            or (scope.get("type") == "app" and scope.get("appId") == app_id)
            for scope in self.scopes
        )


@dataclass(frozen=True)
class ImageRecord:
    """An image the supervisor downloads or manages, keyed by its registry name."""

    name: str
    docker_image_id: str | None = None
    app_id: int | None = None
    app_uuid: str | None = None
    service_name: str | None = None
    commit: str | None = None
    release_id: int | None = None
    image_id: int | None = None
    download_progress: int | None = None  # percent; None when not downloading
    status: str | None = None
    updated_at: str | None = None  # set by the store


@dataclass(frozen=True)
class ServiceStatus:
    app_id: int
    service_name: str
    commit: str
    status: str
    updated_at: str


@dataclass(frozen=True)
class JournalEntry:
    """A step the executor started; finished_at/outcome stay None while it is in flight."""

    id: int
    kind: str
    step: dict[str, Any]
    app_id: int | None
    service_name: str | None
    started_at: str
    finished_at: str | None
    outcome: str | None


@dataclass(frozen=True)
class HostAction:
    id: int
    action: str
    force: bool
    requested_at: str
    backend: str
    outcome: str | None


@dataclass(frozen=True)
class Failure:
    target_hash: str
    count: int
    last_error: str
    updated_at: str


# -- migrations -------------------------------------------------------------------------------

MIGRATIONS = Migrations("supervisor")


@MIGRATIONS(name="0001_initial")
def _m0001_initial(db: Database) -> None:
    db.table("config").create({"key": str, "value": str}, pk="key")
    db.table("api_key").create(
        {"key": str, "app_id": int, "service_name": str, "scopes": str, "created_at": str},
        pk="key",
        not_null=["app_id", "scopes", "created_at"],
    )
    # One key per (app, service); the global key's service is NULL, hence the expression.
    db.execute(
        "CREATE UNIQUE INDEX api_key_owner ON api_key (app_id, ifnull(service_name, ''))"
    )
    db.table("target").create(
        {"source": str, "body": str, "etag": str, "updated_at": str},
        pk="source",
        not_null=["body", "updated_at"],
    )
    db.table("current_commit").create(
        {"app_id": int, "commit": str}, pk="app_id", not_null=["commit"]
    )
    db.table("image").create(
        {
            "name": str, "docker_image_id": str, "app_id": int, "app_uuid": str,
            "service_name": str, "commit": str, "release_id": int, "image_id": int,
            "download_progress": int, "status": str, "updated_at": str,
        },
        pk="name",
    )
    db.table("service_status").create(
        {"app_id": int, "service_name": str, "commit": str, "status": str, "updated_at": str},
        pk=("app_id", "service_name", "commit"),
        not_null=["status", "updated_at"],
    )
    # AUTOINCREMENT: ids are never reused, so a pruned entry's id cannot come back.
    db.execute(
        "CREATE TABLE journal (id INTEGER PRIMARY KEY AUTOINCREMENT, step TEXT NOT NULL,"
        " kind TEXT NOT NULL, app_id INTEGER, service_name TEXT, started_at TEXT NOT NULL,"
        " finished_at TEXT, outcome TEXT)"
    )
    db.execute("CREATE INDEX journal_open ON journal (finished_at)")
    db.execute(
        "CREATE TABLE host_action (id INTEGER PRIMARY KEY AUTOINCREMENT, action TEXT NOT NULL,"
        " force INTEGER NOT NULL, requested_at TEXT NOT NULL, backend TEXT NOT NULL,"
        " outcome TEXT)"
    )
    db.table("tags").create(
        {"kind": str, "key": str, "value": str}, pk=("kind", "key"), not_null=["value"]
    )
    db.table("report_cache").create({"id": int, "body": str}, pk="id", not_null=["body"])
    db.table("failure").create(
        {"target_hash": str, "count": int, "last_error": str, "updated_at": str},
        pk="target_hash",
        not_null=["count", "updated_at"],
    )


# -- the synchronous store --------------------------------------------------------------------


class Store:
    """The database, opened on (and only usable from) the calling thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.thread_name = threading.current_thread().name
        try:
            # The keys are in clear: 0600 from the first byte (SQLite gives -wal and -shm the
            # database's mode), in a 0700 directory; older files are fixed here.
            private_dir(self.path.parent)
            secure_file(self.path, create=True)
            self._db = Database(self.path, execute_plugins=False)
        except (OSError, sqlite3.Error) as err:
            raise InternalError(f"cannot open database {self.path}: {err}") from err
        try:
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            self._db.enable_wal()
            # Per connection: fsync the WAL at every commit, so acknowledged writes survive.
            self._db.execute("PRAGMA synchronous=FULL")
            MIGRATIONS.apply(self._db)
            secure_files([f"{self.path}-wal", f"{self.path}-shm"])
        except sqlite3.Error as err:
            self._db.close()
            raise InternalError(f"cannot open database {self.path}: {err}") from err

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def applied_migrations(self) -> list[str]:
        return [m.name for m in MIGRATIONS.applied(self._db)]

    def pragma(self, name: str) -> Any:
        """Read one PRAGMA (journal_mode, synchronous, ...); for diagnosis and tests."""
        if not name.isidentifier():
            raise BadRequest(f"not a pragma name: {name!r}")
        return self._db.execute(f"PRAGMA {name}").fetchone()[0]

    def _t(self, name: str) -> Table:
        return self._db.table(name)

    # -- config keys (values are JSON) ---------------------------------------------------------

    def get_config(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM config WHERE key = ?", [key]).fetchone()
        return default if row is None else json.loads(row[0])

    def all_config(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self._t("config").rows}

    def set_config(self, key: str, value: Any) -> None:
        self.set_config_many({key: value})

    def set_config_many(self, values: Mapping[str, Any]) -> None:
        with self._db.atomic():
            for key, value in values.items():
                self._t("config").upsert({"key": key, "value": json.dumps(value)}, pk="key")

    def delete_config(self, key: str) -> None:
        self._t("config").delete_where("key = ?", [key])

    # -- API keys (api.md §2.4) ----------------------------------------------------------------

    def global_api_key(self) -> str:
        """The global key, created at the first call."""
        return self._get_or_create_key(0, None, GLOBAL_SCOPES)

    def scoped_api_key(
        self, app_id: int, service_name: str, scopes: Iterable[Scope] | None = None
    ) -> str:
        """The key of one (app, service); a new key replaces it when the scopes differ."""
        wanted = tuple(scopes) if scopes is not None else app_scopes(app_id)
        return self._get_or_create_key(app_id, service_name, wanted)

    def lookup_api_key(self, key: str) -> ApiKey | None:
        if not key:
            return None
        row = self._db.execute(
            "SELECT key, app_id, service_name, scopes FROM api_key WHERE key = ?", [key]
        ).fetchone()
        return _api_key(row) if row else None

    def all_api_keys(self) -> list[ApiKey]:
        cursor = self._db.execute("SELECT key, app_id, service_name, scopes FROM api_key")
        return [_api_key(row) for row in cursor.fetchall()]

    def regenerate_api_key(self, old_key: str) -> str:
        """Replace `old_key` by a new key with the same owner and scopes; the old one dies now."""
        found = self.lookup_api_key(old_key)
        if found is None:
            raise NotFound("API key not found")
        with self._db.atomic():
            self._t("api_key").delete_where("key = ?", [old_key])
            return self._insert_key(found.app_id, found.service_name, found.scopes)

    def delete_api_keys(self, app_id: int, service_name: str | None = None) -> int:
        """Drop the scoped keys of an app (or of one of its services); never the global key."""
        if app_id == 0:
            return 0
        args: list[Any]
        where, args = "app_id = ?", [app_id]
        if service_name is not None:
            where, args = "app_id = ? AND service_name = ?", [app_id, service_name]
        with self._db.atomic():
            count = self._t("api_key").count_where(where, args)
            self._t("api_key").delete_where(where, args)
        return count

    def revoke_scoped_keys_except(self, keep: Iterable[tuple[int, str]]) -> list[ApiKey]:
        """Delete every service key whose (app, service) is not in `keep`; the global key
        stays. Returns the revoked keys."""
        wanted = set(keep)
        stale = [k for k in self.all_api_keys()
                 if k.app_id != 0 and (k.app_id, k.service_name or "") not in wanted]
        with self._db.atomic():
            for key in stale:
                self._t("api_key").delete_where("key = ?", [key.key])
        return stale

    def _get_or_create_key(
        self, app_id: int, service_name: str | None, scopes: tuple[Scope, ...]
    ) -> str:
        for attempt in range(2):
            try:
                with self._db.atomic():
                    row = self._db.execute(
                        "SELECT key, scopes FROM api_key"
                        " WHERE app_id = ? AND ifnull(service_name, '') = ?",
                        [app_id, service_name or ""],
                    ).fetchone()
                    if row is not None and tuple(json.loads(row[1])) == scopes:
                        return str(row[0])
                    if row is not None:
                        self._t("api_key").delete_where("key = ?", [row[0]])
                    return self._insert_key(app_id, service_name, scopes)
            except sqlite3.IntegrityError:
                # Another process (the CLI) created the same owner's key first: read it.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _insert_key(self, app_id: int, service_name: str | None, scopes: Iterable[Scope]) -> str:
        key = new_api_key()
        self._t("api_key").insert(
            {
                "key": key,
                "app_id": app_id,
                "service_name": service_name,
                "scopes": json.dumps(list(scopes)),
                "created_at": _now(),
            }
        )
        return key

    # -- target state cache -----------------------------------------------------------------------

    def save_target(
        self, source: TargetSource, body: Mapping[str, Any], etag: str | None = None
    ) -> None:
        self._t("target").upsert(
            {"source": source, "body": json.dumps(body), "etag": etag, "updated_at": _now()},
            pk="source",
        )

    def load_target(self, source: TargetSource) -> dict[str, Any] | None:
        row = self._db.execute("SELECT body FROM target WHERE source = ?", [source]).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def target_etag(self, source: TargetSource) -> str | None:
        row = self._db.execute("SELECT etag FROM target WHERE source = ?", [source]).fetchone()
        return None if row is None else row[0]

    def delete_target(self, source: TargetSource) -> None:
        self._t("target").delete_where("source = ?", [source])

    # -- current commits --------------------------------------------------------------------------

    def set_current_commit(self, app_id: int, commit: str) -> None:
        self._t("current_commit").upsert({"app_id": app_id, "commit": commit}, pk="app_id")

    def current_commits(self) -> dict[int, str]:
        return {r["app_id"]: r["commit"] for r in self._t("current_commit").rows}

    def delete_current_commit(self, app_id: int) -> None:
        self._t("current_commit").delete_where("app_id = ?", [app_id])

    # -- images -----------------------------------------------------------------------------------

    def upsert_image(self, image: ImageRecord) -> None:
        row = {**_asdict(image), "updated_at": _now()}
        self._t("image").upsert(row, pk="name")

    def get_image(self, name: str) -> ImageRecord | None:
        rows = list(self._t("image").rows_where("name = ?", [name]))
        return ImageRecord(**rows[0]) if rows else None

    def images(self) -> list[ImageRecord]:
        return [ImageRecord(**row) for row in self._t("image").rows_where(order_by="name")]

    def delete_image(self, name: str) -> None:
        self._t("image").delete_where("name = ?", [name])

    def set_download_progress(self, name: str, pct: int | None) -> None:
        """Record download progress (0-100, None when done); creates the row if needed."""
        self._set_image_column(name, "download_progress", pct)

    def set_image_status(self, name: str, status: str | None) -> None:
        self._set_image_column(name, "status", status)

    def _set_image_column(self, name: str, column: str, value: Any) -> None:
        with self._db.atomic():
            cursor = self._db.execute(
                f"UPDATE image SET {column} = ?, updated_at = ? WHERE name = ?",
                [value, _now(), name],
            )
            if cursor.rowcount == 0:
                self._t("image").insert({"name": name, column: value, "updated_at": _now()})

    # -- service statuses -------------------------------------------------------------------------

    def set_service_status(self, app_id: int, service_name: str, commit: str, status: str) -> None:
        self._t("service_status").upsert(
            {
                "app_id": app_id,
                "service_name": service_name,
                "commit": commit,
                "status": status,
                "updated_at": _now(),
            },
            pk=("app_id", "service_name", "commit"),
        )

    def service_statuses(self, app_id: int | None = None) -> list[ServiceStatus]:
        where, args = (None, None) if app_id is None else ("app_id = ?", [app_id])
        rows = self._t("service_status").rows_where(
            where, args, order_by="app_id, service_name, [commit]"
        )
        return [ServiceStatus(**row) for row in rows]

    def delete_service_status(
        self, app_id: int, service_name: str | None = None, commit: str | None = None
    ) -> None:
        clauses: list[str] = ["app_id = ?"]
        args: list[Any] = [app_id]
        if service_name is not None:
            clauses.append("service_name = ?")
            args.append(service_name)
        if commit is not None:
            clauses.append("[commit] = ?")
            args.append(commit)
        self._t("service_status").delete_where(" AND ".join(clauses), args)

    # -- journal of steps in flight ---------------------------------------------------------------

    def journal_begin(
        self,
        kind: str,
        step: Mapping[str, Any],
        app_id: int | None = None,
        service_name: str | None = None,
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO journal (step, kind, app_id, service_name, started_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [json.dumps(step), kind, app_id, service_name, _now()],
        )
        return int(cursor.lastrowid or 0)

    def journal_end(self, entry_id: int, outcome: str) -> None:
        """Close an entry; also prunes finished entries beyond the newest JOURNAL_KEEP."""
        with self._db.atomic():
            cursor = self._db.execute(
                "UPDATE journal SET finished_at = ?, outcome = ?"
                " WHERE id = ? AND finished_at IS NULL",
                [_now(), outcome, entry_id],
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no open journal entry {entry_id}")
            self._db.execute(
                "DELETE FROM journal WHERE finished_at IS NOT NULL AND id <= ?",
                [entry_id - JOURNAL_KEEP],
            )

    def journal_open(self) -> list[JournalEntry]:
        """Entries begun and never ended: steps a crash or restart interrupted."""
        return self._journal("finished_at IS NULL", [])

    def journal_recent(self, limit: int = 100) -> list[JournalEntry]:
        """The newest entries, newest first."""
        return self._journal(None, [], order="id DESC", limit=limit)

    def _journal(
        self, where: str | None, args: list[Any], order: str = "id", limit: int | None = None
    ) -> list[JournalEntry]:
        rows = self._t("journal").rows_where(where, args, order_by=order, limit=limit)
        return [JournalEntry(**{**row, "step": json.loads(row["step"])}) for row in rows]

    # -- host actions -----------------------------------------------------------------------------

    def record_host_action(
        self, action: str, force: bool, backend: str, outcome: str | None = None
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO host_action (action, force, requested_at, backend, outcome)"
            " VALUES (?, ?, ?, ?, ?)",
            [action, int(force), _now(), backend, outcome],
        )
        return int(cursor.lastrowid or 0)

    def finish_host_action(self, action_id: int, outcome: str) -> None:
        cursor = self._db.execute(
            "UPDATE host_action SET outcome = ? WHERE id = ?", [outcome, action_id]
        )
        if cursor.rowcount == 0:
            raise NotFound(f"no host action {action_id}")

    def host_actions(self, limit: int = 100) -> list[HostAction]:
        """The newest host actions, newest first."""
        rows = self._t("host_action").rows_where(order_by="id DESC", limit=limit)
        return [HostAction(**{**row, "force": bool(row["force"])}) for row in rows]

    # -- device tags ------------------------------------------------------------------------------

    def tags(self, kind: TagKind) -> dict[str, str]:
        rows = self._t("tags").rows_where("kind = ?", [kind], order_by="key")
        return {r["key"]: r["value"] for r in rows}

    def set_tags(self, kind: TagKind, tags: Mapping[str, str]) -> None:
        """Replace the whole set of `kind` tags."""
        with self._db.atomic():
            self._t("tags").delete_where("kind = ?", [kind])
            self._t("tags").insert_all(
                [{"kind": kind, "key": k, "value": v} for k, v in tags.items()]
            )

    # -- report cache -----------------------------------------------------------------------------

    def report_cache(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT body FROM report_cache WHERE id = 1").fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def set_report_cache(self, body: Mapping[str, Any]) -> None:
        self._t("report_cache").upsert({"id": 1, "body": json.dumps(body)}, pk="id")

    def clear_report_cache(self) -> None:
        self._t("report_cache").delete_where()

    # -- failure counters -------------------------------------------------------------------------

    def record_failure(self, target_hash: str, error: str) -> int:
        """Count one more failure to apply this target; return the new count."""
        with self._db.atomic():
            self._db.execute(
                "INSERT INTO failure (target_hash, count, last_error, updated_at)"
                " VALUES (?, 1, ?, ?) ON CONFLICT (target_hash) DO UPDATE SET"
                " count = count + 1, last_error = excluded.last_error,"
                " updated_at = excluded.updated_at",
                [target_hash, error, _now()],
            )
            found = self.failure(target_hash)
        return found.count if found else 0

    def failure(self, target_hash: str) -> Failure | None:
        rows = list(self._t("failure").rows_where("target_hash = ?", [target_hash]))
        return Failure(**rows[0]) if rows else None

    def clear_failures(self, target_hash: str | None = None) -> None:
        if target_hash is None:
            self._t("failure").delete_where()
        else:
            self._t("failure").delete_where("target_hash = ?", [target_hash])


def read_global_api_key(db_path: str | Path, *, create: bool = True) -> str | None:
    """Open the DB, read (or create) the global key, close. For the CLI, off any event loop.

    With create=False a missing database file is not created and gives None.
    """
    if not create and not Path(db_path).exists():
        return None
    try:
        with Store(db_path) as store:
            if create:
                return store.global_api_key()
            found = [k for k in store.all_api_keys() if k.app_id == 0 and k.is_global]
            return found[0].key if found else None
    except sqlite3.Error as err:
        raise InternalError(f"database {db_path}: {err}") from err


# -- the async facade -------------------------------------------------------------------------


class AsyncStore:
    """`Store` for the event loop: every call runs on one dedicated `store` thread."""

    def __init__(self, pool: ThreadPoolExecutor, store: Store, keys: list[ApiKey]) -> None:
        # Use `await AsyncStore.open(path)`: the Store must be created on the pool's thread.
        self._pool = pool
        self._store = store
        self._keys: tuple[ApiKey, ...] = tuple(keys)
        self._keys_generation = 0  # bumped on the store thread by each key change
        self._applied_generation = 0  # the generation `_keys` reflects (event loop thread)
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path) -> AsyncStore:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        try:
            store = await asyncio.get_running_loop().run_in_executor(pool, Store, path)
        except BaseException:
            pool.shutdown(wait=False)
            raise
        opened = cls(pool, store, [])
        try:
            opened._keys = tuple(await opened._run(store.all_api_keys))
        except BaseException:
            await opened.close()
            raise
        return opened

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._store.close)
        finally:
            self._pool.shutdown(wait=True)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def thread_name(self) -> str:
        """Name of the thread that opened (and alone uses) the connection."""
        return self._store.thread_name

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise InternalError("the store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except sqlite3.Error as err:
            raise InternalError(f"database error: {err}") from err

    # -- API keys, with the in-memory cache used on the request path -----------------------------

    def lookup_api_key_cached(self, key: str) -> ApiKey | None:
        """Find `key` among the cached keys without I/O, comparing in constant time.

        Every stored key is compared (no early exit, no dict lookup) so that timing does not
        tell how much of a guess was right.
        """
        if not key:
            return None
        wanted = key.encode("utf-8")
        match: ApiKey | None = None
        for candidate in self._keys:
            if hmac.compare_digest(candidate.key.encode("utf-8"), wanted):
                match = candidate
        return match

    def api_keys_cached(self) -> tuple[ApiKey, ...]:
        return self._keys

    async def _change_keys(self, fn: Callable[[], T]) -> T:
        """Run a key change and re-read all keys in one job, then swap the cache.

        Shielded: a caller cancelled mid-way (a client hanging up) must not leave the cache
        holding a key the database no longer has.
        """

        def job() -> tuple[T, list[ApiKey], int]:
            result = fn()
            # Counted on the store thread, so a later job always carries a larger number.
            self._keys_generation += 1
            return result, self._store.all_api_keys(), self._keys_generation

        async def change_and_swap() -> T:
            result, keys, generation = await self._run(job)
            if generation > self._applied_generation:
                self._keys = tuple(keys)
                self._applied_generation = generation
            return result

        return await asyncio.shield(change_and_swap())

    async def global_api_key(self) -> str:
        return await self._change_keys(self._store.global_api_key)

    async def scoped_api_key(
        self, app_id: int, service_name: str, scopes: Iterable[Scope] | None = None
    ) -> str:
        scope_list = None if scopes is None else tuple(scopes)
        return await self._change_keys(
            lambda: self._store.scoped_api_key(app_id, service_name, scope_list)
        )

    async def regenerate_api_key(self, old_key: str) -> str:
        return await self._change_keys(lambda: self._store.regenerate_api_key(old_key))

    async def delete_api_keys(self, app_id: int, service_name: str | None = None) -> int:
        return await self._change_keys(lambda: self._store.delete_api_keys(app_id, service_name))

    async def revoke_scoped_keys_except(self, keep: Iterable[tuple[int, str]]) -> list[ApiKey]:
        wanted = tuple(keep)
        return await self._change_keys(lambda: self._store.revoke_scoped_keys_except(wanted))

    async def lookup_api_key(self, key: str) -> ApiKey | None:
        return await self._run(self._store.lookup_api_key, key)

    async def all_api_keys(self) -> list[ApiKey]:
        return await self._run(self._store.all_api_keys)

    # -- config keys ------------------------------------------------------------------------------

    async def get_config(self, key: str, default: Any = None) -> Any:
        return await self._run(self._store.get_config, key, default)

    async def all_config(self) -> dict[str, Any]:
        return await self._run(self._store.all_config)

    async def set_config(self, key: str, value: Any) -> None:
        await self._run(self._store.set_config, key, value)

    async def set_config_many(self, values: Mapping[str, Any]) -> None:
        await self._run(self._store.set_config_many, dict(values))

    async def delete_config(self, key: str) -> None:
        await self._run(self._store.delete_config, key)

    # -- target state cache -----------------------------------------------------------------------

    async def save_target(
        self, source: TargetSource, body: Mapping[str, Any], etag: str | None = None
    ) -> None:
        await self._run(self._store.save_target, source, body, etag)

    async def load_target(self, source: TargetSource) -> dict[str, Any] | None:
        return await self._run(self._store.load_target, source)

    async def target_etag(self, source: TargetSource) -> str | None:
        return await self._run(self._store.target_etag, source)

    async def delete_target(self, source: TargetSource) -> None:
        await self._run(self._store.delete_target, source)

    # -- current commits --------------------------------------------------------------------------

    async def set_current_commit(self, app_id: int, commit: str) -> None:
        await self._run(self._store.set_current_commit, app_id, commit)

    async def current_commits(self) -> dict[int, str]:
        return await self._run(self._store.current_commits)

    async def delete_current_commit(self, app_id: int) -> None:
        await self._run(self._store.delete_current_commit, app_id)

    # -- images -----------------------------------------------------------------------------------

    async def upsert_image(self, image: ImageRecord) -> None:
        await self._run(self._store.upsert_image, image)

    async def get_image(self, name: str) -> ImageRecord | None:
        return await self._run(self._store.get_image, name)

    async def images(self) -> list[ImageRecord]:
        return await self._run(self._store.images)

    async def delete_image(self, name: str) -> None:
        await self._run(self._store.delete_image, name)

    async def set_download_progress(self, name: str, pct: int | None) -> None:
        await self._run(self._store.set_download_progress, name, pct)

    async def set_image_status(self, name: str, status: str | None) -> None:
        await self._run(self._store.set_image_status, name, status)

    # -- service statuses -------------------------------------------------------------------------

    async def set_service_status(
        self, app_id: int, service_name: str, commit: str, status: str
    ) -> None:
        await self._run(self._store.set_service_status, app_id, service_name, commit, status)

    async def service_statuses(self, app_id: int | None = None) -> list[ServiceStatus]:
        return await self._run(self._store.service_statuses, app_id)

    async def delete_service_status(
        self, app_id: int, service_name: str | None = None, commit: str | None = None
    ) -> None:
        await self._run(self._store.delete_service_status, app_id, service_name, commit)

    # -- journal ----------------------------------------------------------------------------------

    async def journal_begin(
        self,
        kind: str,
        step: Mapping[str, Any],
        app_id: int | None = None,
        service_name: str | None = None,
    ) -> int:
        return await self._run(self._store.journal_begin, kind, step, app_id, service_name)

    async def journal_end(self, entry_id: int, outcome: str) -> None:
        await self._run(self._store.journal_end, entry_id, outcome)

    async def journal_open(self) -> list[JournalEntry]:
        return await self._run(self._store.journal_open)

    async def journal_recent(self, limit: int = 100) -> list[JournalEntry]:
        return await self._run(self._store.journal_recent, limit)

    # -- host actions -----------------------------------------------------------------------------

    async def record_host_action(
        self, action: str, force: bool, backend: str, outcome: str | None = None
    ) -> int:
        return await self._run(self._store.record_host_action, action, force, backend, outcome)

    async def finish_host_action(self, action_id: int, outcome: str) -> None:
        await self._run(self._store.finish_host_action, action_id, outcome)

    async def host_actions(self, limit: int = 100) -> list[HostAction]:
        return await self._run(self._store.host_actions, limit)

    # -- tags -------------------------------------------------------------------------------------

    async def tags(self, kind: TagKind) -> dict[str, str]:
        return await self._run(self._store.tags, kind)

    async def set_tags(self, kind: TagKind, tags: Mapping[str, str]) -> None:
        await self._run(self._store.set_tags, kind, dict(tags))

    # -- report cache -----------------------------------------------------------------------------

    async def report_cache(self) -> dict[str, Any] | None:
        return await self._run(self._store.report_cache)

    async def set_report_cache(self, body: Mapping[str, Any]) -> None:
        await self._run(self._store.set_report_cache, body)

    async def clear_report_cache(self) -> None:
        await self._run(self._store.clear_report_cache)

    # -- failure counters -------------------------------------------------------------------------

    async def record_failure(self, target_hash: str, error: str) -> int:
        return await self._run(self._store.record_failure, target_hash, error)

    async def failure(self, target_hash: str) -> Failure | None:
        return await self._run(self._store.failure, target_hash)

    async def clear_failures(self, target_hash: str | None = None) -> None:
        await self._run(self._store.clear_failures, target_hash)


# -- helpers ----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _api_key(row: tuple[Any, ...]) -> ApiKey:
    key, app_id, service_name, scopes = row
    return ApiKey(key, int(app_id), service_name, tuple(json.loads(scopes)))


def _asdict(image: ImageRecord) -> dict[str, Any]:
    return {name: getattr(image, name) for name in ImageRecord.__dataclass_fields__}
