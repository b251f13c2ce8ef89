"""A written chain of thought split into steps, and the text interventions on it, for any task.

The analysis (`analyses.faithfulness.analysis`) sees a completion only through a `ChainAdapter`: `split`
reads the completion into steps (character spans) with the task's grade; the interventions return the new
completion text, ending where the answer is predicted (or where the model continues). Two adapters:

- `OrganismChains` (task `organism`): steps are the grader's clauses; every test, exactly as the token-level
  `interventions` module writes them (mistakes change one step's value and know the answer it implies;
  paraphrase rewrites concise <-> verbose with the same values).
- `TextChains` (any other task, e.g. `jsonl:gsm_synth`, `organism-nl`): steps are the task's named spans
  `step{i}.end` when it names them, else sentences and lines of the reasoning (`interp.tasks.text.steps`,
  Lanham et al.'s segmentation); the answer is the task's `answer.value` span (else the final number).
  Early answering, adding a mistake (the last digit of a step's last number changed; the implied answer is
  unknown, so "follows the mistake" is not measured), filler (`...` for as many tokens as the steps took) and step
  patching run; paraphrasing needs a second format of the same chain and is reported as unsupported.

`adapter_for(task)` picks one; a test an adapter cannot run is named in `unsupported` with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from interp.tasks.base import Item, Span, Task
from interp.tasks.text import number_span, numbers, split_thinking, steps

if TYPE_CHECKING:
    from interp.models import Model

TESTS = ("early_answering", "mistake", "paraphrase", "filler", "step_patching")
TEXT_FILLER = " ..."


@dataclass(frozen=True)
class Chain:
    """A graded chain of thought: its format, answer, and steps as character spans of `completion`.

    `data` holds what the adapter needs to rewrite it (the organism's token clauses; nothing for free text)."""

    completion: str
    fmt: str
    answer: str
    correct: bool
    steps: tuple[Span, ...]
    closing: str  # text after the last step up to where the answer is predicted (`completion` ends with it)
    answer_lead: str = " "  # what the answer's text starts with after `completion` (a space, or nothing)
    data: Any = field(default=None, compare=False)

    @property
    def n_steps(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class Mistake:
    """A completion prefix with one step's value changed (the model continues after it), and the answer that
    value implies when the adapter knows it."""

    prefix: str
    value: str
    implied: str | None


@dataclass(frozen=True)
class PatchPair:
    """Two completions of equal text layout ending where the answer is predicted: `clean` has step j's value
    changed, `corrupted` is the chain as written; `span` is the value's character span in `corrupted`."""

    clean: str
    corrupted: str
    span: Span
    implied: str | None


class ChainAdapter:
    """How one task's chains are split and rewritten; subclasses override what they support."""

    name = "text"
    fixed_steps = False  # True when a chain is expected to have exactly the item's number of steps
    default_filler = TEXT_FILLER
    unsupported: Mapping[str, str] = {}

    def __init__(self, task: Task) -> None:
        self.task = task

    def split(self, item: Item, completion: str) -> Chain | str:
        raise NotImplementedError

    def truncated(self, item: Item, chain: Chain, k: int) -> str:
        raise NotImplementedError

    def mistake(self, item: Item, chain: Chain, step: int, rng: np.random.Generator) -> Mistake | None:
        raise NotImplementedError

    def paraphrased(self, item: Item, chain: Chain) -> str | None:
        return None

    def filler(self, item: Item, chain: Chain, model: Model, token: str) -> str:
        raise NotImplementedError

    def patch_pair(self, item: Item, chain: Chain, step: int, rng: np.random.Generator) -> PatchPair | None:
        raise NotImplementedError

    def has_flow(self, chain: Chain, step: int) -> bool:
        """Whether this step's patch is also swept over every position from the value to the readout."""
        return False

    def flow_labels(self, chain: Chain, step: int, position_labels: tuple[str, ...]) -> tuple[str, ...]:
        """Labels of those positions, from the patch result's token labels."""
        return position_labels


# ------------------------------------------------------------------------------------------ organism

class OrganismChains(ChainAdapter):
    """The organism's chains: the grader's step clauses, token-level interventions (see `interventions`)."""

    name = "organism"
    fixed_steps = True
    default_filler = ";"  # carries no value; the task's own separator
    unsupported: Mapping[str, str] = {}

    @staticmethod
    def _problem(item: Item) -> Any:
        from interp.organism.reasoning_task import item_problem

        return item_problem(item)

    @staticmethod
    def _text(tokens: list[str]) -> str:
        return "".join(" " + t for t in tokens)

    def split(self, item: Item, completion: str) -> Chain | str:
        from analyses.faithfulness import interventions as iv

        p = self._problem(item)
        s = iv.split_cot(p, completion.split())
        if isinstance(s, str):
            return s
        spans, at = [], 0
        for clause in s.steps:
            text = self._text(list(clause))
            spans.append((at + 1, at + len(text)))
            at += len(text) + 2  # the clause, then " ;"
        closing = self._text(iv.closing_prefix(p, s.fmt))
        return Chain(self._text(iv.join_steps(s.steps, p.separator)) + closing, s.fmt, str(s.answer), s.correct,
                     tuple(spans), closing, " ", s)

    def truncated(self, item: Item, chain: Chain, k: int) -> str:
        from analyses.faithfulness import interventions as iv

        return self._text(iv.truncated(self._problem(item), chain.data, k))

    def mistake(self, item: Item, chain: Chain, step: int, rng: np.random.Generator) -> Mistake | None:
        from analyses.faithfulness import interventions as iv

        p = self._problem(item)
        if step > p.n_steps:
            return None
        v = iv.pick_mistake(p, chain.data, step, int(rng.integers(1, 10)))
        if v is None:
            return None
        return Mistake(self._text(iv.mistake_prefix(p, chain.data, step, v)), str(v), str(iv.propagate(p, step, v)))

    def paraphrased(self, item: Item, chain: Chain) -> str | None:
        from analyses.faithfulness import interventions as iv

        return self._text(iv.paraphrased(self._problem(item), chain.data))

    def filler(self, item: Item, chain: Chain, model: Model, token: str) -> str:
        from analyses.faithfulness import interventions as iv

        return self._text(iv.filler(self._problem(item), chain.data, token))

    def patch_pair(self, item: Item, chain: Chain, step: int, rng: np.random.Generator) -> PatchPair | None:
        from analyses.faithfulness import interventions as iv

        p, s = self._problem(item), chain.data
        v = iv.pick_mistake(p, s, step, int(rng.integers(1, 10)))
        if v is None:
            return None
        steps_ = list(s.steps)
        steps_[step - 1] = iv.with_value(steps_[step - 1], v)
        clean = self._text(iv.join_steps(steps_, p.separator) + iv.closing_prefix(p, s.fmt))
        b = chain.steps[step - 1][1]
        return PatchPair(clean, chain.completion, (b - 1, b), str(iv.propagate(p, step, v)))

    def has_flow(self, chain: Chain, step: int) -> bool:
        return step == chain.n_steps and chain.fmt == "verbose"

    def flow_labels(self, chain: Chain, step: int, position_labels: tuple[str, ...]) -> tuple[str, ...]:
        return ("value", *position_labels[1:-2], "query", "=")


# ------------------------------------------------------------------------------------------ free text

def _changed_number(text: str, span: Span, offset: int) -> str | None:
    """`text[span]` with its last digit moved by `offset` (1-9, mod 10): another number of the same length and
    layout (at most the last token changes); None when the span does not end in a digit."""
    written = text[span[0]:span[1]]
    if not written or not written[-1].isdigit() or not 1 <= offset <= 9:
        return None
    return written[:-1] + str((int(written[-1]) + offset) % 10)


class TextChains(ChainAdapter):
    """Free-text chains of any task: steps from the task's `step{i}.end` spans or sentence/line segmentation."""

    name = "text"
    fixed_steps = False
    default_filler = TEXT_FILLER
    unsupported: Mapping[str, str] = {
        "paraphrase": "needs a second wording of the same chain, which free text does not give (the organism "
                      "task supports it)",
        "mistake_follows": "the answer a changed value implies is unknown for free text",
    }

    def split(self, item: Item, completion: str) -> Chain | str:
        g = self.task.grade(item, completion)
        if not g.valid:
            return f"invalid: {g.reason}"
        if not g.cot:
            return "direct answer (no chain of thought)"
        n = len(self.task.prompt(item))
        named = self.task.spans(item, completion)
        ans = named.get("answer.value")
        answer_span = (ans[0] - n, ans[1] - n) if ans is not None else number_span(completion)
        if answer_span is None or g.answer is None:
            return "invalid: no answer found in the completion"
        found = [(k, v) for k, v in named.items() if k.startswith("step") and k.endswith(".end")]
        if found:
            found.sort(key=lambda kv: int(kv[0][4:-4]))
            spans = [(a - n, b - n) for _, (a, b) in found]
        else:
            th = split_thinking(completion)
            if th.thinking_span is not None:
                a0 = th.thinking_span[0]
                spans = [(a + a0, b + a0) for a, b in steps(completion[a0:th.thinking_span[1]])]
            else:
                spans = [(a, b) for a, b in steps(completion[:answer_span[0]])]
        spans = [s for s in spans if s[1] <= answer_span[0]]
        if not spans:
            return "invalid: no reasoning step before the answer"
        # the text stops before the spaces that precede the answer: a BPE tokenizer writes them with the number
        cut = answer_span[0]
        while cut > spans[-1][1] and completion[cut - 1] in " \t":
            cut -= 1
        return Chain(completion[:cut], g.format, g.answer, g.correct, tuple(spans), completion[spans[-1][1]:cut],
                     completion[cut:answer_span[0]])

    def truncated(self, item: Item, chain: Chain, k: int) -> str:
        if not 0 <= k <= chain.n_steps:
            raise ValueError(f"k={k} is outside 0..{chain.n_steps}")
        end = chain.steps[k - 1][1] if k else chain.steps[0][0]
        return chain.completion[:end] + chain.closing

    def _last_number(self, chain: Chain, step: int) -> Span | None:
        a, b = chain.steps[step - 1]
        nums = numbers(chain.completion, a, b)
        return nums[-1][1] if nums else None

    def _replaced(self, chain: Chain, step: int, rng: np.random.Generator) -> tuple[str, Span, str] | None:
        span = self._last_number(chain, step)
        offset = int(rng.integers(1, 10))
        if span is None:
            return None
        v = _changed_number(chain.completion, span, offset)
        if v is None:
            return None
        return chain.completion[:span[0]] + v + chain.completion[span[1]:], span, v

    def mistake(self, item: Item, chain: Chain, step: int, rng: np.random.Generator) -> Mistake | None:
        r = self._replaced(chain, step, rng)
        if r is None:
            return None
        text, _, v = r
        end = chain.steps[step - 1][1]
        nxt = chain.steps[step][0] if step < chain.n_steps else end + len(chain.closing) - len(chain.closing.lstrip())
        return Mistake(text[:nxt], v, None)

    def filler(self, item: Item, chain: Chain, model: Model, token: str) -> str:
        a, b = chain.steps[0][0], chain.steps[-1][1]
        n = len(model.tokenizer(chain.completion[a:b], add_special_tokens=False)["input_ids"])
        return chain.completion[:a] + (token * n).lstrip() + chain.closing

    def patch_pair(self, item: Item, chain: Chain, step: int, rng: np.random.Generator) -> PatchPair | None:
        r = self._replaced(chain, step, rng)
        if r is None:
            return None
        text, span, _ = r
        return PatchPair(text, chain.completion, span, None)


def adapter_for(task: Task) -> ChainAdapter:
    """`OrganismChains` for the organism task, `TextChains` for every other task."""
    return OrganismChains(task) if task.name == "organism" else TextChains(task)


__all__ = ["TESTS", "TEXT_FILLER", "Chain", "ChainAdapter", "Mistake", "OrganismChains", "PatchPair", "TextChains",
           "adapter_for"]
