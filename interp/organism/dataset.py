"""Organism problems as a `PromptDataset`: token ids, named positions, and the chain's values as metadata.

Metadata keys (the probe targets): `n_steps`, `value.start`, `value.step{i}` (every step, 1-based),
`intermediate.step{i}` (only steps before the last: the values a direct answer must compute silently),
`answer`; `problem` (the prompt text) groups examples of the same problem in probe splits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from interp.activations.dataset import Example, PromptDataset
from interp.organism.positions import positions
from interp.organism.task import Format, Problem


def problem_meta(problem: Problem) -> dict[str, Any]:
    """The chain's values and size, keyed as probe targets."""
    meta: dict[str, Any] = {"problem": problem.prompt(), "n_steps": problem.n_steps,
                            "value.start": problem.start_value, "answer": problem.answer}
    for i, s in enumerate(problem.steps, 1):
        meta[f"value.step{i}"] = s.value
        if i < problem.n_steps:
            meta[f"intermediate.step{i}"] = s.value
    return meta


def problem_dataset(problems: Sequence[Problem], tokenizer: PreTrainedTokenizerBase, fmt: Format | None = None,
                    extra_meta: Sequence[Mapping[str, Any]] | None = None) -> PromptDataset:
    """`<bos> prompt` (fmt None) or `<bos> prompt completion(fmt)` per problem, with named positions."""
    if extra_meta is not None and len(extra_meta) != len(problems):
        raise ValueError(f"{len(problems)} problems but {len(extra_meta)} extra metadata entries")
    examples = []
    for i, p in enumerate(problems):
        toks = p.prompt_tokens() + (p.completion_tokens(fmt) if fmt is not None else [])
        ids = (tokenizer.bos_token_id, *tokenizer.convert_tokens_to_ids(toks))
        meta = problem_meta(p) | {"format": fmt or "prompt"} | (dict(extra_meta[i]) if extra_meta else {})
        examples.append(Example(tuple(int(t) for t in ids), positions(p, fmt), meta))
    return PromptDataset(tuple(examples))


__all__ = ["problem_dataset", "problem_meta"]
