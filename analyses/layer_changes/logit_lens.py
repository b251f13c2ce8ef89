"""Logit lens per layer (final norm, then unembedding) on each model's own greedy answers, read over the
task's answer candidates: how often the top candidate at each layer is the right answer, and the first layer
from which the model's answer is decodable (the lens's top candidate equals the one it finally gives, at that
layer and every later one).

Answers of several tokens (a byte-level BPE writes ` The answer is 4.` as `ĠThe Ġanswer Ġis Ġ 4 .`, and
` 12` / ` 15` share ` 1`) are read on the token that tells the candidates apart: the candidates' shared
leading tokens are teacher-forced after the prompt and the lens is read where the next token, the first one
on which their tokenizations differ, is predicted. This (rather than each candidate's sequence
log-probability per layer) is the reading chosen because (1) it takes one forward per problem instead of one
per candidate; (2) the shared tokens carry nothing about which answer it is, and the tokens after the
distinguishing one are predicted with the answer already written, so they measure copying, not knowing; and
(3) on single-token answers (the first organism's digits) it is exactly the old reading, so those numbers
stay. Candidates whose tokenizations branch at more than one depth (` 1` a prefix of ` 12`, or ` 12`, ` 15`,
` 3`) have no single distinguishing token: they are refused with the reason (the layer analysis then skips the
lens and says why)."""

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
    """Lens accuracy per residual point (top candidate == correct answer) and the first decodable point."""

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


@dataclass(frozen=True)
class Candidates:
    """The task's answer candidates after one prompt as the lens reads them: the leading tokens they all share
    (`prefix`, teacher-forced), the token that tells each apart (`ids`, one per candidate, all distinct), each
    candidate's whole tokenization (`full`), and the index of the right one."""

    prefix: tuple[int, ...]
    ids: tuple[int, ...]
    full: tuple[tuple[int, ...], ...]
    right: int

    def answer_column(self, seq: Sequence[int], n_prompt: int) -> int | None:
        """Index in `seq` (prompt + completion) of the position that predicts the distinguishing token of the
        candidate the completion ends with (the longest one that matches), or None when it ends with none."""
        best = None
        for full in self.full:
            n = len(full)
            if len(seq) - n >= n_prompt and tuple(seq[len(seq) - n:]) == full and (best is None or n > len(best)):
                best = full
        return None if best is None else len(seq) - len(best) + len(self.prefix) - 1


def first_decodable(top: np.ndarray, final: np.ndarray) -> np.ndarray:
    """Per problem, the first point index p with top[p:] all equal to `final` (top: [point, problem])."""
    agree = top == final[None, :]
    n_points = top.shape[0]
    # index after the last disagreement
    last_bad = np.where(~agree, np.arange(n_points)[:, None], -1).max(0)
    return last_bad + 1


def candidate_split(model: Model, task: Task, item: Item) -> Candidates:
    """The item's answer candidates on the model's tokenizer, split into their shared leading tokens and the one
    token that distinguishes each (module docstring). Raises when the task lists no candidates, when none is
    the item's answer, or when the candidates have no single distinguishing token."""
    cands = getattr(task, "answer_candidates", None)
    if cands is None:
        raise ValueError(f"task {task.name!r} lists no answer candidates to read the logit lens over")
    texts = list(cands(item))
    prompt = task.prompt(item)
    full = [tuple(model.answer_ids(prompt, c)) for c in texts]
    n = 0
    while all(len(f) > n for f in full) and len({f[n] for f in full}) == 1:
        n += 1
    short = [t for t, f in zip(texts, full) if len(f) <= n]
    if short:
        raise ValueError(f"task {task.name!r}'s answer candidate {short[0]!r} is all of the tokens the candidates "
                         f"share on {model.name}'s tokenizer (one candidate is a prefix of another): no token tells "
                         f"it apart, so the logit lens cannot read it")
    ids = [f[n] for f in full]
    if len(set(ids)) != len(ids) or len(set(full)) != len(full):
        shared = sorted({t for t, i in zip(texts, ids) if ids.count(i) > 1})[:3]
        raise ValueError(f"task {task.name!r}'s answer candidates share first tokens on {model.name}'s tokenizer "
                         f"beyond their common prefix (e.g. {', '.join(map(repr, shared))}): they branch at more "
                         f"than one token, and the logit lens reads one distinguishing token per candidate")
    right = [i for i, c in enumerate(texts) if c.strip() == str(item.answer).strip()]
    if not right:  # candidates written as sentences (` The answer is 4.`): the one the task grades correct
        right = [i for i, c in enumerate(texts) if task.grade(item, c).correct]
    if len(right) != 1:
        raise ValueError(f"item {item.id!r}: {len(right) or 'none'} of the task's candidates is its answer "
                         f"{item.answer!r} (by text, else by the task's grade); the lens needs exactly one")
    return Candidates(full[0][:n], tuple(ids), tuple(full), right[0])


def candidate_ids(model: Model, task: Task, item: Item) -> tuple[list[int], int]:
    """The distinguishing token of each answer candidate (`candidate_split`) and the index of the right one."""
    c = candidate_split(model, task, item)
    return list(c.ids), c.right


@torch.no_grad()
def logit_lens(model: Model, task: Task, items: Sequence[Item], prompts: Sequence[Sequence[int]],
               completions: Sequence[Sequence[int]], points: Sequence[str], n_boot: int = 1000,
               batch_size: int = 256) -> LogitLens:
    """Lens on prompt + the model's own completion, over the candidates' distinguishing tokens. `prompt_end` is
    the position that predicts that token after the prompt and the candidates' shared prefix (the prompt's last
    token when there is none; the prefix is teacher-forced, in the completion when the model wrote it there,
    else on its own); `answer` is the position that predicts it where the completion ends with a whole
    candidate (its final answer), used only for completions that do."""
    hf = model.hf
    cand = [candidate_split(model, task, it) for it in items]
    # every sequence to run, and per item the (sequence, column) each position is read at
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions)]
    reads: list[dict[str, tuple[int, int]]] = []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        k = cand[i].prefix
        where: dict[str, tuple[int, int]] = {}
        if tuple(c[:len(k)]) == k:
            where["prompt_end"] = (i, len(p) + len(k) - 1)
        else:
            seqs.append(list(p) + list(k))
            where["prompt_end"] = (len(seqs) - 1, len(seqs[-1]) - 1)
        col = cand[i].answer_column(seqs[i], len(p))
        if col is not None:
            where["answer"] = (i, col)
        reads.append(where)
    wanted: dict[int, list[tuple[int, str, int]]] = {}  # sequence -> (item, position, column)
    for i, where in enumerate(reads):
        for pos, (s, col) in where.items():
            wanted.setdefault(s, []).append((i, pos, col))
    got: dict[tuple[int, str], np.ndarray] = {}
    dev = next(hf.parameters()).device
    for s in range(0, len(seqs), batch_size):
        chunk = seqs[s:s + batch_size]
        ids, mask = left_pad(chunk, model.pad_token_id)
        streams, _ = residual_streams(hf, ids.to(dev), mask.to(dev))
        width = ids.shape[1]
        for row, seq in enumerate(chunk):
            pad = width - len(seq)
            for i, pos, col in wanted.get(s + row, ()):
                lens = lens_logits(hf, streams[:, row, pad + col])[:, list(cand[i].ids)]  # [point, candidate]
                got[(i, pos)] = lens.argmax(-1).cpu().numpy()
    at = {}
    for pos in POSITIONS:
        rows = [i for i in range(len(items)) if (i, pos) in got]
        if not rows:
            continue
        top = np.stack([got[(i, pos)] for i in rows], 1)  # [point, problem]
        correct = (top == np.array([cand[i].right for i in rows])[None, :]).astype(float)
        first = first_decodable(top, top[-1]).astype(float)
        at[pos] = LensAt(pos, top.shape[1], tuple(float(c.mean()) for c in correct),
                         tuple(bootstrap_ci(c, n_boot) for c in correct), float(first.mean()),
                         bootstrap_ci(first, n_boot),
                         tuple(float((first <= p).mean()) for p in range(top.shape[0])))
    return LogitLens(model.name, tuple(points), at)


__all__ = ["POSITIONS", "Candidates", "LensAt", "LogitLens", "candidate_ids", "candidate_split", "first_decodable",
           "logit_lens"]
