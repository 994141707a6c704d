"""A stand-in for `mlc_llm serve`: the same command line, an OpenAI-style API on loopback.

Tests put an `mlc_llm` script running this file on PATH. It answers /v1/models and streamed
/v1/completions whose prompt is token ids, with a fixed answer one word per chunk, so the bridge
in llmedge.backends.mlc is tested end to end without MLC. Environment knobs:

    MLC_STANDIN_LOG      append the command line and each request body here (JSON lines)
    MLC_STANDIN_DELAY_S  pause before each chunk
    MLC_STANDIN_FAIL     exit at once with a message, as a missing model library would
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = ["Hello", " from", " the", " MLC", " stand-in", "."]


def log(entry: dict[str, Any]) -> None:
    path = os.environ.get("MLC_STANDIN_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    model = ""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            return self._json(200, {"object": "list", "data": [{"id": self.model}]})
        self._json(404, {"object": "error", "message": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        log({"request": body})
        prompt = body.get("prompt")
        if self.path != "/v1/completions" or not isinstance(prompt, list):
            return self._json(400, {"object": "error", "message": "want a token-id prompt"})
        if body.get("temperature", 0) > 1.9:
            return self._json(400, {"object": "error", "message": "temperature out of range"})
        pieces = ANSWER[: body.get("max_tokens", len(ANSWER))]
        finish = "stop" if len(pieces) == len(ANSWER) else "length"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        delay = float(os.environ.get("MLC_STANDIN_DELAY_S", "0"))
        try:
            for i, piece in enumerate(pieces):
                time.sleep(delay)
                last = i == len(pieces) - 1
                choice = {"index": 0, "text": piece, "finish_reason": finish if last else None}
                self._event({"object": "text_completion", "choices": [choice]})
            usage = {"prompt_tokens": len(prompt), "completion_tokens": len(pieces)}
            self._event({"object": "text_completion", "choices": [], "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            log({"disconnected": True})

    def _event(self, data: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog="mlc_llm")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("model")
    for flag in ("--device", "--mode", "--host", "--port", "--overrides", "--model-lib"):
        serve.add_argument(flag)
    args = parser.parse_args()
    log({"argv": sys.argv[1:]})
    if os.environ.get("MLC_STANDIN_FAIL"):
        print("Cannot find the model library for this device", flush=True)
        sys.exit(3)
    Handler.model = args.model
    server = ThreadingHTTPServer((args.host, int(args.port)), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
