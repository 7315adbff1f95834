"""The sandbox's AWS endpoint: a cheap liveness request, asked patiently."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.sandbox import endpoint


class SlowServer(http.server.ThreadingHTTPServer):
    delay = 0.0
    paths: list[str]


class Slow(http.server.BaseHTTPRequestHandler):
    server: SlowServer

    def do_GET(self) -> None:  # noqa: N802  # the name http.server calls
        self.server.paths.append(self.path)
        time.sleep(self.server.delay)
        body = b'{"batch": {}}'
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_endpoint(tmp_path: Path) -> Iterator[tuple[str, Path, SlowServer]]:
    """An HTTPS server on loopback, with the sandbox's certificate, that answers as late as asked."""
    cert, key = endpoint.ensure_certificate(tmp_path / "tls")
    server = SlowServer(("127.0.0.1", 0), Slow)
    server.paths = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert, server
    server.shutdown()


def test_liveness_is_one_small_request(slow_endpoint) -> None:
    url, cert, server = slow_endpoint
    assert endpoint.is_up(url, cert)
    assert server.paths == [endpoint.LIVENESS_PATH]  # not the whole data.json


def test_a_late_answer_is_waited_for(slow_endpoint) -> None:
    url, cert, server = slow_endpoint
    server.delay = 1.5
    assert not endpoint.is_up(url, cert, timeout=0.5)  # one impatient request gives up
    assert endpoint.wait_until_up(url, cert, deadline=10)  # asked patiently, it answers


def test_no_answer_within_the_deadline(slow_endpoint) -> None:
    url, cert, server = slow_endpoint
    server.delay = 3
    started = time.monotonic()
    assert not endpoint.wait_until_up(url, cert, deadline=1)
    assert time.monotonic() - started < 3


def test_waiting_stops_when_the_process_is_gone(tmp_path: Path) -> None:
    cert, _key = endpoint.ensure_certificate(tmp_path / "tls")
    started = time.monotonic()
    assert not endpoint.wait_until_up("https://127.0.0.1:9", cert, deadline=30, alive=lambda: False)
    assert time.monotonic() - started < 1
