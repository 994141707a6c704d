"""Runs the server with uvicorn until interrupted."""

from __future__ import annotations

import ipaddress
import logging
import socket

import uvicorn

from llmedge import Engine
from server.app import create_app

log = logging.getLogger("llmedge.server")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(engine: Engine, on_ready: str = "") -> None:
    """Serve `engine` on the settings' host and port; prints the address once listening."""
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
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)  # before the address is printed, so a client that reads it can connect
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if family == socket.AF_INET6 else settings.host
    print(f"llmedge serving {on_ready} at http://{host}:{port}/v1", flush=True)
    config = uvicorn.Config(create_app(engine), log_level=settings.log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
