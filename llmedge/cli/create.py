"""`cp` and `create`: new names over stored blobs, a created one with its own defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmedge.errors import InvalidRequestError
from llmedge.settings import Settings
from llmedge.store import ModelDefaults, ModelRef, Store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    copy = subparsers.add_parser(
        "cp",
        help="copy a model to a new name",
        description="Store DST over the same files as SRC (no bytes are copied); a DST without "
        "a tag becomes DST:latest.",
    )
    copy.add_argument("source", metavar="SRC")
    copy.add_argument("target", metavar="DST")
    copy.set_defaults(handler=run_cp)

    create = subparsers.add_parser(
        "create",
        help="make a model with its own system prompt and parameters",
        description=(
            "Store NAME over the files of --from MODEL with defaults that every request to NAME "
            "gets unless it says otherwise: a system prompt, sampling parameters (Ollama's "
            "names: temperature, top_p, top_k, min_p, repeat_penalty, presence_penalty, "
            "frequency_penalty, seed, num_predict, stop) and a Jinja chat template. -f reads "
            "them from a Modelfile (FROM, SYSTEM, PARAMETER, TEMPLATE); flags win over it."
        ),
    )
    create.add_argument("name", metavar="NAME", help="the new model (NAME:latest without a tag)")
    create.add_argument("--from", dest="base", metavar="MODEL", help="the stored model to use")
    create.add_argument("-f", "--file", type=Path, metavar="MODELFILE", help="a Modelfile")
    create.add_argument("--system", metavar="TEXT", help="the system prompt")
    create.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a sampling parameter, repeatable (--param temperature=0.2 --param stop=END)",
    )
    create.add_argument("--template", type=Path, metavar="FILE", help="a Jinja chat template")
    create.set_defaults(handler=run_create)


def run_cp(args: argparse.Namespace) -> None:
    store = Store(Settings().store_dir)
    made = store.copy(ModelRef.parse(args.source), ModelRef.parse(args.target))
    print(f"copied {made.source['from']} to {made.ref}")


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read the {what} {path}: {exc}", param=what) from exc


def run_create(args: argparse.Namespace) -> None:
    from llmedge.prompting import model_defaults, parameters_from, parse_modelfile

    base, defaults = args.base, ModelDefaults()
    if args.file is not None:
        spec = parse_modelfile(_read(args.file, "modelfile"))
        base, defaults = args.base or spec.base, spec.defaults
    if base is None:
        raise InvalidRequestError("name the model to start from: --from MODEL (or -f MODELFILE)")
    pairs = []
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidRequestError(f"--param {item!r}: write NAME=VALUE", param="param")
        pairs.append((key, value))
    template = _read(args.template, "template") if args.template else None
    flags = model_defaults(args.system, template)
    defaults = defaults.merged(ModelDefaults(flags.system, flags.template, parameters_from(pairs)))
    store = Store(Settings().store_dir)
    made = store.copy(ModelRef.parse(base), ModelRef.parse(args.name), defaults=defaults)
    print(f"created {made.ref} from {made.source['from']}{_summary(made.defaults)}")


def _summary(defaults: ModelDefaults | None) -> str:
    if defaults is None:
        return ""
    said = [f"{k}={v}" for k, v in defaults.parameters.items()]
    if defaults.system:
        said.insert(0, "a system prompt")
    if defaults.template:
        said.append("its own chat template")
    return f" ({', '.join(said)})" if said else ""
