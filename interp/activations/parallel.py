"""A harvest split into one Ray task per shard, merged into the store a single process would write.

Each task reloads the model on its worker (once per worker process, checked against the caller's checksum),
harvests its one shard (`harvest(..., shard=(k, n_shards))`) into a scratch folder on its node and returns
the files as bytes; the caller writes each part as it arrives and `merge` joins them, so the store is
byte-identical to `harvest` in one process and no shared filesystem is needed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.activations.dataset import PromptDataset
from interp.activations.store import ActivationStore, StoreError, merge, shard_name
from interp.cluster import RaySpec, iter_tasks, model_spec, read_tree, worker_model, write_tree
from interp.io import read_json
from interp.positions import PositionsLike, Selector, as_selector

if TYPE_CHECKING:
    from interp.models import Model

PARTS = ".ray-parts"


def _harvest_shard(spec: tuple[str, str, str, str, str], dataset: PromptDataset, hooks: list[str], positions: Selector,
                   k: int, n_shards: int, kw: dict[str, Any], with_dataset: bool) -> dict[str, bytes]:
    """One Ray task: shard k of the harvest, as the files of a one-shard part store (its dataset.json only if
    `with_dataset`: the merge takes it from one part, and it is as large as the whole dataset)."""
    from interp.activations.harvest import harvest

    model = worker_model(spec)
    tmp = Path(tempfile.mkdtemp(prefix=f"interp-harvest-shard{k}-"))
    try:
        harvest(model, dataset, hooks, positions, tmp / "part", shard=(k, n_shards), **kw)
        files = read_tree(tmp / "part")
        if not with_dataset:
            del files["dataset.json"]
        return files
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def harvest_ray(
    model: Model,
    dataset: PromptDataset,
    hooks: str | Sequence[str],
    positions: PositionsLike,
    out: str | Path,
    *,
    ray: RaySpec,
    batch_size: int = 64,
    shard_size: int = 1024,
    dtype: str = "float32",
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
) -> ActivationStore:
    """`harvest` with every missing shard as a Ray task (`num_cpus`/`num_gpus` each); same store bytes."""
    from interp.activations.harvest import _check_hooks

    hooks = _check_hooks(model, hooks)
    positions = as_selector(positions)
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    shard_size = max(batch_size, shard_size // batch_size * batch_size)  # as harvest rounds it
    n_shards = (len(dataset) + shard_size - 1) // shard_size
    root = Path(out)
    done: set[int] = set()
    if (root / "manifest.json").is_file() and not overwrite:
        old = read_json(root / "manifest.json")
        mine = {"model_checksum": model.checksum, "dataset_hash": dataset.hash(), "n_examples": len(dataset),
                "batch_size": batch_size, "shard_size": shard_size, "n_shards": n_shards, "dtype": dtype,
                "positions": positions.to_dict()}
        mine = json.loads(json.dumps(mine))  # as on disk (tuples become lists)
        diff = [f"{k}: {old.get(k)!r} vs {v!r}" for k, v in mine.items() if old.get(k) != v]
        if list(old.get("hooks", {})) != hooks:
            diff.append(f"hooks: {list(old.get('hooks', {}))} vs {hooks}")
        if diff:
            raise StoreError(f"{root} holds a harvest with another configuration ({'; '.join(diff)}); "
                             f"use another folder or overwrite=True")
        done = {int(k) for k in old["shards"] if (root / "shards" / shard_name(int(k))).is_file()}
    todo = [k for k in range(n_shards) if k not in done]
    kw = {"batch_size": batch_size, "shard_size": shard_size, "dtype": dtype, "seed": seed}
    spec = model_spec(model)
    parts = root / PARTS
    shutil.rmtree(parts, ignore_errors=True)
    written: list[Path] = []
    try:
        for n, (i, files) in enumerate(iter_tasks(_harvest_shard, [(spec, dataset, hooks, positions, k, n_shards, kw,
                                                                    j == 0) for j, k in enumerate(todo)],
                                                  ray=ray, num_cpus=num_cpus, num_gpus=num_gpus), start=1):
            write_tree(parts / str(todo[i]), files)
            written.append(parts / str(todo[i]))
            if progress is not None:
                progress(len(done) + n, n_shards)
        sources = [parts / str(todo[0])] if todo else []  # the part with dataset.json first: merge copies it
        sources += [p for p in written if p not in sources] + ([root] if done else [])
        if not sources:  # nothing was missing: the store is complete already
            return ActivationStore.open(root)
        store = merge(sources, root)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    if store.n_rows == 0:
        raise StoreError(f"no positions were selected in any of the {len(dataset)} examples by {positions}; "
                         f"nothing was stored")
    return store


__all__ = ["harvest_ray"]
