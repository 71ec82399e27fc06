"""HTTP/1.1 transport: a threading server with keep-alive connections, and the request handler
that reads a body, hands the request to the emulator, logs it and sends (or withholds) the answer.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import threading
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from .calls import Reply
from .request_log import LoggedRequest, RequestInfo
from .resources import ApiError, error_document
from .work import InFlight

# Bodies above this are refused without being read (far above every Klaviyo limit).
HARD_BODY_CAP = 64_000_000
CONTROL_PREFIX = "/_emulator"
REASONS = {524: "A Timeout Occurred"}


class App(Protocol):
    """What the transport needs from the emulator."""

    in_flight: InFlight

    def handle_api(
        self, method: str, path: str, query: str, headers: Message, body: bytes
    ) -> tuple[Reply, RequestInfo]: ...

    def handle_control(self, method: str, path: str, query: str, body: bytes) -> Reply: ...

    def log(self, entry: LoggedRequest) -> None: ...


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, RequestHandler)

    def track(self, connection: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_all(self) -> None:
        """Close idle keep-alive connections so their handler threads end with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError, ValueError)):
            return  # client went away; nothing to report
        super().handle_error(request, client_address)


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server: HttpServer
    timeout = 120

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        return  # the request log replaces access logging

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > HARD_BODY_CAP:
            self.close_connection = True
            status = 413 if length > 0 else 400
            self._send(
                Reply(status, error_document([ApiError(status, "invalid", "Bad Content-Length.")]))
            )
            return None
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        with self.server.app.in_flight:
            self._answer(method)

    def _answer(self, method: str) -> None:
        app = self.server.app
        started, started_wall = time.monotonic(), time.time()
        body = self._read_body()
        if body is None:
            return
        url = urlsplit(self.path)
        if url.path == CONTROL_PREFIX or url.path.startswith(CONTROL_PREFIX + "/"):
            self._send(app.handle_control(method, url.path, url.query, body))
            return
        reply, info = app.handle_api(method, url.path, url.query, self.headers, body)
        # Logged before the response goes out, so a client that has its answer sees the entry.
        app.log(
            LoggedRequest(
                operation=info.operation,
                method=method,
                path=url.path,
                status=reply.status,
                items=info.items,
                bytes=len(body),
                started=started,
                ended=time.monotonic(),
                started_wall=started_wall,
                ended_wall=time.time(),
                retry_after_violation=info.retry_after_violation,
                query=url.query,
                key=info.key,
                fault=info.fault,
            )
        )
        if reply.action == "reset":
            self._reset()
        elif reply.action == "timeout":
            self.close_connection = True
        else:
            self._send(reply)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (errno 104 on the client)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    def _send(self, reply: Reply) -> None:
        if reply.raw is not None:
            payload = reply.raw
        elif reply.document is None:
            payload = b""
        else:
            payload = json.dumps(reply.document, separators=(",", ":"), ensure_ascii=False).encode()
        self.send_response(reply.status, REASONS.get(reply.status))
        if payload:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 204:
            self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        # Headers and body in one write: two small writes meet Nagle + delayed ACK (~40 ms).
        buffer: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]
        buffer.append(b"\r\n" + payload)
        self.flush_headers()
