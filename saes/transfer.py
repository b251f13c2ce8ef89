"""A base model's SAE on a post-trained model's activations at the same hook and the same texts.

How well the base dictionary reconstructs the tuned activations (explained variance, CE recovered, via
`saes.metrics.quality`), which features fire more or less after post-training (firing rates and mean
activations on the same tokens), and how much of the change itself, delta = x_tuned - x_base per token,
the base dictionary explains: 1 - |delta - (SAE(x_tuned) - SAE(x_base))|^2 / |delta|^2 summed over
tokens, with a 95% bootstrap over texts. A dictionary trained on the tuned model is the reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from interp.activations import ActivationStore
from interp.stats import group_bootstrap, percentile_ci
from saes.config import SAEError
from saes.metrics import check_width, reconstruct


def aligned_rows(base: ActivationStore, tuned: ActivationStore, hook: str, exclude_bos: bool = True
                 ) -> tuple[Float[torch.Tensor, "rows d"], Float[torch.Tensor, "rows d"], np.ndarray]:
    """The same tokens' activations in both stores (same dataset, same positions), and their examples."""
    from saes.training import shards

    if base.manifest.get("dataset_hash") != tuned.manifest.get("dataset_hash"):
        raise SAEError(f"{base.root} and {tuned.root} were harvested on different datasets: transfer compares the "
                       f"same tokens, harvest both models on the same PromptDataset")
    xb, ib = zip(*shards(base, hook, None, exclude_bos))
    xt, it = zip(*shards(tuned, hook, None, exclude_bos))
    ex_b, pos_b = np.concatenate([i["example"] for i in ib]), np.concatenate([i["position"] for i in ib])
    ex_t, pos_t = np.concatenate([i["example"] for i in it]), np.concatenate([i["position"] for i in it])
    if not (np.array_equal(ex_b, ex_t) and np.array_equal(pos_b, pos_t)):
        raise SAEError("the two stores hold different positions: harvest both with the same selector")
    return torch.cat(xb).float(), torch.cat(xt).float(), ex_b


def delta_explained(sae: Any, xb: torch.Tensor, xt: torch.Tensor, groups: np.ndarray, n_boot: int = 200,
                    seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Share of |x_tuned - x_base|^2 that SAE(x_tuned) - SAE(x_base) accounts for, with a bootstrap over groups."""
    check_width(sae, xb.shape[1])
    d = xt - xb
    d_hat = reconstruct(sae, xt) - reconstruct(sae, xb)
    err = (d - d_hat).pow(2).sum(-1).double().numpy()
    tot = d.pow(2).sum(-1).double().numpy()
    if tot.sum() == 0:
        raise SAEError("the two models' activations are identical here: there is no change to explain")
    w = group_bootstrap([str(g) for g in groups], n_boot, seed)
    b = 1 - (w @ err) / (w @ tot)
    return float(1 - err.sum() / tot.sum()), percentile_ci(b)


@dataclass(frozen=True)
class FeatureShift:
    """Per-feature firing rate and mean activation on the same tokens, base vs tuned."""

    rate_base: tuple[float, ...]
    rate_tuned: tuple[float, ...]
    mean_base: tuple[float, ...]
    mean_tuned: tuple[float, ...]

    def log_ratio(self, eps: float = 1e-3) -> np.ndarray:
        """log2((mean_tuned + eps) / (mean_base + eps)) per feature: > 0 amplified, < 0 suppressed."""
        return np.log2((np.array(self.mean_tuned) + eps) / (np.array(self.mean_base) + eps))

    def amplified(self, n: int = 10, min_rate: float = 1e-3) -> list[int]:
        live = (np.array(self.rate_base) > min_rate) | (np.array(self.rate_tuned) > min_rate)
        lr = np.where(live, self.log_ratio(), -np.inf)
        return [int(i) for i in np.argsort(-lr)[:n] if np.isfinite(lr[i])]

    def suppressed(self, n: int = 10, min_rate: float = 1e-3) -> list[int]:
        live = (np.array(self.rate_base) > min_rate) | (np.array(self.rate_tuned) > min_rate)
        lr = np.where(live, self.log_ratio(), np.inf)
        return [int(i) for i in np.argsort(lr)[:n] if np.isfinite(lr[i])]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureShift:
        return cls(*(tuple(d[k]) for k in ("rate_base", "rate_tuned", "mean_base", "mean_tuned")))


@torch.no_grad()
def feature_shift(sae: Any, xb: torch.Tensor, xt: torch.Tensor) -> FeatureShift:
    """Firing rates and mean activations of every feature on base and tuned activations of the same tokens."""
    from saes.metrics import encode

    fb, ft = encode(sae, xb), encode(sae, xt)
    return FeatureShift(tuple((fb > 0).float().mean(0).tolist()), tuple((ft > 0).float().mean(0).tolist()),
                        tuple(fb.mean(0).tolist()), tuple(ft.mean(0).tolist()))


__all__ = ["FeatureShift", "aligned_rows", "delta_explained", "feature_shift"]
