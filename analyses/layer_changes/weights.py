"""Relative weight change per layer and matrix, ||W_t - W_b|| / mean(||W_t||, ||W_b||), streamed from safetensors.

Tensors are read chunk by chunk with plain file reads (no mmap, no model instantiated), so the memory
needed is a few chunk buffers whatever the model size: a 1.5B-parameter pair is measured in well under
the memory of one model (`interp bench layers`). Run as `python -m analyses.layer_changes.weights BASE
TUNED` it prints the result as JSON plus its own peak RSS (what the benchmark measures in a subprocess).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from analyses.layer_changes.anatomy import MATRIX_KINDS, kind_of_param, layer_of_param
from interp.models import IncompatiblePairError, resolve_path

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
CHUNK_ELEMENTS = 1 << 22  # 4M elements per read: 8-16 MB of bf16/fp32 per file, 16 MB as float32


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: file, dtype, shape and byte range."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def safetensors_index(path: str | os.PathLike[str]) -> dict[str, TensorEntry]:
    """Every tensor of a checkpoint folder (single file or sharded with an index), read from the headers only."""
    folder = resolve_path(path)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise FileNotFoundError(f"{folder} has no .safetensors weights"
                                + (f" (it has {', '.join(others)}; convert them to safetensors: pickled "
                                   f"checkpoints are not read here)" if others else ""))
    out: dict[str, TensorEntry] = {}
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        base = 8 + n
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            a, b = meta["data_offsets"]
            out[name] = TensorEntry(f, meta["dtype"], tuple(meta["shape"]), base + a, base + b)
    return out


def _chunks(entry: TensorEntry, fh: Any, buf: bytearray) -> Iterator[torch.Tensor]:
    """The tensor's values, CHUNK_ELEMENTS at a time, as float32 (the buffer is reused between reads)."""
    dtype = _DTYPES.get(entry.dtype)
    if dtype is None:
        raise ValueError(f"unsupported dtype {entry.dtype} for a weight tensor")
    item = torch.tensor([], dtype=dtype).element_size()
    pos, step = entry.start, CHUNK_ELEMENTS * item
    fh.seek(pos)
    while pos < entry.end:
        n = min(step, entry.end - pos)
        view = memoryview(buf)[:n]
        fh.readinto(view)
        yield torch.frombuffer(view, dtype=dtype).float()
        pos += n


def _pair_differences(base: dict[str, TensorEntry], tuned: dict[str, TensorEntry]) -> list[str]:
    out = []
    for n in list(base) + [n for n in tuned if n not in base]:
        if n not in tuned:
            out.append(f"parameter {n}: base {base[n].shape}, absent in tuned")
        elif n not in base:
            out.append(f"parameter {n}: absent in base, tuned {tuned[n].shape}")
        elif base[n].shape != tuned[n].shape:
            out.append(f"parameter {n}: base {base[n].shape}, tuned {tuned[n].shape}")
    return out


@dataclass(frozen=True)
class NormSums:
    """Squared Frobenius norms of the difference, of tuned and of base, and the element count."""

    diff2: float
    tuned2: float
    base2: float
    numel: int

    def __add__(self, o: NormSums) -> NormSums:
        return NormSums(self.diff2 + o.diff2, self.tuned2 + o.tuned2, self.base2 + o.base2, self.numel + o.numel)

    @property
    def relative(self) -> float:
        """||W_t - W_b|| / mean(||W_t||, ||W_b||); 0 when both are zero and equal."""
        denom = (math.sqrt(self.tuned2) + math.sqrt(self.base2)) / 2
        return math.sqrt(self.diff2) / denom if denom > 0 else (0.0 if self.diff2 == 0 else math.inf)


@dataclass(frozen=True)
class WeightChange:
    """Relative change per tensor, per (layer, matrix kind), per layer, and outside the layers."""

    base: str
    tuned: str
    n_layers: int
    per_tensor: dict[str, float]
    per_layer_kind: dict[str, dict[str, float]]  # str(layer) -> kind -> relative change
    per_layer: tuple[float, ...]
    outside: dict[str, float]  # embed, final_norm, unembed, ... -> relative change
    n_params: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightChange:
        d = dict(d)
        d["per_layer"] = tuple(d["per_layer"])
        d["notes"] = tuple(d.get("notes", ()))
        return cls(**d)

    def kinds(self) -> list[str]:
        """Matrix kinds present in the layers, in a fixed order."""
        present = {k for v in self.per_layer_kind.values() for k in v}
        return [k for k in MATRIX_KINDS if k in present]

    def top_layer(self) -> int:
        return max(range(self.n_layers), key=lambda i: self.per_layer[i])


def weight_change(base: str | os.PathLike[str], tuned: str | os.PathLike[str]) -> WeightChange:
    """Stream both checkpoints tensor by tensor and chunk by chunk; never holds a whole matrix in memory."""
    bp, tp = resolve_path(base), resolve_path(tuned)
    bi, ti = safetensors_index(bp), safetensors_index(tp)
    diffs = _pair_differences(bi, ti)
    if diffs:
        raise IncompatiblePairError(f"base {str(base)!r} and tuned {str(tuned)!r} have different parameters "
                                    f"({len(diffs)}): " + "; ".join(diffs[:10]), diffs)
    item = max(torch.tensor([], dtype=_DTYPES.get(e.dtype, torch.float32)).element_size() for e in bi.values())
    bbuf, tbuf = bytearray(CHUNK_ELEMENTS * item), bytearray(CHUNK_ELEMENTS * item)
    sums: dict[str, NormSums] = {}
    handles: dict[Path, Any] = {}
    try:
        for name in sorted(bi):
            b, t = bi[name], ti[name]
            if b.dtype != t.dtype:
                raise IncompatiblePairError(f"parameter {name}: base {b.dtype}, tuned {t.dtype}",
                                            [f"parameter {name}: dtype base {b.dtype}, tuned {t.dtype}"])
            fb = handles.setdefault(b.file, open(b.file, "rb"))  # noqa: SIM115 (closed in the finally below)
            ft = handles.setdefault(t.file, open(t.file, "rb"))  # noqa: SIM115
            acc = NormSums(0.0, 0.0, 0.0, 0)
            for cb, ct in zip(_chunks(b, fb, bbuf), _chunks(t, ft, tbuf)):
                acc = acc + NormSums(float((ct - cb).square().sum(dtype=torch.float64)),
                                     float(ct.square().sum(dtype=torch.float64)),
                                     float(cb.square().sum(dtype=torch.float64)), cb.numel())
            sums[name] = acc
    finally:
        for fh in handles.values():
            fh.close()
    cfg = json.loads((bp / "config.json").read_text())
    n_layers = int(cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0)
    layer_kind: dict[int, dict[str, NormSums]] = {}
    outside: dict[str, NormSums] = {}
    for name, s in sums.items():
        layer, kind = layer_of_param(name), kind_of_param(name)
        if layer is None:
            outside[kind] = outside.get(kind, NormSums(0.0, 0.0, 0.0, 0)) + s
        else:
            slot = layer_kind.setdefault(layer, {})
            slot[kind] = slot.get(kind, NormSums(0.0, 0.0, 0.0, 0)) + s
    n_layers = max(n_layers, max(layer_kind, default=-1) + 1)
    per_layer = []
    for i in range(n_layers):
        total = NormSums(0.0, 0.0, 0.0, 0)
        for s in layer_kind.get(i, {}).values():
            total = total + s
        per_layer.append(total.relative)
    notes = []
    if "unembed" not in outside and "embed" in outside:
        notes.append("no separate unembedding tensor: it is tied to the embedding (see 'embed')")
    return WeightChange(
        base=str(base), tuned=str(tuned), n_layers=n_layers,
        per_tensor={n: s.relative for n, s in sums.items()},
        per_layer_kind={str(i): {k: s.relative for k, s in layer_kind.get(i, {}).items()} for i in range(n_layers)},
        per_layer=tuple(per_layer), outside={k: s.relative for k, s in outside.items()},
        n_params=sum(s.numel for s in sums.values()), notes=tuple(notes))


def main(argv: list[str]) -> None:
    """`python -m analyses.layer_changes.weights BASE TUNED`: the result and this process's peak RSS as JSON."""
    torch.set_num_threads(1)
    if len(argv) != 2:
        raise SystemExit("usage: python -m analyses.layer_changes.weights BASE TUNED")
    from interp.benchmark import peak_rss_bytes

    rss0 = peak_rss_bytes()
    import time

    t0 = time.perf_counter()
    wc = weight_change(argv[0], argv[1])
    print(json.dumps({"result": wc.to_dict(), "seconds": time.perf_counter() - t0,
                      "peak_rss_bytes": peak_rss_bytes(), "rss_after_imports_bytes": rss0}))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])


__all__ = ["NormSums", "TensorEntry", "WeightChange", "safetensors_index", "weight_change"]
