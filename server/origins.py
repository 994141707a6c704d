"""Guards against web pages: the Host header (DNS rebinding) and the Origin of state changes.

DNS rebinding: a page at http://evil.example:8000 re-points its own name at 127.0.0.1, and the
browser then lets it talk to this server as "same origin". Its requests still carry
`Host: evil.example:8000`, so the server answers only to names it knows are its own: loopback
names, this machine's name, the name it was bound to, and those given with `--allow-host`
(`*` turns the check off, e.g. behind a proxy that rewrites Host). An address in the Host header
(127.0.0.1, 192.168.1.5, [::1]) is always answered: a page can only send one when its own URL
is that address, and then there is no name to rebind. Ollama guards the same way.

Cross-site requests: a page on any site can make the browser POST to 127.0.0.1 without a CORS
preflight (a "simple" request), and the server would act on it even though the page cannot read
the answer. Browsers name the page in `Origin`, so a state-changing request (anything but GET,
HEAD and OPTIONS) that carries an Origin is refused unless that origin is this server itself or
one listed in LLMEDGE_CORS_ORIGINS. Clients that are not browsers send no Origin and pass.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import send_error
from server.schemas import error_body

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ANY = "*"


def host_name(header: str) -> str:
    """The host part of a Host header or an origin's netloc, lowercased, without the port."""
    host = header.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def allowed_host_names(bound_host: str, extra: Iterable[str]) -> frozenset[str]:
    """The names the server answers to: localhost, this machine's name, the name it is bound
    to, and `extra` (which may hold `*`)."""
    names = {"localhost", socket.gethostname().lower(), host_name(bound_host)}
    names.update(_ANY if name.strip() == _ANY else host_name(name) for name in extra)
    return frozenset(names)


def host_allowed(header: str, allowed: frozenset[str]) -> bool:
    host = host_name(header)
    if not host or _ANY in allowed or _is_address(host):
        return True
    return host in allowed or host.endswith(".localhost")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(scope: Scope, send: Send, message: str, code: str) -> None:
    await send_error(scope, send, 403, error_body(message, "permission_error", None, code))


class HostCheck:
    """Answers only requests whose Host header names this server (see the module docstring)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = _header(scope, b"host") or ""
        if host_allowed(host, self.allowed):
            return await self.app(scope, receive, send)
        name = host_name(host)
        message = (
            f"this server does not answer to the host name {name!r} (a web page may have "
            f"pointed its name at this address); to allow it, start the server with "
            f"`--allow-host {name}`"
        )
        await _refuse(scope, send, message, "host_not_allowed")


class OriginCheck:
    """Refuses state-changing requests from web pages on other origins (module docstring)."""

    def __init__(self, app: ASGIApp, cors_origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origin.rstrip("/").lower() for origin in cors_origins)

    def _allowed(self, origin: str, host: str) -> bool:
        origin = origin.rstrip("/").lower()
        if _ANY in self.origins or origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            return await self.app(scope, receive, send)
        origin = _header(scope, b"origin")
        if origin is None or self._allowed(origin, _header(scope, b"host") or ""):
            return await self.app(scope, receive, send)
        message = (
            f"requests from the web page at {origin} are refused; to let that page use this "
            "server, list it in LLMEDGE_CORS_ORIGINS"
        )
        await _refuse(scope, send, message, "origin_not_allowed")
