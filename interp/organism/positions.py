"""Named token positions of an organism problem: where each value sits in `<bos> prompt completion`.

Probes, patching and steering address the task's structure by name instead of by index:
`answer` is the prompt's last token (`:` of `A :`, where the first answer token is predicted),
`step{i}.value` is the i-th step's value token in a written chain of thought (1-based), and
`step{i}.before_value` the token just before it (where that value is predicted). Prompt-side names
(`prompt.start_value`, `prompt.step{i}.operand`, `prompt.step{i}.end` (the separator closing step i's
clause), `prompt.query`) locate what the model reads.
Indices count the BOS token, matching the ids the organism tokenizer produces.
"""

from __future__ import annotations

from interp.organism.task import FORMATS, Format, Problem

ANSWER = "answer"


def prompt_positions(problem: Problem) -> dict[str, int]:
    """Positions of the prompt's landmarks in `<bos> prompt` (index 0 is BOS)."""
    toks = problem.prompt_tokens()
    out: dict[str, int] = {}
    targets = {s.target: i + 1 for i, s in enumerate(problem.steps)}
    for j in range(len(toks) - 2):
        # every clause starts with `name =`; a step clause is `target = source op operand`
        if toks[j + 1] != "=" or (j > 0 and toks[j - 1] not in (problem.separator, ":")):
            continue
        name = toks[j]
        if name == problem.start_var:
            out["prompt.start_value"] = 1 + j + 2
            out["prompt.start.end"] = 1 + j + 3
        elif name in targets:
            i = targets[name]
            out[f"prompt.step{i}.op"] = 1 + j + 3
            out[f"prompt.step{i}.operand"] = 1 + j + 4
            out[f"prompt.step{i}.end"] = 1 + j + 5  # the separator closing the clause
    out["prompt.query"] = 1 + len(toks) - 4
    out[ANSWER] = len(toks)  # the last prompt token, `:`
    return out


def completion_positions(problem: Problem, fmt: Format) -> dict[str, int]:
    """Positions inside the written completion, counted from the start of `<bos> prompt completion`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid formats are {FORMATS}")
    start = 1 + len(problem.prompt_tokens())
    comp = problem.completion_tokens(fmt)
    if fmt == "direct":
        return {"final.value": start, "final.before_value": start - 1}
    out: dict[str, int] = {}
    per_step = 4 if fmt == "concise" else 12
    value_offset = 2 if fmt == "concise" else 10
    for i in range(problem.n_steps):
        pos = start + i * per_step + value_offset
        out[f"step{i + 1}.value"] = pos
        out[f"step{i + 1}.before_value"] = pos - 1
    out["so"] = start + problem.n_steps * per_step
    out["final.value"] = start + len(comp) - 1
    out["final.before_value"] = start + len(comp) - 2
    return out


def positions(problem: Problem, fmt: Format | None = None) -> dict[str, int]:
    """All named positions of `<bos> prompt` (fmt None) or of `<bos> prompt completion(fmt)`."""
    out = prompt_positions(problem)
    if fmt is not None:
        out.update(completion_positions(problem, fmt))
    return out


__all__ = ["ANSWER", "completion_positions", "positions", "prompt_positions"]
