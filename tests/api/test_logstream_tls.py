"""The log stream over TLS to a server whose certificate only config.json's `balenaRootCA`
vouches for: a real TLS socket on 127.0.0.1 with a self-signed certificate made by openssl.
With the CA the line arrives (gzip NDJSON inside chunked HTTP); without it, no byte does."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.cloud.logstream import LogStream, Timing, tls_context
from supervisor.errors import ConfigError
from supervisor.logs import LogMessage
from tests.api.devcloud_proc import wait_for

FAST = Timing(backoff_base=0.05, backoff_max=0.4, grace=0.05, idle=300.0,
              flush_interval=0.05, io_timeout=10.0)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"),
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return root / "cert.pem", root / "key.pem"


class TlsSink:
    """Accepts TLS connections; keeps the headers and the inflated body of each."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.heads: list[bytes] = []
        self.body = b""
        self.handshakes_failed = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.server.accept()
            except OSError:
                return
            try:
                conn = self.context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                self.handshakes_failed += 1
                raw.close()
                continue
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: ssl.SSLSocket) -> None:
        data = b""
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        with conn:
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            head, _, rest = data.partition(b"\r\n\r\n")
            self.heads.append(head)
            while True:  # chunked: size line, data, CRLF
                while b"\r\n" not in rest:
                    more = conn.recv(65536)
                    if not more:
                        return
                    rest += more
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                while len(rest) < size + 2:
                    more = conn.recv(65536)
                    if not more:
                        return
                    rest += more
                self.body += inflate.decompress(rest[:size])
                rest = rest[size + 2:]
                if size == 0:
                    return

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def sink(certificate: tuple[Path, Path]) -> Iterator[TlsSink]:
    made = TlsSink(*certificate)
    yield made
    made.close()


def test_the_root_ca_lets_the_stream_through(sink: TlsSink, certificate: tuple[Path, Path]
                                             ) -> None:
    root_ca = base64.b64encode(certificate[0].read_bytes()).decode()
    stream = LogStream(timing=FAST, ssl_context=tls_context(root_ca))
    stream.set_credentials(f"https://127.0.0.1:{sink.port}", "u1", "key1")
    stream.start()
    try:
        stream.offer(LogMessage.system("over tls", timestamp=7))
        wait_for(lambda: b"over tls" in sink.body, "the line over TLS")
    finally:
        stream.stop()
    assert sink.body == b'{"message":"over tls","isSystem":true,"timestamp":7}\n'
    head = sink.heads[0].decode()
    assert head.startswith("POST /device/v2/u1/log-stream HTTP/1.1\r\n")
    for header in ("Authorization: Bearer key1", "Content-Type: application/x-ndjson",
                   "Content-Encoding: gzip", "Transfer-Encoding: chunked"):
        assert header in head.split("\r\n")


def test_without_the_root_ca_nothing_is_sent(sink: TlsSink) -> None:
    stream = LogStream(timing=FAST, ssl_context=tls_context(None))
    stream.set_credentials(f"https://127.0.0.1:{sink.port}", "u1", "key1")
    stream.start()
    try:
        stream.offer(LogMessage.system("must not leak"))
        wait_for(lambda: stream.failures_total >= 2, "refused handshakes")
    finally:
        stream.stop()
    assert sink.heads == [] and sink.body == b""
    assert stream.pending == 1


def test_a_broken_root_ca_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="balenaRootCA"):
        tls_context("not base64!")
    with pytest.raises(ConfigError, match="balenaRootCA"):
        tls_context(base64.b64encode(b"-----BEGIN CERTIFICATE-----\nxx\n").decode())
