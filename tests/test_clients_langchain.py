"""LangChain's Ollama and OpenAI integrations against `llmedge serve` on the real model."""

from __future__ import annotations

import math
from typing import Literal

import pytest
from pydantic import BaseModel, Field

langchain_ollama = pytest.importorskip("langchain_ollama")
langchain_openai = pytest.importorskip("langchain_openai")
from langchain_core.tools import tool  # noqa: E402

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def host(base_url: str) -> str:
    return base_url.removesuffix("/v1")


def test_chat_ollama_with_num_ctx_answers_and_streams(host: str) -> None:
    chat = langchain_ollama.ChatOllama(
        model=MODEL, base_url=host, num_ctx=2048, num_predict=8, temperature=0
    )
    reply = chat.invoke("Name a colour.")
    assert reply.content and reply.usage_metadata["output_tokens"] <= 8
    assert "".join(str(c.content) for c in chat.stream("Name a colour.")) == reply.content
    too_big = langchain_ollama.ChatOllama(model=MODEL, base_url=host, num_ctx=1 << 20)
    with pytest.raises(Exception, match="num_ctx"):
        too_big.invoke("hi")


def test_ollama_embeddings_embed_documents_and_queries(host: str) -> None:
    embeddings = langchain_ollama.OllamaEmbeddings(model=MODEL, base_url=host)
    documents = embeddings.embed_documents(["a cat", "a dog"])
    query = embeddings.embed_query("a cat")
    assert len(documents) == 2 and len(query) == 576
    assert math.isclose(sum(v * v for v in query), 1, abs_tol=1e-3)
    assert query == pytest.approx(documents[0], abs=1e-5)


class Colour(BaseModel):
    name: str = Field(max_length=16)
    warm: bool
    shade: Literal["light", "dark"]


def test_chat_openai_structured_output_and_bound_tools(base_url: str) -> None:
    chat = langchain_openai.ChatOpenAI(
        model=MODEL, base_url=base_url, api_key="unused", temperature=0, max_tokens=60
    )
    colour = chat.with_structured_output(Colour).invoke("Name a warm colour.")
    assert isinstance(colour, Colour)

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"Sunny in {city}"

    bound = chat.bind_tools([get_weather], tool_choice="get_weather")
    reply = bound.invoke("What is the weather in Oslo?")
    (call,) = reply.tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) == {"city"}
