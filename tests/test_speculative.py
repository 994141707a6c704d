"""Speculative decoding: the guesses never change an answer, only how many tokens a step makes.

On the tiny model (its answers are noise, which makes n-gram guesses fail and succeed by turns)
and on the real one for an answer that copies its prompt."""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tiny_gguf import build_tiny_gguf

from llmedge import (
    ChatMessage,
    Engine,
    GenerationChunk,
    InvalidRequestError,
    SamplingParams,
    Settings,
    Store,
    pull,
)
from llmedge.backends.llama.draft_plan import StepCost, up_to_end
from llmedge.backends.llama.drafts import DRAFT_MAX, DraftLength, NgramDrafts

COPY = (
    "Copy this text exactly: the quick brown fox jumps over the lazy dog. A journey of a "
    "thousand miles begins with a single step. To be or not to be, that is the question."
)
PROMPTS = ["one two three one two three one two", "the sky is", "a b a b a b a", "1 2 3 1 2 3"]


def test_ngram_drafts_propose_what_followed_the_last_repeat() -> None:
    drafts = NgramDrafts([5, 6, 7, 8, 9, 5, 6])
    assert drafts.propose(3) == [7, 8, 9]  # "5 6" was followed by 7 8 9
    drafts.extend([7, 1])
    assert drafts.propose(4) == []  # "7 1" and "1" never came before
    drafts.extend([5, 6, 7])
    assert drafts.propose(2) == [1, 5]  # the latest "5 6 7", longest n-gram first
    assert NgramDrafts([1, 2, 3]).propose(4) == []  # nothing repeats


def test_no_guess_goes_past_the_end_of_an_answer() -> None:
    # A copied prompt ends in the chat template's end-of-turn token and its next turn: once the
    # answer's end is guessed, guessing on is rows no answer can keep.
    end = 2
    lookup = NgramDrafts([7, 8, 9, 10, end, 1, 11, 7, 8])
    assert lookup.propose(8) == [9, 10, end, 1, 11, 7, 8]
    assert up_to_end(lookup.propose(8), lambda t: t == end) == [9, 10, end]
    assert up_to_end([9, 10], lambda t: t == end) == [9, 10]


def test_draft_length_grows_shrinks_and_rests() -> None:
    length = DraftLength()
    assert length.probe  # its first draft shows how its guesses fare
    first = length.wanted()
    length.adapt(first, first)
    assert length.wanted() == 2 * first and not length.probe
    for _ in range(8):
        length.adapt(length.wanted(), length.length)
    assert length.length == DRAFT_MAX
    length.adapt(DRAFT_MAX, 20)  # cut short: an edit; what follows it starts small again
    assert length.wanted() == 4
    length.adapt(4, 0)
    length.adapt(2, 0)  # two drafts rejected outright: it rests for a step, then probes
    assert length.wanted() == 0 and length.probe and length.wanted() > 0
    length.adapt(1, 1)
    length.rest()  # as a draft that would not pay does
    assert length.wanted() == 0 and length.probe


def test_a_draft_pays_where_this_host_makes_it_pay() -> None:
    cost = StepCost()
    assert cost.draft_pays(1, 1, 4, 0.1)  # nothing measured yet: guesses may go ahead
    # SmolLM2-135M Q4_1 here (bench_speculative), ms by rows: a second row costs a first again.
    for rows, ms in {1: 6.6, 2: 14.1, 4: 21.0, 8: 30.9, 16: 53.5, 32: 107.4}.items():
        cost.record(rows, ms / 1000)
    assert cost.seconds(3) == pytest.approx(0.01755)  # between the counts measured
    assert cost.seconds(64) is None  # more rows than ever decoded at once: not known yet,
    assert cost.draft_pays(1, 1, 63, 0.1)  # so a draft that long goes ahead and measures them
    assert not cost.draft_pays(8, 8, 56, 0.9, explore=False)  # but not in a step shared by 8
    assert cost.draft_pays(1, 1, 8, 0.97)  # one stream copying its prompt
    assert not cost.draft_pays(1, 1, 1, 0.999)  # one guess, even always kept, costs a row more
    assert not cost.draft_pays(1, 1, 4, 0.5)  # guesses seldom kept
    assert not cost.draft_pays(4, 4, 4, 0.7)  # four streams: the rows' arithmetic dominates
    assert cost.draft_pays(4, 4, 12, 0.97)  # ... unless the stream is copying its prompt


def test_a_perfect_guesser_gains_what_the_step_costs_allow() -> None:
    # scripts/bench_speculative.py prints this bound beside what the guesses gained
    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_speculative.py"
    spec = importlib.util.spec_from_file_location("bench_speculative", path)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    free_rows = {1: 0.01, 2: 0.01, 4: 0.01, 8: 0.01}  # 8 tokens a step for the price of one
    assert bench.perfect_gain(free_rows, 16) == pytest.approx(8.0)
    assert bench.perfect_gain(free_rows, 5) == pytest.approx(5.0)
    linear = {1: 0.01, 2: 0.02, 4: 0.04, 8: 0.08}  # each row costs a step: nothing to gain
    assert bench.perfect_gain(linear, 16) == pytest.approx(1.0)
    assert bench.step_seconds({1: 1.0, 2: 2.0, 4: 3.0}, 3) == pytest.approx(2.5)


def _engine(settings: Settings, store: Store, speculative: str, **extra: object) -> Engine:
    changed = settings.with_overrides(
        speculative=speculative, parallel=3, ctx_tokens=1024, threads=2, **extra
    )
    return Engine(changed, store)


def _tokens(engine: Engine, model: str, prompt: str, params: SamplingParams) -> tuple[int, ...]:
    chunks = list(engine.stream_sync(engine.prepare_text(model, prompt, params)))
    return tuple(t for c in chunks for t in c.token_ids)


@pytest.fixture
def tiny(store: Store, tiny_gguf: Path) -> str:
    return pull(store, str(tiny_gguf), name="tiny").ref


def test_guesses_change_no_greedy_token_alone_or_batched(
    settings: Settings, store: Store, tiny: str
) -> None:
    params = [SamplingParams(temperature=0, max_tokens=40, seed=s) for s in range(4)]
    plain = _engine(settings, store, "off")
    expected = [_tokens(plain, tiny, p, q) for p in PROMPTS for q in params]
    plain.close()
    guessing = _engine(settings, store, "ngram")
    alone = [_tokens(guessing, tiny, p, q) for p in PROMPTS for q in params]
    with ThreadPoolExecutor(6) as pool:
        jobs = [(p, q) for p in PROMPTS for q in params]
        together = list(pool.map(lambda job: _tokens(guessing, tiny, *job), jobs))
    drafted = guessing.loaded()[0].model.counters()["draft_tokens_total"]
    guessing.close()
    assert alone == expected and together == expected
    assert drafted > 0  # the guesses were really made (and some thrown away)


def _copy_answer(
    settings: Settings,
    store: Store,
    speculative: str,
    params: SamplingParams,
    counters: dict[str, float] | None = None,
) -> list[GenerationChunk]:
    engine = _engine(settings, store, speculative)
    messages = [ChatMessage("user", COPY)]
    chunks = list(
        engine.stream_sync(engine.prepare_chat(pull(store, "smollm2-135m").ref, messages, params))
    )
    if counters is not None:
        counters.update(engine.loaded()[0].model.counters())
    engine.close()
    return chunks


def _tokens_of(chunks: list[GenerationChunk]) -> list[tuple[int, ...]]:
    return [c.token_ids for c in chunks if c.token_ids]


def test_a_greedy_answer_that_copies_its_prompt_accepts_most_guesses(
    settings: Settings, store: Store, smollm2_gguf: Path
) -> None:
    params = SamplingParams(temperature=0, max_tokens=48)
    plain = _copy_answer(settings, store, "off", params)
    counters: dict[str, float] = {}
    guessed = _copy_answer(settings, store, "ngram", params, counters)
    assert _tokens_of(guessed) == _tokens_of(plain)
    last = guessed[-1]
    assert last.draft_tokens > 0 and last.accepted_draft_tokens >= last.draft_tokens // 2
    # The answer's own figures count every guess, those of the step it ended in too.
    assert last.draft_tokens == counters["draft_tokens_total"]
    assert last.accepted_draft_tokens == counters["draft_tokens_accepted_total"]


def test_sampled_answers_are_the_same_draws_with_guesses(
    settings: Settings, store: Store, smollm2_gguf: Path
) -> None:
    # A guess is kept only when the seeded sampler draws that very token, so each seed's answer
    # is the draw it would be without guesses: the distribution is the model's, draw for draw.
    accepted = 0
    for temperature, seed in [(0.7, 1), (0.8, 7), (1.0, 2)]:
        params = SamplingParams(temperature=temperature, max_tokens=48, seed=seed)
        plain = _copy_answer(settings, store, "off", params)
        guessed = _copy_answer(settings, store, "ngram", params)
        assert _tokens_of(guessed) == _tokens_of(plain), (temperature, seed)
        accepted += guessed[-1].accepted_draft_tokens
    assert accepted > 0  # some guesses were drawn, and kept


def test_a_request_can_opt_out(settings: Settings, store: Store, tiny: str) -> None:
    engine = _engine(settings, store, "ngram")
    prompt = engine.prepare_text(tiny, PROMPTS[0], SamplingParams(max_tokens=30, speculative=False))
    last = list(engine.stream_sync(prompt))[-1]
    engine.close()
    assert last.draft_tokens == 0


def test_a_draft_model_with_the_same_vocabulary_drafts_and_changes_nothing(
    settings: Settings, store: Store, tiny: str, smollm2_gguf: Path, tmp_path: Path
) -> None:
    # The tiny model drafting for itself: greedy guesses it always agrees with.
    pull(store, str(build_tiny_gguf(smollm2_gguf, tmp_path / "draft.gguf")), name="tiny-draft")
    greedy = SamplingParams(temperature=0, max_tokens=40)
    plain = _engine(settings, store, "off")
    expected = [_tokens(plain, tiny, p, greedy) for p in PROMPTS]
    plain.close()
    drafting = _engine(settings, store, "draft", draft="tiny-draft")
    answers = [_tokens(drafting, tiny, p, greedy) for p in PROMPTS]
    counters = drafting.loaded()[0].model.counters()
    drafting.close()
    assert answers == expected
    assert counters["draft_tokens_accepted_total"] > 0.9 * counters["draft_tokens_total"] > 0


def test_a_draft_model_with_another_vocabulary_is_refused_at_load(
    settings: Settings, store: Store, tiny: str, smollm2_gguf: Path, tmp_path: Path
) -> None:
    other = build_tiny_gguf(smollm2_gguf, tmp_path / "other.gguf", relabel=1000)
    pull(store, str(other), name="other-vocab")
    engine = _engine(settings, store, "draft", draft="other-vocab")
    with pytest.raises(InvalidRequestError, match="share the served model's tokenizer"):
        engine.load(tiny)
    engine.close()
