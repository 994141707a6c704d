"""`run`: stream an answer to a prompt (from the arguments, stdin, or typed at a prompt)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from llmedge.errors import InvalidRequestError
from llmedge.generation import ChatMessage, GenerationChunk, SamplingParams
from llmedge.settings import Settings, add_settings_flags, settings_from_args
from llmedge.store import ModelRef, Store

if TYPE_CHECKING:
    from llmedge.engine import Engine, PreparedPrompt

RUN_SETTINGS = (
    "ctx_tokens",
    "threads",
    "gpu_layers",
    "memory_budget_bytes",
    "kv_type",
    "flash_attn",
    "speculative",
    "draft",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="stream an answer to a prompt",
        description=(
            "Stream a model's answer. `llmedge run [MODEL] [PROMPT...]`: the first word is the "
            "model when it names a stored model or a model card, else the default model is used. "
            "With no prompt, stdin is read; on a terminal, an interactive chat starts."
        ),
    )
    run.add_argument("words", nargs="*", metavar="[MODEL] PROMPT")
    run.add_argument("-m", "--model", help="model to use (then every word is prompt)")
    run.add_argument("-s", "--system", help="system message")
    run.add_argument("--temperature", type=float, help="sampling temperature (0: greedy)")
    run.add_argument("--top-p", type=float, help="nucleus sampling threshold")
    run.add_argument("--max-tokens", type=int, help="most tokens to generate")
    run.add_argument("--seed", type=int, help="random seed, for repeatable answers")
    run.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    run.add_argument(
        "--verbose",
        action="store_true",
        help="print speed and token counts to stderr, and the engine's own output",
    )
    add_settings_flags(run, RUN_SETTINGS)
    run.set_defaults(handler=run_run)


def _is_model_name(word: str, store: Store) -> bool:
    from llmedge.cards import all_cards

    try:
        ref = ModelRef.parse(word)
    except ValueError:
        return False
    return ref.name in all_cards() or store.find(ref) is not None


def split_model_and_prompt(
    words: list[str], model: str | None, store: Store
) -> tuple[str | None, str]:
    if model is None and words and _is_model_name(words[0], store):
        return words[0], " ".join(words[1:])
    return model, " ".join(words)


def _text(text: str, what: str) -> str:
    """`text`, refused when it holds bytes that are not UTF-8 (the shell hands those over as
    lone surrogates, which no tokenizer can encode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"the {what} is not UTF-8 text (at character {exc.start}); send it as UTF-8"
        ) from None
    return text


def _params(args: argparse.Namespace) -> SamplingParams:
    given = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
    }
    values = {k: v for k, v in given.items() if v is not None}
    named = {*values, *(["stop"] if args.stop else [])}
    return SamplingParams(stop=tuple(args.stop), **values, given=frozenset(named))


def _prepared(
    engine: Engine, model: str, messages: list[ChatMessage], params: SamplingParams
) -> PreparedPrompt:
    """The prompt, with the model's defaults (system prompt, parameters, template) filled in."""
    from llmedge.prompting import apply_defaults

    defaults = engine.resolve(model).defaults
    messages, params, template = apply_defaults(defaults, messages, params)
    return engine.prepare_chat(model, messages, params, template=template)


def _answer(
    engine: Engine, model: str, messages: list[ChatMessage], params: SamplingParams
) -> GenerationChunk:
    prompt = _prepared(engine, model, messages, params)
    last = None
    for chunk in engine.stream_sync(prompt):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        last = chunk
    sys.stdout.write("\n")
    assert last is not None
    return last


def _report(last: GenerationChunk) -> None:
    speed = f"{last.tokens_per_s:.1f} tokens/s" if last.tokens_per_s else "n/a"
    ttft = (
        f"{last.time_to_first_token_s:.2f} s" if last.time_to_first_token_s is not None else "n/a"
    )
    print(
        f"prompt {last.prompt_tokens} tokens ({last.cached_tokens} cached), "
        f"answer {last.generated_tokens} tokens at {speed}, first token after {ttft}, "
        f"finish: {last.finish_reason}",
        file=sys.stderr,
    )


def run_run(args: argparse.Namespace) -> None:
    from llmedge.cli.logs import engine_log
    from llmedge.engine import Engine
    from llmedge.hub import ensure_model

    settings: Settings = settings_from_args(args, RUN_SETTINGS)
    store = Store(settings.store_dir)
    model, prompt = split_model_and_prompt(args.words, args.model, store)
    model = ensure_model(store, model or settings.default_model).ref
    system = [ChatMessage("system", _text(args.system, "system message"))] if args.system else []
    engine = Engine(settings, store)
    with engine_log(settings.home, args.verbose, "run"):
        _run(engine, model, prompt, system, args)


def _run(
    engine: Engine, model: str, prompt: str, system: list[ChatMessage], args: argparse.Namespace
) -> None:
    try:
        if prompt or not sys.stdin.isatty():
            text = _text(prompt or sys.stdin.read(), "prompt")
            last = _answer(engine, model, [*system, ChatMessage("user", text)], _params(args))
            if args.verbose:
                _report(last)
            return
        _repl(engine, model, system, args)
    finally:
        engine.close()


def _repl(engine: Engine, model: str, history: list[ChatMessage], args: argparse.Namespace) -> None:
    print(f"chatting with {model}; an empty line or Ctrl-D ends", file=sys.stderr)
    while True:
        try:
            line = input(">>> ").strip()
        except EOFError:
            return
        if not line:
            return
        history.append(ChatMessage("user", line))
        reply: list[str] = []
        prompt = _prepared(engine, model, history, _params(args))
        try:
            for chunk in engine.stream_sync(prompt):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                reply.append(chunk.text)
                if chunk.finish_reason and args.verbose:
                    sys.stdout.write("\n")
                    _report(chunk)
        except KeyboardInterrupt:
            pass  # Ctrl-C stops this answer, not the chat
        sys.stdout.write("\n")
        history.append(ChatMessage("assistant", "".join(reply)))
