"""Directions from two sets of texts: difference of means and the first principal component of paired
differences, at every hook, with a held-out check that the direction separates the sets (projection AUROC)
and random directions of the same norm as the control.

Activations come from `interp.activations.harvest` (one store holding both sets, positive rows first).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float

from interp.activations import PromptDataset, Selector, harvest
from interp.steering.vector import SteeringVector

if TYPE_CHECKING:
    from interp.models import Model

N_RANDOM = 20


def mean_difference(pos: Float[torch.Tensor, "n d"], neg: Float[torch.Tensor, "m d"]) -> Float[torch.Tensor, " d"]:
    """mean(pos) - mean(neg)."""
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"need activations on both sides, got {len(pos)} and {len(neg)} rows")
    return pos.double().mean(0).float() - neg.double().mean(0).float()


def first_pc_of_differences(diffs: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, " d"]:
    """First principal component of paired differences (uncentred, so a shared offset dominates), signed and
    scaled so that it points along the mean difference with the mean difference's component as its length."""
    if len(diffs) < 2:
        raise ValueError(f"a principal component needs at least 2 pairs, got {len(diffs)}")
    d = diffs.double()
    _, _, vh = torch.linalg.svd(d, full_matrices=False)
    u = vh[0]
    mean = d.mean(0)
    if float(mean @ u) < 0:
        u = -u
    return (u * (mean @ u)).float()


def projection_auroc(pos: Float[torch.Tensor, "n d"], neg: Float[torch.Tensor, "m d"],
                     direction: Float[torch.Tensor, " d"]) -> float:
    """AUROC of the projections onto `direction` (1.0: every positive projects above every negative)."""
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    s = torch.cat([pos, neg]).double() @ direction.double()
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    with threadpool_limits(1):
        return float(roc_auc_score(y, s.numpy()))


def random_directions(d: int, norm: float, n: int, seed: int) -> Float[torch.Tensor, "n d"]:
    """`n` directions uniform on the sphere of radius `norm` (seeded)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (r / r.norm(dim=1, keepdim=True) * norm).float()


@dataclass(frozen=True)
class HookDirection:
    """One hook's directions and their held-out separation (AUROC of projections on the test rows)."""

    hook: str
    mean_diff: SteeringVector
    pca: SteeringVector | None
    auroc_mean_diff: float
    auroc_pca: float | None
    auroc_random: float  # mean over N_RANDOM random directions of the same norm
    auroc_random_max: float
    cosine_mean_pca: float | None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("hook", "auroc_mean_diff", "auroc_pca", "auroc_random",
                                           "auroc_random_max", "cosine_mean_pca")}
        d["norm_mean_diff"] = self.mean_diff.norm
        return d


@dataclass(frozen=True)
class DirectionSet:
    """Directions at every hook from one pair set, with the split used to validate them."""

    hooks: tuple[HookDirection, ...]
    paired: bool
    n_train: int
    n_test: int
    seed: int

    def get(self, hook: str) -> HookDirection:
        for h in self.hooks:
            if h.hook == hook:
                return h
        raise KeyError(f"no direction at {hook}; have {[h.hook for h in self.hooks]}")

    def to_dict(self) -> dict[str, Any]:
        return {"paired": self.paired, "n_train": self.n_train, "n_test": self.n_test, "seed": self.seed,
                "hooks": [h.to_dict() for h in self.hooks]}


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of range(n) into train and test (test non-empty when n >= 2)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_fraction)) if n >= 2 else 0
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def directions_from_activations(
    acts: dict[str, tuple[torch.Tensor, torch.Tensor]], paired: bool, *, test_fraction: float = 0.3, seed: int = 0,
    model_name: str = "", model_checksum: str = "", provenance: dict[str, Any] | None = None,
) -> DirectionSet:
    """Directions per hook from (positive, negative) activations; paired rows share an index."""
    if not acts:
        raise ValueError("no hooks given")
    hooks = []
    n_tr = n_te = 0
    for hook, (pos, neg) in acts.items():
        if len(pos) < 2 or len(neg) < 2:
            raise ValueError(f"need at least 2 texts on each side, got {len(pos)} and {len(neg)}")
        if paired and len(pos) != len(neg):
            raise ValueError(f"paired directions need as many positive as negative texts, got {len(pos)} and {len(neg)}")
        if paired:
            tr, te = split_indices(len(pos), test_fraction, seed)
            tr_p, te_p, tr_n, te_n = tr, te, tr, te
        else:
            tr_p, te_p = split_indices(len(pos), test_fraction, seed)
            tr_n, te_n = split_indices(len(neg), test_fraction, seed + 1)
        n_tr, n_te = len(tr_p) + len(tr_n), len(te_p) + len(te_n)
        md = mean_difference(pos[tr_p], neg[tr_n])
        prov = dict(provenance or {}) | {"n_train": n_tr, "n_test": n_te, "seed": seed, "paired": paired}
        vec = SteeringVector(md, hook, model_name, model_checksum, "mean_difference", prov)
        pca = None
        if paired:
            pca = SteeringVector(first_pc_of_differences(pos[tr_p] - neg[tr_n]), hook, model_name, model_checksum,
                                 "first_pc_of_differences", prov)
        rand = random_directions(md.shape[0], float(md.norm()), N_RANDOM, seed + 7)
        r_auc = [projection_auroc(pos[te_p], neg[te_n], r) for r in rand]
        hooks.append(HookDirection(
            hook, vec, pca, projection_auroc(pos[te_p], neg[te_n], md),
            projection_auroc(pos[te_p], neg[te_n], pca.vector) if pca is not None else None,
            float(np.mean(r_auc)), float(np.max(r_auc)),
            float(torch.nn.functional.cosine_similarity(md, pca.vector, dim=0)) if pca is not None else None))
    return DirectionSet(tuple(hooks), paired, n_tr, n_te, seed)


def activations_of_texts(
    model: Model, positive: PromptDataset, negative: PromptDataset, hooks: Sequence[str], positions: Selector, *,
    seed: int = 0, store: str | Path | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per hook, (positive, negative) activations, one row per text: the mean over the positions selected in it."""
    both = PromptDataset(tuple(dataclasses.replace(e, meta=dict(e.meta) | {"side": s})
                               for s, ds in (("positive", positive), ("negative", negative))
                               for e in ds.examples), positive.group)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(store) if store is not None else Path(tmp) / "store"
        st = harvest(model, both, list(hooks), positions, root, seed=seed)
        idx = torch.from_numpy(st.index()["example"])
        counts = torch.bincount(idx, minlength=len(both))
        if bool((counts == 0).any()):
            raise ValueError(f"{positions} selected no position in text {int((counts == 0).nonzero()[0, 0])}")
        acts = {}
        for h in hooks:
            x = st.get(h).double()
            mean = torch.zeros(len(both), x.shape[1], dtype=torch.float64).index_add_(0, idx, x) / counts[:, None]
            acts[h] = (mean[:len(positive)].float(), mean[len(positive):].float())
    return acts


def directions_from_texts(
    model: Model, positive: PromptDataset, negative: PromptDataset, hooks: Sequence[str], positions: Selector, *,
    paired: bool = True, test_fraction: float = 0.3, seed: int = 0, store: str | Path | None = None,
    provenance: dict[str, Any] | None = None,
) -> DirectionSet:
    """Harvest `hooks` at `positions` of both sets (the mean over the positions selected in each text) and derive
    directions (positive - negative)."""
    if len(positive) == 0 or len(negative) == 0:  # PromptDataset refuses empty sets already; keep the message here
        raise ValueError("empty pair set")
    if paired and len(positive) != len(negative):
        raise ValueError(f"paired directions need as many positive as negative texts, got {len(positive)} and "
                         f"{len(negative)}")
    acts = activations_of_texts(model, positive, negative, hooks, positions, seed=seed, store=store)
    return directions_from_activations(acts, paired, test_fraction=test_fraction, seed=seed, model_name=model.name,
                                       model_checksum=model.checksum, provenance=provenance)


__all__ = [
    "DirectionSet",
    "HookDirection",
    "activations_of_texts",
    "directions_from_activations",
    "directions_from_texts",
    "first_pc_of_differences",
    "mean_difference",
    "projection_auroc",
    "random_directions",
    "split_indices",
]
