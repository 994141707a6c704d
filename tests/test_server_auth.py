"""`--api-key`: every route but /health wants the bearer key."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from server_process import running_server

pytestmark = pytest.mark.e2e


def test_api_key_guards_every_route_but_health(tmp_path: Path, smollm2_gguf: Path) -> None:
    with running_server(tmp_path / "home", "--api-key", "s3cret") as url:
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200
        denied = httpx.get(f"{url}/models")
        assert denied.status_code == 401
        assert denied.json()["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        client = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["smollm2-135m:q4_1"]
