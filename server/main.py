"""Runs the server with uvicorn until interrupted, and shuts it down so no stream is cut."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket

import uvicorn
from sse_starlette.sse import AppStatus

from llmedge import Engine
from llmedge.errors import ServerStartError
from server.app import create_app

log = logging.getLogger("llmedge.server")
# How long shutdown waits for open connections to send their last bytes.
SHUTDOWN_GRACE_S = 10


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _why(exc: OSError, host: str, port: int) -> str:
    if isinstance(exc, socket.gaierror):
        return "that host is neither an address nor a name this machine resolves; check --host"
    if exc.errno == errno.EADDRINUSE:
        return (
            "the port is taken (another `llmedge serve`?); stop that server, or pick another "
            "port with --port (0 picks a free one)"
        )
    if exc.errno == errno.EACCES:
        return f"port {port} needs privileges here; pick one above 1023 with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"this machine has no address {host}; use --host 127.0.0.1 (this machine only), "
            "0.0.0.0 (every interface) or one of its addresses"
        )
    return exc.strerror or str(exc)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound and listening on `host`:`port`, or a one-line `ServerStartError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # before the address is printed, so a client that reads it can connect
    except OSError as exc:
        sock.close()
        raise ServerStartError(host, port, _why(exc, host, port)) from None
    return sock


class DrainingServer(uvicorn.Server):
    """Uvicorn, but a shutdown (SIGTERM, Ctrl-C) first stops taking connections, then closes the
    engine, which ends every open generation with an error that each stream sends as its last
    event (an error event and [DONE] over SSE, an `{"error": …}` line over NDJSON), and only
    then waits for the connections to finish."""

    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self.engine = engine

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await asyncio.to_thread(self.engine.close)
        await super().shutdown(sockets=sockets)


def serve(engine: Engine, on_ready: str = "", sock: socket.socket | None = None) -> None:
    """Serve `engine` on `sock`, or on the settings' host and port; prints the address once
    listening."""
    settings = engine.settings
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    if settings.api_key is None and not _loopback(settings.host):
        log.warning(
            "serving on %s without an API key: anyone who can reach it can use it; "
            "set --api-key KEY",
            settings.host,
        )
    # Bind first, so port 0 resolves to a real port that we can print before serving.
    sock = sock or listen(settings.host, settings.port)
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if sock.family == socket.AF_INET6 else settings.host
    print(f"llmedge serving {on_ready} at http://{host}:{port}/v1", flush=True)
    # Streams end through the engine (DrainingServer), not by sse-starlette cancelling them.
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
    config = uvicorn.Config(
        create_app(engine),
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    DrainingServer(config, engine).run(sockets=[sock])
