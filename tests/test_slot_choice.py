"""Which free slot of a llama.cpp context a new prompt takes (`choose_slot`)."""

from __future__ import annotations

from llmedge.backends.llama.slots import REUSE_MIN_TOKENS, Slot, choose_slot

BUSY = object()  # stands for a running request: only whether there is one matters here


def slots(n: int, busy: tuple[int, ...] = ()) -> list[Slot]:
    made = [Slot(i) for i in range(n)]
    for i in busy:
        made[i].request = BUSY  # type: ignore[assignment]
    return made


def free_of(all_slots: list[Slot]) -> list[Slot]:
    return [s for s in all_slots if s.request is None]


def test_a_cached_prompt_goes_back_to_its_slot_wherever_it_is() -> None:
    context = slots(8, busy=(0, 1))
    history = list(range(1000, 1000 + 3 * REUSE_MIN_TOKENS))
    context[6].kv_tokens = [*history, 7, 7]
    assert choose_slot(context, free_of(context), [*history, 9]).seq_id == 6


def test_a_new_prompt_keeps_the_busy_slots_together() -> None:
    # llama.cpp attends over every stream from the lowest busy id to the highest: slot 7 after
    # 0 and 1 would make each step attend over all eight caches.
    context = slots(8, busy=(0, 1))
    for slot in context:
        slot.last_used = 100.0 - slot.seq_id  # slot 7 is the least recently used
    assert choose_slot(context, free_of(context), list(range(50))).seq_id == 2
    context = slots(8, busy=(3, 4))
    assert choose_slot(context, free_of(context), list(range(50))).seq_id in (2, 5)


def test_a_short_shared_start_does_not_outweigh_keeping_slots_together() -> None:
    # Every chat begins with the template's few tokens; that is no reason to spread the slots.
    context = slots(8, busy=(0,))
    template = [1, 2, 3, 4]
    context[7].kv_tokens = [*template, 50, 51]
    assert choose_slot(context, free_of(context), [*template, 60, 61]).seq_id == 1


def test_among_equals_the_least_recently_used_cache_is_overwritten() -> None:
    context = slots(4)
    for slot, used in zip(context, (5.0, 1.0, 3.0, 4.0), strict=True):
        slot.kv_tokens, slot.last_used = [9] * 40, used
    assert choose_slot(context, free_of(context), list(range(50))).seq_id == 1
