"""What both HTTP servers (``nexus-assets qml-server`` and ``nexus-assets site``) share, and the site's handler.

Both are the standard library's threading HTTP server, hardened the same way:

- every connection has a socket timeout, so a client that sends nothing (or a byte a minute)
  holds a thread for at most ``request_timeout`` seconds;
- at most ``max_threads`` connections are served at once; one more is answered ``503`` at once
  and closed, instead of starting yet another thread;
- a request body is read and discarded when it is small (a GET has no use for it), refused with
  ``413`` when larger than 64 KiB and ``411`` when chunked, and the connection then closed, so a
  body is never read as the next request;
- every response carries the headers a static site should send: a Content-Security-Policy with
  ``frame-ancestors 'none'``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  no-referrer`` (and ``X-Frame-Options: DENY`` for older browsers);
- a malformed path (a NUL or another control character, a bad percent escape, bytes that are not
  UTF-8) is a clean ``400``; an error while handling a request is logged in one line, never as a
  traceback on the server's stderr;
- an address already taken is refused with :class:`PortInUse`, whose message is the one line a
  command prints (``nexus-assets site``, ``qml-server`` and any later server share it).

The site's handler serves files only: a folder without ``index.html`` is a 404, never a listing.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_to_bytes, urlsplit

from nexus_assets.core.dashboard.markup import BOOTSTRAP_JS, content_security_policy

__all__ = [
    "HardenedHTTPServer",
    "HardenedHandler",
    "PortInUse",
    "SiteHandler",
    "site_server",
    "security_headers",
    "API_CONTENT_SECURITY_POLICY",
    "SITE_CONTENT_SECURITY_POLICY",
    "MAX_REQUEST_BODY",
    "DEFAULT_MAX_THREADS",
    "DEFAULT_REQUEST_TIMEOUT",
]

log = logging.getLogger("nexus_assets.serving")

MAX_REQUEST_BODY = 64 << 10
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_MAX_THREADS = 32
# An API answers data, never a page: nothing may load, nothing may frame it.
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The pages' own policy (their <meta> one, which allows the dashboard's one inline script by its
# hash), plus what only a header can say: no framing.
SITE_CONTENT_SECURITY_POLICY = content_security_policy((BOOTSTRAP_JS,)) + "; frame-ancestors 'none'"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def security_headers(policy: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


class PortInUse(OSError):
    """The port a server was asked to listen on is taken (usually by an earlier run of the same command)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"port {port} on {host} is already in use (is another server still running?): "
                                           "stop it, or choose another port with --port (0 picks a free one)")
        self.host, self.port = host, port

    def __str__(self) -> str:
        return self.strerror


class HardenedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with a bound on the connections served at once and a socket
    timeout per connection (read by :class:`HardenedHandler`)."""

    daemon_threads = True

    def __init__(self, address, handler, *, max_threads: int = DEFAULT_MAX_THREADS,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT, busy_policy: str = API_CONTENT_SECURITY_POLICY) -> None:
        if max_threads < 1 or request_timeout <= 0:
            raise ValueError("max_threads must be >= 1 and request_timeout > 0")
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_threads)
        headers = "".join(f"{k}: {v}\r\n" for k, v in security_headers(busy_policy).items())
        self._busy = ("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n"
                      f"{headers}\r\n").encode("latin-1")
        try:
            super().__init__(address, handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(str(address[0]), int(address[1])) from None
            raise

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            try:  # a few hundred bytes into a fresh socket's buffer: does not block the accept loop
                request.settimeout(1.0)
                request.sendall(self._busy)
                request.shutdown(socket.SHUT_WR)
                request.setblocking(False)
                request.recv(1 << 16)  # what the client sent already: closing over unread data would reset
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        # ThreadingMixIn's, with the slot given back *before* the connection is closed: a client
        # reads its response to the close and may connect again at once; released after the
        # close, its next connection could find the slot still taken (a 503 to a lone sequential
        # client, seen under CPU load when the thread lost its core between the two)
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._slots.release()
            self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        log.warning("error handling a request from %s: %s", client_address[0], type(error).__name__)


class HardenedHandler(BaseHTTPRequestHandler):
    """The request handling both servers share (see the module docstring). Subclasses set
    ``content_security_policy``; :meth:`end_headers` adds the security headers to every response,
    errors included."""

    content_security_policy = API_CONTENT_SECURITY_POLICY

    def setup(self) -> None:
        self.timeout = getattr(self.server, "request_timeout", DEFAULT_REQUEST_TIMEOUT)
        super().setup()

    def end_headers(self) -> None:
        for name, value in security_headers(self.content_security_policy).items():
            self.send_header(name, value)
        super().end_headers()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if not _well_formed(self.path):
            return self._refuse(HTTPStatus.BAD_REQUEST, "malformed path")
        return self._read_or_refuse_body()

    def _refuse(self, status: HTTPStatus, message: str) -> bool:
        """Answer ``status`` and close; what the client already sent is dropped first (at most
        64 KiB, without waiting), since closing over unread data resets the connection and the
        client may then never read the answer."""
        self.close_connection = True
        self.send_error(status, message)
        try:
            self.wfile.flush()
            self.connection.setblocking(False)
            for _ in range(4):
                if not self.connection.recv(1 << 14):
                    break
        except OSError:
            pass
        return False

    def _read_or_refuse_body(self) -> bool:
        if self.headers.get("Transfer-Encoding"):
            return self._refuse(HTTPStatus.LENGTH_REQUIRED, "chunked request bodies are not accepted")
        declared = self.headers.get("Content-Length")
        if declared is None:
            return True
        if not declared.strip().isdigit():
            return self._refuse(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
        size = int(declared)
        if size > MAX_REQUEST_BODY:
            return self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request bodies are not accepted")
        while size > 0:  # read and drop it, so it is not taken for the next request
            data = self.rfile.read(min(size, 1 << 14))
            if not data:
                self.close_connection = True
                return False
            size -= len(data)
        return True


def _well_formed(target: str) -> bool:
    """A request target whose path decodes to UTF-8 text without control characters."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return False
    path = urlsplit(target).path
    if _BAD_ESCAPE.search(path):
        return False
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded)


class SiteHandler(HardenedHandler, SimpleHTTPRequestHandler):
    """The dashboard's files, and nothing else: no folder listing, the pages' CSP as a header."""

    content_security_policy = SITE_CONTENT_SECURITY_POLICY

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND, "no such page")
        return None

    def log_message(self, *_) -> None:  # quiet: a page load is dozens of requests
        pass


def site_server(root: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0, *,
                max_threads: int = DEFAULT_MAX_THREADS, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> HardenedHTTPServer:
    """A server (not yet serving) for the dashboard site under ``root``."""
    handler = functools.partial(SiteHandler, directory=os.fspath(root))
    return HardenedHTTPServer((host, port), handler, max_threads=max_threads, request_timeout=request_timeout,
                              busy_policy=SITE_CONTENT_SECURITY_POLICY)
