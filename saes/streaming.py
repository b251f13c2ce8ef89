"""Train one SAE straight from the model: harvested rows go into the trainer's mixing buffer as they are made.

For a single SAE a store on disk is a detour (write, checksum, read back). `train_sae_streamed` runs the
harvest's own forwards shard by shard (`interp.activations.stream.iter_shards`) inside the training loop:
epoch 0 computes each shard when the mixing buffer asks for rows and keeps the rows in memory; later
epochs replay them, so every token is run through the model once (sae-lens' runner runs it once per
epoch). Row groups, their order and their permutations are those of the stored path (`train_sae` on
`harvest(model, dataset, [hook], positions, ...)` with the same batch and shard size), so both paths
give the same SAE, bit for bit, and the same seed gives the same weights.

With `store_out` the harvest itself runs in a background thread and writes the store for later SAEs
(resumable, checksummed, as `harvest` always does) while the trainer takes each shard as soon as it is
on disk; later epochs read the store. That uses a second core; without it one thread does everything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from safetensors import safe_open

from interp.activations import ActivationStore, AllTokens, PromptDataset, harvest
from interp.activations.store import INDEX_COLUMNS, shard_name
from interp.activations.stream import count_rows, iter_shards, shard_plan
from interp.io import read_json
from interp.positions import PositionsLike, as_selector
from saes.config import SAEError, SAETrainConfig
from saes.training import (
    DataProvider,
    TrainedSAE,
    base_card,
    epoch_chunks,
    fit,
    save_trained,
    update_card,
)

if TYPE_CHECKING:
    from interp.models import Model


def _keep(acts: torch.Tensor, idx: dict[str, np.ndarray], label_id: int | None, bos: int | None
          ) -> tuple[torch.Tensor, np.ndarray]:
    """The rows of one shard a run trains on (its label, without BOS rows) and their example ids."""
    keep = np.ones(len(idx["example"]), bool)
    if label_id is not None:
        keep &= idx["label"] == label_id
    if bos is not None:
        keep &= idx["token"] != bos
    if keep.all():
        return acts, idx["example"]
    return acts[torch.from_numpy(keep)], idx["example"][keep]


class StreamedRows:
    """The row groups of a streamed run, epoch by epoch (`epoch_chunks` permutes them). Epoch 0 reads `shards()`
    lazily (the model's forwards, or a harvest's files as they appear); with `keep`, its rows (float32) and example
    ids stay in memory and later epochs replay them, otherwise later epochs read `shards()` again."""

    def __init__(self, shards: Callable[[], Iterator[tuple[torch.Tensor, dict[str, np.ndarray]]]],
                 label_id: int | None, bos: int | None, keep: bool = True) -> None:
        self._shards, self.label_id, self.bos, self.keep = shards, label_id, bos, keep
        self.cache: list[tuple[torch.Tensor, np.ndarray]] = []
        self.complete = False
        self.n_rows = 0  # rows epoch 0 has read so far

    def __call__(self, epoch: int) -> Iterator[Float[torch.Tensor, "rows d_in"]]:
        if self.complete and self.keep:
            yield from (a for a, _ in self.cache)
            return
        if self.cache and not self.complete:
            raise RuntimeError("epoch 0 of a streamed run was restarted before it finished")
        for acts, idx in self._shards():
            a, ex = _keep(acts, idx, self.label_id, self.bos)
            a = a.float()
            if not self.complete:
                self.n_rows += len(a)
                if self.keep:
                    self.cache.append((a, ex))
            yield a
        self.complete = True

    def rows(self) -> tuple[torch.Tensor, np.ndarray]:
        """Every row kept so far and its example id."""
        if not self.cache:
            return torch.zeros(0), np.zeros(0, np.int64)
        return torch.cat([a for a, _ in self.cache]), np.concatenate([e for _, e in self.cache])


class _Stopped(Exception):
    """Raised from the harvest's progress callback to stop it when the trainer has failed."""


class HarvestTail:
    """`harvest` into a store in a background thread; `shards()` hands over each shard as soon as it is on disk
    (in order), so training starts after the first shard instead of after the whole harvest."""

    def __init__(self, run: Callable[[Callable[[int, int], None]], ActivationStore], root: Path, n_shards: int,
                 hook: str) -> None:
        self.root, self.n_shards, self.hook = root, n_shards, hook
        self.cond = threading.Condition()
        self.started = self.finished = self.stopping = False
        self.error: BaseException | None = None
        self.store: ActivationStore | None = None

        def progress(done: int, total: int) -> None:
            with self.cond:
                self.started = True
                self.cond.notify_all()
            if self.stopping:
                raise _Stopped  # harvest stops after this shard: the store is left resumable

        def target() -> None:
            try:
                self.store = run(progress)
            except BaseException as e:  # noqa: BLE001  (raised in the trainer's thread by `_wait`)
                self.error = e
            finally:
                with self.cond:
                    self.finished = True
                    self.cond.notify_all()

        self.thread = threading.Thread(target=target, name="saes-harvest", daemon=True)
        self.thread.start()

    def _written(self) -> set[int]:
        return {int(k) for k in read_json(self.root / "manifest.json")["shards"]}

    def _wait(self, k: int) -> None:
        with self.cond:
            while True:
                if self.error is not None:
                    raise self.error
                # before the first shard is written the manifest may still be a previous harvest's
                if (self.started or self.finished) and k in self._written():
                    return
                if self.finished:
                    raise SAEError(f"the harvest into {self.root} ended without shard {k}")
                self.cond.wait(timeout=1.0)

    def shards(self) -> Iterator[tuple[torch.Tensor, dict[str, np.ndarray]]]:
        for k in range(self.n_shards):
            self._wait(k)
            with safe_open(str(self.root / "shards" / shard_name(k)), "pt") as f:
                idx = {c: f.get_tensor(c).numpy() for c in INDEX_COLUMNS}
                acts = f.get_tensor(f"act:{self.hook}")
            yield acts, idx

    def abort(self) -> None:
        """The trainer failed: stop the harvest after the shard it is on and wait for it."""
        self.stopping = True
        self.thread.join()

    def join(self) -> ActivationStore:
        """Wait for the harvest to finish (the store is complete) and return it; raise its error if it had one."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.store is not None
        return self.store


def stream_identity(model: Model, dataset: PromptDataset, positions: Any, batch_size: int, shard_size: int
                    ) -> dict[str, Any]:
    """What a streamed run's rows depend on (a checkpoint of another one is refused)."""
    return {"model_checksum": model.checksum, "dataset_hash": dataset.hash(), "positions": positions.to_dict(),
            "batch_size": batch_size, "shard_size": shard_size}


def train_sae_streamed(model: Model, dataset: PromptDataset, cfg: SAETrainConfig, out: str | Path,
                       positions: PositionsLike = None, *, batch_size: int = 64, shard_size: int = 1024,
                       store_out: str | Path | None = None, resume: bool = True,
                       on_checkpoint: Callable[[int], None] | None = None, metrics: bool = True, ce: bool = False,
                       max_memory_gb: float = 4.0, device: str | None = None) -> TrainedSAE:
    """Train an SAE on `model`'s activations at `cfg.hook` over `dataset` (all tokens unless `positions` says
    otherwise), harvesting as training goes instead of first writing a store. The SAE equals `train_sae` on
    `harvest(model, dataset, [cfg.hook], positions, ..., batch_size=, shard_size=)`. With `store_out`, that store
    is also written (by a background harvest; returned complete). The card's metrics come from the rows it
    streamed (CE recovered too when `ce`); `max_memory_gb` bounds the rows kept in memory without a store. The
    SAE trains on `device`, by default the model's."""
    selector = as_selector(positions, AllTokens())
    labels = list(selector.labels())
    if cfg.label is not None and cfg.label not in labels:
        raise SAEError(f"position label {cfg.label!r} is not picked by {selector}; it picks {labels}")
    label_id = labels.index(cfg.label) if cfg.label is not None else None
    hooks = model.hooks([cfg.hook])
    if len(hooks) != 1:
        raise SAEError(f"an SAE reads one hook, {cfg.hook!r} names {len(hooks)}")
    bos = (model.bos_token_id if model.prepend_bos else None) if cfg.exclude_bos else None
    shard_size, n_shards = shard_plan(len(dataset), batch_size, shard_size)
    out = Path(out)
    need = count_rows(model, dataset, selector) * model.d_model * 4 / 2 ** 30
    fits = need <= max_memory_gb
    tail: HarvestTail | None = None
    if store_out is None:
        if not fits:
            raise SAEError(f"streaming keeps every row in memory ({need:.1f} GiB of float32 rows > max_memory_gb="
                           f"{max_memory_gb:g}): pass store_out= to harvest a store and read later epochs from it, or "
                           f"raise max_memory_gb")

        def from_model() -> Iterator[tuple[torch.Tensor, dict[str, np.ndarray]]]:
            for _, acts, idx in iter_shards(model, dataset, hooks, selector, batch_size=batch_size,
                                            shard_size=shard_size):
                yield acts[cfg.hook], idx

        source = StreamedRows(from_model, label_id, bos)
    else:
        root = Path(store_out)
        tail = HarvestTail(lambda progress: harvest(model, dataset, hooks, selector, root, batch_size=batch_size,
                                                    shard_size=shard_size, progress=progress),
                           root, n_shards, cfg.hook)
        source = StreamedRows(tail.shards, label_id, bos, keep=fits)
    identity = stream_identity(model, dataset, selector, batch_size, shard_size) | {"label": cfg.label}
    meta = {"hook_name": cfg.hook, "model_name": model.name}
    try:
        provider = DataProvider(epoch_chunks(source, cfg.seed, cfg.chunk_rows), cfg)
        fitted = fit(provider, cfg, int(model.d_model), meta, out, resume, identity, on_checkpoint,
                     str(model.device) if device is None else device)
        store = tail.join() if tail is not None else None
    except BaseException:
        if tail is not None:
            tail.abort()  # a failed run leaves a resumable store, never a half-written shard
        raise
    x, ex = source.rows()
    card = base_card(fitted, cfg, int(model.d_model), model.name, model.checksum) | {
        "source": "streamed", "store": str(store.root) if store is not None else None,
        "store_dataset_hash": dataset.hash(), "stream": identity, "store_rows": source.n_rows if source.complete else None,
        "excluded_token_id": bos}
    saved = save_trained(fitted, card, out)
    if metrics:
        if store is not None and not source.keep:
            from saes.metrics import quality

            q, _ = quality(saved, store, cfg.hook, cfg.label, model=model if ce else None, exclude_bos=cfg.exclude_bos)
        else:
            from saes.metrics import rows_quality

            q, _ = rows_quality(saved, x, ex, cfg.hook, model=model if ce else None, examples=dataset.examples,
                                exclude_bos=cfg.exclude_bos)
        card = update_card(out, metrics=q.to_dict(),
                           metrics_rows="all rows" if source.complete else f"the first {len(x)} rows streamed")
    return TrainedSAE(out, card)


__all__ = ["HarvestTail", "StreamedRows", "stream_identity", "train_sae_streamed"]
