"""Logit lens per layer (final norm, then unembedding) on each model's own greedy answers: how often the top
digit at each layer is the right answer, and the first layer from which the model's answer is decodable
(the lens's top digit equals the answer it finally gives, at that layer and every later one)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from analyses.layer_changes.anatomy import lens_logits, residual_streams
from interp.generate import left_pad
from interp.organism.task import Problem
from interp.organism.tokenizer import digit_ids
from interp.stats import bootstrap_ci

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
    def from_dict(cls, d: dict[str, Any]) -> "LensAt":
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
    def from_dict(cls, d: dict[str, Any]) -> "LogitLens":
        return cls(d["model"], tuple(d["points"]), {k: LensAt.from_dict(v) for k, v in d["at"].items()})


def first_decodable(top: np.ndarray, final: np.ndarray) -> np.ndarray:
    """Per problem, the first point index p with top[p:] all equal to `final` (top: [point, problem])."""
    agree = top == final[None, :]
    n_points = top.shape[0]
    # index after the last disagreement
    last_bad = np.where(~agree, np.arange(n_points)[:, None], -1).max(0)
    return last_bad + 1


@torch.no_grad()
def logit_lens(hf: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem],
               prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], points: Sequence[str],
               name: str, n_boot: int = 1000, batch_size: int = 256) -> LogitLens:
    """Lens on prompt + the model's own completion; the answer position is the one that predicts the last
    completion token, used only where that token is a digit (a complete answer)."""
    digits = digit_ids(tokenizer)
    digit_set = set(digits.tolist())
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions)]
    tops: dict[str, list[np.ndarray]] = {k: [] for k in POSITIONS}
    truth: dict[str, list[int]] = {k: [] for k in POSITIONS}
    dev = next(hf.parameters()).device
    for s in range(0, len(seqs), batch_size):
        chunk = seqs[s:s + batch_size]
        ids, mask = left_pad(chunk, tokenizer.pad_token_id)
        streams, _ = residual_streams(hf, ids.to(dev), mask.to(dev))
        width = ids.shape[1]
        for row, seq in enumerate(chunk):
            i = s + row
            pad = width - len(seq)
            where = {"prompt_end": pad + len(prompts[i]) - 1}
            if completions[i] and completions[i][-1] in digit_set:
                where["answer"] = width - 2
            for pos, col in where.items():
                lens = lens_logits(hf, streams[:, row, col])[:, digits]  # [point, 10]
                tops[pos].append(lens.argmax(-1).cpu().numpy())
                truth[pos].append(problems[i].answer)
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
    return LogitLens(name, tuple(points), at)


__all__ = ["LogitLens", "LensAt", "logit_lens", "first_decodable", "POSITIONS"]
