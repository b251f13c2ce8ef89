"""Budget forcing of one chain of thought (s1: Muennighoff et al. 2025, arXiv 2501.19393), on token ids.

Extension: when the model closes its chain (writes the task's end-of-chain marker), the marker is suppressed
and a continuation (s1's "Wait") is appended in its place, so the model thinks on; after k suppressions it
may close the chain and answer. Cut: the chain is truncated at a token budget and the end marker appended,
so the model must answer now. Both take a `generate` function (prompts -> completions, EOS excluded), so the
bookkeeping is testable without a model; the marker and continuation come from the task or the config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

Generate = Callable[[list[list[int]]], list[list[int]]]
"""Prompt ids -> completion ids (up to, excluding, EOS), greedy: the same prompt gives the same completion."""


def find_marker(ids: Sequence[int], marker: Sequence[int]) -> int | None:
    """Index where the first occurrence of `marker` starts in `ids` (None if absent)."""
    n = len(marker)
    if n == 0:
        raise ValueError("the end-of-chain marker is empty")
    for i in range(len(ids) - n + 1):
        if list(ids[i:i + n]) == list(marker):
            return i
    return None


@dataclass(frozen=True)
class Forced:
    """One forced chain: the ids the model's output holds after its prompt, how often its end marker was
    suppressed, and whether its last generation ended with EOS (which then counts as a generated token)."""

    ids: tuple[int, ...]
    suppressed: int
    finished: bool

    @property
    def n_tokens(self) -> int:
        return len(self.ids) + int(self.finished)


def extend(generate: Generate, prompts: Sequence[Sequence[int]], first: Sequence[Sequence[int]],
           marker: Sequence[int], continuations: Sequence[Sequence[int]], k_max: int, max_new_tokens: int
           ) -> list[list[Forced]]:
    """Chains extended 0..k_max times: out[k][i] is prompt i's chain after up to k suppressions of `marker`.

    `first` are the model's own completions of `prompts` (round 0). Each round, a chain that wrote the marker
    is cut just before it, its continuation appended, and the model generates on from there; a chain that
    did not write it (it stopped or ran out of tokens without closing) cannot be extended and stays as it
    is for every larger k (its `suppressed` stays below k). The suppressed markers and the text the model
    wrote after them are dropped; the continuations count as generated tokens (the model conditions on them)."""
    if k_max < 0:
        raise ValueError(f"k_max must be >= 0, got {k_max}")
    if len(first) != len(prompts) or len(continuations) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(first)} completions and {len(continuations)} continuations")
    if any(not c for c in continuations):
        raise ValueError("a continuation is empty: the model would close its chain again at once")
    state: list[list[int]] = [[] for _ in prompts]  # what stays of the chain before the current round's output
    outs = [list(o) for o in first]
    n_sup = [0] * len(prompts)
    active = list(range(len(prompts)))
    result: list[list[Forced]] = []
    last = [Forced(tuple(o), 0, len(o) < max_new_tokens) for o in outs]
    for k in range(k_max + 1):
        for i in active:
            last[i] = Forced(tuple(state[i] + outs[i]), n_sup[i], len(outs[i]) < max_new_tokens)
        result.append(list(last))
        if k == k_max:
            break
        nxt = []
        for i in active:
            at = find_marker(outs[i], marker)
            if at is not None:
                state[i] = state[i] + outs[i][:at] + list(continuations[i])
                n_sup[i] += 1
                nxt.append(i)
        active = nxt
        if not active:
            result.extend([list(last) for _ in range(k + 1, k_max + 1)])
            break
        new = generate([list(prompts[i]) + state[i] for i in active])
        for i, o in zip(active, new):
            outs[i] = list(o)
    return result


def cut(generate: Generate, prompts: Sequence[Sequence[int]], chains: Sequence[Sequence[int]],
        finished: Sequence[bool], budget: int, marker: Sequence[int], answer_tokens: int) -> list[Forced]:
    """Each chain cut at `budget` tokens with the answer forced. A chain that ended (EOS, `finished`) before
    the budget is kept whole; a longer one is truncated, the end marker appended (unless the kept part
    already holds it) and the model writes its answer: `generate` continues `prompts[i] + kept` and its
    output is kept up to `answer_tokens` tokens (fewer means it ended with EOS). The marker counts as written."""
    if budget < 1 or answer_tokens < 1:
        raise ValueError(f"budget and answer_tokens must be >= 1, got {budget} and {answer_tokens}")
    if not len(prompts) == len(chains) == len(finished):
        raise ValueError(f"{len(prompts)} prompts, {len(chains)} chains and {len(finished)} finished flags")
    out: list[Forced | None] = [None] * len(chains)
    todo: list[tuple[int, list[int]]] = []
    for i, (c, done) in enumerate(zip(chains, finished)):
        c = list(c)
        if done and len(c) < budget:
            out[i] = Forced(tuple(c), 0, True)
        else:
            kept = c[:budget]
            todo.append((i, kept if find_marker(kept, marker) is not None else kept + list(marker)))
    if todo:
        answers = generate([list(prompts[i]) + kept for i, kept in todo])
        for (i, kept), a in zip(todo, answers):
            a = list(a)
            out[i] = Forced(tuple(kept + a[:answer_tokens]), 0, len(a) < answer_tokens)
    return [f for f in out if f is not None]


__all__ = ["Forced", "Generate", "cut", "extend", "find_marker"]
