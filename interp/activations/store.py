"""An activation store on disk: safetensors shards plus a JSON manifest, read back lazily.

Layout: `manifest.json` (model checksum, hooks, positions, dtype, dataset hash, seed, shards done),
`dataset.json` (the prompts, their named positions and metadata), `shards/shard-NNNNN.safetensors`
(per hook `act:<hook>` of shape [rows, ...], and the row index: `example`, `position`, `label`,
`token`). Shards are written whole and atomically, so a store is never half-written; a harvest that
was killed resumes from the manifest, and shards harvested by several processes merge into one store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from safetensors import safe_open

from interp.activations.dataset import PromptDataset
from interp.io import read_json, write_json

FORMAT_VERSION = 1
INDEX_COLUMNS = ("example", "position", "label", "token")
# Manifest fields that must agree for a resume or a merge (everything that decides a shard's bytes).
CONFIG_KEYS = ("model_checksum", "hooks", "positions", "labels", "dtype", "dataset_hash", "n_examples",
               "batch_size", "shard_size", "n_shards")


class StoreError(ValueError):
    """A store that cannot be used as asked: incomplete, another model's, config mismatch, empty."""


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The manifest fields that decide shard contents and differ between `a` and `b`."""
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in CONFIG_KEYS if a.get(k) != b.get(k)]


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    write_json(root / "manifest.json", dict(manifest))


@dataclass
class ActivationStore:
    """A harvested store, opened read-only. `get(hook)` loads rows into memory; `iter_batches` streams."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, allow_partial: bool = False) -> ActivationStore:
        root = Path(path)
        if not (root / "manifest.json").is_file():
            raise StoreError(f"{root} is not an activation store (no manifest.json); harvest one with "
                             f"`interp harvest` or interp.activations.harvest")
        m = read_json(root / "manifest.json")
        if m.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{root}: store format {m.get('format_version')} is not {FORMAT_VERSION}")
        store = cls(root, m)
        if not allow_partial and not store.complete:
            missing = sorted(set(range(m["n_shards"])) - {int(k) for k in m["shards"]})
            raise StoreError(f"{root}: the harvest is incomplete ({len(m['shards'])} of {m['n_shards']} shards; "
                             f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}); rerun the same "
                             f"harvest to resume it, or merge the other parts")
        return store

    # ---------------------------------------------------------------- description
    @property
    def complete(self) -> bool:
        return len(self.manifest["shards"]) == self.manifest["n_shards"]

    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def model_checksum(self) -> str:
        return str(self.manifest["model_checksum"])

    @property
    def model_name(self) -> str:
        return str(self.manifest.get("model_name", ""))

    @property
    def n_rows(self) -> int:
        return sum(int(s["rows"]) for s in self.manifest["shards"].values())

    def shape(self, hook: str) -> tuple[int, ...]:
        """Shape of one row of `hook` (e.g. (d_model,), or (n_heads, d_head) for attn z)."""
        self._check_hook(hook)
        return tuple(self.manifest["hooks"][hook])

    def dataset(self) -> PromptDataset:
        return PromptDataset.load(self.root / "dataset.json")

    def _shard_paths(self) -> list[Path]:
        return [self.root / "shards" / shard_name(int(k)) for k in sorted(self.manifest["shards"], key=int)]

    def _check_hook(self, hook: str) -> None:
        if hook not in self.manifest["hooks"]:
            from interp.hooks import validate_hook_names

            validate_hook_names(hook, self.hooks)

    def label_ids(self, label: str | Sequence[str] | None) -> list[int] | None:
        """Label ids of position labels (None for all); unknown labels are an error naming the stored ones."""
        if label is None:
            return None
        wanted = [label] if isinstance(label, str) else list(label)
        unknown = [x for x in wanted if x not in self.labels]
        if unknown:
            raise StoreError(f"position label(s) {unknown} are not in this store; it holds {self.labels}")
        return [self.labels.index(x) for x in wanted]

    def check_model(self, checksum: str, what: str = "these activations") -> None:
        """Refuse a model (by checksum) other than the one the store was harvested from."""
        if checksum != self.model_checksum:
            raise StoreError(f"{what} come from model {self.model_name!r} (checksum {self.model_checksum[:12]}), "
                             f"not from the model with checksum {checksum[:12]}")

    # ---------------------------------------------------------------- reading
    def index(self, label: str | Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Row index columns (example, position, label id, token), optionally for some labels only."""
        cols: dict[str, list[np.ndarray]] = {c: [] for c in INDEX_COLUMNS}
        for path in self._shard_paths():
            with safe_open(str(path), "pt") as f:
                for c in INDEX_COLUMNS:
                    cols[c].append(f.get_tensor(c).numpy())
        out = {c: (np.concatenate(v) if v else np.zeros(0, np.int64)) for c, v in cols.items()}
        ids = self.label_ids(label)
        if ids is not None:
            keep = np.isin(out["label"], ids)
            out = {c: v[keep] for c, v in out.items()}
        return out

    def iter_batches(self, hook: str, label: str | Sequence[str] | None = None
                     ) -> Iterator[tuple[Float[torch.Tensor, "rows ..."], dict[str, np.ndarray]]]:
        """Stream one shard at a time: (activations, index columns) of the rows with the given labels."""
        self._check_hook(hook)
        ids = self.label_ids(label)
        for path in self._shard_paths():
            with safe_open(str(path), "pt") as f:
                idx = {c: f.get_tensor(c).numpy() for c in INDEX_COLUMNS}
                acts = f.get_tensor(f"act:{hook}")
            if ids is not None:
                keep = np.isin(idx["label"], ids)
                acts, idx = acts[torch.from_numpy(keep)], {c: v[keep] for c, v in idx.items()}
            yield acts, idx

    def get(self, hook: str, label: str | Sequence[str] | None = None, dtype: torch.dtype | None = None
            ) -> Float[torch.Tensor, "rows ..."]:
        """All rows of `hook` (optionally of some position labels) as one tensor."""
        parts = [a for a, _ in self.iter_batches(hook, label)]
        if not parts:
            raise StoreError(f"{self.root} holds no rows")
        out = torch.cat(parts)
        return out.to(dtype) if dtype is not None else out

    def numpy(self, hook: str, label: str | Sequence[str] | None = None) -> np.ndarray:
        return self.get(hook, label, dtype=torch.float32).numpy()

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.root)!r}, model={self.model_name!r}, hooks={len(self.hooks)}, "
                f"rows={self.n_rows:,}, labels={self.labels})")


def merge(parts: Sequence[str | Path], out: str | Path) -> ActivationStore:
    """Join stores harvested with `shard=(i, N)` into one complete store at `out` (files hard-linked or copied)."""
    if not parts:
        raise StoreError("nothing to merge: give the folders of the harvested parts")
    stores = [ActivationStore.open(p, allow_partial=True) for p in parts]
    first = stores[0].manifest
    for s in stores[1:]:
        diff = config_differences(first, s.manifest)
        if diff:
            raise StoreError(f"{s.root} was harvested with another configuration than {stores[0].root}: "
                             + "; ".join(diff))
    owner: dict[int, ActivationStore] = {}
    for s in stores:
        for k in s.manifest["shards"]:
            if int(k) in owner and owner[int(k)].manifest["shards"][k] != s.manifest["shards"][k]:
                raise StoreError(f"shard {k} is in both {owner[int(k)].root} and {s.root} with different contents")
            owner.setdefault(int(k), s)
    missing = sorted(set(range(first["n_shards"])) - set(owner))
    if missing:
        raise StoreError(f"the parts cover {len(owner)} of {first['n_shards']} shards; missing {missing[:10]}: "
                         f"harvest them (shard=(i, N) for the missing i) before merging")
    root = Path(out)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    for k, s in sorted(owner.items()):
        src, dst = s.root / "shards" / shard_name(k), root / "shards" / shard_name(k)
        if dst.exists() and os.path.samefile(src, dst):
            continue
        tmp = dst.with_name(f".{dst.name}.tmp")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    if not (root / "dataset.json").exists() or not os.path.samefile(stores[0].root / "dataset.json",
                                                                    root / "dataset.json"):
        shutil.copyfile(stores[0].root / "dataset.json", root / ".dataset.json.tmp")
        os.replace(root / ".dataset.json.tmp", root / "dataset.json")
    manifest = dict(first)
    manifest["shard_of"] = None
    manifest["shards"] = {str(k): s.manifest["shards"][str(k)] for k, s in sorted(owner.items())}
    write_manifest(root, manifest)
    return ActivationStore.open(root)


__all__ = ["FORMAT_VERSION", "ActivationStore", "StoreError", "config_differences", "merge", "shard_name"]
