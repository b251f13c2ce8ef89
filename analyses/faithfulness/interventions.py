"""Text interventions on a chain of thought, as token lists (Lanham et al. 2023, arXiv 2307.13702).

A CoT the grader accepts is split into its step clauses and its closing; each intervention builds the
tokens that follow `A :` and end where the answer digit is predicted (or where the model continues):
truncation after k steps, a mistake in one step's value, a paraphrase into the other format with the same
values, and filler of equal length. All are pure functions of the problem and the CoT tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from interp.organism.grader import (  # the grader's own clause split
    STOP_TOKENS,
    _split_clauses,
    grade,
)
from interp.organism.task import MOD, Problem, apply_op

FILLER = ";"  # carries no value; the task's own separator


@dataclass(frozen=True)
class SplitCot:
    """A graded CoT: its format, its step clauses (each without the separator) and its answer."""

    fmt: str  # "concise" | "verbose"
    steps: tuple[tuple[str, ...], ...]
    answer: int
    correct: bool

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    def values(self) -> list[int]:
        """The value written at the end of each step."""
        return [int(c[-1]) for c in self.steps]


def split_cot(problem: Problem, tokens: list[str]) -> SplitCot | str:
    """Split a CoT answer into steps via the grader; a string saying why when it is not a gradable CoT."""
    g = grade(problem, tokens)
    if not g.valid:
        return f"invalid: {g.reason}"
    if g.format == "direct":
        return "direct answer (no chain of thought)"
    cut = [i for i, t in enumerate(tokens) if t in STOP_TOKENS]
    toks = list(tokens[: cut[0]] if cut else tokens)
    split = _split_clauses(toks)
    assert split is not None and g.answer is not None  # a valid CoT grade has both
    return SplitCot(g.format, tuple(tuple(c) for c in split[0]), g.answer, g.correct)


def closing_prefix(problem: Problem, fmt: str) -> list[str]:
    """Tokens between the last step and the answer digit: `so` (concise) or `so <query> =` (verbose)."""
    return ["so"] if fmt == "concise" else ["so", problem.query_var, "="]


def join_steps(steps: list[tuple[str, ...]] | tuple[tuple[str, ...], ...], sep: str) -> list[str]:
    out: list[str] = []
    for c in steps:
        out += [*c, sep]
    return out


def truncated(problem: Problem, cot: SplitCot, k: int) -> list[str]:
    """The first k steps, then the closing prefix: the answer digit is predicted next (k = 0: no CoT at all,
    the answer is read at `A :` itself, i.e. an empty list)."""
    if not 0 <= k <= cot.n_steps:
        raise ValueError(f"k={k} is outside 0..{cot.n_steps}")
    if k == 0:
        return []
    return join_steps(cot.steps[:k], problem.separator) + closing_prefix(problem, cot.fmt)


def propagate(problem: Problem, step: int, value: int) -> int:
    """The answer implied if step `step` (1-based) had `value` and every later step were applied to it."""
    v = value
    for s in problem.steps[step:]:
        v = apply_op(v, s.op, s.operand)
    return v


def with_value(clause: tuple[str, ...], value: int) -> tuple[str, ...]:
    """A step clause with its written value (the last token) replaced."""
    return (*clause[:-1], str(value))


def mistake_prefix(problem: Problem, cot: SplitCot, step: int, value: int) -> list[str]:
    """The CoT up to and including step `step` (1-based) with that step's value replaced, then the separator:
    the model continues from here."""
    if not 1 <= step <= cot.n_steps:
        raise ValueError(f"step={step} is outside 1..{cot.n_steps}")
    steps = list(cot.steps[:step])
    steps[-1] = with_value(steps[-1], value)
    return join_steps(steps, problem.separator)


def pick_mistake(problem: Problem, cot: SplitCot, step: int, offset: int) -> int | None:
    """A wrong value for `step` whose propagated answer differs from the CoT's answer: the written value plus
    `offset`, `offset + 1`, ... (mod 10); None when no value changes the answer (e.g. a later `* 0`)."""
    written = cot.values()[step - 1]
    for d in range(MOD - 1):
        v = (written + (offset - 1 + d) % (MOD - 1) + 1) % MOD
        if v != written and propagate(problem, step, v) != propagate(problem, step, written):
            return v
    return None


def paraphrased(problem: Problem, cot: SplitCot) -> list[str]:
    """The CoT rewritten in the other format with the same written values, then the closing prefix.

    concise -> verbose writes each step's operation with the previous written value as its source value;
    verbose -> concise keeps only `target = value`."""
    steps: list[tuple[str, ...]] = []
    values = cot.values()
    if cot.fmt == "concise":
        prev = problem.start_value
        for clause, v, s in zip(cot.steps, values, problem.steps):
            steps.append((clause[0], "=", s.source, s.op, str(s.operand), "=", str(prev), s.op, str(s.operand), "=", str(v)))
            prev = v
        fmt = "verbose"
    else:
        steps = [(clause[0], "=", str(v)) for clause, v in zip(cot.steps, values)]
        fmt = "concise"
    return join_steps(steps, problem.separator) + closing_prefix(problem, fmt)


def filler(problem: Problem, cot: SplitCot, token: str = FILLER) -> list[str]:
    """As many filler tokens as the CoT's steps took, then the closing prefix."""
    n = len(join_steps(cot.steps, problem.separator))
    return [token] * n + closing_prefix(problem, cot.fmt)


__all__ = [
    "FILLER",
    "SplitCot",
    "closing_prefix",
    "filler",
    "mistake_prefix",
    "paraphrased",
    "pick_mistake",
    "propagate",
    "split_cot",
    "truncated",
    "with_value",
]
