"""The task interface the core knows: render a prompt, force a chain of thought, grade any completion,
name positions by character spans.

The core never imports a task's module: analyses take a `Task` and models, and a task is found by name
through `interp.registry`. Character spans (not token indices) keep named positions tokenizer-agnostic:
`interp.tasks.encode` maps them to token positions through the tokenizer's offsets, for WordLevel and
byte-level BPE tokenizers alike, with or without a BOS token or a chat template.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Span = tuple[int, int]
"""Half-open character range `[start, end)` in `prompt + completion` (the completion's leading space included)."""


@dataclass(frozen=True)
class Item:
    """One problem: an id, the prompt text (no chat template), the reference answer, ground truth as metadata.

    `meta` carries what probes and analyses read (`n_steps`, `intermediate.step1`, `answer`, ...); `data`
    carries whatever the task needs to grade or re-render the item (JSON-able)."""

    id: str
    prompt: str
    answer: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "answer": self.answer, "meta": dict(self.meta),
                "data": dict(self.data)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Item:
        return cls(str(d["id"]), d["prompt"], str(d["answer"]), dict(d.get("meta", {})), dict(d.get("data", {})))


@dataclass(frozen=True)
class Grade:
    """What a completion says and whether it is right; `valid=False` with a `reason` for text that cannot
    be parsed (a grader never raises on model output).

    `format` is `direct`, one of the task's chain-of-thought formats, or `invalid`; `cot` says whether a
    chain of thought was written; steps count only for tasks that know their steps."""

    valid: bool
    format: str
    cot: bool
    answer: str | None
    correct: bool
    steps_written: int = 0
    steps_correct: int = 0
    n_tokens: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Grade:
        return cls(**dict(d))


@dataclass(frozen=True)
class TaskShift:
    """A distribution shift a task can draw items under: `sample(n, seed, n_steps=k, **knobs)` for each step
    count in `steps` (None: the task's own mix of step counts). `description` says what changes, against what
    the models were trained on."""

    name: str
    description: str
    knobs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    steps: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "knobs": dict(self.knobs),
                "steps": None if self.steps is None else list(self.steps)}


class Task(ABC):
    """A family of problems the toolkit can evaluate, harvest, probe, patch and steer on.

    Subclasses set `name`, `formats` (reference completion formats, `direct` first) and `cot_formats`
    (the subset that writes a chain of thought), and implement the abstract methods. A completion is the
    text after the prompt, its leading whitespace included, so `prompt + completion` is the whole text."""

    name: str = ""
    formats: tuple[str, ...] = ("direct",)
    cot_formats: tuple[str, ...] = ()
    has_steps: bool = False  # True when `sample(n, seed, n_steps=k)` draws items of exactly k steps
    chain_end: str = ""  # text that closes a chain of thought before its answer ('' if the task has none)

    @abstractmethod
    def sample(self, n: int, seed: int, **knobs: Any) -> list[Item]:
        """`n` items from a seeded generator (or the first `n` of a file, shuffled by `seed`)."""

    @abstractmethod
    def completion(self, item: Item, fmt: str) -> str:
        """The reference completion of `item` in format `fmt` (one of `formats`)."""

    @abstractmethod
    def grade(self, item: Item, completion: str) -> Grade:
        """Parse a completion (generated or written) and check it against the item."""

    def prompt(self, item: Item) -> str:
        """The text the model is given (a chat template, if any, is applied by the core)."""
        return item.prompt

    def cot_prefix(self, item: Item) -> str:
        """Text appended to the prompt that forces a chain of thought ('' if the task cannot force one)."""
        return ""

    def continuation(self, item: Item) -> str:
        """Text put in place of `chain_end` to make a model think on (s1's "Wait"; budget forcing by extension);
        '' if the task has none."""
        return ""

    def spans(self, item: Item, completion: str | None = None) -> dict[str, Span]:
        """Named character spans over `prompt(item) + completion`; the core maps each to the token that
        holds its last character. The default names the prompt's last character `answer` (where the first
        answer token is predicted)."""
        p = self.prompt(item)
        return {"answer": (len(p) - 1, len(p))}

    def intermediate_keys(self, item: Item) -> list[str]:
        """Metadata keys of ground-truth intermediate values (probe targets); empty if the task has none."""
        return [k for k in item.meta if k.startswith("intermediate.")]

    def describe(self) -> dict[str, Any]:
        """What identifies this task in a result's config (name and knobs)."""
        return {"name": self.name}

    def shifts(self) -> tuple[TaskShift, ...]:
        """The distribution shifts this task can draw items under (none by default: a task read from a file has
        only its own items)."""
        return ()

    def check_formats(self, fmt: str) -> None:
        if fmt not in self.formats:
            raise ValueError(f"task {self.name!r} has no format {fmt!r}; its formats are {', '.join(self.formats)}")


def require_items(items: Sequence[Item]) -> list[Item]:
    items = list(items)
    if not items:
        raise ValueError("no items: sample at least one (task.sample(n, seed))")
    return items


__all__ = ["Grade", "Item", "Span", "Task", "TaskShift", "require_items"]
