"""Organism problems as a `PromptDataset`: token ids, named positions, and the chain's values as metadata.

Metadata keys (the probe targets): `n_steps`, `value.start`, `value.step{i}` (every step, 1-based),
`intermediate.step{i}` (only steps before the last: the values a direct answer must compute silently),
`answer`; `problem` (the prompt text) groups examples of the same problem in probe splits.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerBase

from interp.activations.dataset import Example, PromptDataset
from interp.organism.positions import positions
from interp.organism.task import Format, Problem

if TYPE_CHECKING:
    from interp.models import Model


def problem_meta(problem: Problem) -> dict[str, Any]:
    """The chain's values and size, keyed as probe targets."""
    meta: dict[str, Any] = {"problem": problem.prompt(), "n_steps": problem.n_steps,
                            "value.start": problem.start_value, "answer": problem.answer}
    for i, s in enumerate(problem.steps, 1):
        meta[f"value.step{i}"] = s.value
        if i < problem.n_steps:
            meta[f"intermediate.step{i}"] = s.value
    return meta


def problem_dataset(problems: Sequence[Problem], model: Model | PreTrainedTokenizerBase, fmt: Format | None = None,
                    extra_meta: Sequence[Mapping[str, Any]] | None = None) -> PromptDataset:
    """`<bos> prompt` (fmt None) or `<bos> prompt completion(fmt)` per problem, with named positions: the
    core's `interp.tasks.task_dataset` on the organism task (same ids, positions and metadata).

    Pass the `Model`. A bare tokenizer (the organism's word-level one) is still accepted, with a
    DeprecationWarning, for callers that hold no model: it joins the task's words directly."""
    if extra_meta is not None and len(extra_meta) != len(problems):
        raise ValueError(f"{len(problems)} problems but {len(extra_meta)} extra metadata entries")
    if isinstance(model, PreTrainedTokenizerBase):
        warnings.warn("problem_dataset(problems, tokenizer) is deprecated: pass the interp.Model", DeprecationWarning,
                      stacklevel=2)
        return _word_dataset(problems, model, fmt, extra_meta)
    from interp.organism.reasoning_task import OrganismTask, problem_item
    from interp.tasks.encode import task_dataset

    return task_dataset(model, OrganismTask(), [problem_item(p) for p in problems], fmt, extra_meta=extra_meta)


def _word_dataset(problems: Sequence[Problem], tokenizer: PreTrainedTokenizerBase, fmt: Format | None,
                  extra_meta: Sequence[Mapping[str, Any]] | None) -> PromptDataset:
    examples = []
    for i, p in enumerate(problems):
        toks = p.prompt_tokens() + (p.completion_tokens(fmt) if fmt is not None else [])
        ids = (tokenizer.bos_token_id, *tokenizer.convert_tokens_to_ids(toks))
        meta = problem_meta(p) | {"format": fmt or "prompt"} | (dict(extra_meta[i]) if extra_meta else {})
        examples.append(Example(tuple(int(t) for t in ids), positions(p, fmt), meta))
    return PromptDataset(tuple(examples))


__all__ = ["problem_dataset", "problem_meta"]
