"""A harvest split into one Ray task per shard, written into the store a single process would write.

The caller does once what is done once per harvest: it checks the arguments, hashes the dataset, builds the
manifest (one forward on the first example gives each hook's row shape) and writes dataset.json. Each task
gets only its shard's prompts (`_Span`, indexed as in the whole dataset) and the manifest's row shapes, runs
that shard's forwards with the model its worker process loaded once (`worker_model`, checked against the
caller's checksum), and returns the shard file as bytes with its sha256. The caller writes each file as it
arrives (atomically) and records it in the manifest, so the store is byte-identical to `harvest` in one
process, an interrupted run resumes like one, and no shared filesystem is needed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import save

from interp.activations.dataset import PromptDataset
from interp.activations.harvest import (
    _Buffers,
    _check_args,
    _check_hooks,
    _fill_shard,
    _new_manifest,
    _nothing_selected,
    _open_store,
    _shard_tensors,
    _Span,
)
from interp.activations.store import ActivationStore, shard_name, write_manifest
from interp.cluster import RaySpec, iter_tasks, model_spec, worker_model
from interp.models import DTYPES
from interp.positions import PositionsLike, Selector, as_selector

if TYPE_CHECKING:
    from interp.models import Model


def harvest_span(model: Model, span: _Span, k: int, hooks: list[str], positions: Selector,
                 shapes: dict[str, list[int]], batch_size: int, dtype: str) -> tuple[int, bytes, str]:
    """Shard k of a harvest whose examples [start, stop) are `span`: (rows, the shard file's bytes, their sha256),
    the same bytes `harvest` writes to that shard. NaN/inf raises `NonFiniteActivationError` as harvest does."""
    cuda = model.device.type == "cuda"
    s = _fill_shard(model, span, hooks, positions, k, span.start, span.start + len(span), batch_size, shapes,
                    DTYPES[dtype], _Buffers(pin=cuda))
    if s.ready is not None:
        s.ready.synchronize()
    rows, data = len(s.cols), save(_shard_tensors(s, hooks, model))
    return rows, data, hashlib.sha256(data).hexdigest()


def _harvest_shard(spec: tuple[str, str, str, str, str], span: _Span, k: int, hooks: list[str], positions: Selector,
                   shapes: dict[str, list[int]], batch_size: int, dtype: str) -> tuple[int, bytes, str]:
    """One Ray task: `harvest_span` with the model its worker loaded once."""
    return harvest_span(worker_model(spec), span, k, hooks, positions, shapes, batch_size, dtype)


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
    hooks = _check_hooks(model, hooks)
    positions = as_selector(positions)
    shard_size = _check_args(model, dataset, dtype, batch_size, shard_size)
    manifest = _new_manifest(model, dataset, dataset.hash(), hooks, positions, dtype=dtype, batch_size=batch_size,
                             shard_size=shard_size, seed=seed, shard=(0, 1))
    root = Path(out)
    manifest = _open_store(root, manifest, dataset, overwrite)
    n_shards = manifest["n_shards"]
    todo = [k for k in range(n_shards) if str(k) not in manifest["shards"]]
    spec, shapes = model_spec(model), manifest["hooks"]
    spans = [_Span(dataset.examples[k * shard_size:(k + 1) * shard_size], k * shard_size) for k in todo]
    args = [(spec, span, k, hooks, positions, shapes, batch_size, dtype) for k, span in zip(todo, spans)]
    (root / "shards").mkdir(parents=True, exist_ok=True)
    for n, (i, (rows, data, digest)) in enumerate(iter_tasks(_harvest_shard, args, ray=ray, num_cpus=num_cpus,
                                                             num_gpus=num_gpus), start=1):
        k, span = todo[i], spans[i]
        path = root / "shards" / shard_name(k)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        shards = {**manifest["shards"], str(k): {"rows": rows, "examples": [span.start, span.start + len(span)],
                                                  "sha256": digest}}
        manifest["shards"] = dict(sorted(shards.items(), key=lambda kv: int(kv[0])))  # as one process orders them
        write_manifest(root, manifest)
        if progress is not None:
            progress(n_shards - len(todo) + n, n_shards)
    store = ActivationStore.open(root)
    if store.n_rows == 0:
        raise _nothing_selected(dataset, positions)
    return store


__all__ = ["harvest_ray", "harvest_span"]
