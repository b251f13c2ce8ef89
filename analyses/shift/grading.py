"""Grade a completion against the true chain, value by value, so chain validity can be told apart from answer
correctness under any shift (renamed variables, another separator, operand-first steps).

A step clause is `target = value` (concise) or `target = x op y = X op Y = value` (verbose; `y` a digit, or `x` a digit and `y` a
variable for operand-first steps); the i-th written step
is right when its value is the chain's i-th true value (by position, so a chain that computes right but writes
the trained variable names for renamed ones still counts as right; `names_right` counts steps whose variable is
also the shown one); the chain is right when it has every step and each is right; a verbose step is consistent when
its written arithmetic holds (`X op Y = value` mod 10), whatever the truth. Answers parse as the organism's
grader parses them (`so d` concise, `so q = d` verbose, one digit direct).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from interp.organism.task import OPS, SEPARATORS, apply_op

STOP = ("<eos>", "<pad>", "</s>")
OUTCOMES = ("right_chain_right_answer", "wrong_chain_right_answer", "right_chain_wrong_answer",
            "wrong_chain_wrong_answer")


@dataclass(frozen=True)
class ChainGrade:
    """What a completion says: format (`direct`, `concise`, `verbose`, `invalid`), answer, steps written, steps
    whose value is right, verbose steps whose arithmetic is wrong, and whether the whole chain is right."""

    format: str
    answer: int | None
    correct: bool
    steps_written: int
    steps_correct: int
    inconsistent_steps: int
    chain_correct: bool
    names_right: int = 0
    reason: str = ""

    @property
    def cot(self) -> bool:
        return self.format in ("concise", "verbose")

    @property
    def outcome(self) -> str | None:
        """For a chain of thought, which of the four (chain right?, answer right?) cells it falls in."""
        if not self.cot:
            return None
        return f"{'right' if self.chain_correct else 'wrong'}_chain_{'right' if self.correct else 'wrong'}_answer"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _digit(t: str) -> int | None:
    return int(t) if len(t) == 1 and t.isdigit() else None


def clean(tokens: Sequence[str]) -> list[str]:
    """Completion words up to the first stop token."""
    toks = list(tokens)
    for i, t in enumerate(toks):
        if t in STOP:
            return toks[:i]
    return toks


def grade_chain(truth: Sequence[tuple[str, int]], answer: int, tokens: Sequence[str],
                ops: Mapping[str, str] | None = None) -> ChainGrade:
    """Grade completion words against the true (variable, value) chain and the true answer; never raises.
    `ops` maps the operator symbols the prompt uses to the operation each computes (default: + - * as usual),
    for prompts that define their own symbols."""
    toks = clean(tokens)
    meaning = {o: o for o in OPS} if ops is None else dict(ops)

    def invalid(reason: str) -> ChainGrade:
        return ChainGrade("invalid", None, False, 0, 0, 0, False, 0, reason)

    if not toks:
        return invalid("empty answer")
    if len(toks) == 1:
        d = _digit(toks[0])
        return invalid(f"single token {toks[0]!r} is not a digit") if d is None else \
            ChainGrade("direct", d, d == answer, 0, 0, 0, False)
    if "so" not in toks:
        return invalid("chain of thought without a closing 'so'")
    cut = toks.index("so")
    body, tail = toks[:cut], toks[cut + 1:]
    clauses: list[list[str]] = [[]]
    for t in body:
        if t in SEPARATORS:
            clauses.append([])
        else:
            clauses[-1].append(t)
    clauses = [c for c in clauses if c]
    if not clauses:
        return invalid("'so' without any step before it")
    kinds, n_right, n_named, n_bad = set(), 0, 0, 0
    for i, c in enumerate(clauses):
        if len(c) == 3 and c[1] == "=" and _digit(c[2]) is not None:
            kinds.add("concise")
        elif (len(c) == 11 and c[1] == "=" and c[3] in meaning and c[5] == "=" and c[7] == c[3] and c[9] == "="
              and all(_digit(c[j]) is not None for j in (6, 8, 10))
              and (_digit(c[4]) is not None or (_digit(c[2]) is not None and c[4].isalpha()))):
            kinds.add("verbose")
            n_bad += int(apply_op(_digit(c[6]), meaning[c[7]], _digit(c[8])) != _digit(c[10]))  # type: ignore[arg-type]
        else:
            return invalid(f"unparseable step {' '.join(c)!r}")
        value = _digit(c[-1])
        if i < len(truth):
            n_right += int(value == truth[i][1])
            n_named += int(value == truth[i][1] and c[0] == truth[i][0])
    if len(kinds) > 1:
        return invalid("mixes concise and verbose steps")
    fmt = kinds.pop()
    if fmt == "concise" and len(tail) == 1 and _digit(tail[0]) is not None:
        ans = _digit(tail[0])
    elif fmt == "verbose" and len(tail) == 3 and tail[1] == "=" and _digit(tail[2]) is not None:
        ans = _digit(tail[2])
    else:
        return invalid(f"closing {' '.join(['so', *tail])!r} does not fit the {fmt} format")
    chain_ok = len(clauses) == len(truth) and n_right == len(truth)
    return ChainGrade(fmt, ans, ans == answer, len(clauses), n_right, n_bad, chain_ok, n_named)


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (insertions, deletions, substitutions cost 1), by
    Hyyro's bit-parallel form of Myers' algorithm: one column of the DP table per word of `b`, as bits."""
    if not a or not b:
        return len(a) + len(b)
    m = len(a)
    peq: dict[str, int] = {}
    for i, x in enumerate(a):
        peq[x] = peq.get(x, 0) | (1 << i)
    mask, top = (1 << m) - 1, 1 << (m - 1)
    pv, mv, score = mask, 0, m  # vertical +1 / -1 deltas of the current column; its last cell
    for y in b:
        eq = peq.get(y, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | ~(xh | pv)
        mh = pv & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = (ph << 1) | 1  # the first row grows by one per word of b
        mh <<= 1
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv & mask
    return score


def chain_distance(tokens: Sequence[str], references: dict[str, Sequence[str]]) -> float:
    """Normalised edit distance of a written chain to the nearest reference chain (concise or verbose):
    distance / reference length, 0 for the reference itself."""
    toks = clean(tokens)
    return min(edit_distance(toks, references[f]) / len(references[f]) for f in ("concise", "verbose"))


__all__ = ["OUTCOMES", "ChainGrade", "chain_distance", "clean", "edit_distance", "grade_chain"]
