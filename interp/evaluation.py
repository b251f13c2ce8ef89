"""Evaluate any model on any task: generate (free, forced chain of thought, or forced direct answer),
grade with the task, and report per group (number of steps by default) with bootstrap intervals.

The JSON shape of `TaskEval.summary()` (`{"model", "by_steps": {"1": {n, accuracy, cot_rate,
mean_tokens}}}`) is the one `interp eval --json` prints for every task.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from interp.batching import map_batches
from interp.generate import generate_ids
from interp.scoring import completion_logprobs
from interp.stats import bootstrap_ci
from interp.tasks.base import Grade, Item, Task, require_items
from interp.tasks.encode import encode_text

if TYPE_CHECKING:
    from interp.models import Model

Force = Literal["free", "cot", "direct"]


@dataclass(frozen=True)
class GenerationConfig:
    """How completions are produced: free, with the task's chain-of-thought prefix, or the most likely
    direct answer among the task's candidates; greedy unless `temperature > 0` (then seeded)."""

    force: Force = "free"
    max_new_tokens: int = 72
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 256
    chat: bool = False

    def __post_init__(self) -> None:
        if self.force not in ("free", "cot", "direct"):
            raise ValueError(f"force must be 'free', 'cot' or 'direct', got {self.force!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationConfig:
        return cls(**dict(d))


@dataclass(frozen=True)
class GroupStats:
    """Accuracy, chain-of-thought rate and length over one group of items, with 95% bootstrap intervals."""

    n: int
    accuracy: float
    cot_rate: float
    mean_tokens: float
    invalid_rate: float
    accuracy_ci: tuple[float, float]
    cot_rate_ci: tuple[float, float]
    mean_tokens_ci: tuple[float, float]
    formats: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupStats:
        d = dict(d)
        for k in ("accuracy_ci", "cot_rate_ci", "mean_tokens_ci"):
            d[k] = tuple(d[k])
        return cls(**d)

    @classmethod
    def of(cls, grades: Sequence[Grade], n_boot: int = 1000, seed: int = 0) -> GroupStats:
        acc = np.array([g.correct for g in grades], dtype=float)
        cot = np.array([g.cot for g in grades], dtype=float)
        ntok = np.array([g.n_tokens for g in grades], dtype=float)
        formats: dict[str, int] = {}
        for g in grades:
            formats[g.format] = formats.get(g.format, 0) + 1
        return cls(len(grades), float(acc.mean()), float(cot.mean()), float(ntok.mean()),
                   float(np.mean([not g.valid for g in grades])), bootstrap_ci(acc, n_boot, seed),
                   bootstrap_ci(cot, n_boot, seed), bootstrap_ci(ntok, n_boot, seed), formats)


@dataclass(frozen=True)
class TaskEval:
    """Every item's completion and grade, and statistics per group."""

    model: str
    checksum: str
    task: Mapping[str, Any]
    config: GenerationConfig
    items: tuple[Item, ...]
    completions: tuple[str, ...]
    grades: tuple[Grade, ...]
    by_group: Mapping[str, GroupStats]
    group_by: str = "n_steps"

    def summary(self) -> dict[str, Any]:
        """The stable JSON shape scripts read: model and per-group n, accuracy, cot_rate, mean_tokens."""
        return {"model": self.model, "by_steps": {
            k: {"n": s.n, "accuracy": s.accuracy, "cot_rate": s.cot_rate, "mean_tokens": s.mean_tokens}
            for k, s in self.by_group.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "checksum": self.checksum, "task": dict(self.task),
                "config": self.config.to_dict(), "group_by": self.group_by,
                "items": [i.to_dict() for i in self.items], "completions": list(self.completions),
                "grades": [g.to_dict() for g in self.grades],
                "by_group": {k: v.to_dict() for k, v in self.by_group.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskEval:
        return cls(d["model"], d["checksum"], d["task"], GenerationConfig.from_dict(d["config"]),
                   tuple(Item.from_dict(i) for i in d["items"]), tuple(d["completions"]),
                   tuple(Grade.from_dict(g) for g in d["grades"]),
                   {k: GroupStats.from_dict(v) for k, v in d["by_group"].items()}, d.get("group_by", "n_steps"))


def _candidates(model: Model, task: Task, items: Sequence[Item]) -> tuple[list[list[str]], list[list[list[int]]]]:
    """Each item's candidate answers (texts) and their token ids, for a forced direct answer."""
    cands = getattr(task, "answer_candidates", None)
    if cands is None:
        raise ValueError(f"task {task.name!r} cannot force a direct answer: it lists no answer_candidates(item)")
    per_item = [list(cands(it)) for it in items]
    ids = [[[int(t) for t in model.tokenizer(c, add_special_tokens=False)["input_ids"]] for c in cs]
           for cs in per_item]
    return per_item, ids


def _forced_direct(model: Model, task: Task, items: list[Item], prompts: list[list[int]],
                   cfg: GenerationConfig) -> tuple[list[str], list[int]]:
    """The most likely of the task's candidate answers after each prompt (sequence log-probability). When every
    candidate is one token, one forward per prompt reads them all at its last position (the same argmax)."""
    per_item, ids = _candidates(model, task, items)
    if all(len(c) == 1 for cs in ids for c in cs):
        from interp.models import right_pad

        def best(chunk: list[int]) -> list[int]:
            rows, mask = right_pad([prompts[i] for i in chunk], model.pad_token_id, model.device)
            with torch.no_grad():
                logits = model.hf(input_ids=rows, attention_mask=mask).logits.float()
            last = mask.sum(-1) - 1
            out = []
            for r, i in enumerate(chunk):
                firsts = torch.tensor([c[0] for c in ids[i]], device=logits.device)
                out.append(int(logits[r, last[r], firsts].argmax()))
            return out

        picks = map_batches(best, list(range(len(items))), cfg.batch_size)
        return [per_item[i][j] for i, j in enumerate(picks)], [1] * len(items)
    texts, flat, owner = [], [], []
    for i, (cs, cids) in enumerate(zip(per_item, ids)):
        for c, cid in zip(cs, cids):
            texts.append(c)
            flat.append(cid)
            owner.append(i)
    scores = completion_logprobs(model, [prompts[i] for i in owner], flat, cfg.batch_size).numpy()
    best_j: dict[int, tuple[float, int]] = {}
    for j, (i, sc) in enumerate(zip(owner, scores)):
        if i not in best_j or sc > best_j[i][0]:
            best_j[i] = (float(sc), j)
    return [texts[best_j[i][1]] for i in range(len(items))], [len(flat[best_j[i][1]]) for i in range(len(items))]


def generate_completions(model: Model, task: Task, items: Sequence[Item], cfg: GenerationConfig = GenerationConfig()
                         ) -> tuple[list[str], list[int]]:
    """Completions (the forced prefix included) and their token counts for each item."""
    items = require_items(items)
    prefixes = [task.cot_prefix(it) if cfg.force == "cot" else "" for it in items]
    if cfg.force == "cot" and not all(prefixes):
        raise ValueError(f"task {task.name!r} has no chain-of-thought prefix to force a chain with")
    encs = [encode_text(model, task.prompt(it), pre, cfg.chat) for it, pre in zip(items, prefixes)]
    prompts = [list(e.ids) for e in encs]
    if cfg.force == "direct":
        return _forced_direct(model, task, items, prompts, cfg)
    for i, p in enumerate(prompts):
        if len(p) >= model.n_ctx:
            raise ValueError(f"item {i}'s prompt has {len(p)} tokens; the model's context is {model.n_ctx}")
    outs = generate_ids(model.hf, model.tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, cfg.seed,
                        cfg.batch_size)
    # decode the forced prefix together with what followed it, so word-level decoders keep the space between
    texts = [model.tokenizer.decode(list(e.ids[e.n_prompt:]) + o, skip_special_tokens=False) for e, o in zip(encs, outs)]
    n_tokens = [len(e.ids) - e.n_prompt + len(o) for e, o in zip(encs, outs)]
    return texts, n_tokens



def _completions_task(spec: tuple[str, str, str, str, str], task: Task, items: list[Item], cfg: GenerationConfig
                      ) -> tuple[list[str], list[int]]:
    """One Ray task of `evaluate(..., ray=...)`: the completions of one run of whole batches."""
    from interp.cluster import worker_model

    return generate_completions(worker_model(spec), task, items, cfg)


def _chunks(model: Model, task: Task, items: list[Item], cfg: GenerationConfig) -> list[list[Item]]:
    """Runs of items that give the same completions on their own as inside the whole list: one per batch when
    batches are independent (greedy generation, single-token forced answers), else everything in one run
    (sampling draws one random stream across batches; multi-token candidates are batched across items)."""
    one = cfg.temperature > 0
    if cfg.force == "direct":
        _, ids = _candidates(model, task, items)
        one = one or not all(len(c) == 1 for cs in ids for c in cs)
    if one:
        return [items]
    return [items[i:i + cfg.batch_size] for i in range(0, len(items), cfg.batch_size)]


def evaluate(model: Model, task: Task, items: Sequence[Item], cfg: GenerationConfig = GenerationConfig(),
             group_by: str = "n_steps", n_boot: int = 1000, ray: str | bool | None = None, num_cpus: float = 1,
             num_gpus: float = 0) -> TaskEval:
    """Generate, grade and aggregate by `meta[group_by]` (items without it form the group `all`).

    `ray` (see `interp.cluster`) generates each batch as a Ray task (`num_cpus`/`num_gpus` each, the model
    reloaded from its folder on the workers); the result equals the one of a run in this process."""
    items = require_items(items)
    if ray in (None, False, ""):
        texts, n_tokens = generate_completions(model, task, items, cfg)
    else:
        from interp.cluster import model_spec, run_tasks

        spec = model_spec(model)
        texts, n_tokens = [], []
        for t, n in run_tasks(_completions_task, [(spec, task, c, cfg) for c in _chunks(model, task, list(items), cfg)],
                              ray=ray, num_cpus=num_cpus, num_gpus=num_gpus):
            texts += t
            n_tokens += n
    grades = [dataclasses.replace(task.grade(it, t), n_tokens=n) for it, t, n in zip(items, texts, n_tokens)]
    groups: dict[str, list[Grade]] = {}
    for it, g in zip(items, grades):
        groups.setdefault(str(it.meta.get(group_by, "all")), []).append(g)
    keys = sorted(groups, key=lambda k: (not k.lstrip("-").isdigit(), int(k) if k.lstrip("-").isdigit() else 0, k))
    by_group = {k: GroupStats.of(groups[k], n_boot, seed=int(k) if k.lstrip("-").isdigit() else 0) for k in keys}
    return TaskEval(model.name, model.checksum, task.describe(), cfg, tuple(items), tuple(texts), tuple(grades),
                    by_group, group_by)


__all__ = ["Force", "GenerationConfig", "GroupStats", "TaskEval", "evaluate", "generate_completions"]
