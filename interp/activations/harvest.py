"""Harvest activations of a model at chosen hooks and positions over a dataset, streamed to disk shards.

Only the requested hooks are kept, and the forward pass stops as soon as the last of them has fired
(later layers and the unembedding never run). Batches are right-padded: in a causal model a token never
sees the padding after it, so no attention mask is needed and each row's activations are exact. Memory
is bounded by one shard, not by the dataset. Shards are fixed runs of examples and batches never cross a
shard, so a resumed harvest, or shards harvested by several processes (`shard=(i, N)`) and merged,
give byte-identical files to one uninterrupted run.

Writing overlaps compute: a finished shard goes to a writer thread (finiteness check, safetensors file,
sha256, manifest) while the next shard's forwards run. At most two shards are in flight (one filling,
one writing; their buffers are reused, pinned on CUDA, where copies to the host run asynchronously), so
memory stays flat. A writer error (NaN/inf, disk full) is raised in the caller, and a shard file only
appears, by rename, once it is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from interp.activations.dataset import Example, PromptDataset
from interp.activations.store import (
    FORMAT_VERSION,
    ActivationStore,
    StoreError,
    config_differences,
    shard_name,
    write_manifest,
)
from interp.io import library_versions, read_json, sha256_file
from interp.models import DTYPES
from interp.positions import PositionsLike, Selector, as_selector
from interp.sites import Hooks, add_capture, cached_sites, heads_view, kind_of_hook

if TYPE_CHECKING:
    from interp.models import Model

UNSUPPORTED_HOOK_PARTS = ("hook_pattern", "hook_attn_scores")


class NonFiniteActivationError(FloatingPointError):
    """NaN or inf in a harvested activation; the message says which hook, example, position and token."""


class _Stop(Exception):
    """Raised from the last needed hook to end the forward pass early."""


def _check_hooks(model: Model, hooks: str | Sequence[str]) -> list[str]:
    hooks = list(dict.fromkeys([hooks] if isinstance(hooks, str) else hooks))
    if not hooks:
        raise ValueError("no hooks given: name at least one, e.g. blocks.0.hook_resid_post")
    hooks = model.hooks(hooks)  # `blocks.*.hook_resid_post` patterns expanded, every name checked
    bad = [h for h in hooks if h.endswith(UNSUPPORTED_HOOK_PARTS)]
    if bad:
        raise ValueError(f"{bad}: attention patterns are [head, query, key] per prompt, not one vector per "
                         f"position; harvest blocks.L.attn.hook_z or hook_attn_out instead, or read patterns "
                         f"with model.bridge.run_with_cache")
    return hooks


class _Span:
    """One shard's examples indexed as in the whole dataset (`span[i]` is example i for start <= i < stop): what a
    worker harvesting that shard needs of the dataset, and all it is sent."""

    def __init__(self, examples: Sequence[Example], start: int) -> None:
        self.examples, self.start = tuple(examples), start

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        if not self.start <= i < self.start + len(self.examples):
            raise IndexError(f"example {i} is not in this span [{self.start}, {self.start + len(self.examples)})")
        return self.examples[i - self.start]


def _select(dataset: PromptDataset | _Span, selector: Selector, tokenizer: Any, start: int, stop: int
            ) -> list[list[tuple[int, int]]]:
    """Per example in [start, stop): (label id, position) pairs."""
    label_ids = {lab: i for i, lab in enumerate(selector.labels())}
    out = []
    for i in range(start, stop):
        picked = selector.select(dataset[i], i, tokenizer)
        out.append([(label_ids[lab], pos) for lab, pos in picked])
    return out


def _shard_rows(dataset: PromptDataset | _Span, selector: Selector, tokenizer: Any, start: int, stop: int
                ) -> tuple[list[list[tuple[int, int]]], torch.Tensor]:
    """The shard's picks per example and its index columns [rows, 4] (example, position, label id, token),
    known before any forward."""
    picks = _select(dataset, selector, tokenizer, start, stop)
    cols = torch.tensor([(i, pos, lab, dataset[i].ids[pos]) for i in range(start, stop)
                         for lab, pos in picks[i - start]], dtype=torch.int64).reshape(-1, 4)
    return picks, cols


def _shard_batches(dataset: PromptDataset | _Span, picks: list[list[tuple[int, int]]], start: int, stop: int,
                   batch_size: int, pad: int) -> Iterator[tuple[int, torch.Tensor, int, int]]:
    """(first example, right-padded ids [batch, width] on the CPU, first row, row count) for each batch of the
    shard that picks at least one position."""
    at = 0
    for b0 in range(start, stop, batch_size):
        b1 = min(stop, b0 + batch_size)
        n = sum(len(picks[i - start]) for i in range(b0, b1))
        if n == 0:
            continue
        seqs = [dataset[i].ids for i in range(b0, b1)]
        width = max(len(s) for s in seqs)
        yield b0, torch.tensor([list(s) + [pad] * (width - len(s)) for s in seqs]), at, n
        at += n


class _Sink(dict):
    """`add_capture` records into a dict; this one hands each activation to `keep` at once instead."""

    def __init__(self, name: str, view: Callable[[torch.Tensor], torch.Tensor] | None,
                 keep: Callable[[str, torch.Tensor], None]) -> None:
        super().__init__()
        self.name, self.view, self.keep = name, view, keep

    def __setitem__(self, layer: int, act: torch.Tensor) -> None:
        self.keep(self.name, self.view(act) if self.view else act)


def _forward_batch(model: Any, hooks: list[str], ids: torch.Tensor, b_idx: torch.Tensor, p_idx: torch.Tensor,
                   to_cpu: bool = True) -> dict[str, torch.Tensor]:
    """Run the model on `ids` until every hook in `hooks` has fired; gather rows (b_idx, p_idx) of each (a copy:
    the forward's tensors are not kept), on the CPU or, with `to_cpu=False`, on the model's device.

    When every hook is an HF module boundary (`interp.sites`) the forward runs on `model.hf` with its own
    fast attention, otherwise on the Bridge; both are tested equal to `run_with_cache`."""
    got: dict[str, torch.Tensor] = {}

    def keep(name: str, act: torch.Tensor) -> None:
        if act.shape[:2] != ids.shape:
            raise ValueError(f"hook {name} gives activations of shape {tuple(act.shape)}, not [batch, pos, ...] "
                             f"= [{ids.shape[0]}, {ids.shape[1]}, ...]; it cannot be stored per position")
        rows = act[b_idx, p_idx].detach()  # advanced indexing copies
        got[name] = rows.to("cpu") if to_cpu else rows
        if len(got) == len(hooks):
            raise _Stop

    kinds = [kind_of_hook(h) for h in hooks]
    s = cached_sites(model) if all(kinds) else None
    with torch.no_grad():
        if s is not None:
            with Hooks() as hk:
                for h, (kind, layer) in zip(hooks, kinds):  # type: ignore[misc]
                    view = (lambda a, s=s: heads_view(a, s)) if kind == "z" else None
                    add_capture(hk, s, kind, layer, _Sink(h, view, keep))
                try:
                    model.hf(input_ids=ids, use_cache=False)
                except _Stop:
                    pass
        else:
            def keeper(name: str) -> Callable[[torch.Tensor, Any], None]:
                return lambda act, hook: keep(name, act)

            with model.bridge.hooks(fwd_hooks=[(h, keeper(h)) for h in hooks]):
                try:
                    model.bridge(ids, return_type=None)
                except _Stop:
                    pass
    missing = [h for h in hooks if h not in got]
    if missing:
        raise RuntimeError(f"hooks {missing} never fired in the forward pass of {model.name}")
    return got


def _release_free_memory() -> None:
    """Hand memory freed by the last shard back to the OS (glibc keeps it otherwise, and RSS creeps)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _non_finite_rows(acts: torch.Tensor) -> torch.Tensor:
    """Per row: does it hold a NaN or inf? (bool [rows]; computed where `acts` lives, without a host sync)."""
    return ~torch.isfinite(acts.reshape(acts.shape[0], -1)).all(-1)


def _raise_non_finite(bad: torch.Tensor, hooks: Sequence[str], batches: Sequence[tuple[int, int]], cols: torch.Tensor,
                      model: Any, shard: int) -> None:
    """Refuse NaN/inf, naming the hook, example, position and token of the first bad row (batch by batch, hook by
    hook: the order the forwards ran in). `bad` is [hooks, rows]."""
    if not bool(bad.any()):
        return
    for at, n in batches:
        for j, hook in enumerate(hooks):
            seg = bad[j, at:at + n]
            if bool(seg.any()):
                r = at + int(seg.nonzero()[0, 0])
                ex, pos, _, tok = (int(v) for v in cols[r])
                word = model.tokenizer.convert_ids_to_tokens([tok])[0]
                raise NonFiniteActivationError(
                    f"NaN/inf in {hook} of {model.name} at example {ex}, position {pos} (token {word!r}), shard "
                    f"{shard}; {int(seg.sum())} bad row(s) in this batch. Check the model's dtype and weights")


@dataclass
class _Buffers:
    """Host memory of one shard in flight: activations per hook, NaN/inf flags [hooks, rows]; grown as needed and
    reused shard after shard (pinned on CUDA so device-to-host copies run asynchronously)."""

    pin: bool
    acts: dict[str, torch.Tensor] = field(default_factory=dict)
    bad: torch.Tensor | None = None

    def ready(self, hooks: Sequence[str], shapes: dict[str, list[int]], rows: int, dtype: torch.dtype) -> None:
        for h in hooks:
            if h not in self.acts or self.acts[h].shape[0] < rows:
                self.acts[h] = torch.empty(max(rows, 1), *shapes[h], dtype=dtype, pin_memory=self.pin)
        if self.bad is None or self.bad.shape[1] < rows:
            self.bad = torch.empty(len(hooks), max(rows, 1), dtype=torch.bool, pin_memory=self.pin)


@dataclass
class _Shard:
    """A filled shard handed to the writer."""

    k: int
    start: int
    stop: int
    cols: torch.Tensor
    batches: list[tuple[int, int]]
    buffers: _Buffers
    ready: Any = None  # a CUDA event recorded after the last copy, or None on CPU


def _fill_shard(model: Any, dataset: PromptDataset | _Span, hooks: list[str], positions: Selector, k: int, start: int,
                stop: int, batch_size: int, shapes: dict[str, list[int]], torch_dtype: torch.dtype, buffers: _Buffers,
                check: Callable[[], None] = lambda: None) -> _Shard:
    """Run shard k's forwards (examples [start, stop)) into `buffers`; `check()` runs after each batch (the writer's
    error stops the harvest early). On CUDA the copies to the host are still in flight: wait on `ready`."""
    device = model.device
    cuda = device.type == "cuda"
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0

    def to_device(t: torch.Tensor) -> torch.Tensor:  # on CUDA without a host sync (pinned, asynchronous)
        return t.pin_memory().to(device, non_blocking=True) if cuda else t.to(device)

    # the shard's rows are known before any forward: fill preallocated tensors (no per-batch lists to join)
    picks, cols = _shard_rows(dataset, positions, model.tokenizer, start, stop)
    buffers.ready(hooks, shapes, len(cols), torch_dtype)
    bad = buffers.bad
    assert bad is not None
    batches = []
    for b0, ids, at, n in _shard_batches(dataset, picks, start, stop, batch_size, pad):
        rows = cols[at:at + n]
        acts = _forward_batch(model, hooks, to_device(ids), to_device(rows[:, 0] - b0),
                              to_device(rows[:, 1].contiguous()), to_cpu=not cuda)
        for j, h in enumerate(hooks):
            # flags from the activations as the model made them (before any cast to the store's dtype)
            bad[j, at:at + n].copy_(_non_finite_rows(acts[h]), non_blocking=cuda)
            # on CUDA cast on the device (fewer bytes to copy when the store is narrower), then copy async
            buffers.acts[h][at:at + n].copy_(acts[h].to(torch_dtype) if cuda else acts[h], non_blocking=cuda)
        batches.append((at, n))
        check()
    ready = None
    if cuda:
        ready = torch.cuda.Event()
        ready.record()
    return _Shard(k, start, stop, cols, batches, buffers, ready)


def _shard_tensors(s: _Shard, hooks: Sequence[str], model: Any) -> dict[str, torch.Tensor]:
    """The tensors of shard file `s` (activations per hook, then the index columns), after refusing NaN/inf.
    Wait on `s.ready` first."""
    rows = len(s.cols)
    b = s.buffers
    assert b.bad is not None
    _raise_non_finite(b.bad[:, :rows], hooks, s.batches, s.cols, model, s.k)
    tensors = {f"act:{h}": b.acts[h][:rows] for h in hooks}
    tensors.update(example=s.cols[:, 0].contiguous(), position=s.cols[:, 1].contiguous(),
                   label=s.cols[:, 2].to(torch.int32).contiguous(), token=s.cols[:, 3].contiguous())
    return tensors


class _ShardWriter:
    """The thread that checks and writes finished shards, in order, while the caller computes the next one.

    Two buffer sets circulate between caller and writer, so at most two shards are in memory. After each shard
    is on disk (file renamed into place, manifest updated) it calls `on_written` (the caller's progress). The
    first error, there or in writing, stops all writing; `take_buffers` and `close` raise it in the caller."""

    def __init__(self, root: Path, manifest: dict[str, Any], hooks: list[str], model: Any, pin: bool,
                 on_written: Callable[[], None]) -> None:
        self.root, self.manifest, self.hooks, self.model = root, manifest, hooks, model
        self.on_written = on_written
        self.todo: queue.Queue[_Shard | None] = queue.Queue()
        self.free: queue.Queue[_Buffers] = queue.Queue()
        for _ in range(2):
            self.free.put(_Buffers(pin))
        self.error: BaseException | None = None
        self.abandon = False
        self.thread = threading.Thread(target=self._run, name="interp-harvest-writer", daemon=True)
        self.thread.start()

    def check(self) -> None:
        """Raise the writer's error, if it had one (the caller checks between batches, to stop early)."""
        if self.error is not None:
            raise self.error

    def take_buffers(self) -> _Buffers:
        """A free buffer set (waits while two shards are in flight); raises the writer's error if it had one."""
        self.check()
        buffers = self.free.get()
        self.check()
        return buffers

    def put(self, shard: _Shard) -> None:
        self.todo.put(shard)

    def close(self) -> None:
        """Let the writer finish the shards it holds, stop it, and raise its error if it had one."""
        self.todo.put(None)
        self.thread.join()
        self.check()

    def abort(self) -> None:
        """The caller failed: finish the file being written (if any), drop the queued shards, stop."""
        self.abandon = True
        self.todo.put(None)
        self.thread.join()

    def _run(self) -> None:
        while (shard := self.todo.get()) is not None:
            try:
                if self.error is None and not self.abandon:
                    self._write(shard)
                    self.on_written()  # the caller's progress: an error there stops the harvest here too
            except BaseException as e:  # noqa: BLE001  (handed to the caller, which raises it)
                self.error = e
            finally:
                self.free.put(shard.buffers)

    def _write(self, s: _Shard) -> None:
        if s.ready is not None:
            s.ready.synchronize()
        rows = len(s.cols)
        tensors = _shard_tensors(s, self.hooks, self.model)
        path = self.root / "shards" / shard_name(s.k)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            save_file(tensors, str(tmp))
            digest = sha256_file(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        del tensors
        self.manifest["shards"][str(s.k)] = {"rows": rows, "examples": [s.start, s.stop], "sha256": digest}
        write_manifest(self.root, self.manifest)
        _release_free_memory()


def _check_args(model: Any, dataset: PromptDataset, dtype: str, batch_size: int, shard_size: int) -> int:
    """Refuse a harvest that cannot run; the shard size rounded down to whole batches (batches never cross a shard)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {list(DTYPES)}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    if dataset.max_len > model.n_ctx:
        long = next(i for i, e in enumerate(dataset) if len(e.ids) > model.n_ctx)
        raise ValueError(f"example {long} has {len(dataset[long].ids)} tokens, more than {model.name}'s context "
                         f"length of {model.n_ctx}: shorten the prompts")
    return max(batch_size, shard_size // batch_size * batch_size)


def _new_manifest(model: Any, dataset: PromptDataset, dataset_hash: str, hooks: list[str], positions: Selector, *,
                  dtype: str, batch_size: int, shard_size: int, seed: int, shard: tuple[int, int]) -> dict[str, Any]:
    """The manifest of a harvest with no shard written yet, in its on-disk form (`shard_size` already rounded)."""
    i_part, n_parts = shard
    # probe the per-row shape of every hook on the first example (cheap, and validates the hooks)
    first = _forward_batch(model, hooks, torch.tensor([dataset[0].ids], device=model.device),
                           torch.tensor([0]), torch.tensor([0]))
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "model_name": model.name, "model_checksum": model.checksum,
        "hooks": {h: list(first[h].shape[1:]) for h in hooks}, "positions": positions.to_dict(),
        "labels": list(positions.labels()), "dtype": dtype, "dataset_hash": dataset_hash,
        "n_examples": len(dataset), "batch_size": batch_size, "shard_size": shard_size,
        "n_shards": (len(dataset) + shard_size - 1) // shard_size,
        "seed": seed, "shard_of": [i_part, n_parts] if n_parts > 1 else None, "shards": {},
        "bos_token_id": model.bos_token_id if model.prepend_bos else None, "libraries": library_versions(),
    }
    return json.loads(json.dumps(manifest))  # the form it has on disk (tuples become lists)


def _open_store(root: Path, manifest: dict[str, Any], dataset: PromptDataset, overwrite: bool) -> dict[str, Any]:
    """Start (or resume) the store at `root`: refuse one of another configuration unless `overwrite`, keep the shards
    on disk of one with the same, write dataset.json (if missing) and the manifest. Returns the manifest."""
    if (root / "manifest.json").is_file() and not overwrite:
        old = read_json(root / "manifest.json")
        diff = config_differences(old, manifest)
        if diff:
            raise StoreError(f"{root} holds a harvest with another configuration ({'; '.join(diff)}); "
                             f"use another folder or overwrite=True")
        manifest["shards"] = {k: v for k, v in old["shards"].items() if (root / "shards" / shard_name(int(k))).is_file()}
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "dataset.json").is_file() or overwrite:
        dataset.save(root / "dataset.json")
    write_manifest(root, manifest)
    return manifest


def _nothing_selected(dataset: PromptDataset, positions: Selector) -> StoreError:
    return StoreError(f"no positions were selected in any of the {len(dataset)} examples by {positions}; "
                      f"nothing was stored")


def harvest(
    model: Model,
    dataset: PromptDataset,
    hooks: str | Sequence[str],
    positions: PositionsLike,
    out: str | Path,
    *,
    batch_size: int = 64,
    shard_size: int = 1024,
    dtype: str = "float32",
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    ray: str | bool | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
) -> ActivationStore:
    """Harvest `hooks` at `positions` of every example into the store at `out` and return it opened.

    `shard=(i, N)` harvests only shards k with k % N == i (merge the parts with `merge`). A store left
    by an interrupted run with the same configuration is resumed; another configuration is an error
    unless `overwrite`. `seed` is recorded (the dataset's seed: the harvest itself is deterministic).
    `progress(done, total)` is called after each shard is on disk, from the writer thread; an exception it
    raises stops the harvest (no later shard is written) and reaches the caller. `hooks` may hold patterns
    (`blocks.*.hook_resid_post`); `positions` is any `interp.positions` form (`"answer"`, `"last"`, `-1`, a
    selector). The manifest records the BOS id the model prepends (None if it prepends none), so SAE code
    leaves out exactly those rows. `ray` (True/"local", "auto", "host:port"; see `interp.cluster`) runs each
    shard as a Ray task declaring `num_cpus`/`num_gpus` (the model is loaded from its folder once per worker, each
    task is sent only its shard's prompts) and writes the same bytes as a run in this process."""
    if ray not in (None, False, ""):
        if shard != (0, 1):
            raise ValueError("ray= runs every shard itself: leave shard at (0, 1)")
        from interp.activations.parallel import harvest_ray

        return harvest_ray(model, dataset, hooks, positions, out, ray=ray, batch_size=batch_size,
                           shard_size=shard_size, dtype=dtype, seed=seed, overwrite=overwrite, progress=progress,
                           num_cpus=num_cpus, num_gpus=num_gpus)
    hooks = _check_hooks(model, hooks)
    positions = as_selector(positions)
    i_part, n_parts = shard
    if not (n_parts >= 1 and 0 <= i_part < n_parts):
        raise ValueError(f"shard must be (i, N) with 0 <= i < N, got {shard}")
    shard_size = _check_args(model, dataset, dtype, batch_size, shard_size)
    manifest = _new_manifest(model, dataset, dataset.hash(), hooks, positions, dtype=dtype, batch_size=batch_size,
                             shard_size=shard_size, seed=seed, shard=shard)
    root = Path(out)
    manifest = _open_store(root, manifest, dataset, overwrite)
    mine = [k for k in range(manifest["n_shards"]) if k % n_parts == i_part]
    done = sum(str(k) in manifest["shards"] for k in mine)
    torch_dtype = DTYPES[dtype]
    todo = [k for k in mine if str(k) not in manifest["shards"]]

    def written() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(mine))

    writer = _ShardWriter(root, manifest, hooks, model, pin=model.device.type == "cuda", on_written=written)

    try:
        for k in todo:
            start, stop = k * shard_size, min(len(dataset), (k + 1) * shard_size)
            writer.put(_fill_shard(model, dataset, hooks, positions, k, start, stop, batch_size, manifest["hooks"],
                                   torch_dtype, writer.take_buffers(), writer.check))
    except BaseException:
        writer.abort()  # no shard is left half-written: files appear by rename once complete
        raise
    writer.close()
    store = ActivationStore.open(root, allow_partial=n_parts > 1)
    if n_parts == 1 and store.n_rows == 0:
        raise _nothing_selected(dataset, positions)
    return store

__all__ = ["DTYPES", "NonFiniteActivationError", "harvest"]
