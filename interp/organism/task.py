"""The synthetic multi-step reasoning task: chains of assignments over variables, values mod 10.

`Q : a = 3 ; b = a + 4 ; c = b * 2 ; c ? A :` is answered directly (`4`), with a concise chain of
thought (`b = 7 ; c = 4 ; so 4`) or a verbose one (`b = a + 4 = 3 + 4 = 7 ; c = b * 2 = 7 * 2 = 4 ;
so c = 4`). Every value is one token, so every intermediate result has a position to probe, patch
and steer. Problems are drawn from a seeded generator; shift knobs (more steps, held-out operator
pairs, another separator, renamed variables, distractors) move the distribution in controlled ways.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

MOD = 10
OPS: tuple[str, ...] = ("+", "-", "*")
FORMATS: tuple[str, ...] = ("direct", "concise", "verbose")
Format = Literal["direct", "concise", "verbose"]
DEFAULT_VARIABLES = "abcdefgh"
RENAMED_VARIABLES = "pqrstuvw"
DISTRACTOR_VARIABLES = "xyzmn"
SEPARATORS: tuple[str, ...] = (";", ",")
PROMPT_END = ("A", ":")


def apply_op(x: int, op: str, y: int) -> int:
    """Apply one operator mod 10."""
    if op == "+":
        return (x + y) % MOD
    if op == "-":
        return (x - y) % MOD
    if op == "*":
        return (x * y) % MOD
    raise ValueError(f"unknown operator {op!r}; valid operators are {', '.join(OPS)}")


@dataclass(frozen=True)
class TaskConfig:
    """Distribution of problems. Defaults are the training distribution of the zoo."""

    min_steps: int = 1
    max_steps: int = 4
    ops: tuple[str, ...] = OPS
    variables: str = DEFAULT_VARIABLES
    shuffle_variables: bool = False
    separator: str = ";"
    n_distractors: int = 0
    held_out_op_pairs: tuple[tuple[str, str], ...] = ()
    op_pairs_mode: Literal["exclude", "require", "any"] = "exclude"

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}..{self.max_steps}")
        if self.max_steps + 1 > len(self.variables):
            raise ValueError(
                f"max_steps={self.max_steps} needs {self.max_steps + 1} variables, "
                f"but variables={self.variables!r} has {len(self.variables)}"
            )
        bad = [o for o in self.ops if o not in OPS]
        if bad:
            raise ValueError(f"unknown operators {bad}; valid operators are {list(OPS)}")
        if self.separator not in SEPARATORS:
            raise ValueError(f"separator {self.separator!r} not in the vocabulary; valid: {SEPARATORS}")
        if self.n_distractors > len(DISTRACTOR_VARIABLES):
            raise ValueError(f"at most {len(DISTRACTOR_VARIABLES)} distractors, got {self.n_distractors}")
        clash = set(self.variables) & set(DISTRACTOR_VARIABLES)
        if self.n_distractors and clash:
            raise ValueError(f"distractor variables {sorted(clash)} clash with problem variables")
        if self.op_pairs_mode == "require" and not self.held_out_op_pairs:
            raise ValueError("op_pairs_mode='require' needs held_out_op_pairs")
        if self.op_pairs_mode == "require" and self.min_steps < 2:
            raise ValueError(f"op_pairs_mode='require' needs problems with an operator pair: min_steps >= 2, "
                             f"got {self.min_steps}")
        stray = sorted({o for pair in self.held_out_op_pairs for o in pair} - set(self.ops))
        if stray:
            raise ValueError(f"held_out_op_pairs use operators {stray} that are not in ops={list(self.ops)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskConfig:
        d = dict(d)
        d["ops"] = tuple(d.get("ops", OPS))
        d["held_out_op_pairs"] = tuple(tuple(p) for p in d.get("held_out_op_pairs", ()))
        return cls(**d)

    def shifted(self, **changes: Any) -> TaskConfig:
        """A copy with some knobs changed (e.g. `cfg.shifted(min_steps=5, max_steps=6)`)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Step:
    """One assignment `target = source op operand` with its value."""

    target: str
    source: str
    op: str
    operand: int
    source_value: int
    value: int


@dataclass(frozen=True)
class Problem:
    """One problem: the start value, its steps, distractors, and how to render it."""

    start_var: str
    start_value: int
    steps: tuple[Step, ...]
    distractors: tuple[tuple[str, int], ...] = ()
    distractor_slots: tuple[int, ...] = ()
    separator: str = ";"

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def answer(self) -> int:
        return self.steps[-1].value

    @property
    def query_var(self) -> str:
        return self.steps[-1].target

    @property
    def values(self) -> dict[str, int]:
        """Every chain variable's value, start included."""
        out = {self.start_var: self.start_value}
        out.update({s.target: s.value for s in self.steps})
        return out

    def prompt_tokens(self) -> list[str]:
        sep = self.separator
        clauses: list[list[str]] = [[self.start_var, "=", str(self.start_value)]]
        clauses += [[s.target, "=", s.source, s.op, str(s.operand)] for s in self.steps]
        for (name, value), slot in sorted(zip(self.distractors, self.distractor_slots), key=lambda x: -x[1]):
            clauses.insert(slot, [name, "=", str(value)])
        toks = ["Q", ":"]
        for c in clauses:
            toks += c + [sep]
        return toks + [self.query_var, "?", *PROMPT_END]

    def completion_tokens(self, fmt: Format) -> list[str]:
        sep = self.separator
        if fmt == "direct":
            return [str(self.answer)]
        toks: list[str] = []
        for s in self.steps:
            if fmt == "concise":
                toks += [s.target, "=", str(s.value), sep]
            elif fmt == "verbose":
                toks += [s.target, "=", s.source, s.op, str(s.operand), "=",
                         str(s.source_value), s.op, str(s.operand), "=", str(s.value), sep]
            else:
                raise ValueError(f"unknown format {fmt!r}; valid formats are {FORMATS}")
        if fmt == "concise":
            return toks + ["so", str(self.answer)]
        return toks + ["so", self.query_var, "=", str(self.answer)]

    def prompt(self) -> str:
        return " ".join(self.prompt_tokens())

    def completion(self, fmt: Format) -> str:
        return " ".join(self.completion_tokens(fmt))

    def text(self, fmt: Format) -> str:
        return self.prompt() + " " + self.completion(fmt)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Problem:
        return cls(
            start_var=d["start_var"], start_value=d["start_value"],
            steps=tuple(Step(**s) for s in d["steps"]),
            distractors=tuple(tuple(x) for x in d.get("distractors", ())),  # type: ignore[misc]
            distractor_slots=tuple(d.get("distractor_slots", ())),
            separator=d.get("separator", ";"),
        )


def _op_pairs(ops: list[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(ops))


def sample_problem(rng: np.random.Generator, cfg: TaskConfig, n_steps: int | None = None) -> Problem:
    """Draw one problem; `n_steps` fixes the number of steps, otherwise uniform in the config's range."""
    k = int(rng.integers(cfg.min_steps, cfg.max_steps + 1)) if n_steps is None else n_steps
    held = set(cfg.held_out_op_pairs)
    for _ in range(1000):
        ops = [cfg.ops[int(i)] for i in rng.integers(0, len(cfg.ops), size=k)]
        pairs = _op_pairs(ops)
        if cfg.op_pairs_mode == "exclude" and pairs & held:
            continue
        if cfg.op_pairs_mode == "require" and not pairs & held:
            continue
        break
    else:
        raise ValueError(f"cannot draw a {k}-step problem with op_pairs_mode={cfg.op_pairs_mode!r} "
                         f"and held_out_op_pairs={cfg.held_out_op_pairs}")
    if cfg.shuffle_variables:
        names = [cfg.variables[int(i)] for i in rng.permutation(len(cfg.variables))[: k + 1]]
    else:
        names = list(cfg.variables[: k + 1])
    value = int(rng.integers(0, MOD))
    start_value = value
    steps = []
    for i, op in enumerate(ops):
        operand = int(rng.integers(0, MOD))
        new = apply_op(value, op, operand)
        steps.append(Step(names[i + 1], names[i], op, operand, value, new))
        value = new
    n_clauses = k + 1
    d_names = DISTRACTOR_VARIABLES[: cfg.n_distractors]
    distractors = tuple((n, int(rng.integers(0, MOD))) for n in d_names)
    slots = tuple(int(rng.integers(0, n_clauses + 1)) for _ in d_names)
    return Problem(names[0], start_value, tuple(steps), distractors, slots, cfg.separator)


def sample_problems(seed: int, n: int, cfg: TaskConfig = TaskConfig(), n_steps: int | None = None) -> list[Problem]:
    """`n` problems from a seeded generator: the same seed always gives the same list."""
    rng = np.random.default_rng(seed)
    return [sample_problem(rng, cfg, n_steps) for _ in range(n)]


def vocabulary() -> list[str]:
    """Every token the task can produce, under every shift knob: the tokenizer's word list."""
    letters = sorted(set(DEFAULT_VARIABLES + RENAMED_VARIABLES + DISTRACTOR_VARIABLES))
    words = ["Q", "A", ":", "?", "=", "so", *OPS, *SEPARATORS]
    return words + [str(d) for d in range(MOD)] + letters


def all_op_pairs() -> list[tuple[str, str]]:
    return list(itertools.product(OPS, OPS))


@dataclass(frozen=True)
class FormatMix:
    """Shares of answer formats in a training mix; normalised when sampled."""

    direct: float = 0.9
    concise: float = 0.05
    verbose: float = 0.05

    def probs(self) -> np.ndarray:
        p = np.array([self.direct, self.concise, self.verbose], dtype=float)
        if (p < 0).any() or p.sum() <= 0:
            raise ValueError(f"format shares must be >= 0 and not all zero, got {self}")
        return p / p.sum()

    def sample(self, rng: np.random.Generator) -> Format:
        return FORMATS[int(rng.choice(3, p=self.probs()))]  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FormatMix:
        return cls(**d)


__all__ = [
    "FORMATS",
    "MOD",
    "OPS",
    "Format",
    "FormatMix",
    "Problem",
    "Step",
    "TaskConfig",
    "all_op_pairs",
    "apply_op",
    "sample_problem",
    "sample_problems",
    "vocabulary",
]
