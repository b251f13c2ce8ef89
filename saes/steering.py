"""Feature steering: add SAE features' decoder directions, or clamp a feature's activation, during generation.

Interventions run through `interp.steering` (torch hooks on `Model.hf`, active inside HF cached
generation): `feature_vector` turns feature i's decoder row into a SteeringVector for `Add` (raising the
feature's activation by `scale`), `FeatureClamp` sets the feature's encoded activation to a value
(h + (value - f_i(h)) W_dec[i]). `random_feature_vectors` is the control: other live features' decoder
directions, rescaled to the same norm as the steering vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float

from interp.steering import Intervention, SteeringVector
from saes.config import SAEError
from saes.features import check_feature
from saes.metrics import sae_device

if TYPE_CHECKING:
    from interp.models import Model


def feature_vector(sae: Any, features: int | Sequence[int], model: Model, hook: str, weights: Sequence[float] | None = None
                   ) -> SteeringVector:
    """Sum of the features' decoder rows (optionally weighted) as a steering vector at `hook`."""
    feats = [features] if isinstance(features, (int, np.integer)) else list(features)
    if not feats:
        raise SAEError("no features given to steer with")
    feats = [check_feature(sae, f) for f in feats]
    if int(sae.cfg.d_in) != model.d_model:
        raise SAEError(f"the SAE's width {sae.cfg.d_in} does not match {model.name}'s d_model {model.d_model}")
    w = torch.tensor(list(weights) if weights is not None else [1.0] * len(feats), dtype=torch.float32)
    vec = (w[:, None] * sae.W_dec[feats].detach().float().cpu()).sum(0)
    return SteeringVector(vec, hook, model.name, model.checksum, "sae_features", {"features": feats,
                                                                                  "weights": w.tolist()})


def random_feature_vectors(sae: Any, like: SteeringVector, exclude: Sequence[int], live: Sequence[int], n: int,
                           n_features: int, seed: int = 0) -> list[SteeringVector]:
    """n controls: sums of `n_features` random live features (not in `exclude`), rescaled to |like|."""
    pool = sorted({int(f) for f in live} - {int(f) for f in exclude})
    if len(pool) < n_features:
        raise SAEError(f"only {len(pool)} live features to draw a control of {n_features} from")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pick = [int(f) for f in rng.choice(pool, n_features, replace=False)]
        v = sae.W_dec[pick].detach().float().cpu().sum(0)
        v = v * (like.norm / float(v.norm()))
        out.append(SteeringVector(v, like.hook, like.model_name, like.model_checksum, "random_sae_features",
                                  {"features": pick, "norm_of": like.provenance}))
    return out


@dataclass(frozen=True, eq=False)
class FeatureClamp(Intervention):
    """h + (value - f_i(h)) * W_dec[i]: SAE feature i's activation becomes `value` where it acts."""

    sae: Any = None
    feature: int = 0
    value: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sae is None:
            raise SAEError("FeatureClamp needs the SAE whose feature it clamps")
        check_feature(self.sae, self.feature)

    def delta(self, h: Float[torch.Tensor, "batch pos d"], v: torch.Tensor | None = None,
              u: torch.Tensor | None = None) -> torch.Tensor:
        f = self.sae.encode(h.float().to(sae_device(self.sae)))[..., self.feature]
        return ((self.value - f)[..., None] * self.sae.W_dec[self.feature].float()).to(h.device, h.dtype)


def feature_clamp(sae: Any, feature: int, value: float, model: Model, hook: str, where: Any = "all") -> FeatureClamp:
    """A FeatureClamp of `feature` to `value` at `hook` (its vector is the feature's decoder row)."""
    return FeatureClamp(feature_vector(sae, feature, model, hook), where, None, sae, int(feature), float(value))


__all__ = ["FeatureClamp", "feature_clamp", "feature_vector", "random_feature_vectors"]
