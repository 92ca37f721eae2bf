"""The daemon's two endpoints: `/metrics` (prometheus_client's own exposition) and `/healthz`.

prometheus_client's `MetricsHandler` serves the registry (content negotiation, compression when
asked), so this module only adds the health route and the limits that keep a hostile or broken
client from starving the publisher: at most `HTTP_MAX_CONNECTIONS` connections at once, a socket
timeout per wait and a deadline per exchange.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from blocker.run.logs import log_internal

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 3.0  # seconds a connection may take to send its request (and to read the answer)
HTTP_DEADLINE = 10.0  # seconds a whole exchange may take, however slowly the client trickles
HTTP_MAX_CONNECTIONS = 32  # connections served at once; more are closed at once

HealthFn = Callable[[], tuple[int, dict[str, Any]]]


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, but at most `HTTP_MAX_CONNECTIONS` of them: 1,000 idle
    connections to the metrics port must not take the descriptors the publisher needs. An
    excess connection is closed as soon as it is accepted (a scraper retries); one that sends
    nothing is dropped after `HTTP_TIMEOUT`. Connections not yet accepted wait in the kernel's
    listen backlog, which costs this process no descriptor."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[_Handler], state_dir: Path | None) -> None:
        self._slots = threading.BoundedSemaphore(HTTP_MAX_CONNECTIONS)
        self.state_dir = state_dir  # where handle_error writes a crash file
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Not socketserver's traceback on stderr: a client that went away is no error, anything
        else is one log line naming its crash file."""
        exc = sys.exc_info()[1]
        if exc is None or isinstance(exc, (ConnectionError, TimeoutError)):
            return
        log_internal(log, self.state_dir, "http request failed", exc, context="http handler")

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(MetricsHandler):
    """`/metrics` by prometheus_client, `/healthz` from the daemon's health, 404 elsewhere."""

    health: HealthFn
    timeout = HTTP_TIMEOUT  # a request that does not arrive in time: the connection is dropped

    def do_GET(self) -> None:
        route = self.path.split("?")[0]
        if route == "/metrics":
            super().do_GET()
            return
        if route == "/healthz":
            status, payload = type(self).health()
            body, ctype = json.dumps(payload, indent=1).encode(), "application/json"
        else:
            body, status, ctype = b"not found: try /metrics or /healthz\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle(self) -> None:
        # The socket timeout bounds each wait; this bounds the whole exchange, so a client
        # sending one byte every few seconds cannot hold a connection slot for ever.
        timer = threading.Timer(HTTP_DEADLINE, self._cut)
        timer.daemon = True
        timer.start()
        try:
            super().handle()
        finally:
            timer.cancel()

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def serve(listen: tuple[str, int], registry: CollectorRegistry, health: HealthFn,
          state_dir: Path | None) -> BoundedHTTPServer:
    """Listen on `listen` and serve in a thread of its own; OSError when the address is taken."""
    handler = type("Handler", (_Handler,), {"registry": registry, "health": staticmethod(health)})
    server = BoundedHTTPServer(listen, handler, state_dir)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


def stop(server: BoundedHTTPServer) -> None:
    server.shutdown()
    server.server_close()
