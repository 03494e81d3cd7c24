"""Command line: `balena-supervisor run | api-key | status` (also `python -m supervisor`).

`run` turns flags and environment into `Settings` and hands them to `runtime.run_supervisor`.
`api-key` prints the global API key from the database; `status` asks a running supervisor for
`/v2/state/status`. Errors raised on purpose end as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from supervisor.errors import SupervisorError
from supervisor.settings import (
    DB_FILENAME,
    DEFAULT_STATUS_ADDRESS,
    OPTIONS,
    OPTIONS_BY_DEST,
    format_address,
    load_settings,
    parse_address,
    resolve_data_dir,
)
from supervisor.store import read_global_api_key

PROG = "balena-supervisor"
_STATUS_TIMEOUT_S = 10.0


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["devcloud"]:
        # the development fleet server: its own CLI, never imported by the agent itself
        from supervisor.devcloud.cli import main as devcloud_main

        return devcloud_main(words[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help or a usage error: argparse has already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = args.handler(args, os.environ)
        return code
    except SupervisorError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Device agent: keeps containers matching a target state."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the supervisor",
        description="Run the supervisor. Each setting is a flag or an environment variable; "
        "precedence: flag > environment > config.json > default.",
    )
    for opt in OPTIONS:
        run.add_argument(
            opt.flag,
            dest=opt.dest,
            metavar=opt.metavar,
            default=None,  # None = not given, so the environment and config.json can apply
            help=f"{opt.help} (env {opt.env}; default {opt.default})",
        )
    run.set_defaults(handler=_cmd_run)

    api_key = commands.add_parser("api-key", help="print the global API key")
    _add_data_dir(api_key)
    api_key.set_defaults(handler=_cmd_api_key)

    # listed for --help only: main() hands `devcloud ...` to the devcloud's own parser
    commands.add_parser("devcloud", help="the development fleet server and its client "
                        "(balena-supervisor devcloud --help; docs/fleet.md)")
    status = commands.add_parser("status", help="print /v2/state/status of a running supervisor")
    status.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=None,
        help="address of the supervisor API "
        f"(env {OPTIONS_BY_DEST['listen'].env}; default {DEFAULT_STATUS_ADDRESS})",
    )
    _add_data_dir(status, "where to read the global API key, if any")
    status.set_defaults(handler=_cmd_status)
    return parser


def _add_data_dir(parser: argparse.ArgumentParser, what: str = "") -> None:
    opt = OPTIONS_BY_DEST["data_dir"]
    parser.add_argument(
        opt.flag,
        dest=opt.dest,
        metavar=opt.metavar,
        default=None,
        help=f"{what or opt.help} (env {opt.env}; default {opt.default})",
    )


def _cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = load_settings(args, env)
    # Imported here: the runtime pulls in the whole agent, which api-key and status do not need.
    from supervisor.runtime import run_supervisor

    return run_supervisor(settings)


def _cmd_api_key(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    key = read_global_api_key(resolve_data_dir(args, env) / DB_FILENAME)
    print(key)
    return 0


def _cmd_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    listen_env = OPTIONS_BY_DEST["listen"].env
    if args.listen:
        address, source = args.listen, "--listen"
    elif env.get(listen_env):
        address, source = env[listen_env], listen_env
    else:
        address, source = DEFAULT_STATUS_ADDRESS, "default"
    host, port = parse_address(address, source, default_host="127.0.0.1")
    if host in ("0.0.0.0", "::"):  # a wildcard bind address: talk to this machine
        host = "127.0.0.1"
    url = f"http://{format_address(host, port)}/v2/state/status"

    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    key = read_global_api_key(resolve_data_dir(args, env) / DB_FILENAME, create=False)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        # The local API directly: an http_proxy of the environment must never see the key.
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(request, timeout=_STATUS_TIMEOUT_S) as response:
            body = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace").strip()
        print(f"{PROG}: {url}: HTTP {err.code} {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        print(f"{PROG}: cannot reach {url}: {reason}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(json.loads(body), indent=2))
    except ValueError:
        print(body)
    return 0
