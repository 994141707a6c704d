"""A created model's defaults: read from a Modelfile, checked, and applied under the request's own
values (pure functions, no model)."""

from __future__ import annotations

import pytest

from llmedge.errors import InvalidRequestError
from llmedge.generation import ChatMessage, SamplingParams
from llmedge.prompting import apply_defaults, model_defaults, parse_modelfile
from llmedge.store import ModelDefaults

PIRATE = ModelDefaults(
    system="You are a pirate.",
    parameters={"temperature": 0.2, "num_predict": 6, "stop": ["Arr"], "seed": 7},
)
HI = [ChatMessage("user", "hi")]


def test_defaults_fill_what_the_request_left_unset() -> None:
    messages, params, template = apply_defaults(PIRATE, HI, SamplingParams(given=frozenset()))
    assert messages[0] == ChatMessage("system", "You are a pirate.") and messages[1:] == HI
    assert (params.temperature, params.max_tokens, params.stop, params.seed) == (
        0.2,
        6,
        ("Arr",),
        7,
    )
    assert template is None


def test_the_requests_own_values_win_even_when_they_equal_the_engines_defaults() -> None:
    asked = SamplingParams(
        temperature=0.8, max_tokens=3, given=frozenset({"temperature", "max_tokens"})
    )
    system = [ChatMessage("system", "Be brief."), *HI]
    messages, params, _ = apply_defaults(PIRATE, system, asked)
    assert messages == system  # a system message of its own: the model's is not added
    assert (params.temperature, params.max_tokens, params.seed) == (0.8, 3, 7)


def test_without_a_record_of_what_was_set_a_changed_value_counts_as_set() -> None:
    _, params, _ = apply_defaults(PIRATE, HI, SamplingParams(temperature=0.5))
    assert (params.temperature, params.max_tokens) == (0.5, 6)
    assert apply_defaults(None, HI, SamplingParams())[1] == SamplingParams()


def test_a_modelfile_is_read_with_multiline_values_and_comments() -> None:
    spec = parse_modelfile(
        '# helper\nFROM smollm2-135m\nPARAMETER temperature 0.3\nPARAMETER stop "END"\n'
        'PARAMETER stop <|im_end|>\nSYSTEM """\nLine one.\nLine two.\n"""\n'
        'TEMPLATE """{% for m in messages %}{{ m.content }}{% endfor %}"""\n'
    )
    assert spec.base == "smollm2-135m"
    assert spec.defaults.system == "Line one.\nLine two."
    assert spec.defaults.parameters == {"temperature": 0.3, "stop": ["END", "<|im_end|>"]}
    assert spec.defaults.template == "{% for m in messages %}{{ m.content }}{% endfor %}"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("SYSTEM hi\n", "no FROM line"),
        ("FROM x\nLICENSE MIT\n", "line 2: LICENSE is not supported"),
        ('FROM x\nSYSTEM """never closed\n', 'line 2: a """ value never ends'),
        ("FROM x\nPARAMETER top_k lots\n", "top_k must be a whole number"),
        ("FROM x\nPARAMETER top_p 2\n", "top_p must be between 0 and 1"),
        ("FROM x\nPARAMETER temperature nan\n", "temperature must be between"),
        ("FROM x\nPARAMETER num_ctx 4096\n", "set when the server starts"),
        ('FROM x\nTEMPLATE "{{ .Prompt }}"\n', "Go template"),
        ("FROM x\nTEMPLATE {% if %}\n", "does not parse"),
    ],
)
def test_what_a_modelfile_cannot_mean_is_refused_by_name(text: str, complaint: str) -> None:
    with pytest.raises(InvalidRequestError, match=complaint):
        parse_modelfile(text)


def test_api_style_parameters_take_numbers_and_lists() -> None:
    made = model_defaults("s", None, {"temperature": 1, "stop": ["a", "b"], "top_k": 5})
    assert made.parameters == {"temperature": 1.0, "stop": ["a", "b"], "top_k": 5}
    with pytest.raises(InvalidRequestError, match="mirostat is not one llmedge applies") as refused:
        model_defaults(None, None, {"mirostat": 2})
    assert refused.value.param == "parameters.mirostat"
    with pytest.raises(InvalidRequestError, match="must be a number or a text"):
        model_defaults(None, None, {"temperature": True})
