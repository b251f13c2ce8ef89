"""A steering vector: one direction in a model's activation space, the hook it was read from, its provenance.

Saved as `<stem>.safetensors` (the tensor) plus `<stem>.json` (hook, model, method, provenance), both
atomically; `SteeringVector.load(stem)` reads them back and checks the pair belongs together.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from interp.hooks import layer_of
from interp.io import (
    library_versions,
    load_tensors,
    read_json,
    save_tensors,
    sha256_file,
    write_json,
)

FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """`vector` [d_model] read at `hook` of the model `model_name` (weights `model_checksum`) by `method`."""

    vector: Float[torch.Tensor, " d_model"]
    hook: str
    model_name: str = ""
    model_checksum: str = ""
    method: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.vector, torch.Tensor) or self.vector.dim() != 1:
            shape = tuple(self.vector.shape) if isinstance(self.vector, torch.Tensor) else type(self.vector).__name__
            raise ValueError(f"a steering vector is one direction [d_model], got {shape}")
        if not torch.isfinite(self.vector).all():
            raise ValueError(f"steering vector for {self.hook} holds NaN or inf")

    @property
    def layer(self) -> int | None:
        return layer_of(self.hook)

    @property
    def d_model(self) -> int:
        return int(self.vector.shape[0])

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def unit(self) -> Float[torch.Tensor, " d_model"]:
        n = self.vector.norm()
        if n == 0:
            raise ValueError(f"the steering vector for {self.hook} is zero: it has no direction")
        return self.vector / n

    def scaled(self, factor: float) -> SteeringVector:
        return dataclasses.replace(self, vector=self.vector * factor)

    def meta(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "hook": self.hook, "layer": self.layer, "d_model": self.d_model,
                "norm": self.norm, "model_name": self.model_name, "model_checksum": self.model_checksum,
                "method": self.method, "provenance": self.provenance, "libraries": library_versions()}

    def save(self, stem: str | Path) -> Path:
        """Write `<stem>.safetensors` and `<stem>.json`; returns the JSON path."""
        js, st = _paths(stem)
        save_tensors(st, {"vector": self.vector.detach().float()})
        write_json(js, self.meta() | {"sha256": sha256_file(st)})
        return js

    @classmethod
    def load(cls, stem: str | Path) -> SteeringVector:
        """Read a vector written by `save` (give the stem or either file)."""
        js, st = _paths(stem)
        missing = [str(p) for p in (js, st) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"steering vector {js.with_suffix('')} is incomplete: missing {', '.join(missing)}")
        meta = read_json(js)
        if meta.get("sha256") and meta["sha256"] != sha256_file(st):
            raise ValueError(f"{st} does not match {js} (sha256 differs): the files come from different saves")
        vec = load_tensors(st)["vector"]
        return cls(vec, meta["hook"], meta.get("model_name", ""), meta.get("model_checksum", ""),
                   meta.get("method", ""), dict(meta.get("provenance", {})))


def _paths(stem: str | Path) -> tuple[Path, Path]:
    """(`<stem>.json`, `<stem>.safetensors`); the stem may hold dots (`blocks.3.hook_resid_post.pca`)."""
    name = str(stem)
    for ext in (".json", ".safetensors"):
        name = name.removesuffix(ext)
    return Path(name + ".json"), Path(name + ".safetensors")


__all__ = ["SteeringVector"]
