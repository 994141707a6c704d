"""The chat's pure parts: slash command parsing, /set, completion, chat files, server addresses."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("textual", reason="the tui extra is not installed")

from llmedge import (
    ChatMessage,
    GenerationChunk,
    InvalidRequestError,
    ModelNotFoundError,
    SamplingParams,
    Store,
)
from llmedge.cli import main
from llmedge.errors import RemoteServerError
from tui.commands import apply_settings, complete, message_text, parse_command
from tui.launch import no_model_hint
from tui.remote import RemoteClient, api_base, pick_model
from tui.session import (
    Conversation,
    history_path,
    load_file,
    load_history,
    save_file,
    save_history,
)


def test_parse_command_names_arguments_and_aliases() -> None:
    command = parse_command("/system  You are terse. ")
    assert command is not None
    assert (command.name, command.arg) == ("/system", "You are terse.")
    assert parse_command("/EXIT") == parse_command("/quit")
    assert parse_command("hello /help") is None
    assert parse_command("//etc/hosts is a file") is None
    assert message_text("//etc/hosts") == "/etc/hosts"


def test_unknown_command_points_at_help() -> None:
    with pytest.raises(InvalidRequestError, match=r"unknown command /hepl; type /help"):
        parse_command("/hepl")


def test_set_changes_only_the_named_fields() -> None:
    params = apply_settings(SamplingParams(), "temperature=0.7 top_p=0.9 max_tokens=512")
    assert (params.temperature, params.top_p, params.max_tokens) == (0.7, 0.9, 512)
    assert params.top_k == SamplingParams().top_k
    assert apply_settings(params, "max-tokens=none seed=3").max_tokens is None
    assert apply_settings(params, "seed=3").seed == 3


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("temprature=1", "KEY one of temperature"),
        ("temperature", "write KEY=VALUE"),
        ("temperature=hot", "not a number"),
        ("temperature=9", "between 0.0 and 2.0"),
        ("top_p=nan", "finite"),
        ("max_tokens=0", "at least 1"),
    ],
)
def test_set_refuses_bad_values_with_a_reason(arg: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        apply_settings(SamplingParams(), arg)


def test_completion_of_commands_models_settings_and_files(tmp_path: Path) -> None:
    assert [c.text for c in complete("/s", [])] == ["/system ", "/set ", "/save ", "/stats"]
    assert complete("/stats", []) == []
    assert complete("hello", []) == []
    assert [c.text for c in complete("/model sm", ["smollm2:q8_0", "tiny:q4_0"])] == [
        "/model smollm2:q8_0"
    ]
    settings = complete("/set temperature=0 to", [])
    assert [c.text for c in settings] == ["/set temperature=0 top_p=", "/set temperature=0 top_k="]
    assert settings[0].enter == "ignore"  # Enter sends what was typed
    (tmp_path / "chat.json").write_text("{}")
    (tmp_path / "chats").mkdir()
    found = complete("/load ch", [], cwd=tmp_path)
    assert [c.text for c in found] == ["/load chat.json", "/load chats/"]
    assert {c.enter for c in found} == {"ignore"}  # `/save chat` + Enter saves to `chat`
    assert [c.enter for c in complete("/", [])][:3] == ["run", "run", "run"]
    assert next(c for c in complete("/sa", [])).enter == "fill"


def test_conversation_round_trips_through_json_and_history(tmp_path: Path) -> None:
    chat = Conversation("smollm2-135m:q8_0", "be brief", [ChatMessage("user", "hi")])
    chat.messages.append(ChatMessage("assistant", "Hello! ```py\nprint(1)\n```"))
    assert chat.prompt()[0] == ChatMessage("system", "be brief")
    save_history(tmp_path, chat)
    assert history_path(tmp_path, chat.model).name == "smollm2-135m_q8_0.json"
    assert load_history(tmp_path, chat.model) == chat
    assert load_history(tmp_path, "other:q4_0") == Conversation("other:q4_0")
    saved = save_file(tmp_path / "out" / "chat.json", chat)
    assert load_file(saved) == chat
    markdown = save_file(tmp_path / "chat.md", chat).read_text()
    assert markdown.startswith("# Chat with smollm2-135m:q8_0") and "print(1)" in markdown


def test_unreadable_chat_files_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match=r"cannot read .*give the path /save wrote"):
        load_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"version": 1, "model": "m", "messages": [{"role": 1}]}')
    with pytest.raises(InvalidRequestError, match="is not a chat saved by /save"):
        load_file(tmp_path / "bad.json")
    history = history_path(tmp_path, "m")
    history.parent.mkdir(parents=True)
    history.write_text("not json")
    assert load_history(tmp_path, "m") == Conversation("m")  # a damaged history starts afresh


def test_server_addresses_and_model_choice() -> None:
    assert api_base("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert api_base("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    with pytest.raises(RemoteServerError, match="--url http://HOST:PORT/v1"):
        api_base("127.0.0.1:8000")
    models = ["smollm2-135m:q4_1", "tiny:q8_0"]
    assert pick_model(None, models, "base") == "smollm2-135m:q4_1"
    assert pick_model("tiny", models, "base") == "tiny:q8_0"
    with pytest.raises(ModelNotFoundError, match="the server has: smollm2-135m:q4_1, tiny:q8_0"):
        pick_model("nope", models, "base")


def test_no_model_hint_tells_how_to_pull(store: Store) -> None:
    hint = no_model_hint(store, "smollm2-135m")
    assert "no model is stored yet; run `llmedge pull smollm2-135m`" in hint


def scripted_server(events: list[str], status: int = 200) -> httpx.MockTransport:
    """An OpenAI-style server that answers every chat request with these SSE data lines."""

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer key"
        body = json.loads(request.content)
        assert body["temperature"] == 0.0 and "top_k" not in body  # llama extras only if changed
        if status != 200:
            return httpx.Response(status, text=events[0])
        text = "".join(f"data: {event}\r\n\r\n" for event in events)
        return httpx.Response(status, text=text, headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handle)


def stream_from(events: list[str], status: int = 200) -> list[GenerationChunk]:
    client = RemoteClient("http://test:1", "key", transport=scripted_server(events, status))
    params = SamplingParams(temperature=0.0)

    async def collect() -> list[GenerationChunk]:
        try:
            return [c async for c in client.stream("m", [ChatMessage("user", "hi")], params)]
        finally:
            await client.close()

    return asyncio.run(collect())


def delta(text: str) -> str:
    return json.dumps({"choices": [{"delta": {"content": text}, "finish_reason": None}]})


def test_remote_stream_reads_text_then_the_servers_own_telemetry() -> None:
    finish = {
        "choices": [{"delta": {}, "finish_reason": "length"}],
        "timings": {"prompt_n": 7, "cache_n": 3, "predicted_n": 2, "predicted_per_second": 99.0},
    }
    usage = {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 2}}
    chunks = stream_from(
        [delta(""), delta("Hel"), delta("lo"), json.dumps(finish), json.dumps(usage), "[DONE]"]
    )
    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    assert chunks[1].generated_tokens == 2
    last = chunks[-1]
    assert (last.finish_reason, last.prompt_tokens, last.cached_tokens) == ("length", 10, 3)
    assert (last.generated_tokens, last.tokens_per_s) == (2, 99.0)


def test_remote_stream_errors_say_what_happened() -> None:
    with pytest.raises(RemoteServerError, match="the server stopped the answer: out of memory"):
        stream_from([delta("a"), json.dumps({"error": {"message": "out of memory"}})])
    with pytest.raises(RemoteServerError, match="not JSON"):
        stream_from(["{oops"])
    with pytest.raises(RemoteServerError, match="answered 404: no such model"):
        stream_from([json.dumps({"error": {"message": "no such model"}})], status=404)


def test_chat_without_the_tui_extra_says_which_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "tui" or m.startswith(("tui.", "textual"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "textual", None)  # as if it were not installed
    assert main(["chat"]) == 3
    assert "pip install 'llmedge[tui]'" in capsys.readouterr().err
