"""Both HTTP servers, hardened the same way (``nexus_assets.serving``): ``qml-server`` and ``site``.

Raw sockets on loopback, so each test says exactly what goes on the wire: a client that sends
nothing, more clients than threads, request bodies, malformed paths, an absurd project id. Every
response must carry the security headers; the API key is never in a response or a log line; the
site's files are never changed by any of it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nexus_assets.serving import MAX_REQUEST_BODY, site_server
from nexus_assets_tests.loopback import API_KEY, COIN, leaks_in, serve

PROJECT = f"/get_qml_models/{COIN.project_id}?from_date=2025-01-04&to_date=2025-01-04"
SECURITY = ("content-security-policy", "x-content-type-options", "referrer-policy")


def _request(path: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b"",
             version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _exchange(url: str, raw: bytes, *, timeout: float = 20.0) -> bytes:
    """Send ``raw`` on a fresh connection and read until the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    chunks = []
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        try:
            conn.sendall(raw)
            conn.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and hung up before reading everything (a refusal)
            pass
        try:
            while data := conn.recv(1 << 16):
                chunks.append(data)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def _responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in ``raw`` (each with a Content-Length), as (status, headers, body)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", len(rest)))
        out.append((int(status_line.split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return out


def _assert_secure(headers: dict[str, str]) -> None:
    assert all(name in headers for name in SECURITY), headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"


@pytest.fixture
def site(tmp_path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "dashboard"
    (root / "assets").mkdir(parents=True)
    (root / "asset=9004_VIX").mkdir()
    (root / "index.html").write_text("<!DOCTYPE html><title>index</title>")
    (root / "assets" / "plotly-9.9.9.min.js").write_text("// plotly")
    (root / "asset=9004_VIX" / "index.html").write_text("<!DOCTYPE html><title>history</title>")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    httpd = site_server(root, "127.0.0.1", 0, max_threads=2)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # nothing served changed anything


@contextmanager
def _qml_server(**kwargs):
    with serve(COIN, **kwargs) as server:
        yield server


@pytest.fixture
def qml(caplog) -> Iterator[str]:
    caplog.set_level(logging.INFO)
    with _qml_server() as server:
        yield server.url
    assert not [r.getMessage() for r in caplog.records if leaks_in(r.getMessage(), API_KEY)]


def _get(url: str, path: str, **kwargs) -> tuple[int, dict[str, str], bytes]:
    [response] = _responses(_exchange(url, _request(path, headers={"Connection": "close", **kwargs.pop("headers", {})}, **kwargs)))
    return response


# -- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/index.html", "/assets/plotly-9.9.9.min.js", "/missing.html"])
def test_every_site_response_carries_the_security_headers(site, path) -> None:
    status, headers, _ = _get(site[0], path)
    assert status in (200, 404)
    _assert_secure(headers)
    if path.endswith(".html") and status == 200:  # the pages' own script hash, plus no framing
        assert "script-src 'self' 'sha256-" in headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/health", PROJECT, "/nope", f"/get_qml_models/{COIN.project_id}"])
def test_every_qml_server_response_carries_the_security_headers(qml, path) -> None:
    status, headers, body = _get(qml, path, headers={"qml-api-key": API_KEY})
    assert status in (200, 404)
    _assert_secure(headers)
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert not leaks_in(body, API_KEY)


# -- listing, malformed paths, absurd ids ---------------------------------------------------------


def test_the_site_lists_no_folder(site) -> None:
    status, headers, body = _get(site[0], "/assets/")
    assert status == 404 and b"plotly-9.9.9" not in body
    _assert_secure(headers)
    assert _get(site[0], "/asset=9004_VIX/")[0] == 200  # a folder with an index.html shows that page


MALFORMED = ["/%00", "/index.html%00.js", "/a%0d%0aSet-Cookie:%20x=1", "/%ff%fe", "/%zz", "/asset=9004_VIX/%00/"]


@pytest.mark.parametrize("path", MALFORMED)
def test_a_malformed_path_is_a_clean_400_on_the_site(site, path, capfd) -> None:
    status, headers, _ = _get(site[0], path)
    assert status == 400
    _assert_secure(headers)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("path", MALFORMED)
def test_a_malformed_path_is_a_clean_400_on_the_qml_server(qml, path, capfd) -> None:
    status, headers, _ = _get(qml, path, headers={"qml-api-key": API_KEY})
    assert status == 400
    _assert_secure(headers)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("project", ["9" * 5000, "9" * 19, "\u0663", "-1", "1.0"],
                         ids=["5000-digits", "19-digits", "arabic-digit", "negative", "float"])
def test_an_absurd_project_id_is_a_404_not_a_500(qml, project, capfd) -> None:
    status, headers, body = _get(qml, f"/get_qml_models/{project}".encode().decode("latin-1"),
                                 headers={"qml-api-key": API_KEY})
    assert status == 404, body[:200]
    _assert_secure(headers)
    assert "Traceback" not in capfd.readouterr().err


# -- request bodies ---------------------------------------------------------------------------------


def test_a_small_get_body_is_read_and_dropped_so_the_next_request_on_the_connection_is_served(qml) -> None:
    """Left unread, the body used to be parsed as the next request line (a 400)."""
    raw = _request("/health", headers={"Content-Length": "5"}, body=b"hello") + _request("/health", headers={"Connection": "close"})
    responses = _responses(_exchange(qml, raw))
    assert [status for status, _, _ in responses] == [200, 200]
    assert all(body == b'{"status":"ok"}' for _, _, body in responses)


@pytest.mark.parametrize("server", ["site", "qml"])
def test_a_large_or_chunked_body_is_refused_without_reading_it(site, qml, server) -> None:
    url = site[0] if server == "site" else qml
    too_large = _request("/index.html" if server == "site" else "/health",
                         headers={"Content-Length": str(MAX_REQUEST_BODY + 1)}, body=b"x" * 1024)
    [(status, headers, _)] = _responses(_exchange(url, too_large))
    assert status == 413 and headers.get("connection") == "close"
    _assert_secure(headers)
    chunked = _request("/health", headers={"Transfer-Encoding": "chunked"}, body=b"5\r\nhello\r\n0\r\n\r\n")
    [(status, headers, _)] = _responses(_exchange(url, chunked))
    assert status == 411 and headers.get("connection") == "close"


@pytest.mark.parametrize("server", ["site", "qml"])
def test_a_method_other_than_get_is_refused_and_the_connection_closed(site, qml, server) -> None:
    url = site[0] if server == "site" else qml
    [(status, headers, _)] = _responses(_exchange(url, _request("/index.html", method="POST",
                                                                  headers={"Content-Length": "4"}, body=b"data")))
    assert status == 501 and headers.get("connection") == "close"
    _assert_secure(headers)


# -- slow and many clients --------------------------------------------------------------------------


def test_a_client_that_sends_nothing_is_dropped_after_the_socket_timeout() -> None:
    with serve(COIN, request_timeout=0.5) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as idle:
            idle.sendall(b"GET /health HT")  # and nothing more
            assert idle.recv(1024) == b""  # the server hung up (the client would wait 30 s for it)


def test_more_clients_than_threads_are_answered_503_at_once_not_queued_on_new_threads() -> None:
    with serve(COIN, max_threads=2) as server:
        host, port = server.url.removeprefix("http://").split(":")
        holders = [socket.create_connection((host, int(port)), timeout=30) for _ in range(2)]
        try:
            for holder in holders:
                holder.sendall(b"GET /health HT")  # each holds a thread, reading its request line
            status, headers, _ = _get(server.url, "/health")
            assert status == 503 and headers.get("retry-after") == "1"
            _assert_secure(headers)
        finally:
            for holder in holders:
                holder.close()
        for _ in range(200):  # the slots come back once the holders' threads see them go
            if _get(server.url, "/health")[0] == 200:
                break
        else:
            pytest.fail("the server never served again after its clients left")


def test_a_connection_slot_is_free_before_its_client_sees_the_close(site, monkeypatch) -> None:
    """A lone client that connects again as soon as its response ends is served, even when the
    server thread loses its core right after closing the last connection (made certain here by a
    pause after each close): the slot is given back before the close, not after it."""
    from nexus_assets.serving import HardenedHTTPServer

    closing = HardenedHTTPServer.shutdown_request

    def close_then_stall(self, request) -> None:
        closing(self, request)
        time.sleep(0.3)

    monkeypatch.setattr(HardenedHTTPServer, "shutdown_request", close_then_stall)
    url, _ = site  # two threads
    assert [_get(url, "/index.html")[0] for _ in range(4)] == [200] * 4


def test_a_site_with_many_clients_keeps_serving_them_in_turn(site) -> None:
    url, _ = site
    statuses = [_get(url, "/index.html")[0] for _ in range(10)]
    assert statuses == [200] * 10
