"""Patching results as labelled tensors: axis labels, the clean/corrupt baselines, provenance, safetensors on disk."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from jaxtyping import Float

from interp.io import library_versions, load_tensors, save_tensors
from interp.plots import save_figure, style


@dataclass(frozen=True)
class PatchResult:
    """Metric of each patched run over a (layer, pos[, head]) grid, with the unpatched baselines.

    `values[i, j(, k)]` is the metric when the target run gets the source's activation of `hook` at
    `layers[i]`, `positions[j]` (and head `heads[k]`); `clean` is the source run's metric, `corrupt` the
    target run's. Attribution results hold the first-order estimate `corrupt + grad . (source - target)`.
    """

    values: Float[torch.Tensor, ...]
    hook: str
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    heads: tuple[int, ...] | None
    position_labels: tuple[str, ...]
    metric: str
    clean: float
    corrupt: float
    method: str = "exact"  # "exact" | "attribution"
    model: str = ""
    checksum: str = ""
    readout: int = -1
    seconds: float = 0.0
    libraries: dict[str, str] = field(default_factory=library_versions)

    @property
    def axes(self) -> tuple[str, ...]:
        return ("layer", "pos") + (("head",) if self.heads is not None else ())

    @property
    def effects(self) -> Float[torch.Tensor, ...]:
        """Change of the metric caused by each patch (0 = no effect)."""
        return self.values - self.corrupt

    def normalized(self) -> Float[torch.Tensor, ...]:
        """(value - corrupt) / (clean - corrupt): 0 = the patch did nothing, 1 = it restored the clean metric."""
        gap = self.clean - self.corrupt
        if abs(gap) < 1e-12:
            raise ValueError(f"clean and corrupt metrics are equal ({self.clean:.4g}): nothing to normalise by")
        return self.effects / gap

    def meta(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "values"}
        d["shape"] = list(self.values.shape)
        return d

    def to_dict(self) -> dict[str, Any]:
        return {**self.meta(), "values": self.values.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatchResult:
        d = {k: v for k, v in d.items() if k != "shape"}
        d["values"] = torch.tensor(d["values"], dtype=torch.float32)
        for k in ("layers", "positions", "position_labels"):
            d[k] = tuple(d[k])
        d["heads"] = tuple(d["heads"]) if d.get("heads") is not None else None
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        """`<path>` as safetensors (values) with everything else as JSON in the file's metadata; atomic."""
        path = Path(path).with_suffix(".safetensors")
        save_tensors(path, {"values": self.values}, {"patch_result": json.dumps(self.meta())})
        return path

    @classmethod
    def load(cls, path: str | Path) -> PatchResult:
        from safetensors import safe_open

        path = Path(path)
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["patch_result"])
        return cls.from_dict({**meta, "values": load_tensors(path)["values"].tolist()})

    def figure(self, normalized: bool = False, head: int | None = None) -> go.Figure:
        """Heatmap layer x position (one head of a z grid, or summed over heads), token labels on x."""
        z = self.normalized() if normalized else self.effects
        if self.heads is not None:
            z = z.sum(-1) if head is None else z[..., self.heads.index(head)]
        xs = [f"{p}:{t}" for p, t in zip(self.positions, self.position_labels)]
        lim = float(z.abs().max()) or 1.0
        fig = go.Figure(go.Heatmap(z=z.tolist(), x=xs, y=[str(layer) for layer in self.layers], colorscale="RdBu",
                                   zmid=0, zmin=-lim, zmax=lim,
                                   colorbar=dict(title="normalised" if normalized else "effect")))
        what = "normalised effect" if normalized else f"change of {self.metric}"
        hs = "" if self.heads is None else (" (sum over heads)" if head is None else f" head {head}")
        style(fig, f"{self.method} patching of {self.hook}{hs}: {what}", "position", "layer")
        fig.update_layout(width=max(560, 28 * len(xs) + 160))
        return fig

    def save_figure(self, path_stem: str | Path, png: bool = True, normalized: bool = False) -> list[Path]:
        return save_figure(self.figure(normalized), path_stem, png=png)


__all__ = ["PatchResult"]
