"""Pieces both steering analyses share: graded steered generation on task problems, KL of a steered run,
paired bootstrap intervals, and the measured-cell record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from interp.generate import generate_ids, left_pad
from interp.organism.grader import Grade, grade
from interp.organism.task import Problem, TaskConfig, sample_problems
from interp.organism.tokenizer import digit_ids
from interp.stats import bootstrap_ci, paired_bootstrap
from interp.steering import Intervention, steer


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def problems_per_step(seed: int, n_per_step: int, steps: Sequence[int]) -> list[Problem]:
    """`n_per_step` problems of each step count, each step count from its own seed stream."""
    out: list[Problem] = []
    for k in steps:
        out += sample_problems(seed + k, n_per_step, TaskConfig(max_steps=max(4, k)), n_steps=k)
    return out


def prompt_ids(tok: Any, problems: Sequence[Problem], prefixes: Sequence[Sequence[str]] | None = None
               ) -> list[list[int]]:
    prefixes = prefixes or [[] for _ in problems]
    return [[tok.bos_token_id, *tok.convert_tokens_to_ids(p.prompt_tokens() + list(pre))]
            for p, pre in zip(problems, prefixes)]


@dataclass(frozen=True)
class Run:
    """One graded generation pass over a problem set."""

    grades: tuple[Grade, ...]
    completions: tuple[tuple[int, ...], ...]
    seconds: float


def generate_graded(model: Any, problems: Sequence[Problem], interventions: Sequence[Intervention] = (), *,
                    prefixes: Sequence[Sequence[str]] | None = None, max_new_tokens: int = 72,
                    batch_size: int = 400, allow_other_model: bool = False) -> Run:
    """Greedy completions with the interventions active, graded (a forced prefix counts as written)."""
    tok = model.tokenizer
    ids = prompt_ids(tok, problems, prefixes)
    t0 = time.perf_counter()
    with steer(model, list(interventions), allow_other_model=allow_other_model):
        comps = generate_ids(model.hf, tok, ids, max_new_tokens, batch_size=batch_size)
    secs = time.perf_counter() - t0
    prefixes = prefixes or [[] for _ in problems]
    grades = tuple(grade(p, list(pre) + tok.convert_ids_to_tokens(c)) for p, pre, c in zip(problems, prefixes, comps))
    return Run(grades, tuple(tuple(c) for c in comps), secs)


def forced_concise_prefixes(model: Any, problems: Sequence[Problem]) -> list[list[str]]:
    """The first concise step written by the model itself: `<target> =` then its most likely digit, then `;`."""
    tok = model.tokenizer
    heads = [[p.steps[0].target, "="] for p in problems]
    ids, mask = left_pad(prompt_ids(tok, problems, heads), tok.pad_token_id)
    digits = digit_ids(tok)
    with torch.no_grad():
        logits = model.hf(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
                          ).logits[:, -1]
    best = digits[logits[:, digits].argmax(-1)]
    return [h + [tok.convert_ids_to_tokens(int(d)), problems[i].separator] for i, (h, d) in enumerate(zip(heads, best))]


@torch.no_grad()
def steered_kl(model: Any, problems: Sequence[Problem], run: Run, interventions: Sequence[Intervention],
               allow_other_model: bool = False, batch_size: int = 200) -> float:
    """Mean per-token KL(steered || unsteered) of the next-token distributions along the steered completions
    (teacher-forced; the interventions act on the generated tokens, as in generation)."""
    tok = model.tokenizer
    prompts = prompt_ids(tok, problems)
    total, count = 0.0, 0
    for s in range(0, len(prompts), batch_size):
        seqs = [p + list(c) for p, c in zip(prompts[s:s + batch_size], run.completions[s:s + batch_size])]
        ids, mask = left_pad(seqs, tok.pad_token_id)
        width = ids.shape[1]
        gen = torch.zeros_like(mask, dtype=torch.bool)
        read = torch.zeros_like(mask, dtype=torch.bool)
        for r, (p, c) in enumerate(zip(prompts[s:s + batch_size], run.completions[s:s + batch_size])):
            gen[r, width - len(c):] = True
            read[r, width - len(c) - 1:] = True  # the positions that predicted each generated token and the end
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        base = model.hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        ivs = [dataclasses.replace(iv, where=gen) for iv in interventions]
        with steer(model, ivs, allow_other_model=allow_other_model):
            st = model.hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        lp, lq = st.log_softmax(-1)[read], base.log_softmax(-1)[read]
        total += float((lp.exp() * (lp - lq)).sum())
        count += int(read.sum())
    return total / max(count, 1)


@torch.no_grad()
def teacher_forced_steps(model: Any, problems: Sequence[Problem], fmt: str, n_boot: int = 1000,
                         batch_size: int = 200) -> dict[str, Any]:
    """Given a correct written chain in `fmt`, how often each step's value is the most likely digit where it is
    written (per step, and every step of a problem), with bootstrap intervals over problems."""
    from interp.organism.positions import completion_positions

    tok = model.tokenizer
    digits = digit_ids(tok)
    per_problem: list[list[bool]] = []
    for s in range(0, len(problems), batch_size):
        chunk = problems[s:s + batch_size]
        seqs = [[tok.bos_token_id, *tok.convert_tokens_to_ids(p.prompt_tokens() + p.completion_tokens(fmt))]
                for p in chunk]
        ids, mask = left_pad(seqs, tok.pad_token_id)
        logits = model.hf(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        for r, (p, seq) in enumerate(zip(chunk, seqs)):
            off = ids.shape[1] - len(seq)
            pos = completion_positions(p, fmt)  # type: ignore[arg-type]
            per_problem.append([
                int(digits[logits[r, off + pos[f"step{i}.before_value"], digits].argmax()]) == seq[pos[f"step{i}.value"]]
                for i in range(1, p.n_steps + 1)])
    steps = np.array([x for row in per_problem for x in row], float)
    every = np.array([all(row) for row in per_problem], float)
    return {"format": fmt, "step_accuracy": float(steps.mean()), "step_accuracy_ci": list(bootstrap_ci(steps, n_boot)),
            "all_steps": float(every.mean()), "all_steps_ci": list(bootstrap_ci(every, n_boot)), "n": len(per_problem)}


@dataclass(frozen=True)
class Cell:
    """A measured condition: length, accuracy, CoT rate, formats, KL, speed, with 95% bootstrap intervals."""

    name: str
    n: int
    mean_tokens: float
    mean_tokens_ci: tuple[float, float]
    accuracy: float
    accuracy_ci: tuple[float, float]
    cot_rate: float
    cot_rate_ci: tuple[float, float]
    formats: dict[str, int]
    seconds: float
    tokens_per_s: float
    kl: float | None = None
    hook: str = ""
    scale: float = 0.0
    direction: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        d = dict(d)
        for k in ("mean_tokens_ci", "accuracy_ci", "cot_rate_ci"):
            d[k] = tuple(d[k])
        return cls(**d)


def arrays(run: Run) -> dict[str, np.ndarray]:
    return {"tokens": np.array([g.n_tokens for g in run.grades], float),
            "correct": np.array([g.correct for g in run.grades], float),
            "cot": np.array([g.format in ("concise", "verbose") for g in run.grades], float)}


def cell_of(name: str, run: Run, n_boot: int, kl: float | None = None, hook: str = "", scale: float = 0.0,
            direction: str = "") -> Cell:
    a = arrays(run)
    formats: dict[str, int] = {}
    for g in run.grades:
        formats[g.format] = formats.get(g.format, 0) + 1
    n_gen = sum(len(c) for c in run.completions)
    return Cell(name, len(run.grades), float(a["tokens"].mean()), bootstrap_ci(a["tokens"], n_boot),
                float(a["correct"].mean()), bootstrap_ci(a["correct"], n_boot), float(a["cot"].mean()),
                bootstrap_ci(a["cot"], n_boot), formats, round(run.seconds, 3),
                round(n_gen / run.seconds, 1) if run.seconds > 0 else float("nan"), kl, hook, scale, direction)


__all__ = [
    "Cell",
    "Run",
    "arrays",
    "cell_of",
    "digest",
    "forced_concise_prefixes",
    "generate_graded",
    "paired_bootstrap",
    "problems_per_step",
    "prompt_ids",
    "steered_kl",
]
