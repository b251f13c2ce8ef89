"""Linear probes: multinomial logistic regression for categorical targets, ridge for scalar ones.

A fitted `Probe` is a plain affine map on raw activations (standardisation folded into its weights),
saved as safetensors with a JSON sidecar that names the model (checksum), hook, position and target
it was trained on, so applying it elsewhere is checked, and measuring transfer is a deliberate choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float

from interp.io import (
    library_versions,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)

Kind = Literal["logistic", "ridge"]
MAX_CLASSES = 64


class ProbeMismatchError(ValueError):
    """Activations that do not fit a probe: another width, hook, or model."""


def infer_kind(y: Sequence[Any]) -> Kind:
    """Logistic for integer/bool/str labels with at most MAX_CLASSES values, ridge for real numbers."""
    values = set(y)
    if all(isinstance(v, (bool, str, np.bool_)) for v in values):
        return "logistic"
    if all(isinstance(v, (int, np.integer)) for v in values) and len(values) <= MAX_CLASSES:
        return "logistic"
    return "ridge"


@dataclass
class Probe:
    """W x + b on flattened activations; `classes` for logistic probes (argmax), empty for ridge."""

    weight: Float[torch.Tensor, "out d"]
    bias: Float[torch.Tensor, " out"]
    kind: Kind
    classes: tuple[Any, ...]
    info: dict[str, Any] = field(default_factory=dict)  # hook, label, target, model_checksum, ...

    @property
    def d(self) -> int:
        return int(self.weight.shape[1])

    def _check(self, x: torch.Tensor, checksum: str | None, allow_other_model: bool) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1).float()
        if x.shape[1] != self.d:
            raise ProbeMismatchError(
                f"this probe reads {self.d}-wide activations ({self.info.get('hook')} of "
                f"{self.info.get('model_name')!r}), got {x.shape[1]}-wide ones: use activations of the same hook "
                f"of a model with the same width")
        mine = self.info.get("model_checksum")
        if checksum is not None and mine and checksum != mine and not allow_other_model:
            raise ProbeMismatchError(
                f"this probe was trained on {self.info.get('model_name')!r} (checksum {mine[:12]}), the activations "
                f"come from another model (checksum {checksum[:12]}); pass allow_other_model=True to measure transfer")
        return x

    def decision(self, x: Float[torch.Tensor, "rows ..."], checksum: str | None = None,
                 allow_other_model: bool = False) -> Float[torch.Tensor, "rows out"]:
        x = self._check(x, checksum, allow_other_model)
        return x @ self.weight.T + self.bias

    def predict(self, x: Float[torch.Tensor, "rows ..."], checksum: str | None = None,
                allow_other_model: bool = False) -> np.ndarray:
        """Class labels (logistic) or values (ridge) per row."""
        z = self.decision(x, checksum, allow_other_model)
        if self.kind == "ridge":
            return z[:, 0].numpy()
        if len(self.classes) == 2 and z.shape[1] == 1:
            return np.array(self.classes, dtype=object)[(z[:, 0] > 0).long().numpy()]
        return np.array(self.classes, dtype=object)[z.argmax(-1).numpy()]

    def save(self, path: str | Path) -> Path:
        """`<path>.safetensors` (weights) and `<path>.json` (what it reads, its metrics, provenance);
        returns the JSON path."""
        stem = _stem(path)
        save_tensors(f"{stem}.safetensors", {"weight": self.weight, "bias": self.bias})
        write_json(f"{stem}.json", {"kind": self.kind, "classes": list(self.classes), **self.info})
        return Path(f"{stem}.json")

    @classmethod
    def load(cls, path: str | Path) -> Probe:
        """Load from the stem, the .json or the .safetensors path."""
        stem = _stem(path)
        meta = read_json(f"{stem}.json")
        t = load_tensors(f"{stem}.safetensors")
        kind, classes = meta.pop("kind"), tuple(meta.pop("classes"))
        return cls(t["weight"], t["bias"], kind, classes, meta)


def _stem(path: str | Path) -> str:
    s = str(path)
    for suffix in (".json", ".safetensors"):
        if s.endswith(suffix):
            return s[: -len(suffix)]
    return s


def fit(x: Float[torch.Tensor, "rows ..."], y: Sequence[Any], kind: Kind | None = None, c: float = 1.0,
        alpha: float = 1.0, info: Mapping[str, Any] | None = None) -> Probe:
    """Fit on standardised features (sklearn, deterministic), then fold the scaling into W and b."""
    from threadpoolctl import threadpool_limits

    # one BLAS thread: on probe-sized problems more threads only contend (measured 30x slower on 2 busy cores)
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(x, y, kind, c, alpha, info)


def _fit(x: torch.Tensor, y: Sequence[Any], kind: Kind | None, c: float, alpha: float,
         info: Mapping[str, Any] | None) -> Probe:
    from sklearn.linear_model import LogisticRegression, Ridge

    x_np = x.reshape(x.shape[0], -1).double().numpy()
    if len(x_np) == 0:
        raise ValueError("no rows to fit a probe on")
    if not np.isfinite(x_np).all():
        raise ValueError("activations hold NaN/inf; harvest reports where they came from")
    kind = kind or infer_kind(y)
    mean, scale = x_np.mean(0), x_np.std(0)
    scale[scale < 1e-8] = 1.0
    xs = (x_np - mean) / scale
    if kind == "logistic":
        classes = tuple(sorted(set(y), key=lambda v: (str(type(v)), v)))
        if len(classes) < 2:
            raise ValueError(f"a logistic probe needs at least two classes in its training rows, got {classes}")
        model = LogisticRegression(C=c, max_iter=1000, tol=1e-3)
        model.fit(xs, np.array([classes.index(v) for v in y]))
        w, b = model.coef_, model.intercept_
    elif kind == "ridge":
        classes = ()
        model = Ridge(alpha=alpha)
        model.fit(xs, np.asarray(y, dtype=float))
        w, b = model.coef_.reshape(1, -1), np.atleast_1d(model.intercept_)
    else:
        raise ValueError(f"kind must be 'logistic' or 'ridge', got {kind!r}")
    w_raw = w / scale
    b_raw = b - w_raw @ mean
    meta = {"libraries": library_versions(), **(dict(info) if info else {})}
    return Probe(torch.from_numpy(w_raw).float(), torch.from_numpy(b_raw).float(), kind, classes, meta)


__all__ = ["Kind", "Probe", "ProbeMismatchError", "fit", "infer_kind"]
