"""The command line: run, api-key, status, and error handling."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from supervisor.cli import main
from supervisor.settings import OPTIONS, Settings
from supervisor.store import read_global_api_key

HEX32 = re.compile(r"[0-9a-f]{32}")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for opt in OPTIONS:
        monkeypatch.delenv(opt.env, raising=False)


def test_api_key_prints_the_same_key_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["api-key", "--data-dir", str(tmp_path)]) == 0
    first = capsys.readouterr().out.strip()
    assert HEX32.fullmatch(first)
    monkeypatch.setenv("SUPERVISOR_DATA_DIR", str(tmp_path))
    assert main(["api-key"]) == 0
    assert capsys.readouterr().out.strip() == first
    assert read_global_api_key(tmp_path / "database.sqlite") == first


def test_python_dash_m_is_the_same_command(tmp_path: Path) -> None:
    key = read_global_api_key(tmp_path / "database.sqlite")
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", "api-key", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == key


def test_run_help_lists_every_flag_and_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # argparse would break "<boot-dir>" at its hyphen
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for opt in OPTIONS:
        assert opt.flag in text
        assert f"env {opt.env}" in text
        assert f"default {opt.default}" in text


def test_run_builds_settings_and_calls_the_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[Settings] = []

    def run_supervisor(settings: Settings) -> int:
        received.append(settings)
        return 7

    runtime = types.ModuleType("supervisor.runtime")
    runtime.run_supervisor = run_supervisor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "supervisor.runtime", runtime)
    monkeypatch.setenv("SUPERVISOR_LOG_LEVEL", "debug")
    code = main(["run", "--boot-dir", str(tmp_path), "--data-dir", str(tmp_path / "data"),
                 "--listen", "127.0.0.1:0", "--host-actions", "dry-run"])
    assert code == 7
    (settings,) = received
    assert settings.data_dir == tmp_path / "data"
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 0)
    assert settings.host_actions == "dry-run"
    assert settings.log_level == "debug"
    assert (tmp_path / "config.json").exists()


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--listen", "x:y"], {}, "--listen"),
        (["--host-actions", "upstart"], {}, "--host-actions"),
        ([], {"SUPERVISOR_HOST_ACTIONS": "upstart"}, "SUPERVISOR_HOST_ACTIONS"),
        ([], {"SUPERVISOR_BLINK_SECONDS": "x"}, "SUPERVISOR_BLINK_SECONDS"),
    ],
)
def test_run_config_errors_exit_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    argv: list[str], env: dict[str, str], needle: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["run", "--boot-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_store_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "database.sqlite").mkdir()  # not a database file
    assert main(["api-key", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot open database" in err and "Traceback" not in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["nonsense"]) == 2
    assert main(["run", "--no-such-flag"]) == 2
    assert "usage" in capsys.readouterr().err


class StatusHandler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        StatusHandler.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"status": "success", "appState": "applied"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[int]:
    StatusHandler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_status_asks_the_api_with_the_global_key(
    tmp_path: Path, status_server: int, capsys: pytest.CaptureFixture[str]
) -> None:
    key = read_global_api_key(tmp_path / "database.sqlite")
    argv = ["status", "--listen", f"0.0.0.0:{status_server}", "--data-dir", str(tmp_path)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"status": "success", "appState": "applied"}
    assert StatusHandler.seen == [("/v2/state/status", f"Bearer {key}")]


def test_status_without_a_database_sends_no_key(
    tmp_path: Path, status_server: int, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SUPERVISOR_LISTEN", f"127.0.0.1:{status_server}")
    assert main(["status", "--data-dir", str(tmp_path / "none")]) == 0
    assert StatusHandler.seen == [("/v2/state/status", None)]
    assert not (tmp_path / "none").exists()  # status creates nothing
    assert "applied" in capsys.readouterr().out


def test_status_reports_an_unreachable_supervisor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A port that was free a moment ago: nothing listens there.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["status", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path)]
    assert main(argv) == 1
    assert "cannot reach" in capsys.readouterr().err


class ProxyHandler(BaseHTTPRequestHandler):
    """A proxy that would see the key: it records what it gets and answers 502."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        ProxyHandler.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_status_never_goes_through_an_http_proxy(
    tmp_path: Path, status_server: int, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ProxyHandler.seen = []
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), ProxyHandler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.server_address[1]}")
        key = read_global_api_key(tmp_path / "database.sqlite")
        argv = ["status", "--listen", f"127.0.0.1:{status_server}", "--data-dir", str(tmp_path)]
        assert main(argv) == 0
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()
    assert ProxyHandler.seen == []  # the key never reached the proxy
    assert StatusHandler.seen == [("/v2/state/status", f"Bearer {key}")]
    assert "applied" in capsys.readouterr().out
