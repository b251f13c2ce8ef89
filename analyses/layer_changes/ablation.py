"""Layer ablation with HF forward hooks (active inside `generate`): a block's contribution to the residual
stream (its output minus its input) is replaced by zero (the block is skipped) or by its mean over
reference text. Critical layers are those whose ablation costs most accuracy; both models are ablated
on the same problems so their critical layers can be compared."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from analyses.layer_changes.anatomy import (
    block_input,
    block_output,
    decoder_layers,
    left_pad_positions,
    replace_block_output,
)
from analyses.layer_changes.behaviour import Behaviour
from interp.generate import left_pad

if TYPE_CHECKING:
    from interp.models import Model

MODES = ("zero", "mean")


@torch.no_grad()
def mean_block_deltas(model: Model, seqs: Sequence[Sequence[int]],
                      batch_size: int = 256) -> Float[torch.Tensor, "layer d_model"]:
    """Mean over all real tokens (of the token-id sequences) of each block's output minus its input."""
    hf, pad_id = model.hf, model.pad_token_id
    layers = decoder_layers(hf)
    sums: list[torch.Tensor | None] = [None] * len(layers)
    count = 0
    current_mask: list[torch.Tensor] = []

    def hook(i: int) -> Callable[..., None]:
        def fn(mod: torch.nn.Module, args: tuple, kwargs: dict, out: object) -> None:
            delta = (block_output(out) - block_input(args, kwargs)).double()
            s = (delta * current_mask[0][..., None]).sum((0, 1))
            sums[i] = s if sums[i] is None else sums[i] + s
        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    dev = next(hf.parameters()).device
    try:
        for s in range(0, len(seqs), batch_size):
            ids, mask = left_pad([list(x) for x in seqs[s:s + batch_size]], pad_id)
            ids, mask = ids.to(dev), mask.to(dev)
            current_mask[:] = [mask.double()]
            hf(input_ids=ids, attention_mask=mask, position_ids=left_pad_positions(mask))
            count += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    return torch.stack([x / count for x in sums]).float()  # type: ignore[operator]


@contextlib.contextmanager
def ablated(model: Model, layer: int, mode: str, mean_delta: torch.Tensor | None = None) -> Iterator[Model]:
    """Within the block, layer `layer` adds zero (mode "zero") or `mean_delta` (mode "mean") to the residual
    (a forward hook on the HF view: active in generation and `interp.evaluate`)."""
    layers = decoder_layers(model.hf)
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer {layer} is out of range: the model has layers 0-{len(layers) - 1}")
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "mean" and mean_delta is None:
        raise ValueError("mean ablation needs the layer's mean contribution (mean_block_deltas)")

    def fn(mod: torch.nn.Module, args: tuple, kwargs: dict, out: object) -> object:
        h = block_input(args, kwargs)
        new = h if mode == "zero" else h + mean_delta.to(h.dtype)  # type: ignore[union-attr]
        return replace_block_output(out, new)

    handle = layers[layer].register_forward_hook(fn, with_kwargs=True)
    try:
        yield model
    finally:
        handle.remove()


@dataclass(frozen=True)
class AblationCell:
    """One ablation of one layer of one model: free-answer and forced-CoT behaviour."""

    model: str  # "base" or "tuned"
    layer: int
    mode: str
    free: Behaviour
    forced_cot: Behaviour

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "layer": self.layer, "mode": self.mode, "free": self.free.to_dict(),
                "forced_cot": self.forced_cot.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AblationCell:
        return cls(d["model"], d["layer"], d["mode"], Behaviour.from_dict(d["free"]), Behaviour.from_dict(d["forced_cot"]))


def ablation_sweep(models: dict[str, Model], means: dict[str, torch.Tensor],
                   measure: Callable[[Model], tuple[Behaviour, Behaviour]],
                   progress: bool = False) -> tuple[AblationCell, ...]:
    """Every layer of every model, zero and mean; `measure` returns (free, forced-CoT) behaviour."""
    jobs = [(name, layer, mode) for name, m in models.items() for layer in range(len(decoder_layers(m.hf)))
            for mode in MODES]
    cells = []
    for name, layer, mode in tqdm(jobs, desc="ablating", disable=not progress):
        with ablated(models[name], layer, mode, means[name][layer]) as m:
            free, forced = measure(m)
        cells.append(AblationCell(name, layer, mode, free, forced))
    return tuple(cells)


__all__ = ["MODES", "AblationCell", "ablated", "ablation_sweep", "mean_block_deltas"]
