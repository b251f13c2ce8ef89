"""The organism's task seen through the core's `Task` interface (`interp.task("organism")`).

Prompts are the task's space-separated words, so character spans follow from word indices: the named
positions of `interp.organism.positions` (which count the BOS token) become spans over `prompt +
completion`, and any tokenizer maps them back to tokens.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from interp.organism.dataset import problem_meta
from interp.organism.grader import grade as grade_problem
from interp.organism.positions import positions
from interp.organism.task import FORMATS, MOD, RENAMED_VARIABLES, Problem, TaskConfig, sample_problems
from interp.tasks.base import Grade, Item, Span, Task, TaskShift


def problem_item(problem: Problem) -> Item:
    """An organism problem as a task item (its prompt text is its id: equal problems are one group)."""
    return Item(problem.prompt(), problem.prompt(), str(problem.answer), problem_meta(problem), problem.to_dict())


def item_problem(item: Item) -> Problem:
    return Problem.from_dict(dict(item.data))


def _word_spans(text: str) -> list[Span]:
    """Character span of every whitespace-separated word of `text`, however it is spaced."""
    return [m.span() for m in re.finditer(r"\S+", text)]


class OrganismTask(Task):
    """Chains of assignments mod 10 (`interp.organism.task`) in the direct, concise and verbose formats."""

    name = "organism"
    formats = FORMATS
    cot_formats = ("concise", "verbose")
    has_steps = True
    chain_end = " so"

    def __init__(self, config: TaskConfig | None = None) -> None:
        self.config = config or TaskConfig()

    def shifts(self) -> tuple[TaskShift, ...]:
        """Longer chains than the zoo was trained on, and the renamed variables of the shift battery."""
        top = self.config.max_steps
        return (TaskShift("length", f"{top + 1}-{top + 2} steps (trained on {self.config.min_steps}-{top})",
                          steps=(top + 1, top + 2)),
                TaskShift("variables", f"letters {RENAMED_VARIABLES[0]}-{RENAMED_VARIABLES[-1]} (trained on "
                                       f"{self.config.variables[0]}-{self.config.variables[-1]})",
                          {"variables": RENAMED_VARIABLES}))

    def sample(self, n: int, seed: int, n_steps: int | None = None, **knobs: Any) -> list[Item]:
        cfg = self.config.shifted(**knobs) if knobs else self.config
        if n_steps is not None:
            cfg = cfg.shifted(min_steps=min(cfg.min_steps, n_steps), max_steps=max(cfg.max_steps, n_steps))
        return [problem_item(p) for p in sample_problems(seed, n, cfg, n_steps=n_steps)]

    def completion(self, item: Item, fmt: str) -> str:
        self.check_formats(fmt)
        return " " + item_problem(item).completion(fmt)  # type: ignore[arg-type]

    def grade(self, item: Item, completion: str) -> Grade:
        g = grade_problem(item_problem(item), completion)
        return Grade(g.valid, g.format, g.format in self.cot_formats, None if g.answer is None else str(g.answer),
                     g.correct, g.steps_written, g.steps_correct, g.n_tokens, g.reason)

    def cot_prefix(self, item: Item) -> str:
        return " " + item_problem(item).steps[0].target

    def continuation(self, item: Item) -> str:
        """The chain restarts at its first step (re-deriving it): the vocabulary has no "Wait"."""
        return self.cot_prefix(item)

    def answer_candidates(self, item: Item) -> list[str]:
        """Every possible direct answer (a value mod 10), as completions."""
        return [f" {d}" for d in range(MOD)]

    def spans(self, item: Item, completion: str | None = None) -> dict[str, Span]:
        problem = item_problem(item)
        fmt = None
        if completion is not None:
            comp_words = completion.split()
            fmt = next((f for f in FORMATS if problem.completion_tokens(f) == comp_words), None)  # type: ignore[arg-type]
        prompt = self.prompt(item)
        spans = _word_spans(prompt) + [(a + len(prompt), b + len(prompt)) for a, b in _word_spans(completion or "")]
        named = positions(problem, fmt)  # type: ignore[arg-type]
        return {name: spans[i - 1] for name, i in named.items() if 0 < i <= len(spans)}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "config": dataclasses.asdict(self.config)}


__all__ = ["OrganismTask", "item_problem", "problem_item"]
