"""What an SAE training run is: the hook and rows it reads, the architecture, and the optimisation schedule.

One frozen dataclass (`SAETrainConfig`) decides every number of a run, so a card's config reproduces the
SAE and resumes it; `training_sae_config(cfg, d_in)` turns it into sae-lens' own architecture config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ARCHITECTURES = ("batchtopk", "topk", "standard", "jumprelu")  # "standard" is ReLU with an L1 penalty


class SAEError(ValueError):
    """An SAE that cannot be trained, loaded or applied as asked (the message says why and what fits)."""


@dataclass(frozen=True)
class SAETrainConfig:
    """One SAE run on the rows of `hook` (optionally only position label `label`) of an activation store.

    Checked when made, before any training: a warm-up of at least the run's steps (total_samples //
    batch_size) is refused (sae-lens' cosine schedule divides by steps - warm-up)."""

    hook: str
    label: str | None = None
    exclude_bos: bool = True  # leave out rows of the tokenizer's BOS token, by id (an outlier of every model)
    architecture: str = "batchtopk"
    expansion: int = 8  # d_sae = expansion * d_in unless d_sae is given
    d_sae: int | None = None
    k: float = 8.0  # (batch)topk: active features per row (on average for batchtopk)
    l1_coefficient: float = 2.0  # standard
    l0_coefficient: float = 0.05  # jumprelu
    jumprelu_threshold: float = 0.01
    total_samples: int = 300_000
    batch_size: int = 1024
    lr: float = 5e-3
    lr_end_fraction: float = 0.1  # final lr / lr (cosine), sae-lens' SAETrainerConfig needs lr_end
    lr_scheduler: str = "cosineannealing"
    lr_warm_up_steps: int = 20
    buffer_size: int = 16_384  # sae-lens mixing buffer
    mix_fraction: float = 0.5
    chunk_rows: int = 4096  # rows handed to the mixing buffer at a time
    dead_feature_window: int = 200  # steps without firing before a feature counts as dead (aux loss)
    n_checkpoints: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise SAEError(f"unknown SAE architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)} "
                           f"(standard = ReLU with an L1 penalty)")
        if self.total_samples < self.batch_size:
            raise SAEError(f"total_samples {self.total_samples} is less than one batch of {self.batch_size}")
        if self.buffer_size < self.batch_size:
            raise SAEError(f"buffer_size {self.buffer_size} must be at least batch_size {self.batch_size}")
        if self.d_sae is not None and self.d_sae < 1 or self.expansion < 1:
            raise SAEError("d_sae and expansion must be positive")
        if self.k <= 0:
            raise SAEError(f"k must be positive, got {self.k}")
        if self.lr_warm_up_steps < 0:
            raise SAEError(f"lr_warm_up_steps must be >= 0, got {self.lr_warm_up_steps}")
        steps = self.n_steps
        if self.lr_warm_up_steps >= steps:
            raise SAEError(f"training has {steps} steps but lr_warm_up_steps={self.lr_warm_up_steps}; lower the "
                           f"warm-up to < {steps} or train for more samples (total_samples {self.total_samples:,} // "
                           f"batch_size {self.batch_size} = {steps} steps; a warm-up of {self.lr_warm_up_steps} needs "
                           f"at least {(self.lr_warm_up_steps + 1) * self.batch_size:,} samples)")

    @property
    def n_steps(self) -> int:
        """Optimiser steps of the run (sae-lens' SAETrainer: total_samples // batch_size)."""
        return self.total_samples // self.batch_size

    def width(self, d_in: int) -> int:
        return int(self.d_sae) if self.d_sae is not None else self.expansion * d_in

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SAETrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SAEError(f"unknown SAE config field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**dict(d))


def training_sae_config(cfg: SAETrainConfig, d_in: int, metadata: Mapping[str, Any] | None = None) -> Any:
    """The sae-lens TrainingSAEConfig of this run (BatchTopK / TopK / Standard / JumpReLU)."""
    from sae_lens import (
        BatchTopKTrainingSAEConfig,
        JumpReLUTrainingSAEConfig,
        StandardTrainingSAEConfig,
        TopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    common: dict[str, Any] = {"d_in": d_in, "d_sae": cfg.width(d_in), "dtype": "float32", "device": "cpu"}
    if cfg.architecture == "batchtopk":
        out = BatchTopKTrainingSAEConfig(**common, k=float(cfg.k))
    elif cfg.architecture == "topk":
        out = TopKTrainingSAEConfig(**common, k=round(cfg.k))
    elif cfg.architecture == "standard":
        out = StandardTrainingSAEConfig(**common, l1_coefficient=cfg.l1_coefficient)
    else:
        out = JumpReLUTrainingSAEConfig(**common, l0_coefficient=cfg.l0_coefficient,
                                        jumprelu_init_threshold=cfg.jumprelu_threshold)
    if metadata:
        out.metadata = SAEMetadata(**dict(metadata))
        out.add_training_info_to_metadata()
    return out


__all__ = ["ARCHITECTURES", "SAEError", "SAETrainConfig", "training_sae_config"]
