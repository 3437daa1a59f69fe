"""The SSRF guard of http(s) staging against real HTTP servers on 127.0.0.1: a name resolving
to a refused address, a redirect to one, and an allowed one; the connection goes to the checked
address with the name kept in Host."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cpnet.agent.staging import Remote, StagingError, stage_in, stage_out
from cpnet.agent.staging.guard import pin
from cpnet.limits.ssrf import STRICT, parse_allow
from cpnet.tasks.model import Input, Output

BODY = b"inside the provider's network\n"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("host")))  # type: ignore[attr-defined]
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/away"):
            self.send_response(302)
            self.send_header("Location", self.server.away)  # type: ignore[attr-defined]
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def do_PUT(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        self.server.seen.append((self.path, self.rfile.read(length)))  # type: ignore[attr-defined]
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.seen = []  # type: ignore[attr-defined]
    srv.away = ""  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()


def _get(url: str, tmp_path: Path, allow: str | None) -> bytes:
    remote = Remote(url_rule=parse_allow(allow))
    stage_in([Input(path="x", url=url)], tmp_path, max_bytes=1 << 20, retries=0, remote=remote)
    return (tmp_path / "x").read_bytes()


def test_a_name_resolving_to_loopback_is_refused_naming_the_rule(server, tmp_path: Path) -> None:
    url = f"http://localhost:{server.server_port}/data"
    with pytest.raises(StagingError) as info:
        _get(url, tmp_path, None)
    message = str(info.value)
    assert "input 'x'" in message and "localhost resolves to" in message
    assert "loopback" in message and "allow_private_urls" in message
    assert server.seen == []  # refused before any connection


def test_an_allowed_name_works_and_the_connection_goes_to_the_checked_address(
    server, tmp_path: Path
) -> None:
    url = f"http://localhost:{server.server_port}/data"
    assert _get(url, tmp_path, "localhost") == BODY
    # the request reached our 127.0.0.1 server by address, the name kept in Host
    assert server.seen == [("/data", f"localhost:{server.server_port}")]
    p = pin(url, parse_allow("localhost"), "GET")
    assert p.url.startswith(("http://127.0.0.1:", "http://[::1]:"))
    assert p.headers == {"Host": f"localhost:{server.server_port}"}


def test_every_redirect_is_checked_again(server, tmp_path: Path) -> None:
    port = server.server_port
    # allowed by name, but the redirect goes to the literal loopback address: refused
    server.away = f"http://127.0.0.1:{port}/data"
    with pytest.raises(StagingError, match=r"127\.0\.0\.1, a loopback address"):
        _get(f"http://localhost:{port}/away", tmp_path, "localhost")
    assert [p for p, _ in server.seen] == ["/away"]  # the target was never asked
    # a redirect within what is allowed is followed
    assert _get(f"http://127.0.0.1:{port}/redirect/data", tmp_path / "b", "127.0.0.1") == BODY
    # and one to a link-local address (the metadata service) is refused whatever the first hop
    server.away = "http://169.254.169.254/latest/meta-data/"
    with pytest.raises(StagingError, match=r"169\.254\.169\.254, a link-local address"):
        _get(f"http://127.0.0.1:{port}/away", tmp_path / "c", "127.0.0.1")


def test_an_output_put_to_a_refused_address_sends_nothing(server, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "out.txt").write_bytes(b"result")
    url = f"http://127.0.0.1:{server.server_port}/up/out.txt"
    with pytest.raises(StagingError, match="loopback"):
        stage_out(
            [Output(path="out.txt", url=url)],
            files,
            max_bytes=1 << 20,
            remote=Remote(url_rule=STRICT),
        )
    assert server.seen == []
    stage_out(
        [Output(path="out.txt", url=url)],
        files,
        max_bytes=1 << 20,
        remote=Remote(url_rule=parse_allow("127.0.0.0/8")),
    )
    assert server.seen == [("/up/out.txt", b"result")]
