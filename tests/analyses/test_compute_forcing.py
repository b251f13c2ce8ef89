"""Budget forcing bookkeeping on constructed generators: the end marker is suppressed exactly k times, the
continuations land where it was, token counts and the forced cut's answer."""

from __future__ import annotations

import pytest

from analyses.compute.analysis import ComputeConfig, forcing_texts
from analyses.compute.forcing import cut, extend, find_marker
from interp.tasks.base import Grade, Item, Task

END, CONT, EOS_FREE = 90, 91, 10


def fake_generate(calls: list[list[int]]):
    """Row kinds by the prompt's first id: 1 closes every time; 2 closes twice, then stops without closing;
    3 never closes; 4 closes with a two-token marker prefix split (END then 92) only once, then runs out of
    tokens (EOS_FREE new tokens, no EOS)."""

    def gen(prompts: list[list[int]]) -> list[list[int]]:
        out = []
        for p in prompts:
            calls.append(list(p))
            n_cont = p.count(CONT)
            if p[0] == 1:
                out.append([5, 6, END, 7])
            elif p[0] == 2:
                out.append([5, END, 7] if n_cont < 2 else [8, 8])
            elif p[0] == 3:
                out.append([4, 4, 4])
            else:
                out.append([5, END, 7] if n_cont < 1 else [3] * EOS_FREE)
        return out

    return gen


def test_extension_suppresses_the_marker_exactly_k_times() -> None:
    calls: list[list[int]] = []
    gen = fake_generate(calls)
    prompts = [[1, 0], [2, 0], [3, 0], [4, 0]]
    first = gen(prompts)
    calls.clear()
    rounds = extend(gen, prompts, first, [END], [[CONT]] * 4, 4, EOS_FREE)
    assert len(rounds) == 5
    for k, fs in enumerate(rounds):
        a, b, c, d = fs
        assert a.suppressed == k and a.ids == (5, 6, CONT) * k + (5, 6, END, 7)
        assert a.ids.count(END) == 1 and a.ids.count(CONT) == k
        assert a.finished and a.n_tokens == 3 * k + 4 + 1  # EOS counts
        assert b.suppressed == min(k, 2)
        assert b.ids == ((5, CONT) * min(k, 2) + ((5, END, 7) if k < 2 else (8, 8)))
        assert c.suppressed == 0 and c.ids == (4, 4, 4) and c.n_tokens == 4  # never closed: never extended
        assert d.suppressed == min(k, 1)
        if k >= 1:
            assert d.ids == (5, CONT) + (3,) * EOS_FREE and not d.finished and d.n_tokens == 2 + EOS_FREE
    # each round continues from the prompt plus what stays of the chain: row 1's chain at round k
    assert [1, 0, 5, 6, CONT, 5, 6, CONT] in calls
    # rows that stopped closing are not generated again (row 3 never; row 2 after its second suppression)
    assert not any(c[0] == 3 for c in calls) and sum(c[0] == 2 for c in calls) == 2 and sum(c[0] == 4 for c in calls) == 1


def test_extension_with_a_multi_token_marker_and_bad_input() -> None:
    gen = lambda ps: [[5, END, 92, 7] for _ in ps]
    rounds = extend(gen, [[1]], [[5, END, 92, 7]], [END, 92], [[CONT, CONT]], 2, 16)
    assert rounds[2][0].ids == (5, CONT, CONT, 5, CONT, CONT, 5, END, 92, 7) and rounds[2][0].suppressed == 2
    assert find_marker([1, END, 2, END, 92], [END, 92]) == 3 and find_marker([1, 2], [END]) is None
    with pytest.raises(ValueError, match="empty"):
        extend(gen, [[1]], [[5]], [END], [[]], 1, 16)
    with pytest.raises(ValueError, match="prompts"):
        extend(gen, [[1], [2]], [[5]], [END], [[CONT]], 1, 16)


def test_cut_forces_the_answer_at_the_budget() -> None:
    seen: list[list[int]] = []

    def answer(ps: list[list[int]]) -> list[list[int]]:
        seen.extend(ps)
        return [[7] for _ in ps]

    chains = [[1, 2, END, 3], [1, 2, 3, 4, 5, 6], [1, END, 3, 4, 5]]
    fs = cut(answer, [[0], [0], [0]], chains, [True, False, True], 3, [END], 4)
    assert fs[1].ids == (1, 2, 3, END, 7) and fs[1].n_tokens == 6  # truncated, marker appended, answer + EOS
    assert fs[2].ids == (1, END, 3, 7)  # the kept part already closed the chain: no second marker
    assert fs[0].ids == (1, 2, END, 7)  # a chain still writing at the budget is cut too (4 tokens > 3)
    assert [0, 1, 2, 3, END] in seen
    fs = cut(answer, [[0]], [[1, 2, END, 3]], [True], 8, [END], 4)
    assert fs[0].ids == (1, 2, END, 3) and fs[0].n_tokens == 5  # ended within the budget: kept as written


class NoMarkerTask(Task):
    name = "no-marker"

    def sample(self, n, seed, **knobs):
        return [Item(str(i), "p", "1") for i in range(n)]

    def completion(self, item, fmt):
        return " 1"

    def grade(self, item, completion):
        return Grade(True, "direct", False, completion.strip(), completion.strip() == item.answer)


def test_marker_and_continuation_come_from_the_task_or_the_config() -> None:
    import interp

    task = interp.task("organism")
    items = task.sample(2, 0, n_steps=3)
    end, conts = forcing_texts(task, items, ComputeConfig())
    assert end == task.chain_end == " so" and conts == [task.cot_prefix(it) for it in items]
    end, conts = forcing_texts(task, items, ComputeConfig(chain_end=" ;", continuation=" c"))
    assert end == " ;" and conts == [" c", " c"]
    bare = NoMarkerTask()
    with pytest.raises(ValueError, match="chain_end"):
        forcing_texts(bare, bare.sample(1, 0), ComputeConfig())
    with pytest.raises(ValueError, match="continuation"):
        forcing_texts(bare, bare.sample(1, 0), ComputeConfig(chain_end=" so"))
    with pytest.raises(ValueError, match="end marker"):
        forcing_texts(task, items, ComputeConfig(continuation=" b so"))
    assert ComputeConfig().forced == ("organism/base-s", "organism/sft", "organism/rl", "organism/dpo")
    with pytest.raises(ValueError, match="forcing_models"):
        ComputeConfig(models=("organism/rl",), reference="organism/rl", forcing_models=("organism/sft",))
    with pytest.raises(ValueError, match="extensions"):
        ComputeConfig(extensions=(2, 1))
