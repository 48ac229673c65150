"""Apps served over real HTTP on loopback, for tests that cross a process boundary the way services
do (contract calls, webhooks, browsers), and addresses where nothing listens (a peer that is down)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from werkzeug.serving import make_server


@contextmanager
def served(app, port: int = 0) -> Iterator[str]:
    """Serves a WSGI app with a threaded werkzeug server in a thread; yields its base URL."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def free_port() -> int:
    """A loopback port nothing listens on (just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dead_url() -> str:
    """The address of a peer that is down."""
    return f"http://127.0.0.1:{free_port()}"
