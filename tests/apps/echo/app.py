"""Echo app: answers with its WSGI environ and request body as JSON, or with shaped responses for tests.

Query parameters (all optional): ``status=404``, ``header=Name:Value`` (repeatable), ``size=N`` (answer N
bytes of a repeating pattern instead of JSON, with Content-Length), ``chunks=K&chunk_size=N`` (stream K chunks
from a generator, no Content-Length), ``sleep=S`` (seconds to wait before answering: a slow upstream).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import parse_qsl

PATTERN = b"0123456789abcdef"


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI entry point."""
    params = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    options = dict(params)
    body = environ["wsgi.input"].read()
    if "sleep" in options:
        time.sleep(float(options["sleep"]))
    code = int(options.get("status", "200"))
    status = f"{code} {HTTPStatus(code).phrase}"
    extra = [tuple(value.split(":", 1)) for name, value in params if name == "header"]
    if "size" in options:
        size = int(options["size"])
        payload = (PATTERN * (size // len(PATTERN) + 1))[:size]
        start_response(status, [("Content-Type", "application/octet-stream"), ("Content-Length", str(size)), *extra])
        return [payload]
    if "chunks" in options:
        start_response(status, [("Content-Type", "application/octet-stream"), *extra])
        return _stream(int(options["chunks"]), int(options.get("chunk_size", "1024")))
    data = json.dumps(
        {
            "environ": {k: v for k, v in environ.items() if isinstance(v, str)},
            "body": body.decode("latin-1"),
        },
        sort_keys=True,
    ).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra])
    return [data]


def _stream(count: int, size: int) -> Iterator[bytes]:
    """Yield ``count`` chunks of ``size`` bytes, each a distinct byte so that reordering would show."""
    for index in range(count):
        yield bytes([48 + index % 10]) * size
