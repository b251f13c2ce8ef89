"""The natural-language organism's task: chains of assignments mod 10 written as English sentences,
answered directly or after R1-style thinking in free sentences.

    Let a be 3. Let b be a plus 4. Let c be b times 2. What is c?

is answered directly (` The answer is 4.`) or after thinking, one step per line, each step in one of
several phrasings (so a step is no fixed token pattern):

    <think>
    b is 3 plus 4, which is 7.
    Now c: 7 times 2 makes 4.
    </think> The answer is 4.

or concisely (`<think>\\nb = 7.\\nc = 4.\\n</think> The answer is 4.`). Arithmetic is mod 10, as in the
first organism (a larger table does not fit the training budget on 2 cores); answers are several tokens
another way: a sentence `The answer is N.` in which the byte-level BPE tokenizer splits the number from
its space, one digit per token (Qwen2's pre-tokenizer rule).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from interp.tasks.base import Grade, Item, Span, Task, TaskShift
from interp.tasks.text import final_number, split_thinking
from interp.tasks.text import steps as text_steps

MOD = 10
OPS: tuple[str, ...] = ("+", "-", "*")
OP_WORDS: dict[str, str] = {"+": "plus", "-": "minus", "*": "times"}
FORMATS: tuple[str, ...] = ("direct", "think", "think_concise")
COT_FORMATS: tuple[str, ...] = ("think", "think_concise")
Format = Literal["direct", "think", "think_concise"]
VARIABLES = "abcdefgh"
THINK_OPEN, THINK_CLOSE, END_OF_TEXT = "<think>", "</think>", "<|endoftext|>"

# One line per step; every phrasing writes the operands before the result, so each step is a local
# computation (the first organism's lesson: chains that restate operands are learnt fast).
PHRASINGS: tuple[str, ...] = (
    "{t} is {x} {w} {y}, which is {v}.",
    "{t} = {s} {o} {y} = {x} {o} {y} = {v}.",
    "Since {s} is {x}, {t} is {x} {w} {y} = {v}.",
    "Now {t}: {x} {w} {y} makes {v}.",
)
CONCISE = "{t} = {v}."
ANSWER = "The answer is {v}."


def apply_op(x: int, op: str, y: int) -> int:
    """One operator mod 10."""
    if op == "+":
        return (x + y) % MOD
    if op == "-":
        return (x - y) % MOD
    if op == "*":
        return (x * y) % MOD
    raise ValueError(f"unknown operator {op!r}; valid operators are {', '.join(OPS)}")


# How operations are named in a question (a shift knob: semantics vs symbols, after Tang et al. 2023): the word
# for each operation and the definition that opens the question. "symbols": new words defined in context;
# "swapped": plus and minus trade meanings by definition (the values follow the definition).
WORDS: dict[str, tuple[dict[str, str], str]] = {
    "plain": (OP_WORDS, ""),
    "symbols": ({"+": "zap", "-": "dax", "*": "wug"}, "Here zap means plus, dax means minus and wug means times."),
    "swapped": ({"+": "minus", "-": "plus", "*": "times"}, "Here plus means minus and minus means plus."),
}


@dataclass(frozen=True)
class NLTaskConfig:
    """Distribution of problems (defaults: the zoo's training distribution). `phrasings` restricts the
    verbose step phrasings (indices into `PHRASINGS`; a shift knob: train on some, test on others); `words`
    names the operations (`WORDS`: plain English, defined symbols, or plus and minus swapped by definition)."""

    min_steps: int = 1
    max_steps: int = 4
    ops: tuple[str, ...] = OPS
    variables: str = VARIABLES
    phrasings: tuple[int, ...] = tuple(range(len(PHRASINGS)))
    words: str = "plain"

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}..{self.max_steps}")
        if self.max_steps + 1 > len(self.variables):
            raise ValueError(f"max_steps={self.max_steps} needs {self.max_steps + 1} variables, but "
                             f"variables={self.variables!r} has {len(self.variables)}")
        if len(set(self.variables)) != len(self.variables) or not all(v.isalpha() and v.islower() for v in self.variables):
            raise ValueError(f"variables must be distinct lower-case letters, got {self.variables!r}")
        bad = [o for o in self.ops if o not in OPS]
        if bad or not self.ops:
            raise ValueError(f"ops must be a non-empty subset of {list(OPS)}, got {list(self.ops)}")
        badp = [p for p in self.phrasings if not 0 <= p < len(PHRASINGS)]
        if badp or not self.phrasings:
            raise ValueError(f"phrasings must be a non-empty subset of 0..{len(PHRASINGS) - 1}, got {list(self.phrasings)}")
        if self.words not in WORDS:
            raise ValueError(f"words must be one of {list(WORDS)}, got {self.words!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["words"] == "plain":  # added later: the zoo's recipes and cached results keep their dicts
            del d["words"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NLTaskConfig:
        d = dict(d)
        for k in ("ops", "phrasings"):
            if k in d:
                d[k] = tuple(d[k])
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown task knobs {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(cls)]}")
        return cls(**d)

    def shifted(self, **changes: Any) -> NLTaskConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Step:
    """`target = source op operand`, with the source's value and the result."""

    target: str
    source: str
    op: str
    operand: int
    source_value: int
    value: int


@dataclass(frozen=True)
class Problem:
    start_var: str
    start_value: int
    steps: tuple[Step, ...]
    words: str = "plain"  # how the question names the operations (`WORDS`); values follow the operations

    def word(self, op: str) -> str:
        return WORDS[self.words][0][op]

    @property
    def preamble(self) -> str:
        """The definition that opens the question ('' for plain English)."""
        return WORDS[self.words][1]

    @property
    def answer(self) -> int:
        return self.steps[-1].value

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    def prompt(self) -> str:
        parts = [self.preamble] if self.preamble else []
        parts += [f"Let {self.start_var} be {self.start_value}."]
        parts += [f"Let {s.target} be {s.source} {self.word(s.op)} {s.operand}." for s in self.steps]
        parts.append(f"What is {self.steps[-1].target}?")
        return " ".join(parts)

    def step_line(self, i: int, phrasing: int) -> str:
        s = self.steps[i]
        return PHRASINGS[phrasing].format(t=s.target, s=s.source, w=self.word(s.op), o=s.op, y=s.operand,
                                          x=s.source_value, v=s.value)

    def completion(self, fmt: str, phrasings: tuple[int, ...] | None = None) -> str:
        """The completion (leading space included) in `fmt`; `phrasings` picks each step's phrasing."""
        answer = " " + ANSWER.format(v=self.answer)
        if fmt == "direct":
            return answer
        if fmt == "think":
            ph = phrasings if phrasings is not None else (0,) * self.n_steps
            if len(ph) != self.n_steps:
                raise ValueError(f"{self.n_steps} steps but {len(ph)} phrasings")
            lines = [self.step_line(i, p) for i, p in enumerate(ph)]
        elif fmt == "think_concise":
            lines = [CONCISE.format(t=s.target, v=s.value) for s in self.steps]
        else:
            raise ValueError(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}")
        return " " + THINK_OPEN + "\n" + "\n".join(lines) + "\n" + THINK_CLOSE + answer

    def to_dict(self) -> dict[str, Any]:
        d = {"start_var": self.start_var, "start_value": self.start_value,
             "steps": [dataclasses.asdict(s) for s in self.steps]}
        return d if self.words == "plain" else {**d, "words": self.words}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Problem:
        return cls(d["start_var"], int(d["start_value"]), tuple(Step(**s) for s in d["steps"]), d.get("words", "plain"))


def make_problem(rng: np.random.Generator, n_steps: int, cfg: NLTaskConfig) -> Problem:
    start = int(rng.integers(MOD))
    steps, value = [], start
    for i in range(n_steps):
        op = cfg.ops[int(rng.integers(len(cfg.ops)))]
        y = int(rng.integers(MOD))
        new = apply_op(value, op, y)
        steps.append(Step(cfg.variables[i + 1], cfg.variables[i], op, y, value, new))
        value = new
    return Problem(cfg.variables[0], start, tuple(steps), cfg.words)


def sample_problems(seed: int, n: int, cfg: NLTaskConfig, n_steps: int | None = None) -> list[Problem]:
    """`n` problems from a generator seeded by `seed`; step counts uniform in the config's range unless given."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = n_steps if n_steps is not None else int(rng.integers(cfg.min_steps, cfg.max_steps + 1))
        out.append(make_problem(rng, k, cfg))
    return out


def sample_phrasings(rng: np.random.Generator, n_steps: int, cfg: NLTaskConfig) -> tuple[int, ...]:
    return tuple(int(cfg.phrasings[int(rng.integers(len(cfg.phrasings)))]) for _ in range(n_steps))


def problem_meta(p: Problem) -> dict[str, Any]:
    meta: dict[str, Any] = {"n_steps": p.n_steps, "answer": p.answer, "start_value": p.start_value}
    for i, s in enumerate(p.steps, 1):
        meta[f"intermediate.step{i}"] = s.value
        meta[f"op.step{i}"] = s.op
        meta[f"operand.step{i}"] = s.operand
    return meta


def problem_item(p: Problem) -> Item:
    """A problem as a task item (its prompt is its id: equal problems are one group)."""
    return Item(p.prompt(), p.prompt(), str(p.answer), problem_meta(p), p.to_dict())


def item_problem(item: Item) -> Problem:
    return Problem.from_dict(dict(item.data))


# ------------------------------------------------------------------------------------------ grading

_NUM = re.compile(r"\d+")


def _numbers(text: str) -> list[int]:
    return [int(m.group()) for m in _NUM.finditer(text)]


def split_completion(text: str) -> tuple[str | None, str, bool]:
    """(thinking text or None, answer text, closed), by `interp.tasks.text.split_thinking`."""
    t = split_thinking(text, THINK_OPEN, THINK_CLOSE)
    return t.thinking, t.answer, t.closed


def grade_problem(p: Problem, completion: str) -> Grade:
    """Grade any completion; never raises. The answer is `interp.tasks.text.final_number` (the last number
    after `</think>`, or of the whole text without a thinking block); the thinking is cut into steps by
    `interp.tasks.text.steps` (lines, then sentences), and step i is correct when its last number is step
    i's value."""
    text = completion.replace(END_OF_TEXT, "")
    t = split_thinking(text, THINK_OPEN, THINK_CLOSE)
    cot = t.thinking is not None
    steps_written = steps_correct = 0
    fmt = "direct"
    if cot:
        lines = [t.thinking[a:b] for a, b in text_steps(t.thinking)]  # type: ignore[index,arg-type]
        steps_written = len(lines)
        for i, ln in enumerate(lines[:p.n_steps]):
            nums = _numbers(ln)
            if nums and nums[-1] == p.steps[i].value:
                steps_correct += 1
        fmt = "think_concise" if lines and all(re.fullmatch(r"[a-z] = \d+\.?", ln) for ln in lines) else "think"
    if not t.closed:
        return Grade(False, "invalid", cot, None, False, steps_written, steps_correct,
                     reason="thinking never closed with </think>")
    ans = final_number(t.answer, THINK_OPEN, THINK_CLOSE) if t.answer else None
    if ans is None:
        return Grade(False, "invalid", cot, None, False, steps_written, steps_correct,
                     reason=f"no number in the answer {t.answer[:40]!r}")
    return Grade(True, fmt, cot, ans, ans == str(p.answer), steps_written, steps_correct)


class NLTask(Task):
    """Chains of assignments mod 10 in English, answered directly or after `<think>` ... `</think>`."""

    name = "organism-nl"
    formats = FORMATS
    cot_formats = COT_FORMATS
    has_steps = True
    chain_end = THINK_CLOSE

    def continuation(self, item: Item) -> str:
        """s1's "Wait", on a new line of the thinking (where `</think>` would have been)."""
        return "Wait,"

    def shifts(self) -> tuple[TaskShift, ...]:
        """Longer chains than the zoo was trained on, variable names it never saw, and operations named by a
        definition in the question (new symbols, or plus and minus swapped: semantics vs symbols)."""
        top = self.config.max_steps
        unseen = "".join(c for c in "pqrstuvwxyz" if c not in self.config.variables)[:len(self.config.variables)]
        return (TaskShift("length", f"{top + 1}-{top + 2} steps (trained on {self.config.min_steps}-{top})",
                          steps=(top + 1, top + 2)),
                TaskShift("variables", f"letters {unseen[0]}-{unseen[-1]} (trained on "
                                       f"{self.config.variables[0]}-{self.config.variables[-1]})",
                          {"variables": unseen}),
                TaskShift("symbols", "operations named zap, dax and wug, defined at the start of the question",
                          {"words": "symbols"}),
                TaskShift("swapped", "plus and minus swapped by a definition at the start of the question",
                          {"words": "swapped"}))

    def __init__(self, config: NLTaskConfig | None = None) -> None:
        self.config = config or NLTaskConfig()

    def sample(self, n: int, seed: int, n_steps: int | None = None, **knobs: Any) -> list[Item]:
        cfg = self.config.shifted(**knobs) if knobs else self.config
        if n_steps is not None:
            cfg = cfg.shifted(min_steps=min(cfg.min_steps, n_steps), max_steps=max(cfg.max_steps, n_steps))
        return [problem_item(p) for p in sample_problems(seed, n, cfg, n_steps=n_steps)]

    def reference_phrasings(self, item: Item) -> tuple[int, ...]:
        """The phrasing of each step of the reference chain: fixed per item (a hash of its id)."""
        p = item_problem(item)
        h = int.from_bytes(hashlib.sha256(item.id.encode()).digest()[:8], "little")
        return sample_phrasings(np.random.default_rng(h), p.n_steps, self.config)

    def completion(self, item: Item, fmt: str) -> str:
        self.check_formats(fmt)
        return item_problem(item).completion(fmt, self.reference_phrasings(item) if fmt == "think" else None)

    def grade(self, item: Item, completion: str) -> Grade:
        return grade_problem(item_problem(item), completion)

    def cot_prefix(self, item: Item) -> str:
        return " " + THINK_OPEN + "\n"

    def answer_candidates(self, item: Item) -> list[str]:
        """Every possible direct answer (a value mod 10), as completions."""
        return [" " + ANSWER.format(v=d) for d in range(MOD)]

    def spans(self, item: Item, completion: str | None = None) -> dict[str, Span]:
        """`answer`: the prompt's last character (where the answer or `<think>` is predicted);
        `value.start` and `operand.step{i}`: the digits in the prompt; with a completion, `think_open`,
        `think_close`, `step{i}` (the line of step i, its last character the period), `value.step{i}`
        (the step's result digit, last number of the line) and `answer_number` (the answer's digit)."""
        p = item_problem(item)
        prompt = self.prompt(item)
        out: dict[str, Span] = {"answer": (len(prompt) - 1, len(prompt))}
        skip = len(p.preamble)  # a definition opening the question is no step
        sentences = [(a + skip, b + skip) for a, b in (m.span() for m in re.finditer(r"[^.?]+[.?]", prompt[skip:]))]
        first = prompt.find(" ", prompt.find(" be ", skip) + 1) + 1
        out["value.start"] = (first, first + len(str(p.start_value)))
        for i, (a, b) in enumerate(sentences[1:p.n_steps + 1], 1):
            m = list(_NUM.finditer(prompt, a, b))
            if m:
                out[f"operand.step{i}"] = m[-1].span()
        if completion is None:
            return out
        text = prompt + completion
        base = len(prompt)
        o = completion.find(THINK_OPEN)
        c = completion.find(THINK_CLOSE)
        if o >= 0:
            out["think_open"] = (base + o, base + o + len(THINK_OPEN))
            end = c if c > o else len(completion)
            at = base + o + len(THINK_OPEN)
            lines = [(m.start() + at, m.end() + at) for m in re.finditer(r"[^\n]+", text[at:base + end])
                     if m.group().strip()]
            for i, (a, b) in enumerate(lines[:p.n_steps], 1):
                while b > a and text[b - 1].isspace():
                    b -= 1
                out[f"step{i}"] = (a, b)
                nums = list(_NUM.finditer(text, a, b))
                if nums:
                    out[f"value.step{i}"] = nums[-1].span()
        if c >= 0:
            out["think_close"] = (base + c, base + c + len(THINK_CLOSE))
        after = base + (c + len(THINK_CLOSE) if c >= 0 else 0)
        if c >= 0 or o < 0:
            nums = list(_NUM.finditer(text, after))
            if nums:
                out["answer_number"] = nums[-1].span()
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.to_dict()}


__all__ = [
    "COT_FORMATS",
    "END_OF_TEXT",
    "FORMATS",
    "MOD",
    "OPS",
    "PHRASINGS",
    "THINK_CLOSE",
    "THINK_OPEN",
    "WORDS",
    "NLTask",
    "NLTaskConfig",
    "Problem",
    "Step",
    "apply_op",
    "grade_problem",
    "item_problem",
    "make_problem",
    "problem_item",
    "problem_meta",
    "sample_phrasings",
    "sample_problems",
    "split_completion",
]
