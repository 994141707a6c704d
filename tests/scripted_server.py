"""The real server app over a scripted backend, served by uvicorn on loopback from a thread.

For end-to-end tests whose assertions must not depend on what a small model happens to say:
the client, HTTP, SSE/NDJSON and parsing are real; only the generated text is scripted.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from llmedge import Engine
from server import create_app


@contextmanager
def serving(engine: Engine) -> Iterator[str]:
    """Yields the server's base URL (no /v1) while it runs; stops it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(engine), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the scripted server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
