"""A real HTTP server on loopback that tests point workflow steps and connections at."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from pathlib import Path

from tests.serving import served

# (path with query, request headers) -> (status, extra headers, JSON body)
Answer = Callable[[str, dict], tuple[int, dict, object]]


@contextmanager
def serving(answer: Answer, *, tls: Path | None = None) -> Iterator[str]:
    """Serves requests with `answer` until the block ends; yields the base URL (HTTPS with `tls`:
    see tests.serving.served)."""

    def app(environ, start_response):
        query = environ.get("QUERY_STRING")
        path = environ["PATH_INFO"] + (f"?{query}" if query else "")
        headers = {
            name[5:].replace("_", "-").title(): value
            for name, value in environ.items()
            if name.startswith("HTTP_")
        }
        status, extra, body = answer(path, headers)
        payload = json.dumps(body).encode()
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "application/json"), *extra.items(), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    with served(app, tls=tls) as url:
        yield url
