"""Schemathesis over the server's own OpenAPI schema: no generated request may cause a 5xx.

Bounded for CI: a few valid and invalid examples per operation, and a server whose `max_tokens`
limit is tiny, so a valid generation costs a few tokens. /api/pull is left out: it may download.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from server_process import running_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMEDGE_MAX_TOKENS_LIMIT", "4")
        with running_server(tmp_path_factory.mktemp("home")) as url:
            yield url.removesuffix("/v1")


def test_no_generated_request_makes_the_server_fail(server_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{server_url}/openapi.json").exclude(path="/api/pull")
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15  # every route but /api/pull
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=server_url, checks=[not_a_server_error], timeout=60)

            try:
                run()
            except Unsatisfiable:  # no invalid input exists for an operation that takes none
                assert mode is GenerationMode.NEGATIVE
            except Exception as exc:  # gather every operation's failure, then report them all
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
