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
from analyses.layer_changes.behaviour import Behaviour, grade_behaviour, prompt_ids
from interp.generate import current_rows, generate_ids, left_pad, row_aware
from interp.organism.evaluate import EvalConfig

if TYPE_CHECKING:
    from interp.models import Model
    from interp.tasks import Item, Task

MODES = ("zero", "mean")
# rows per batched-ablation generate call, in eval batches: for one organism model's 8 conditions x 160 prompts
# (1 CPU thread, prompt-major rows) 400 rows took 9.3-9.7 s, 800 rows 8.0-8.8 s, 1280 rows 15 s, and one
# condition at a time 9.4-12.7 s (generation here is compute-bound: wider batches mostly save per-call work)
WIDE_BATCH = 2


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


Condition = tuple[int, str]  # (layer, mode) of one ablation


def conditions_of(model: Model) -> list[Condition]:
    """Every (layer, mode) ablation of a model, layer by layer (the sweep's order)."""
    return [(layer, mode) for layer in range(len(decoder_layers(model.hf))) for mode in MODES]


@contextlib.contextmanager
def _row_hooks(model: Model, row_conditions: Sequence[Condition], means: torch.Tensor) -> Iterator[None]:
    """One forward hook per layer that ablates, in every forward of `generate_ids`, only the rows whose condition
    (row_conditions[i] for prompt i of its prompt list) names that layer, with exactly the arithmetic of `ablated`."""
    layers = decoder_layers(model.hf)
    zero = torch.tensor([[c == (i, "zero") for c in row_conditions] for i in range(len(layers))])  # [layer, prompt]
    mean = torch.tensor([[c == (i, "mean") for c in row_conditions] for i in range(len(layers))])

    def hook(i: int) -> Callable[..., object]:
        @row_aware
        def fn(mod: torch.nn.Module, args: tuple, kwargs: dict, out: object) -> object:
            rows = current_rows()
            if rows is None:
                raise RuntimeError("a batched ablation's hooks ran in a forward outside generate_ids")
            at = rows.of_forward()
            z, m = zero[i, at], mean[i, at]
            if not (z.any() or m.any()):
                return out
            h, o = block_input(args, kwargs), block_output(out)
            z, m = z.to(h.device)[:, None, None], m.to(h.device)[:, None, None]
            new = torch.where(z, h, torch.where(m, h + means[i].to(h.dtype), o))
            return replace_block_output(out, new)
        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def ablated_completions(model: Model, conditions: Sequence[Condition], means: torch.Tensor,
                        prompts: Sequence[Sequence[int]], cfg: EvalConfig) -> list[list[list[int]]]:
    """Completions of `prompts` under each ablation condition (per condition, per prompt), as `ablated` +
    `generate_ids` give them one condition at a time. Greedy runs batch the conditions together (each prompt
    replicated once per condition, prompt by prompt, each row ablated at its own layer) in batches of
    `WIDE_BATCH` eval batches: fewer, wider calls. Sampled runs go one condition at a time, so each draws the
    random stream it draws alone."""
    for layer, mode in conditions:  # the same errors as `ablated`
        with ablated(model, layer, mode, means[layer]):
            pass
    hf, tok = model.hf, model.tokenizer
    if cfg.temperature > 0:
        out = []
        for layer, mode in conditions:
            with ablated(model, layer, mode, means[layer]):
                out.append(generate_ids(hf, tok, [list(p) for p in prompts], cfg.max_new_tokens, cfg.temperature,
                                        cfg.seed, cfg.batch_size))
        return out
    rows = [list(p) for p in prompts for _ in conditions]  # prompt-major: a batch holds few step counts
    with _row_hooks(model, [c for _ in prompts for c in conditions], means):
        flat = generate_ids(hf, tok, rows, cfg.max_new_tokens, 0.0, cfg.seed, cfg.batch_size * WIDE_BATCH)
    return [flat[k::len(conditions)] for k in range(len(conditions))]


def ablation_sweep(models: dict[str, Model], means: dict[str, torch.Tensor], task: Task, items: Sequence[Item],
                   cfg: EvalConfig, encoder: Model | None = None, progress: bool = False) -> tuple[AblationCell, ...]:
    """Every layer of every model, zero and mean: free-answer and forced-CoT behaviour on the task's items
    (prompts encoded and completions graded through `encoder`, by default each model itself)."""
    cells = []
    jobs = [(name, force) for name in models for force in (False, True)]
    got: dict[tuple[str, bool], list[Behaviour]] = {}
    for name, force in tqdm(jobs, desc="ablating", disable=not progress):
        m, enc = models[name], encoder if encoder is not None else models[name]
        comps = ablated_completions(m, conditions_of(m), means[name], prompt_ids(enc, task, items, force), cfg)
        got[name, force] = [grade_behaviour(enc, task, items, c, cfg.n_boot, force) for c in comps]
    for name, m in models.items():
        for k, (layer, mode) in enumerate(conditions_of(m)):
            cells.append(AblationCell(name, layer, mode, got[name, False][k], got[name, True][k]))
    return tuple(cells)


__all__ = ["MODES", "AblationCell", "Condition", "ablated", "ablated_completions", "ablation_sweep", "conditions_of",
           "mean_block_deltas"]
