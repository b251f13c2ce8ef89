"""Shift transforms of organism problems: each renders a problem's prompt (and its reference chains) under one
controlled change and keeps the ground truth, so accuracy and chain validity stay gradable.

The organism's tokenizer is word-level: every shift is built from task words (digits, variables, operators,
`=`, separators), never from unknown tokens. Seeded: the same seed gives the same shifted prompts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from interp.organism.task import (
    FORMATS,
    OPS,
    PROMPT_END,
    RENAMED_VARIABLES,
    Problem,
    TaskConfig,
    apply_op,
    sample_problems,
)

NOISE_KINDS = ("insertion", "deletion", "substitution")


@dataclass(frozen=True)
class ShiftedProblem:
    """A problem as shown under a shift: the prompt words, the true value of every chain variable in the names
    shown, the answer, and reference completions (one per format) in the shown naming and separator."""

    prompt: tuple[str, ...]
    truth: tuple[tuple[str, int], ...]  # (step target as shown, true value), in chain order
    answer: int
    references: tuple[tuple[str, tuple[str, ...]], ...]  # (format, completion words)
    n_steps: int
    ops: tuple[tuple[str, str], ...] = ()  # (symbol shown, operation it computes) when the prompt defines symbols

    def reference(self, fmt: str) -> tuple[str, ...]:
        return dict(self.references)[fmt]

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": list(self.prompt), "truth": [list(t) for t in self.truth], "answer": self.answer,
                "references": {f: list(r) for f, r in self.references}, "n_steps": self.n_steps,
                "ops": [list(o) for o in self.ops]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShiftedProblem:
        return cls(tuple(d["prompt"]), tuple((str(a), int(b)) for a, b in d["truth"]), int(d["answer"]),
                   tuple((f, tuple(r)) for f, r in d["references"].items()), int(d["n_steps"]),
                   tuple((str(a), str(b)) for a, b in d.get("ops", ())))


def as_shown(problem: Problem) -> ShiftedProblem:
    """The problem unchanged (its own prompt and reference chains)."""
    return ShiftedProblem(tuple(problem.prompt_tokens()), tuple((s.target, s.value) for s in problem.steps),
                          problem.answer, tuple((f, tuple(problem.completion_tokens(f))) for f in FORMATS),  # type: ignore[arg-type]
                          problem.n_steps)


def operand_first(problem: Problem) -> ShiftedProblem:
    """Task shift: every step written operand first (`b = 4 - a` means 4 - a), a composition the zoo never saw;
    the values follow the new reading, the reference chains are written the same way."""
    if problem.distractors:
        raise ValueError("operand_first takes problems without distractors")
    sep = problem.separator
    toks = ["Q", ":", problem.start_var, "=", str(problem.start_value), sep]
    value = problem.start_value
    truth, concise, verbose = [], [], []
    for s in problem.steps:
        new = apply_op(s.operand, s.op, value)
        toks += [s.target, "=", str(s.operand), s.op, s.source, sep]
        concise += [s.target, "=", str(new), sep]
        verbose += [s.target, "=", str(s.operand), s.op, s.source, "=", str(s.operand), s.op, str(value), "=",
                    str(new), sep]
        truth.append((s.target, new))
        value = new
    q = problem.query_var
    refs = (("direct", (str(value),)), ("concise", (*concise, "so", str(value))),
            ("verbose", (*verbose, "so", q, "=", str(value))))
    return ShiftedProblem((*toks, q, "?", *PROMPT_END), tuple(truth), value, refs, problem.n_steps)


def noise_words(problem: Problem) -> tuple[str, ...]:
    """The task words a noisy prompt draws from: digits, the problem's variables, operators, `=`, its separator."""
    names = sorted({problem.start_var, *(s.target for s in problem.steps), *(n for n, _ in problem.distractors)})
    return (*(str(d) for d in range(10)), *names, *OPS, "=", problem.separator)


def perturb(words: Sequence[str], kind: str, rate: float, rng: np.random.Generator,
            vocab: Sequence[str], keep_head: int = 2, keep_tail: int = 2) -> tuple[str, ...]:
    """DataAlchemy's prompt noise: each word between the first `keep_head` and the last `keep_tail` words is,
    with probability `rate`, preceded by a random word (insertion), dropped (deletion) or replaced by a
    different random word (substitution)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; valid kinds are {NOISE_KINDS}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    words = list(words)
    head, body, tail = words[:keep_head], words[keep_head:len(words) - keep_tail], words[len(words) - keep_tail:]
    out: list[str] = []
    for w in body:
        hit = rng.random() < rate
        if not hit:
            out.append(w)
        elif kind == "insertion":
            out += [str(vocab[int(rng.integers(len(vocab)))]), w]
        elif kind == "substitution":
            others = [v for v in vocab if v != w]
            out.append(str(others[int(rng.integers(len(others)))]))
        # deletion: drop w
    return (*head, *out, *tail)


@dataclass(frozen=True)
class Shift:
    """One condition of the battery. `kind`: `none`, `length`, `operand_first`, `separator`, `noise`, `renamed`,
    `shuffled`, `distractors`. `paired` says the condition shows the in-distribution problems themselves
    (same seed, same values), so its drop is measured on the same problems."""

    name: str
    group: str  # length | task | format | variables | in-distribution
    kind: str
    steps: tuple[int, ...] = (1, 2, 3, 4)
    noise: str = ""
    rate: float = 0.0
    distractors: int = 0

    @property
    def paired(self) -> bool:
        return self.kind in ("none", "operand_first", "separator", "noise", "renamed")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shift:
        d = dict(d)
        d["steps"] = tuple(d["steps"])
        return cls(**d)


IN_DISTRIBUTION = Shift("in-distribution", "in-distribution", "none")
DEFAULT_SHIFTS: tuple[Shift, ...] = (
    IN_DISTRIBUTION,
    Shift("longer (5-6 steps)", "length", "length", steps=(5, 6)),
    Shift("operand first", "task", "operand_first"),
    Shift("separator ,", "format", "separator"),
    *(Shift(f"{k} {r}", "format", "noise", noise=k, rate=r) for k in NOISE_KINDS for r in (0.1, 0.2)),
    Shift("renamed variables", "variables", "renamed"),
    Shift("shuffled variables", "variables", "shuffled"),
    Shift("2 distractors", "variables", "distractors", distractors=2),
)


def shifted_problems(shift: Shift, n_steps: int, n: int, seed: int) -> list[ShiftedProblem]:
    """`n` problems with `n_steps` steps under `shift`; paired shifts reuse the in-distribution draw of `seed`."""
    top = max(4, n_steps)
    base = TaskConfig(min_steps=1, max_steps=top)
    if shift.kind in ("none", "length", "operand_first", "noise"):
        cfg = base
    elif shift.kind == "separator":
        cfg = base.shifted(separator=",")
    elif shift.kind == "renamed":
        cfg = base.shifted(variables=RENAMED_VARIABLES)
    elif shift.kind == "shuffled":
        cfg = base.shifted(shuffle_variables=True)
    elif shift.kind == "distractors":
        cfg = base.shifted(n_distractors=shift.distractors)
    else:
        raise ValueError(f"unknown shift kind {shift.kind!r}")
    problems = sample_problems(seed + n_steps, n, cfg, n_steps=n_steps)
    if shift.kind == "operand_first":
        return [operand_first(p) for p in problems]
    shown = [as_shown(p) for p in problems]
    if shift.kind == "noise":
        rng = np.random.default_rng([seed, n_steps, NOISE_KINDS.index(shift.noise), round(shift.rate * 1000)])
        shown = [dataclasses.replace(s, prompt=perturb(s.prompt, shift.noise, shift.rate, rng, noise_words(p)))
                 for s, p in zip(shown, problems)]
    return shown


__all__ = [
    "DEFAULT_SHIFTS",
    "IN_DISTRIBUTION",
    "NOISE_KINDS",
    "Shift",
    "ShiftedProblem",
    "as_shown",
    "noise_words",
    "operand_first",
    "perturb",
    "shifted_problems",
]
