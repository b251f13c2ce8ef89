"""The rows a harvest would store, computed shard by shard in memory instead of written to disk.

`iter_shards` runs the very forwards `harvest` runs (same batches, same right-padding, same early stop,
same NaN/inf check), so shard k's activations and index columns are identical to the store's shard k
(`ActivationStore.iter_batches`). It is lazy: a consumer that stops early (an SAE trained on fewer rows
than the dataset holds) never pays for the later shards. Use it when the rows are read once, straight
into a consumer; harvest a store when several consumers read them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from interp.activations.dataset import PromptDataset
from interp.activations.harvest import (
    _check_hooks,
    _forward_batch,
    _non_finite_rows,
    _raise_non_finite,
    _select,
    _shard_batches,
    _shard_rows,
)
from interp.activations.store import INDEX_COLUMNS
from interp.models import DTYPES
from interp.positions import PositionsLike, as_selector

if TYPE_CHECKING:
    from interp.models import Model


def shard_plan(n_examples: int, batch_size: int, shard_size: int) -> tuple[int, int]:
    """(shard_size, n_shards) as `harvest` lays them out: whole batches per shard, batches never cross one."""
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    shard_size = max(batch_size, shard_size // batch_size * batch_size)
    return shard_size, (n_examples + shard_size - 1) // shard_size


def count_rows(model: Model, dataset: PromptDataset, positions: PositionsLike) -> int:
    """How many rows `harvest` would store per hook (positions picked), without running the model."""
    return sum(len(p) for p in _select(dataset, as_selector(positions), model.tokenizer, 0, len(dataset)))


def iter_shards(model: Model, dataset: PromptDataset, hooks: str | Sequence[str], positions: PositionsLike, *,
                batch_size: int = 64, shard_size: int = 1024, dtype: str = "float32"
                ) -> Iterator[tuple[int, dict[str, torch.Tensor], dict[str, np.ndarray]]]:
    """(k, activations per hook [rows, ...] on the CPU, index columns) for each shard k in order: what
    `harvest(model, dataset, hooks, positions, out, batch_size=, shard_size=, dtype=)` writes to shard k.
    NaN/inf raises `NonFiniteActivationError` naming the hook, example, position and token, as harvest does."""
    hooks = _check_hooks(model, hooks)
    selector = as_selector(positions)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {list(DTYPES)}")
    if len(dataset) == 0:
        raise ValueError("the dataset holds no examples")
    if dataset.max_len > model.n_ctx:
        long = next(i for i, e in enumerate(dataset) if len(e.ids) > model.n_ctx)
        raise ValueError(f"example {long} has {len(dataset[long].ids)} tokens, more than {model.name}'s context "
                         f"length of {model.n_ctx}: shorten the prompts")
    shard_size, n_shards = shard_plan(len(dataset), batch_size, shard_size)
    torch_dtype = DTYPES[dtype]
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    device = model.device
    first = _forward_batch(model, hooks, torch.tensor([dataset[0].ids], device=device), torch.tensor([0]),
                           torch.tensor([0]))  # each hook's row shape, for shards where no position is picked
    row_shape = {h: tuple(first[h].shape[1:]) for h in hooks}
    for k in range(n_shards):
        start, stop = k * shard_size, min(len(dataset), (k + 1) * shard_size)
        picks, cols = _shard_rows(dataset, selector, model.tokenizer, start, stop)
        parts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
        bad: list[torch.Tensor] = []
        batches = []
        for b0, ids, at, n in _shard_batches(dataset, picks, start, stop, batch_size, pad):
            rows = cols[at:at + n]
            acts = _forward_batch(model, hooks, ids.to(device), (rows[:, 0] - b0).to(device),
                                  rows[:, 1].contiguous().to(device))
            bad.append(torch.stack([_non_finite_rows(acts[h]) for h in hooks]))
            for h in hooks:
                parts[h].append(acts[h].to(torch_dtype))
            batches.append((at, n))
        if bad:
            _raise_non_finite(torch.cat(bad, dim=1), hooks, batches, cols, model, k)
        out = {h: torch.cat(parts[h]) if parts[h] else torch.zeros((0, *row_shape[h]), dtype=torch_dtype)
               for h in hooks}
        index = {"example": cols[:, 0].numpy(), "position": cols[:, 1].numpy(),
                 "label": cols[:, 2].to(torch.int32).numpy(), "token": cols[:, 3].numpy()}
        assert tuple(index) == INDEX_COLUMNS
        yield k, out, index


__all__ = ["count_rows", "iter_shards", "shard_plan"]
