"""The rules a JSON schema becomes: llama-cpp-python's `SchemaConverter`, with the parts that make
grammars llama.cpp cannot parse rewritten, and the checks every finished grammar passes.

Why the rewrites: llama.cpp's grammar parser recurses once per nested group, and the converter
writes a bounded repetition as nested optional groups, `(a (a (a)?)?)?`, one level per allowed
item; a `maxLength` of about 18,750 overflowed the parser's stack and killed the process. Here
string lengths and item counts are written as `{m,n}`, which the parser takes without nesting
(up to 2000: past that this llama.cpp refuses a minimum and stops enforcing a maximum, so
`json_schema` refuses larger bounds), and an object's optional members are built in one pass
(the converter rebuilt each suffix once per optional member, quadratic work, and wrote no comma
before extra members). Rules are written before the rules that use them, because llama.cpp's
guard on repetitions counts a rule first named inside a repeated group against that group.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from llmedge.errors import BackendUnavailableError, InvalidRequestError

# A grammar larger or more deeply nested than this is refused before llama.cpp parses it; the
# schema checks keep real schemas far below both (the deepest nesting left is a `pattern`'s
# `{m,n}`, which the converter still nests, capped at MAX_PATTERN_REPETITIONS).
MAX_GRAMMAR_BYTES = 4 << 20
MAX_GRAMMAR_NESTING = 2000
# llama.cpp makes a rule for each optional repetition (about 0.5 MiB and 1 ms per 2000, for every
# request that uses the grammar): the bounds of one grammar together stay within this.
MAX_TOTAL_REPETITIONS = 50_000

# A {m}, {m,} or {m,n} regex quantifier not escaped by a backslash.
QUANTIFIER = re.compile(r"(?<!\\)(?:\\\\)*\{(\d+)(?:,(\d*))?\}")

_LITERAL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LITERAL_SPECIAL = re.compile(r'[\\"\n\r\t]')
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]', re.DOTALL)
_DEPTH_STEP = {"(": 1, ")": -1}
_SEPARATOR = '"," space'


def gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    return '"' + _LITERAL_SPECIAL.sub(lambda m: _LITERAL_ESCAPES[m.group(0)], text) + '"'


def repeat(item: str, lo: int, hi: int | None) -> str:
    """`item` (a rule name or a group) written `lo` to `hi` times (None: no upper bound)."""
    if hi == 0:
        return ""
    if (lo, hi) == (1, 1):
        return item
    if (lo, hi) == (0, 1):
        return f"{item}?"
    if hi is None:
        return f"{item}*" if lo == 0 else f"{item}+" if lo == 1 else f"{item}{{{lo},}}"
    return f"{item}{{{lo}}}" if lo == hi else f"{item}{{{lo},{hi}}}"


_NAME = re.compile(r"[a-zA-Z0-9-]+")


def in_dependency_order(rules: dict[str, str], root: str) -> list[tuple[str, str]]:
    """The rules, each after the rules it mentions where a cycle allows (from `root`, then any
    others): llama.cpp counts a rule first mentioned inside a repeated group against that group,
    so defining rules before their use keeps its repetition guard from refusing the grammar."""
    ordered: dict[str, str] = {}
    visiting: set[str] = set()
    for start in [root, *sorted(rules)]:
        stack = [(start, False)]
        while stack:
            name, expanded = stack.pop()
            if name in ordered or name not in rules:
                continue
            if expanded:
                visiting.discard(name)
                ordered[name] = rules[name]
                continue
            if name in visiting:
                continue  # a cycle: defined where the walk first finishes it
            visiting.add(name)
            stack.append((name, True))
            mentioned = _NAME.findall(_QUOTED.sub(" ", rules[name]))
            stack.extend((ref, False) for ref in reversed(mentioned) if ref in rules)
    return list(ordered.items())


def grammar_nesting(text: str) -> int:
    """How deeply groups nest in a grammar's text (literals and character classes skipped)."""
    parens = _QUOTED.sub("", text)
    steps = [_DEPTH_STEP[c] for c in parens if c in _DEPTH_STEP]
    return max(accumulate(steps), default=0)


def _too_complex(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{message}; simplify the schema", param=param, code="schema_too_complex"
    )


def check_grammar(text: str, repetitions: int, param: str) -> str:
    """`text`, when llama.cpp's parser can take it without exhausting its stack or memory."""
    if repetitions > MAX_TOTAL_REPETITIONS:
        raise _too_complex(
            f"the JSON schema's length and item bounds add up to {repetitions}, more than the "
            f"{MAX_TOTAL_REPETITIONS} one grammar may hold",
            param,
        )
    if len(text) > MAX_GRAMMAR_BYTES:
        raise _too_complex(
            f"the JSON schema makes a grammar of {len(text)} bytes, more than the "
            f"{MAX_GRAMMAR_BYTES} this server parses",
            param,
        )
    depth = grammar_nesting(text)
    if depth > MAX_GRAMMAR_NESTING:
        raise _too_complex(
            f"the JSON schema makes a grammar nested {depth} levels deep, more than the "
            f"{MAX_GRAMMAR_NESTING} this server parses",
            param,
        )
    return text


def _prefixed(name: str, part: str) -> str:
    return f"{name}-{part}" if name else part


def converter_class() -> Any:
    """The converter class (llama-cpp-python is imported here, on first use)."""
    try:
        from llama_cpp import llama_grammar
    except ImportError as exc:
        raise BackendUnavailableError(
            "structured output needs llama-cpp-python; "
            "install it with `pip install 'llmedge[llama]'`"
        ) from exc
    primitives = llama_grammar.PRIMITIVE_RULES
    base: Any = llama_grammar.SchemaConverter  # untyped upstream

    class Converter(base):  # type: ignore[misc]
        repetitions = 0  # optional repetitions written so far (llama.cpp's rule count)

        def _format_literal(self, literal: str) -> str:
            return gbnf_literal(literal)

        def _repeat(self, item: str, lo: int, hi: int | None) -> str:
            self.repetitions += lo if hi is None else hi
            return repeat(item, lo, hi)

        def visit(self, schema: Any, name: str) -> str:
            if schema is False:
                raise InvalidRequestError("a `false` schema accepts nothing; remove it")
            if schema is True or schema == {}:  # any JSON value (the converter made it an object)
                return str(self._add_primitive("value", primitives["value"]))
            if isinstance(schema, dict) and isinstance(schema.get("pattern"), str):
                for match in QUANTIFIER.finditer(schema["pattern"]):
                    self.repetitions += max(int(n) for n in match.groups() if n)
            if _plain(schema, "string") and ("minLength" in schema or "maxLength" in schema):
                char = self._add_primitive("char", primitives["char"])
                body = self._repeat(char, schema.get("minLength", 0), schema.get("maxLength"))
                return str(self._add_rule(name or "root", rf'"\"" {body} "\"" space'))
            items = schema.get("items") if isinstance(schema, dict) else None
            if _plain(schema, "array") and (isinstance(items, dict) or items is True):
                return self._array(schema, items, name)
            return str(super().visit(schema, name))

        def _array(self, schema: dict[str, Any], items: Any, name: str) -> str:
            item = self.visit(items, _prefixed(name, "item"))
            lo, hi = schema.get("minItems", 0), schema.get("maxItems")
            tail = self._repeat(f"({_SEPARATOR} {item})", max(lo - 1, 0), hi and hi - 1)
            # The repetition gets its own rule: llama.cpp refuses a group around a long one.
            more = self._add_rule(_prefixed(name, "more"), tail) if tail else ""
            body = "" if hi == 0 else f"{item} {more}" if lo else f"({item} {more})?"
            return str(self._add_rule(name or "root", f'"[" space {body} "]" space'))

        def _build_object_rule(
            self,
            properties: list[tuple[str, Any]],
            required: set[str],
            name: str,
            additional_properties: Any,
        ) -> str:
            members: dict[str, str] = {}
            for key, sub in properties:
                value = self.visit(sub, _prefixed(name, key))
                head = gbnf_literal(json.dumps(key))
                members[key] = self._add_rule(
                    _prefixed(name, f"{key}-kv"), f'{head} space ":" space {value}'
                )
            needed = [members[k] for k, _ in properties if k in required]
            optional = [(members[k], "?") for k, _ in properties if k not in required]
            if additional_properties is True or isinstance(additional_properties, dict):
                extra = {} if additional_properties is True else additional_properties
                value = self.visit(extra, _prefixed(name, "additional-value"))
                string = self._add_primitive("string", primitives["string"])
                kv = self._add_rule(_prefixed(name, "additional-kv"), f'{string} ":" space {value}')
                optional.append((kv, "*"))
            later = [f"( {_SEPARATOR} {kv} ){op}" for kv, op in optional]
            if needed:
                body = f" {_SEPARATOR} ".join(needed) + "".join(f" {part}" for part in later)
            else:
                body = self._optional_members(name, optional, later)
            return f'"{{" space {body} "}}" space'

        def _optional_members(
            self, name: str, optional: list[tuple[str, str]], later: list[str]
        ) -> str:
            """Any ordered subset of the optional members: the first one written, then a chain
            of rules for those after it (linear in the number of members)."""
            if not optional:
                return ""
            tails = [""] * (len(optional) + 1)
            for i in range(len(optional) - 1, 0, -1):
                rule = f"{later[i]} {tails[i + 1]}".strip()
                tails[i] = self._add_rule(_prefixed(name, f"rest-{i}"), rule)
            starts = []
            for i, (kv, op) in enumerate(optional):
                first = kv if op == "?" else f"{kv} {later[i]}"
                starts.append(f"{first} {tails[i + 1]}".strip())
            # A rule of its own: llama.cpp refuses `( … )?` around a group that mentions many
            # rules, but not a rule with many alternatives.
            members = self._add_rule(_prefixed(name, "members"), " | ".join(starts))
            return f"{members}?"

    return Converter


_DECIDED_FIRST = ("$ref", "oneOf", "anyOf", "allOf", "const", "enum", "pattern", "format")


def _plain(schema: Any, kind: str) -> bool:
    """Whether the converter would treat `schema` as a bare `kind`: no reference, union,
    constant, enumeration, pattern, format or (untyped) object keyword decides its rule first."""
    if not isinstance(schema, dict) or any(k in schema for k in _DECIDED_FIRST):
        return False
    if kind == "string":
        return schema.get("type") == "string"
    if "type" not in schema:  # untyped: an object keyword makes it an object
        return not any(k in schema for k in ("properties", "additionalProperties"))
    return bool(schema["type"] == "array")
