"""The devcloud's SQLite database: fleets, releases, devices, keys, variables, reports.

One connection guarded by a lock; the server calls every method through `await db.run(...)`,
which runs it in a worker thread. Rows come back as plain dicts. Keys are 32 hex characters.
This is a development server: no users, one admin token (kept in `meta` and in the file
`<data-dir>/admin-token`).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import sqlite3
import threading
import uuid as uuidlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from supervisor.devcloud.targets import build_target, device_name, etag_of, normalise_release
from supervisor.errors import BadRequest, Conflict, NotFound
from supervisor.fsperm import private_dir, secure_file

P = ParamSpec("P")
T = TypeVar("T")
Scope = Literal["fleet", "device"]
Kind = Literal["env", "config"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fleet (
  id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE NOT NULL, name TEXT UNIQUE NOT NULL,
  device_type TEXT NOT NULL, pinned_release INTEGER, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS release (
  id INTEGER PRIMARY KEY AUTOINCREMENT, fleet_id INTEGER NOT NULL, commit_hash TEXT NOT NULL,
  body TEXT NOT NULL, created_at TEXT NOT NULL, UNIQUE (fleet_id, commit_hash));
CREATE TABLE IF NOT EXISTS service (
  id INTEGER PRIMARY KEY AUTOINCREMENT, fleet_id INTEGER NOT NULL, name TEXT NOT NULL,
  UNIQUE (fleet_id, name));
CREATE TABLE IF NOT EXISTS image (
  id INTEGER PRIMARY KEY AUTOINCREMENT, release_id INTEGER NOT NULL, service TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS provisioning_key (
  key TEXT PRIMARY KEY, fleet_id INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device (
  id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE NOT NULL, fleet_id INTEGER NOT NULL,
  name TEXT NOT NULL, device_type TEXT, api_key TEXT NOT NULL, pinned_release INTEGER,
  registered_at TEXT NOT NULL, state TEXT NOT NULL DEFAULT '{}', last_report TEXT,
  last_poll TEXT);
CREATE TABLE IF NOT EXISTS device_tag (
  id INTEGER PRIMARY KEY AUTOINCREMENT, device_id INTEGER NOT NULL, tag_key TEXT NOT NULL,
  value TEXT NOT NULL, UNIQUE (device_id, tag_key));
CREATE TABLE IF NOT EXISTS var (
  scope TEXT NOT NULL, owner INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
  value TEXT NOT NULL, PRIMARY KEY (scope, owner, kind, name));
"""


def new_key() -> str:
    return uuidlib.uuid4().hex


def _matching(rows: list[dict[str, Any]], column: str, key: str) -> dict[str, Any] | None:
    """The row whose `column` is `key`, compared in constant time over every row (a dev
    server has a handful): neither SQL's `=` nor the index tells how close a guess was."""
    wanted = key.encode()
    found = None
    for row in rows:
        if hmac.compare_digest(str(row[column] or "").encode(), wanted):
            found = row
    return found


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Db:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # device and provisioning keys, in clear: 0600 in a 0700 directory, as the agent's
        private_dir(self.path.parent)
        secure_file(self.path, create=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    # -- plumbing ---------------------------------------------------------------------------

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for row in self._conn.execute(sql, args).fetchall()]

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        rows = self._all(sql, args)
        return rows[0] if rows else None

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._lock:
            cursor = self._conn.execute(sql, args)
            return int(cursor.lastrowid or 0)

    # -- meta -------------------------------------------------------------------------------

    def admin_token(self) -> str:
        with self._lock:
            row = self._one("SELECT value FROM meta WHERE key = 'admin_token'")
            if row is not None:
                return str(row["value"])
            token = new_key()
            self._exec("INSERT INTO meta (key, value) VALUES ('admin_token', ?)", (token,))
            return token

    # -- fleets and releases ------------------------------------------------------------------

    def create_fleet(self, name: str, device_type: str = "generic-amd64") -> dict[str, Any]:
        if not name or not isinstance(name, str):
            raise BadRequest("a fleet needs a name")
        with self._lock:
            if self._one("SELECT id FROM fleet WHERE name = ?", (name,)):
                raise Conflict(f"fleet {name!r} already exists")
            self._exec("INSERT INTO fleet (uuid, name, device_type, created_at)"
                       " VALUES (?, ?, ?, ?)", (new_key(), name, device_type, _now()))
        return self.fleet(name)

    def fleets(self) -> list[dict[str, Any]]:
        return [self._fleet_view(f) for f in self._all("SELECT * FROM fleet ORDER BY id")]

    def fleet(self, ref: str | int) -> dict[str, Any]:
        """A fleet by name, or by id (an int or a string of digits)."""
        row = self._one("SELECT * FROM fleet WHERE name = ?", (str(ref),))
        if row is None and str(ref).isdigit():
            row = self._one("SELECT * FROM fleet WHERE id = ?", (int(ref),))
        if row is None:
            raise NotFound(f"no fleet {ref!r}")
        return self._fleet_view(row)

    def _fleet_view(self, row: dict[str, Any]) -> dict[str, Any]:
        pinned = row.get("pinned_release")
        rel = self._one("SELECT commit_hash FROM release WHERE id = ?", (pinned,)) \
            if pinned else None
        return {**row, "pinned_commit": rel["commit_hash"] if rel else None}

    def add_release(self, fleet_id: int, raw: Any) -> dict[str, Any]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                release_id = self._exec(
                    "INSERT INTO release (fleet_id, commit_hash, body, created_at)"
                    " VALUES (?, ?, '{}', ?)", (fleet_id, new_key(), _now()))

                def service_id(name: str) -> int:
                    self._exec("INSERT OR IGNORE INTO service (fleet_id, name) VALUES (?, ?)",
                               (fleet_id, name))
                    row = self._one("SELECT id FROM service WHERE fleet_id = ? AND name = ?",
                                    (fleet_id, name))
                    assert row is not None
                    return int(row["id"])

                def image_id(name: str) -> int:
                    return self._exec("INSERT INTO image (release_id, service) VALUES (?, ?)",
                                      (release_id, name))

                commit, body = normalise_release(raw, release_id=release_id,
                                                 service_id=service_id, image_id=image_id)
                if self._one("SELECT id FROM release WHERE fleet_id = ? AND commit_hash = ?",
                             (fleet_id, commit)):
                    raise Conflict(f"release {commit} already exists")
                self._exec("UPDATE release SET commit_hash = ?, body = ? WHERE id = ?",
                           (commit, json.dumps(body), release_id))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return {"id": release_id, "commit": commit, "fleet_id": fleet_id}

    def releases(self, fleet_id: int) -> list[dict[str, Any]]:
        return self._all("SELECT id, commit_hash AS 'commit', created_at FROM release"
                         " WHERE fleet_id = ? ORDER BY id", (fleet_id,))

    def release_id(self, fleet_id: int, commit: str | None) -> int | None:
        """The id of a fleet's release by commit (None: no commit given)."""
        if commit is None:
            return None
        row = self._one("SELECT id FROM release WHERE fleet_id = ? AND commit_hash = ?",
                        (fleet_id, commit))
        if row is None:
            raise NotFound(f"no release {commit!r} in this fleet")
        return int(row["id"])

    def pin_fleet(self, fleet_id: int, commit: str | None) -> None:
        self._exec("UPDATE fleet SET pinned_release = ? WHERE id = ?",
                   (self.release_id(fleet_id, commit), fleet_id))

    # -- provisioning ------------------------------------------------------------------------

    def create_provisioning_key(self, fleet_id: int) -> str:
        key = new_key()
        self._exec("INSERT INTO provisioning_key (key, fleet_id, created_at) VALUES (?, ?, ?)",
                   (key, fleet_id, _now()))
        return key

    def fleet_of_provisioning_key(self, key: str) -> int | None:
        rows = self._all("SELECT key, fleet_id FROM provisioning_key") if key else []
        row = _matching(rows, "key", key)
        return int(row["fleet_id"]) if row else None

    def device_types(self) -> set[str]:
        """The device type slugs this devcloud knows: its fleets'."""
        return {r["device_type"] for r in self._all("SELECT DISTINCT device_type FROM fleet")}

    def fleet_releases(self, fleet_id: int) -> dict[str, dict[str, set[str]]]:
        """{fleet app uuid: {commit: image locations}}: what a device of the fleet may report."""
        fleet = self.fleet(fleet_id)
        rows = self._all("SELECT commit_hash, body FROM release WHERE fleet_id = ?", (fleet_id,))
        return {fleet["uuid"]: {
            r["commit_hash"]: {str(svc.get("image", "")).split("@", 1)[0]
                               for svc in json.loads(r["body"]).get("services", {}).values()}
            for r in rows}}

    # -- devices -----------------------------------------------------------------------------

    def register_device(self, fleet_id: int, uuid: str, device_type: str,
                        api_key: str) -> dict[str, Any]:
        with self._lock:
            if self._one("SELECT id FROM device WHERE uuid = ?", (uuid,)):
                raise Conflict(f"a device with uuid {uuid} is already registered")
            self._exec("INSERT INTO device (uuid, fleet_id, name, device_type, api_key,"
                       " registered_at) VALUES (?, ?, ?, ?, ?, ?)",
                       (uuid, fleet_id, device_name(uuid), device_type, api_key or new_key(),
                        _now()))
        return self.device(uuid)

    def has_device(self, uuid: str) -> bool:
        return self._one("SELECT id FROM device WHERE uuid = ?", (uuid,)) is not None

    def device(self, ref: str | int) -> dict[str, Any]:
        """A device by uuid, or by id (an int)."""
        if isinstance(ref, int):
            row = self._one("SELECT * FROM device WHERE id = ?", (ref,))
        else:
            row = self._one("SELECT * FROM device WHERE uuid = ?", (ref,))
        if row is None:
            raise NotFound(f"no device {ref!r}")
        return self._device_view(row)

    def device_by_key(self, api_key: str) -> dict[str, Any] | None:
        row = _matching(self._all("SELECT * FROM device"), "api_key", api_key) \
            if api_key else None
        return self._device_view(row) if row else None

    def devices(self, fleet_id: int | None = None) -> list[dict[str, Any]]:
        if fleet_id is None:
            rows = self._all("SELECT * FROM device ORDER BY id")
        else:
            rows = self._all("SELECT * FROM device WHERE fleet_id = ? ORDER BY id", (fleet_id,))
        return [self._device_view(r) for r in rows]

    def _device_view(self, row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        out["state"] = json.loads(row["state"] or "{}")
        pinned = row.get("pinned_release")
        rel = self._one("SELECT commit_hash FROM release WHERE id = ?", (pinned,)) \
            if pinned else None
        out["pinned_commit"] = rel["commit_hash"] if rel else None
        return out

    def update_device(self, device_id: int, *, name: str | None = None,
                      api_key: str | None = None) -> None:
        if name is not None:
            self._exec("UPDATE device SET name = ? WHERE id = ?", (name, device_id))
        if api_key is not None:
            self._exec("UPDATE device SET api_key = ? WHERE id = ?", (api_key, device_id))

    def pin_device(self, device_id: int, commit: str | None) -> None:
        fleet_id = self.device(device_id)["fleet_id"]
        self._exec("UPDATE device SET pinned_release = ? WHERE id = ?",
                   (self.release_id(fleet_id, commit), device_id))

    def merge_state(self, device_id: int, fields: Mapping[str, Any]) -> None:
        """A state report: top-level fields replace the stored ones (`apps` as a whole)."""
        with self._lock:
            row = self._one("SELECT state FROM device WHERE id = ?", (device_id,))
            state = json.loads(row["state"]) if row else {}
            state.update(fields)
            self._exec("UPDATE device SET state = ?, last_report = ? WHERE id = ?",
                       (json.dumps(state), _now(), device_id))

    def touch_poll(self, device_id: int) -> None:
        self._exec("UPDATE device SET last_poll = ? WHERE id = ?", (_now(), device_id))

    # -- tags and variables --------------------------------------------------------------------

    def set_tags(self, device_id: int, tags: Mapping[str, str]) -> None:
        with self._lock:
            for key, value in tags.items():
                self._exec("INSERT INTO device_tag (device_id, tag_key, value) VALUES (?, ?, ?)"
                           " ON CONFLICT (device_id, tag_key) DO UPDATE SET value = excluded.value",
                           (device_id, str(key), str(value)))

    def tags(self, device_id: int) -> list[dict[str, Any]]:
        return self._all("SELECT id, tag_key, value FROM device_tag WHERE device_id = ?"
                         " ORDER BY tag_key", (device_id,))

    def set_var(self, scope: Scope, owner: int, kind: Kind, name: str, value: str) -> None:
        self._exec("INSERT INTO var (scope, owner, kind, name, value) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT (scope, owner, kind, name) DO UPDATE SET value = excluded.value",
                   (scope, owner, kind, name, value))

    def delete_var(self, scope: Scope, owner: int, kind: Kind, name: str) -> None:
        self._exec("DELETE FROM var WHERE scope = ? AND owner = ? AND kind = ? AND name = ?",
                   (scope, owner, kind, name))

    def vars(self, scope: Scope, owner: int, kind: Kind) -> dict[str, str]:
        rows = self._all("SELECT name, value FROM var WHERE scope = ? AND owner = ? AND kind = ?"
                         " ORDER BY name", (scope, owner, kind))
        return {r["name"]: r["value"] for r in rows}

    # -- the target ------------------------------------------------------------------------------

    def target(self, uuid: str) -> tuple[dict[str, Any], str]:
        """The device's v3 target and its ETag. Release: device pin > fleet pin > latest."""
        device = self.device(uuid)
        fleet = self.fleet(int(device["fleet_id"]))
        release_id = device["pinned_release"] or fleet["pinned_release"]
        if release_id:
            row = self._one("SELECT commit_hash, body FROM release WHERE id = ?", (release_id,))
        else:
            row = self._one("SELECT commit_hash, body FROM release WHERE fleet_id = ?"
                            " ORDER BY id DESC LIMIT 1", (fleet["id"],))
        release = (row["commit_hash"], json.loads(row["body"])) if row else None
        env = {**self.vars("fleet", fleet["id"], "env"), **self.vars("device", device["id"], "env")}
        config = {**self.vars("fleet", fleet["id"], "config"),
                  **self.vars("device", device["id"], "config")}
        body = build_target(device_uuid=uuid, device_name=device["name"], fleet=fleet,
                            release=release, env=env, config=config)
        return body, etag_of(body)
