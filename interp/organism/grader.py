"""Grade any generated answer text: its format, the steps it wrote, each step's correctness, the answer.

The grader never raises on model output: text it cannot parse is `valid=False` with a reason, so an
evaluation of a broken model reports invalid answers instead of crashing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from interp.organism.task import OPS, SEPARATORS, Problem, apply_op

STOP_TOKENS = ("<eos>", "<pad>", "</s>")


@dataclass(frozen=True)
class Grade:
    """What an answer text says and whether it is right."""

    valid: bool
    format: str  # "direct" | "concise" | "verbose" | "invalid"
    steps_written: int
    steps_correct: int
    answer: int | None
    correct: bool
    n_tokens: int
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _digit(tok: str) -> int | None:
    return int(tok) if len(tok) == 1 and "0" <= tok <= "9" else None


def _split_clauses(toks: list[str]) -> tuple[list[list[str]], list[str]] | None:
    """Split CoT tokens into step clauses and the `so ...` tail; None if there is no `so`."""
    if "so" not in toks:
        return None
    i = toks.index("so")
    body, tail = toks[:i], toks[i + 1:]
    clauses: list[list[str]] = []
    cur: list[str] = []
    for t in body:
        if t in SEPARATORS:
            clauses.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        clauses.append(cur)
    return clauses, tail


def grade(problem: Problem, text: str | list[str]) -> Grade:
    """Parse the answer after `A :` (a string or a token list) and check it against `problem`."""
    toks = text.split() if isinstance(text, str) else list(text)
    cut = [i for i, t in enumerate(toks) if t in STOP_TOKENS]
    toks = toks[: cut[0]] if cut else toks
    n = len(toks)

    def invalid(reason: str) -> Grade:
        return Grade(False, "invalid", 0, 0, None, False, n, reason)

    if not toks:
        return invalid("empty answer")
    if n == 1:
        d = _digit(toks[0])
        if d is None:
            return invalid(f"single token {toks[0]!r} is not a digit")
        return Grade(True, "direct", 0, 0, d, d == problem.answer, n)
    split = _split_clauses(toks)
    if split is None:
        return invalid("chain of thought without a closing 'so'")
    clauses, tail = split
    if not clauses:
        return invalid("'so' without any step before it")
    values = problem.values
    steps_by_target = {s.target: s for s in problem.steps}
    kinds: set[str] = set()
    n_correct = 0
    known = {problem.start_var: problem.start_value}
    for c in clauses:
        if len(c) == 3 and c[1] == "=" and _digit(c[2]) is not None:
            kinds.add("concise")
            target, value = c[0], _digit(c[2])
            step = steps_by_target.get(target)
            ok = step is not None and value == step.value
        elif (len(c) == 11 and c[1] == "=" and c[3] in OPS and c[5] == "=" and c[7] == c[3]
              and c[9] == "=" and all(_digit(c[j]) is not None for j in (4, 6, 8, 10))):
            kinds.add("verbose")
            target, src, op = c[0], c[2], c[3]
            operand, src_val, operand2, value = (_digit(c[j]) for j in (4, 6, 8, 10))
            step = steps_by_target.get(target)
            ok = (step is not None and src == step.source and op == step.op and operand == step.operand
                  and operand2 == operand and src_val == known.get(src, values.get(src))
                  and value == apply_op(src_val, op, operand))  # type: ignore[arg-type]
        else:
            return invalid(f"unparseable step {' '.join(c)!r}")
        if value is not None:
            known[target] = value
        n_correct += int(bool(ok))
    fmt = kinds.pop() if len(kinds) == 1 else "mixed"
    if fmt == "mixed":
        return invalid("mixes concise and verbose steps")
    if fmt == "concise" and len(tail) == 1 and _digit(tail[0]) is not None:
        answer = _digit(tail[0])
    elif fmt == "verbose" and len(tail) == 3 and tail[1] == "=" and _digit(tail[2]) is not None:
        answer = _digit(tail[2])
    else:
        return invalid(f"closing {' '.join(['so', *tail])!r} does not fit the {fmt} format")
    return Grade(True, fmt, len(clauses), n_correct, answer, answer == problem.answer, n)


__all__ = ["STOP_TOKENS", "Grade", "grade"]
