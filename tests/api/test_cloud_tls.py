"""Every cloud API call over HTTPS trusts config.json `balenaRootCA`: a real TLS server on
127.0.0.1 whose self-signed certificate (made by openssl) only that bundle vouches for. With
the CA (as CloudSync builds the client) the call is answered; without it, it never reaches
the server."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from supervisor.cloud.http import CloudClient, CloudError
from supervisor.cloud.sync import CloudSync, _tls
from supervisor.configjson import ConfigJson
from supervisor.logs import LogHub


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, list[str]]]:
    root = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"),
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            data = json.dumps({"d": [{"id": 5}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(root / "cert.pem", root / "key.pem")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    bundle = base64.b64encode((root / "cert.pem").read_bytes()).decode()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", bundle, seen
    httpd.shutdown()
    httpd.server_close()


def _get(url: str, context: ssl.SSLContext | None) -> Any:
    client = CloudClient(url, api_key=lambda: "k", user_agent="test", timeout=10,
                         ssl_context=context)
    return asyncio.run(client.request("GET", "/v7/device?$select=id")).json()


def test_the_api_client_trusts_balena_root_ca(server: tuple[str, str, list[str]]) -> None:
    url, bundle, seen = server
    assert _get(url, _tls(bundle)) == {"d": [{"id": 5}]}
    assert seen == ["/v7/device?$select=id"]


def test_without_the_bundle_the_call_is_refused(server: tuple[str, str, list[str]]) -> None:
    url, _bundle, seen = server
    before = len(seen)
    with pytest.raises(CloudError) as caught:
        _get(url, _tls(None))
    assert "certificate" in str(caught.value).lower()
    assert len(seen) == before
    assert _tls("not base64 pem") is None  # logged; the system's CAs are used


def test_cloud_sync_builds_its_clients_with_balena_root_ca(
        server: tuple[str, str, list[str]], tmp_path: Path) -> None:
    url, bundle, _seen = server
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"uuid": "u" * 32, "apiEndpoint": url, "balenaRootCA": bundle,
                                "deviceApiKey": "k"}))
    runtime = SimpleNamespace(settings=SimpleNamespace(config_json=ConfigJson(path),
                                                       poll_interval_ms=900_000),
                              store=None, log=print, logs=LogHub(), target=None,
                              local_mode=False)
    sync = CloudSync(cast(Any, runtime))
    answer = asyncio.run(sync.client.request("GET", "/v7/device?$select=id"))
    assert answer.json() == {"d": [{"id": 5}]}
    assert sync.logs.stream._ssl is not None  # the log stream gets the same trust
