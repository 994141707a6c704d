"""`route`: which backend would run a model on this host, in which format, and why."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from llmedge.settings import add_settings_flags, settings_from_args

if TYPE_CHECKING:
    from llmedge.routing import RouteDecision

ROUTE_FIELDS = ("ctx_tokens", "parallel", "gpu_layers")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    route = subparsers.add_parser(
        "route",
        help="explain which backend would run a model here",
        description="Show the backend and artifact format llmedge would run MODEL with on this "
        "host, why, and why each other backend was or was not chosen.",
    )
    route.add_argument("model", metavar="MODEL", nargs="?", help="model name (default: default)")
    route.add_argument("--backend", help="force this backend, as `serve --backend` would")
    route.add_argument("--prefer", dest="prefer_backend", help="try this backend first")
    route.add_argument("--remote", dest="remote_url", metavar="URL", help="remote engine URL")
    route.add_argument("--json", action="store_true", help="print the decision as JSON")
    add_settings_flags(route, ROUTE_FIELDS)
    route.set_defaults(handler=run_route)


def render(decision: RouteDecision) -> str:
    """The decision as a person reads it: the choice, its reasons, then every alternative."""
    if decision.backend is None:
        lines = [f"{decision.model}: refused"]
    else:
        artifact = decision.artifact
        what = f" ({artifact.format}: {artifact.describe()})" if artifact else ""
        lines = [f"{decision.model} -> {decision.backend}{what}"]
    lines += [f"  because: {reason}" for reason in decision.reasons]
    lines.append("alternatives:")
    width = max(len(a.backend) for a in decision.alternatives)
    for alt in decision.alternatives:
        lines.append(f"  {alt.backend:<{width}}  {alt.verdict:<11}  {alt.reason}")
    return "\n".join(lines)


def run_route(args: argparse.Namespace) -> int:
    from llmedge.routing import route_model
    from llmedge.store import Store

    settings = settings_from_args(args, (*ROUTE_FIELDS, "prefer_backend", "remote_url"))
    store = Store(settings.store_dir)
    decision = route_model(
        settings,
        store,
        args.model or settings.default_model,
        override=args.backend,
        probe_all=True,
    )
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2))
    else:
        print(render(decision))
    if decision.refused:
        print(f"llmedge: {decision.model} cannot run here; see the reasons above", file=sys.stderr)
        return 1
    return 0
