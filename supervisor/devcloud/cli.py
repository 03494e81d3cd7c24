"""`balena-supervisor devcloud`: run the development fleet server, or talk to a running one.

Without a command it serves (`--listen`, `--data-dir`); with one it is a client of the server
at `--listen` over HTTP, authenticated with the admin token (the `DEVCLOUD_TOKEN` variable,
else `--token-file`, else the `admin-token` file the server wrote in `--data-dir`). A token is
never taken on the command line, where every user of the machine can read it (`ps`). See
docs/fleet.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from supervisor.errors import ConfigError, SupervisorError
from supervisor.fsperm import secure_file
from supervisor.logsafe import EscapingFormatter
from supervisor.settings import parse_address

PROG = "balena-supervisor devcloud"
DEFAULT_LISTEN = "127.0.0.1:48480"
DEFAULT_DATA_DIR = ".devcloud"
DEFAULT_DEVICE_TYPE = "generic-amd64"
DB_FILE = "devcloud.sqlite"
TOKEN_FILE = "admin-token"
_TIMEOUT_S = 60.0
# The server is local: environment proxies must not capture the requests.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = build_parser(env)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        if args.command is None:
            return serve(args, env)
        result = args.handler(Client.from_args(args, env), args)
    except SupervisorError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if result is not None:
        print(result if isinstance(result, str) else json.dumps(result, indent=2))
    return 0


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    # allow_abbrev=False: `--token` must not pass as an abbreviation of --token-file
    parser = argparse.ArgumentParser(prog=PROG, description="A development fleet server.",
                                     allow_abbrev=False)
    parser.add_argument("--listen", default=env.get("DEVCLOUD_LISTEN", DEFAULT_LISTEN),
                        metavar="HOST:PORT", help="server address (env DEVCLOUD_LISTEN; "
                        f"default {DEFAULT_LISTEN})")
    parser.add_argument("--data-dir", default=env.get("DEVCLOUD_DATA_DIR", DEFAULT_DATA_DIR),
                        metavar="DIR", help="database and admin-token (env DEVCLOUD_DATA_DIR; "
                        f"default {DEFAULT_DATA_DIR})")
    parser.add_argument("--token-file", default=env.get("DEVCLOUD_TOKEN_FILE"), metavar="FILE",
                        help="file holding the admin token (env DEVCLOUD_TOKEN_FILE; the token "
                        "itself may be given in env DEVCLOUD_TOKEN; default "
                        "<data-dir>/admin-token)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    fleet = commands.add_parser("fleet", help="create or list fleets")
    fleet_cmd = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    create = fleet_cmd.add_parser("create", help="create a fleet")
    create.add_argument("name")
    create.add_argument("--device-type", default=DEFAULT_DEVICE_TYPE)
    create.set_defaults(handler=lambda c, a: c.call("POST", "/admin/fleets",
                                                    {"name": a.name,
                                                     "device_type": a.device_type}))
    fleet_cmd.add_parser("list", help="list fleets").set_defaults(
        handler=lambda c, a: c.call("GET", "/admin/fleets"))

    release = commands.add_parser("release", help="push or list releases")
    release_cmd = release.add_subparsers(dest="release_command", metavar="ACTION", required=True)
    push = release_cmd.add_parser("push", help="push a release JSON file ('-': stdin)")
    push.add_argument("fleet")
    push.add_argument("file")
    push.set_defaults(handler=lambda c, a: c.call(
        "POST", f"/admin/fleets/{_q(a.fleet)}/releases", _read_json(a.file)))
    rlist = release_cmd.add_parser("list", help="list a fleet's releases")
    rlist.add_argument("fleet")
    rlist.set_defaults(handler=lambda c, a: c.call("GET", f"/admin/fleets/{_q(a.fleet)}/releases"))

    commands.add_parser("devices", help="list devices and what they report").set_defaults(
        handler=lambda c, a: c.call("GET", "/admin/devices"))
    one = commands.add_parser("device", help="one device: report, tags, target")
    one.add_argument("uuid")
    one.set_defaults(handler=lambda c, a: c.call("GET", f"/admin/devices/{_q(a.uuid)}"))

    key = commands.add_parser("provisioning-key", help="create a provisioning key for a fleet")
    key.add_argument("fleet")
    key.set_defaults(handler=lambda c, a: c.call(
        "POST", f"/admin/fleets/{_q(a.fleet)}/provisioning-keys")["key"])

    cfg = commands.add_parser("config-json", help="print a config.json for a new device")
    cfg.add_argument("fleet")
    cfg.add_argument("--listen-port", type=int, default=48484)
    cfg.add_argument("--poll-interval", type=int, default=None, metavar="MS")
    cfg.set_defaults(handler=_config_json)

    for kind in ("env", "config"):
        var = commands.add_parser(kind, help=f"set or unset a {kind} variable")
        var_cmd = var.add_subparsers(dest=f"{kind}_command", metavar="ACTION", required=True)
        for action in ("set", "unset"):
            sub = var_cmd.add_parser(action)
            _owner(sub)
            sub.add_argument("name")
            if action == "set":
                sub.add_argument("value")
            sub.set_defaults(handler=_variable, kind=kind, action=action)
        listing = var_cmd.add_parser("list", help=f"the {kind} variables of a fleet or device")
        _owner(listing)
        listing.set_defaults(handler=lambda c, a: c.call(
            "GET", f"{_owner_path(a)}/{a.kind}"), kind=kind)

    pin = commands.add_parser("pin", help="pin a fleet or device to a release (none: latest)")
    _owner(pin)
    pin.add_argument("commit", nargs="?")
    pin.set_defaults(handler=lambda c, a: c.call(
        "PATCH", _owner_path(a), {"pinned_release": a.commit}))

    logs = commands.add_parser("logs", help="a device's log lines (see docs/fleet.md)")
    logs.add_argument("uuid")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.add_argument("--count", type=int, default=None, metavar="N", help="the last N only")
    logs.add_argument("--json", action="store_true", help="NDJSON as stored")
    logs.set_defaults(handler=_logs)

    prox = commands.add_parser("proxy", help="call a device's supervisor API through the proxy")
    prox.add_argument("path")
    target = prox.add_mutually_exclusive_group(required=True)
    target.add_argument("--uuid")
    target.add_argument("--device-id", type=int)
    target.add_argument("--app-id")
    prox.add_argument("--method", default=None)
    prox.add_argument("--data", default=None, help="JSON forwarded as the body")
    prox.set_defaults(handler=_proxy)
    return parser


def _owner(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--fleet")
    group.add_argument("--device", metavar="UUID")


def _owner_path(args: argparse.Namespace) -> str:
    if args.fleet:
        return f"/admin/fleets/{_q(args.fleet)}"
    return f"/admin/devices/{_q(args.device)}"


def _variable(client: Client, args: argparse.Namespace) -> Any:
    path = f"{_owner_path(args)}/{args.kind}/{_q(args.name)}"
    if args.action == "set":
        return client.call("PUT", path, {"value": args.value})
    return client.call("DELETE", path)


def _config_json(client: Client, args: argparse.Namespace) -> Any:
    key = client.call("POST", f"/admin/fleets/{_q(args.fleet)}/provisioning-keys")
    config: dict[str, Any] = {
        "apiEndpoint": client.base, "applicationId": key["applicationId"],
        "apiKey": key["key"], "deviceType": key["deviceType"], "listenPort": args.listen_port,
    }
    if args.poll_interval:
        config["appUpdatePollInterval"] = args.poll_interval
    return config


def _proxy(client: Client, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {}
    if args.uuid:
        body["uuid"] = args.uuid
    elif args.device_id is not None:
        body["deviceId"] = args.device_id
    else:
        body["appId"] = args.app_id
    if args.method:
        body["method"] = args.method
    if args.data:
        body["data"] = json.loads(args.data)
    return client.call("POST", "/supervisor/" + args.path.lstrip("/"), body)


def _logs(client: Client, args: argparse.Namespace) -> None:
    from supervisor.devcloud.managed import render

    query = {"follow": "1"} if args.follow else {}
    if args.count is not None:
        query["count"] = str(args.count)
    path = f"/devices/{_q(args.uuid)}/logs"
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    for line in client.lines(path):
        print(line if args.json else render(json.loads(line)), flush=True)


def _q(value: str) -> str:
    return quote(str(value), safe="")


def _read_json(path: str) -> Any:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        return json.loads(text)
    except ValueError as err:
        raise ConfigError(f"{path}: not JSON: {err}") from err


# ---------------------------------------------------------------------------- server


def given_token(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """The admin token from DEVCLOUD_TOKEN, else from --token-file; None if neither."""
    if env.get("DEVCLOUD_TOKEN"):
        return env["DEVCLOUD_TOKEN"].strip()
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as err:
            raise ConfigError(f"--token-file {args.token_file}: {err.strerror}") from err
        if not token:
            raise ConfigError(f"--token-file {args.token_file}: the file is empty")
        return token
    return None


def serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import uvicorn

    from supervisor.devcloud.db import Db
    from supervisor.devcloud.registry import TokenIssuer
    from supervisor.devcloud.server import DevCloud, build_app

    host, port = parse_address(args.listen, "--listen", default_host="127.0.0.1")
    data_dir = Path(args.data_dir).absolute()
    console = logging.StreamHandler()  # device-sent values cannot forge lines (logsafe.py)
    console.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[console])
    db = Db(data_dir / DB_FILE)  # creates data_dir 0700
    token = given_token(args, env) or db.admin_token()
    token_file = data_dir / TOKEN_FILE
    secure_file(token_file, create=True)  # 0600 before the token is in it
    token_file.write_text(token + "\n")
    print(f"devcloud: http://{host}:{port} (data {data_dir}, admin token in {token_file})",
          file=sys.stderr, flush=True)
    issuer: TokenIssuer | None = None
    if shutil.which("openssl"):  # registry tokens for a token-auth registry (registry.py)
        issuer = TokenIssuer(data_dir)
        issuer.ensure()
    try:
        uvicorn.run(build_app(DevCloud(db, token, issuer)), host=host, port=port,
                    log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    finally:
        db.close()
    return 0


# ---------------------------------------------------------------------------- client


class Client:
    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.token = token

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str]) -> Client:
        host, port = parse_address(args.listen, "--listen", default_host="127.0.0.1")
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        token = given_token(args, env)
        if not token:
            token_file = Path(args.data_dir) / TOKEN_FILE
            try:
                token = token_file.read_text().strip()
            except OSError as err:
                raise ConfigError(f"no admin token: set DEVCLOUD_TOKEN, give --token-file, or "
                                  f"the --data-dir of the server ({token_file}: "
                                  f"{err.strerror})") from err
        shown = f"[{host}]" if ":" in host else host
        return cls(f"http://{shown}:{port}", token)

    def lines(self, path: str) -> Iterator[str]:
        """GET an NDJSON resource, one line at a time as it arrives (no overall timeout)."""
        request = urllib.request.Request(self.base + path, headers={
            "Authorization": f"Bearer {self.token}"})
        try:
            with _OPENER.open(request) as answer:
                for raw in answer:
                    if raw.strip():
                        yield raw.decode("utf-8", "replace").rstrip("\n")
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace").strip()
            raise SupervisorError(f"GET {path}: HTTP {err.code} {detail}") from err
        except (urllib.error.URLError, OSError) as err:
            raise SupervisorError(f"cannot reach {self.base}: "
                                  f"{getattr(err, 'reason', err)}") from err

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with _OPENER.open(request, timeout=_TIMEOUT_S) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace").strip()
            raise SupervisorError(f"{method} {path}: HTTP {err.code} {detail}") from err
        except (urllib.error.URLError, OSError) as err:
            raise SupervisorError(f"cannot reach {self.base}: "
                                  f"{getattr(err, 'reason', err)}") from err
        text = raw.decode("utf-8", "replace")
        try:
            return json.loads(text) if text else None
        except ValueError:
            return text
