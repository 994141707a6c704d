"""Chat templates render as transformers renders them, and fail as request errors."""

from __future__ import annotations

import pytest

from llmedge import ChatMessage, InvalidRequestError
from llmedge.gguf import read_gguf_header
from llmedge.prompting import ChatTemplate


def test_the_real_smollm2_template_adds_its_default_system_prompt(smollm2_gguf) -> None:
    source = read_gguf_header(smollm2_gguf).get("tokenizer.chat_template")
    assert isinstance(source, str)
    text = ChatTemplate(source).render([ChatMessage("user", "Hi")])
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_a_model_without_template_gets_chatml() -> None:
    text = ChatTemplate(None).render([ChatMessage("system", "S"), ChatMessage("user", "U")])
    assert (
        text
        == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )


def test_bos_token_and_raise_exception_are_available() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}"
        "{{ raise_exception('no tools') }}{% endif %}[{{ m.content }}]{% endfor %}"
    )
    template = ChatTemplate(source, bos_token="<s>")
    assert template.render([ChatMessage("user", "a")]) == "<s>[a]"
    with pytest.raises(InvalidRequestError, match="no tools"):
        template.render([ChatMessage("tool", "x")])


def test_a_template_cannot_reach_python_internals() -> None:
    template = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(InvalidRequestError):
        template.render([ChatMessage("user", "x")])


def test_a_broken_template_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequestError, match="does not parse"):
        ChatTemplate("{% for %}")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ 1 // 0 }}", "ZeroDivisionError"),
        ("{{ 'x' * 1000000000 }}", "memory"),
        ("{% set s = 'x' * 1000000 %}{% for i in range(100) %}{{ s }}{% endfor %}", "more than"),
        ("{{ messages[5].content }}", "failed"),
    ],
)
def test_a_template_that_fails_or_overruns_is_a_request_error_naming_it(
    source: str, expected: str
) -> None:
    with pytest.raises(InvalidRequestError, match=expected) as caught:
        ChatTemplate(source).render([ChatMessage("user", "x")])
    assert "chat template" in str(caught.value)
    assert caught.value.http_status == 400 and caught.value.code == "chat_template_error"


def test_a_template_that_never_ends_is_stopped_and_the_next_render_works() -> None:
    endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(InvalidRequestError, match="more than 1 s"):
        ChatTemplate(endless, timeout_s=1.0).render([ChatMessage("user", "x")])
    assert ChatTemplate(None).render([ChatMessage("user", "U")]).endswith("assistant\n")


def test_a_huge_or_deeply_nested_template_is_refused_before_rendering() -> None:
    with pytest.raises(InvalidRequestError, match="more than"):
        ChatTemplate("x" * (300 << 10))
    with pytest.raises(InvalidRequestError, match="chat template"):
        ChatTemplate("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")


def test_a_long_conversation_renders_whole() -> None:
    messages = [ChatMessage("user" if i % 2 else "assistant", f"turn {i}") for i in range(3000)]
    text = ChatTemplate(None).render(messages)
    assert text.count("<|im_start|>") == 3001 and "turn 2999" in text
