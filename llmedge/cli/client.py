"""`ps` and `stop`: a running server's loaded models, asked through its API.

The server is found as `OLLAMA_HOST` finds Ollama's: `--url`, else `LLMEDGE_HOST` and
`LLMEDGE_PORT` (the addresses `llmedge serve` binds to), with `LLMEDGE_API_KEY` sent when set.
`stop` unloads the way Ollama's does, with a generate request whose keep_alive is 0.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from llmedge.errors import RemoteServerError
from llmedge.settings import Settings

_TIMEOUT_S = 120  # an unload waits for the model's running answers to end


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ps = subparsers.add_parser(
        "ps",
        help="show what a running server has loaded",
        description="List the models a running `llmedge serve` has in memory: size, context, "
        "parallel slots and until when it keeps them.",
    )
    stop = subparsers.add_parser(
        "stop",
        help="unload a model from a running server",
        description="Unload MODEL from a running `llmedge serve` (after its running answers end).",
    )
    stop.add_argument("model", metavar="MODEL")
    for parser in (ps, stop):
        parser.add_argument(
            "--url",
            help="the server, e.g. http://127.0.0.1:8000 (default: from LLMEDGE_HOST and "
            "LLMEDGE_PORT)",
        )
    ps.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    ps.set_defaults(handler=run_ps)
    stop.set_defaults(handler=run_stop)


def server_url(url: str | None, settings: Settings) -> str:
    """The server's root URL, from `--url` or the settings `serve` binds to."""
    if url:
        return url.rstrip("/").removesuffix("/v1").removesuffix("/api")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}"


def call(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST `body` as JSON) one API route; its JSON answer, or a RemoteServerError."""
    settings = Settings()
    headers = {"Content-Type": "application/json"}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise RemoteServerError(f"{base} answered {exc.code}: {_error_text(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteServerError(
            f"no server answers at {base} ({reason}); start one with `llmedge serve`, or point "
            "at it with --url or LLMEDGE_HOST/LLMEDGE_PORT"
        ) from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError):
        return exc.reason
    return str(error.get("message") if isinstance(error, dict) else error)


def _until(expires_at: str) -> str:
    try:
        when = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except ValueError:
        return expires_at
    left_s = (when - datetime.now(UTC)).total_seconds()
    if left_s > 10 * 365 * 86400:
        return "until evicted"
    if left_s < 60:
        return f"{max(left_s, 0):.0f} s idle left"
    return f"{left_s / 60:.0f} min idle left ({when.astimezone():%H:%M:%S})"


def run_ps(args: argparse.Namespace) -> None:
    from rich.table import Table

    from llmedge.cli.output import human_bytes, table_console

    base = server_url(args.url, Settings())
    models = call(base, "/api/ps").get("models", [])
    if args.json:
        print(json.dumps(models, indent=2))
        return
    if not models:
        print(f"no model is loaded at {base}")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ID", "SIZE", "CONTEXT", "PARALLEL", "UNTIL"):
        table.add_column(column)
    for m in models:
        table.add_row(
            str(m.get("name")),
            str(m.get("digest", ""))[:12],
            human_bytes(int(m.get("size") or 0)),
            str(m.get("context_length", "?")),
            str(m.get("parallel", "?")),
            _until(str(m.get("expires_at", ""))),
        )
    table_console().print(table)


def _loaded(base: str) -> dict[str, str]:
    """digest -> name of each model the server has loaded."""
    return {str(m.get("digest")): str(m.get("name")) for m in call(base, "/api/ps")["models"]}


def run_stop(args: argparse.Namespace) -> int:
    base = server_url(args.url, Settings())
    before = _loaded(base)
    answer = call(base, "/api/generate", {"model": args.model, "keep_alive": 0, "stream": False})
    name = answer.get("model", args.model) if isinstance(answer, dict) else args.model
    # A created model or a copy shares its loaded files with the model it was made from.
    gone = [before[digest] for digest in before.keys() - _loaded(base).keys()]
    if not gone:
        print(f"{name} was not loaded at {base}")
        return 1
    print(f"unloaded {name}" + (f" ({', '.join(gone)})" if gone != [name] else ""))
    return 0
