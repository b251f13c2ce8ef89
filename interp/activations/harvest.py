"""Harvest activations of a model at chosen hooks and positions over a dataset, streamed to disk shards.

Only the requested hooks are kept, and the forward pass stops as soon as the last of them has fired
(later layers and the unembedding never run). Batches are right-padded: in a causal model a token never
sees the padding after it, so no attention mask is needed and each row's activations are exact. Memory
is bounded by one shard, not by the dataset. Shards are fixed runs of examples and batches never cross a
shard, so a resumed harvest, or shards harvested by several processes (`shard=(i, N)`) and merged,
give byte-identical files to one uninterrupted run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from interp.activations.dataset import PromptDataset
from interp.positions import Selector
from interp.activations.store import (
    FORMAT_VERSION,
    ActivationStore,
    StoreError,
    config_differences,
    shard_name,
    write_manifest,
)
from interp.io import library_versions, read_json, save_tensors, sha256_file
from interp.sites import Hooks, add_capture, cached_sites, heads_view, kind_of_hook

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
UNSUPPORTED_HOOK_PARTS = ("hook_pattern", "hook_attn_scores")


class NonFiniteActivationError(FloatingPointError):
    """NaN or inf in a harvested activation; the message says which hook, example, position and token."""


class _Stop(Exception):
    """Raised from the last needed hook to end the forward pass early."""


def _check_hooks(model: Any, hooks: Sequence[str]) -> list[str]:
    hooks = list(dict.fromkeys(hooks))
    if not hooks:
        raise ValueError("no hooks given: name at least one, e.g. blocks.0.hook_resid_post")
    model.check_hooks(hooks)
    bad = [h for h in hooks if h.endswith(UNSUPPORTED_HOOK_PARTS)]
    if bad:
        raise ValueError(f"{bad}: attention patterns are [head, query, key] per prompt, not one vector per "
                         f"position; harvest blocks.L.attn.hook_z or hook_attn_out instead, or read patterns "
                         f"with model.bridge.run_with_cache")
    return hooks


def _select(dataset: PromptDataset, selector: Selector, tokenizer: Any, start: int, stop: int
            ) -> list[list[tuple[int, int]]]:
    """Per example in [start, stop): (label id, position) pairs."""
    label_ids = {lab: i for i, lab in enumerate(selector.labels())}
    out = []
    for i in range(start, stop):
        picked = selector.select(dataset[i], i, tokenizer)
        out.append([(label_ids[lab], pos) for lab, pos in picked])
    return out


class _Sink(dict):
    """`add_capture` records into a dict; this one hands each activation to `keep` at once instead."""

    def __init__(self, name: str, view: Callable[[torch.Tensor], torch.Tensor] | None,
                 keep: Callable[[str, torch.Tensor], None]) -> None:
        super().__init__()
        self.name, self.view, self.keep = name, view, keep

    def __setitem__(self, layer: int, act: torch.Tensor) -> None:
        self.keep(self.name, self.view(act) if self.view else act)


def _forward_batch(model: Any, hooks: list[str], ids: torch.Tensor, b_idx: torch.Tensor, p_idx: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
    """Run the model on `ids` until every hook in `hooks` has fired; gather rows (b_idx, p_idx) of each.

    When every hook is an HF module boundary (`interp.sites`) the forward runs on `model.hf` with its own
    fast attention, otherwise on the Bridge; both are tested equal to `run_with_cache`."""
    got: dict[str, torch.Tensor] = {}

    def keep(name: str, act: torch.Tensor) -> None:
        if act.shape[:2] != ids.shape:
            raise ValueError(f"hook {name} gives activations of shape {tuple(act.shape)}, not [batch, pos, ...] "
                             f"= [{ids.shape[0]}, {ids.shape[1]}, ...]; it cannot be stored per position")
        got[name] = act[b_idx, p_idx].detach().to("cpu", copy=True)
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


def _check_finite(acts: torch.Tensor, hook: str, rows: torch.Tensor, model: Any, shard: int) -> None:
    """Refuse NaN/inf, naming the hook, example, position and token of the first bad row."""
    bad = ~torch.isfinite(acts.reshape(acts.shape[0], -1)).all(-1)
    if bad.any():
        r = int(bad.nonzero()[0, 0])
        ex, pos, _, tok = (int(v) for v in rows[r])
        word = model.tokenizer.convert_ids_to_tokens([tok])[0]
        raise NonFiniteActivationError(
            f"NaN/inf in {hook} of {model.name} at example {ex}, position {pos} (token {word!r}), shard {shard}; "
            f"{int(bad.sum())} bad row(s) in this batch. Check the model's dtype and weights")


def harvest(
    model: Any,
    dataset: PromptDataset,
    hooks: Sequence[str],
    positions: Selector,
    out: str | Path,
    *,
    batch_size: int = 64,
    shard_size: int = 1024,
    dtype: str = "float32",
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ActivationStore:
    """Harvest `hooks` at `positions` of every example into the store at `out` and return it opened.

    `shard=(i, N)` harvests only shards k with k % N == i (merge the parts with `merge`). A store left
    by an interrupted run with the same configuration is resumed; another configuration is an error
    unless `overwrite`. `seed` is recorded (the dataset's seed: the harvest itself is deterministic).
    `progress(done, total)` is called after each shard."""
    hooks = _check_hooks(model, hooks)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {list(DTYPES)}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    i_part, n_parts = shard
    if not (n_parts >= 1 and 0 <= i_part < n_parts):
        raise ValueError(f"shard must be (i, N) with 0 <= i < N, got {shard}")
    if dataset.max_len > model.n_ctx:
        long = next(i for i, e in enumerate(dataset) if len(e.ids) > model.n_ctx)
        raise ValueError(f"example {long} has {len(dataset[long].ids)} tokens, more than {model.name}'s context "
                         f"length of {model.n_ctx}: shorten the prompts")
    shard_size = max(batch_size, shard_size // batch_size * batch_size)  # batches never cross a shard
    n_shards = (len(dataset) + shard_size - 1) // shard_size
    # probe the per-row shape of every hook on the first example (cheap, and validates the hooks)
    first = _forward_batch(model, hooks, torch.tensor([dataset[0].ids], device=model.device),
                           torch.tensor([0]), torch.tensor([0]))
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "model_name": model.name, "model_checksum": model.checksum,
        "hooks": {h: list(first[h].shape[1:]) for h in hooks}, "positions": positions.to_dict(),
        "labels": list(positions.labels()), "dtype": dtype, "dataset_hash": dataset.hash(),
        "n_examples": len(dataset), "batch_size": batch_size, "shard_size": shard_size, "n_shards": n_shards,
        "seed": seed, "shard_of": [i_part, n_parts] if n_parts > 1 else None, "shards": {},
        "libraries": library_versions(),
    }
    manifest = json.loads(json.dumps(manifest))  # the form it has on disk (tuples become lists)
    root = Path(out)
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
    mine = [k for k in range(n_shards) if k % n_parts == i_part]
    done = sum(str(k) in manifest["shards"] for k in mine)
    torch_dtype = DTYPES[dtype]
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    for k in mine:
        if str(k) in manifest["shards"]:
            continue
        start, stop = k * shard_size, min(len(dataset), (k + 1) * shard_size)
        picks = _select(dataset, positions, model.tokenizer, start, stop)
        # the shard's rows are known before any forward: fill preallocated tensors (no per-batch lists to join)
        cols = torch.tensor([(i, pos, lab, dataset[i].ids[pos]) for i in range(start, stop) for lab, pos in picks[i - start]],
                            dtype=torch.int64).reshape(-1, 4)
        bufs = {h: torch.empty(len(cols), *manifest["hooks"][h], dtype=torch_dtype) for h in hooks}
        at = 0
        for b0 in range(start, stop, batch_size):
            b1 = min(stop, b0 + batch_size)
            n = sum(len(picks[i - start]) for i in range(b0, b1))
            if n == 0:
                continue
            seqs = [dataset[i].ids for i in range(b0, b1)]
            width = max(len(s) for s in seqs)
            ids = torch.tensor([list(s) + [pad] * (width - len(s)) for s in seqs], device=model.device)
            rows = cols[at:at + n]
            acts = _forward_batch(model, hooks, ids, (rows[:, 0] - b0).to(model.device), rows[:, 1].to(model.device))
            for h in hooks:
                _check_finite(acts[h], h, rows, model, k)
                bufs[h][at:at + n] = acts[h]
            at += n
        tensors = {f"act:{h}": b for h, b in bufs.items()}
        tensors.update(example=cols[:, 0].contiguous(), position=cols[:, 1].contiguous(),
                       label=cols[:, 2].to(torch.int32).contiguous(), token=cols[:, 3].contiguous())
        path = root / "shards" / shard_name(k)
        save_tensors(path, tensors)
        manifest["shards"][str(k)] = {"rows": len(cols), "examples": [start, stop], "sha256": sha256_file(path)}
        del tensors, bufs, cols
        _release_free_memory()
        write_manifest(root, manifest)
        done += 1
        if progress is not None:
            progress(done, len(mine))
    store = ActivationStore.open(root, allow_partial=n_parts > 1)
    if n_parts == 1 and store.n_rows == 0:
        raise StoreError(f"no positions were selected in any of the {len(dataset)} examples by {positions}; "
                         f"nothing was stored")
    return store


__all__ = ["harvest", "NonFiniteActivationError", "DTYPES"]
