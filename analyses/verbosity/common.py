"""Pieces both steering analyses share: graded steered generation on task problems, KL of a steered run,
paired bootstrap intervals, and the measured-cell record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from interp.generate import context_length, generate_ids, left_pad, new_token_allowance
from interp.stats import bootstrap_ci, paired_bootstrap
from interp.steering import Intervention, steer
from interp.tasks.base import Grade, Item, Task
from interp.tasks.encode import encode_text, task_dataset

if TYPE_CHECKING:
    from interp.models import Model


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def items_per_step(task: Task, seed: int, n_per_step: int, steps: Sequence[int]) -> list[Item]:
    """`n_per_step` items of each step count, each step count from its own seed stream (`seed + k`); an empty
    `steps` gives `n_per_step` items of the task without a step count."""
    if not steps:
        return task.sample(n_per_step, seed)
    out: list[Item] = []
    for k in steps:
        out += task.sample(n_per_step, seed + k, n_steps=k)
    return out


def chat_of(task: Task) -> bool:
    """Whether prompts go through the chat template (a task that decides it, e.g. JSONL's `chat`)."""
    return bool(getattr(task, "chat", False))


def prompt_ids(model: Model, task: Task, items: Sequence[Item], prefixes: Sequence[str] | None = None
               ) -> list[list[int]]:
    """Ids of each item's prompt (BOS by the model's rule, or its chat template), then its prefix if given."""
    prefixes = prefixes or ["" for _ in items]
    return [list(encode_text(model, task.prompt(it), pre, chat_of(task)).ids) for it, pre in zip(items, prefixes)]


@dataclass(frozen=True)
class Run:
    """One graded generation pass over a problem set."""

    grades: tuple[Grade, ...]
    completions: tuple[tuple[int, ...], ...]
    seconds: float


def generate_graded(model: Model, task: Task, items: Sequence[Item], interventions: Sequence[Intervention] = (), *,
                    prefixes: Sequence[str] | None = None, max_new_tokens: int = 72,
                    batch_size: int = 400, allow_other_model: bool = False) -> Run:
    """Greedy completions with the interventions active (on generated tokens), graded by the task (a forced
    prefix counts as written)."""
    tok = model.tokenizer
    encs = _encodings(model, task, items, prefixes)
    ids = [list(e.ids) for e in encs]
    t0 = time.perf_counter()
    with steer(model, list(interventions), allow_other_model=allow_other_model):
        comps = generate_ids(model.hf, tok, ids, max_new_tokens, batch_size=batch_size)
    return _graded(model, task, items, encs, comps, time.perf_counter() - t0)


def _encodings(model: Model, task: Task, items: Sequence[Item], prefixes: Sequence[str] | None) -> list[Any]:
    chat = chat_of(task)
    prefixes = prefixes or ["" for _ in items]
    return [encode_text(model, task.prompt(it), pre, chat) for it, pre in zip(items, prefixes)]


def _graded(model: Model, task: Task, items: Sequence[Item], encs: Sequence[Any], comps: Sequence[Sequence[int]],
            seconds: float) -> Run:
    tok = model.tokenizer
    grades = []
    for it, e, c in zip(items, encs, comps):
        g = task.grade(it, tok.decode(list(e.ids[e.n_prompt:]) + list(c), skip_special_tokens=False))
        # the task's own count when it makes one (the organism's stops at its stop tokens), else every token
        grades.append(g if g.n_tokens else dataclasses.replace(g, n_tokens=len(e.ids) - e.n_prompt + len(c)))
    return Run(tuple(grades), tuple(tuple(c) for c in comps), seconds)


# rows per batched generate call of `generate_graded_many`: on the organism's verbosity sweep (200 items a
# condition, 1 CPU thread, load ~13 on 2 cores) 12 conditions took 14.5 s CPU one at a time, 14.4 s at 400 rows a
# call, 13.2 s at 800 and 18.4 s at 2000 (cached decoding costs per row and step, not per call: a wide batch also
# runs until its longest row ends)
MAX_ROWS = 800


def generate_graded_many(model: Model, task: Task, items: Sequence[Item],
                         conditions: Sequence[Sequence[Intervention]], *, prefixes: Sequence[str] | None = None,
                         max_new_tokens: int = 72, batch_size: int = 400, allow_other_model: bool = False,
                         max_rows: int = MAX_ROWS, desc: str | None = None) -> list[Run]:
    """`generate_graded` for each condition (a list of interventions), with the same greedy completions and
    grades: the items are replicated once per condition and each copy steered on its own rows (`rows`), so one
    generate call holds up to `max_rows` rows. Each call holds the rows `generate_graded` would batch together
    (a `batch_size` chunk of items with one new-token allowance), so every row sees the same padding. A
    condition's `seconds` is its share of its calls' time; `desc` shows a progress bar over the calls."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    conditions = [list(c) for c in conditions]
    for c in conditions:
        for iv in c:
            if iv.rows is not None:
                raise ValueError(f"an intervention of a condition already names rows ({iv.describe()}); each "
                                 f"condition's rows are set here")
    tok = model.tokenizer
    encs = _encodings(model, task, items, prefixes)
    ids = [list(e.ids) for e in encs]
    ctx = context_length(model.hf)
    parts: dict[tuple[int, int], list[int]] = {}  # (chunk, allowance) -> item indices: generate_ids' own batches
    for i, p in enumerate(ids):
        parts.setdefault((i // batch_size, -new_token_allowance(len(p), ctx, max_new_tokens)), []).append(i)
    comps: list[list[list[int]]] = [[[] for _ in ids] for _ in conditions]
    secs = [0.0] * len(conditions)
    calls = [(part, range(g0, min(g0 + per, len(conditions)))) for part in parts.values()
             for per in [max(1, max_rows // len(part))] for g0 in range(0, len(conditions), per)]
    for part, group in tqdm(calls, desc=desc, disable=desc is None):
        n = len(part)
        rows = [ids[i] for _ in group for i in part]
        ivs = [dataclasses.replace(iv, rows=range(k * n, (k + 1) * n)) for k, c in enumerate(group)
               for iv in conditions[c]]
        t0 = time.perf_counter()
        with steer(model, ivs, allow_other_model=allow_other_model):  # one call: rows never re-chunked
            out = generate_ids(model.hf, tok, rows, max_new_tokens, batch_size=len(rows))
        dt = time.perf_counter() - t0
        for k, c in enumerate(group):
            secs[c] += dt / len(group)
            for j, i in enumerate(part):
                comps[c][i] = out[k * n + j]
    return [_graded(model, task, items, encs, comps[c], secs[c]) for c in range(len(conditions))]


def forced_concise_prefixes(model: Model, task: Task, items: Sequence[Item]) -> list[str]:
    """The organism's first concise step written by the model itself: `<target> =` then its most likely digit,
    then `;` (the "prompt the concise format" condition; the organism task only)."""
    from interp.organism.reasoning_task import item_problem

    if task.name != "organism":
        raise ValueError(f"forcing the concise format's first step needs the organism task, not {task.name!r}")
    tok = model.tokenizer
    problems = [item_problem(it) for it in items]
    heads = [f" {p.steps[0].target} =" for p in problems]
    ids, mask = left_pad(prompt_ids(model, task, items, heads), model.pad_token_id, model.device)
    cands = [model.to_single_token(c) for c in task.answer_candidates(items[0])]  # type: ignore[attr-defined]
    digits = torch.tensor(cands)
    with torch.no_grad():
        logits = model.hf(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
                          ).logits[:, -1].cpu()
    best = digits[logits[:, digits].argmax(-1)]
    return [f"{h} {tok.convert_ids_to_tokens(int(d))} {p.separator}" for h, d, p in zip(heads, best, problems)]


@torch.no_grad()
def steered_kl(model: Model, task: Task, items: Sequence[Item], run: Run, interventions: Sequence[Intervention],
               allow_other_model: bool = False, batch_size: int = 200) -> float:
    """Mean per-token KL(steered || unsteered) of the next-token distributions along the steered completions
    (teacher-forced; the interventions act on the generated tokens, as in generation)."""
    prompts = prompt_ids(model, task, items)
    total, count = 0.0, 0
    for s in range(0, len(prompts), batch_size):
        seqs = [p + list(c) for p, c in zip(prompts[s:s + batch_size], run.completions[s:s + batch_size])]
        ids, mask = left_pad(seqs, model.pad_token_id, model.device)
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
def teacher_forced_steps(model: Model, task: Task, items: Sequence[Item], fmt: str, n_boot: int = 1000,
                         batch_size: int = 200) -> dict[str, Any]:
    """Given the reference chain in `fmt`, how often each step's value is the most likely token where it is
    written (among the task's answer candidates when it lists them), per step and every step of a problem, with
    bootstrap intervals over problems. Needs a task naming `step{i}.value` and `step{i}.before_value` in its
    reference completions (the organism does); otherwise a dict saying so."""
    data = task_dataset(model, task, items, fmt=fmt, chat=chat_of(task))
    if not any("step1.value" in e.positions for e in data.examples):
        return {"format": fmt, "unsupported": f"task {task.name!r} names no step{{i}}.value position in its "
                                               f"{fmt!r} completions", "n": 0}
    cands = getattr(task, "answer_candidates", None)
    allowed = torch.tensor([model.to_single_token(c) for c in cands(items[0])]) if cands is not None else None
    per_problem: list[list[bool]] = []
    for s in range(0, len(data.examples), batch_size):
        chunk = data.examples[s:s + batch_size]
        seqs = [list(e.ids) for e in chunk]
        ids, mask = left_pad(seqs, model.pad_token_id, model.device)
        logits = model.hf(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        for r, (e, seq) in enumerate(zip(chunk, seqs)):
            off = ids.shape[1] - len(seq)
            row = []
            i = 1
            while f"step{i}.value" in e.positions:
                lg = logits[r, off + e.positions[f"step{i}.before_value"]].cpu()
                best = int(allowed[lg[allowed].argmax()]) if allowed is not None else int(lg.argmax())
                row.append(best == seq[e.positions[f"step{i}.value"]])
                i += 1
            per_problem.append(row)
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
            "cot": np.array([g.cot for g in run.grades], float)}


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
    "chat_of",
    "digest",
    "forced_concise_prefixes",
    "generate_graded",
    "generate_graded_many",
    "items_per_step",
    "paired_bootstrap",
    "prompt_ids",
    "steered_kl",
    "teacher_forced_steps",
]
