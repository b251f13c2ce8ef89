"""Layer grafting: copy a contiguous block of one model's decoder layers into the other (in place, restored
after), for every block and both directions, and measure CoT rate, accuracy and KL to the tuned model.
A graft of the parameters outside the layers (embeddings, final norm, unembedding) is the control that
says how much of the change lives outside the blocks. Works on any pair of same-shape models: the edit is
made on the models' own parameter tensors, so every view of a `Model` (HF, Bridge, nnsight) runs grafted."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from analyses.layer_changes.anatomy import check_block, decoder_layers
from analyses.layer_changes.behaviour import KL, Behaviour

if TYPE_CHECKING:
    from interp.models import Model

ENDS = "ends"  # the block name of the outside-the-layers graft


def all_blocks(n_layers: int) -> list[tuple[int, int]]:
    """Every contiguous half-open block [start, end) of layers, by size then start."""
    return [(s, s + size) for size in range(1, n_layers + 1) for s in range(n_layers - size + 1)]


def _pairs(target: torch.nn.Module, source: torch.nn.Module, what: str) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    tp, sp = dict(target.named_parameters()), dict(source.named_parameters())
    if tp.keys() != sp.keys() or any(tp[n].shape != sp[n].shape for n in tp):
        bad = sorted(n for n in tp.keys() | sp.keys() if n not in tp or n not in sp or tp[n].shape != sp[n].shape)
        raise ValueError(f"cannot graft {what}: parameters differ in name or shape ({', '.join(bad[:5])})")
    return [(tp[n], sp[n]) for n in tp]


def _outside_pairs(target: PreTrainedModel, source: PreTrainedModel) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    inside_t = {id(p) for p in decoder_layers(target).parameters()}
    inside_s = {id(p) for p in decoder_layers(source).parameters()}
    tp = {n: p for n, p in target.named_parameters() if id(p) not in inside_t}
    sp = {n: p for n, p in source.named_parameters() if id(p) not in inside_s}
    if tp.keys() != sp.keys() or any(tp[n].shape != sp[n].shape for n in tp):
        raise ValueError("cannot graft the embeddings/norm/unembedding: the models' parameters differ in name or shape")
    return [(tp[n], sp[n]) for n in tp]


@contextlib.contextmanager
def grafted(target: Model, source: Model, block: Sequence[int] | str) -> Iterator[Model]:
    """Within the block, `target` runs with `source`'s layers [start, end) (or, for "ends", its parameters
    outside the layers); the original values are restored on exit, whatever happens inside."""
    if block == ENDS:
        pairs = _outside_pairs(target.hf, source.hf)
    else:
        tl, sl = decoder_layers(target.hf), decoder_layers(source.hf)
        if len(tl) != len(sl):
            raise ValueError(f"cannot graft between models with {len(sl)} and {len(tl)} layers")
        start, end = check_block(block, len(tl))  # type: ignore[arg-type]
        pairs = [pq for i in range(start, end) for pq in _pairs(tl[i], sl[i], f"layer {i}")]
    saved = [p.detach().clone() for p, _ in pairs]
    try:
        with torch.no_grad():
            for p, q in pairs:
                p.copy_(q)
        yield target
    finally:
        with torch.no_grad():
            for (p, _), old in zip(pairs, saved):
                p.copy_(old)


@dataclass(frozen=True)
class GraftCell:
    """One graft: which block, in which direction, and what it did."""

    direction: str  # "tuned_into_base" or "base_into_tuned"
    block: tuple[int, int] | str
    behaviour: Behaviour | None  # None when measured on free text (no task to grade)
    kl: KL

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "block": self.block if isinstance(self.block, str) else list(self.block),
                "behaviour": self.behaviour.to_dict() if self.behaviour else None, "kl": self.kl.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraftCell:
        block = d["block"] if isinstance(d["block"], str) else tuple(d["block"])
        return cls(d["direction"], block, Behaviour.from_dict(d["behaviour"]) if d.get("behaviour") else None,
                   KL.from_dict(d["kl"]))


def graft_sweep(base: Model, tuned: Model, blocks: Sequence[tuple[int, int]],
                measure: Callable[[Model], tuple[Behaviour | None, KL]], progress: bool = False) -> tuple[GraftCell, ...]:
    """Every block in both directions, plus the outside-the-layers control; `measure` runs on the grafted model."""
    n = len(decoder_layers(base.hf))
    blocks = [check_block(b, n) for b in blocks]
    jobs = [(d, t, s, b) for d, t, s in (("tuned_into_base", base, tuned), ("base_into_tuned", tuned, base))
            for b in [*blocks, ENDS]]
    cells = []
    for direction, target, source, block in tqdm(jobs, desc="grafting", disable=not progress):
        with grafted(target, source, block) as m:
            behaviour, kl = measure(m)
        cells.append(GraftCell(direction, block, behaviour, kl))
    return tuple(cells)


__all__ = ["ENDS", "GraftCell", "all_blocks", "graft_sweep", "grafted"]
