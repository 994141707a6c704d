"""Which backend runs a model on this host, in which format, and why: the pure router and the
facts it decides from (backend probes, stored artifacts, the memory budget)."""

from __future__ import annotations

from llmedge.routing.facts import route_model, with_backends
from llmedge.routing.router import REMOTE, RouteDecision, choose_backend

__all__ = ["REMOTE", "RouteDecision", "choose_backend", "route_model", "with_backends"]
