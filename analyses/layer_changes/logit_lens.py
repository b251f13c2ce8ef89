"""Logit lens per layer (final norm, then unembedding) on each model's own greedy answers, read over the
task's answer candidates (their first tokens): how often the top candidate at each layer is the right
answer, and the first layer from which the model's answer is decodable (the lens's top candidate equals
the one it finally gives, at that layer and every later one)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from analyses.layer_changes.anatomy import lens_logits, residual_streams
from interp.generate import left_pad
from interp.stats import bootstrap_ci

if TYPE_CHECKING:
    from interp.models import Model
    from interp.tasks import Item, Task

POSITIONS = ("prompt_end", "answer")  # where the direct answer would go; where the model writes its answer


@dataclass(frozen=True)
class LensAt:
    """Lens accuracy per residual point (top digit == correct answer) and the first decodable point."""

    position: str
    n: int
    accuracy: tuple[float, ...]
    accuracy_ci: tuple[tuple[float, float], ...]
    decodable_point: float  # mean over problems of the first point index from which the answer is decodable
    decodable_ci: tuple[float, float]
    decodable_share: tuple[float, ...]  # share of problems whose answer is decodable from each point on

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LensAt:
        return cls(d["position"], d["n"], tuple(d["accuracy"]), tuple(tuple(c) for c in d["accuracy_ci"]),
                   d["decodable_point"], tuple(d["decodable_ci"]), tuple(d["decodable_share"]))


@dataclass(frozen=True)
class LogitLens:
    """One model's lens at the prompt end and at the position where it writes its final answer."""

    model: str
    points: tuple[str, ...]
    at: dict[str, LensAt]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "points": list(self.points), "at": {k: v.to_dict() for k, v in self.at.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogitLens:
        return cls(d["model"], tuple(d["points"]), {k: LensAt.from_dict(v) for k, v in d["at"].items()})


def first_decodable(top: np.ndarray, final: np.ndarray) -> np.ndarray:
    """Per problem, the first point index p with top[p:] all equal to `final` (top: [point, problem])."""
    agree = top == final[None, :]
    n_points = top.shape[0]
    # index after the last disagreement
    last_bad = np.where(~agree, np.arange(n_points)[:, None], -1).max(0)
    return last_bad + 1


def candidate_ids(model: Model, task: Task, item: Item) -> tuple[list[int], int]:
    """First token of each of the task's answer candidates after the item's prompt, and the index of the
    right one. Raises when the task lists no candidates, when two share a first token (the lens could not
    tell them apart), or when none is the item's answer."""
    cands = getattr(task, "answer_candidates", None)
    if cands is None:
        raise ValueError(f"task {task.name!r} lists no answer candidates to read the logit lens over")
    texts = list(cands(item))
    prompt = task.prompt(item)
    ids = [model.answer_ids(prompt, c)[0] for c in texts]
    if len(set(ids)) != len(ids):
        raise ValueError(f"task {task.name!r}'s answer candidates share first tokens on {model.name}'s tokenizer; "
                         f"the logit lens reads one token per candidate")
    right = [i for i, c in enumerate(texts) if c.strip() == str(item.answer).strip()]
    if not right:
        raise ValueError(f"item {item.id!r}: its answer {item.answer!r} is not among the task's candidates")
    return ids, right[0]


@torch.no_grad()
def logit_lens(model: Model, task: Task, items: Sequence[Item], prompts: Sequence[Sequence[int]],
               completions: Sequence[Sequence[int]], points: Sequence[str], n_boot: int = 1000,
               batch_size: int = 256) -> LogitLens:
    """Lens on prompt + the model's own completion, over the first tokens of the task's answer candidates.
    `prompt_end` is the prompt's last position (where a direct answer is predicted); `answer` is the
    position that predicts the last completion token, used only where that token is a candidate's first
    token (a complete single-token answer)."""
    hf = model.hf
    cand = [candidate_ids(model, task, it) for it in items]
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions)]
    tops: dict[str, list[np.ndarray]] = {k: [] for k in POSITIONS}
    truth: dict[str, list[int]] = {k: [] for k in POSITIONS}
    dev = next(hf.parameters()).device
    for s in range(0, len(seqs), batch_size):
        chunk = seqs[s:s + batch_size]
        ids, mask = left_pad(chunk, model.pad_token_id)
        streams, _ = residual_streams(hf, ids.to(dev), mask.to(dev))
        width = ids.shape[1]
        for row, seq in enumerate(chunk):
            i = s + row
            pad = width - len(seq)
            where = {"prompt_end": pad + len(prompts[i]) - 1}
            cids, right = cand[i]
            if completions[i] and completions[i][-1] in cids:
                where["answer"] = width - 2
            for pos, col in where.items():
                lens = lens_logits(hf, streams[:, row, col])[:, cids]  # [point, candidate]
                tops[pos].append(lens.argmax(-1).cpu().numpy())
                truth[pos].append(right)
    at = {}
    for pos in POSITIONS:
        if not tops[pos]:
            continue
        top = np.stack(tops[pos], 1)  # [point, problem]
        correct = (top == np.array(truth[pos])[None, :]).astype(float)
        first = first_decodable(top, top[-1]).astype(float)
        at[pos] = LensAt(pos, top.shape[1], tuple(float(c.mean()) for c in correct),
                         tuple(bootstrap_ci(c, n_boot) for c in correct), float(first.mean()),
                         bootstrap_ci(first, n_boot),
                         tuple(float((first <= p).mean()) for p in range(top.shape[0])))
    return LogitLens(model.name, tuple(points), at)


__all__ = ["POSITIONS", "LensAt", "LogitLens", "candidate_ids", "first_decodable", "logit_lens"]
