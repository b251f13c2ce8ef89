"""Sparse autoencoders trained with sae-lens' SAETrainer on harvested activations: quality metrics, reasoning
features, dashboards, base -> post-trained transfer and feature steering.

    from saes import SAETrainConfig, train_sae, load_sae, quality
    trained = train_sae("acts/base-s", SAETrainConfig(hook="blocks.2.hook_resid_post"), "saes/base-s-L2")
    # one SAE straight from the model (the same SAE, without writing and reading a store):
    trained = train_sae_streamed(model, dataset, SAETrainConfig(hook="blocks.2.hook_resid_post"), "saes/base-s-L2")
    sae, card = load_sae("saes/base-s-L2", model=model, hook="blocks.2.hook_resid_post")
"""

from saes.config import ARCHITECTURES, SAEError, SAETrainConfig
from saes.metrics import Quality, ce_recovered, encode, quality
from saes.streaming import train_sae_streamed
from saes.training import TrainedSAE, load_sae, read_card, train_sae, update_card

__all__ = ["ARCHITECTURES", "Quality", "SAEError", "SAETrainConfig", "TrainedSAE", "ce_recovered", "encode",
           "load_sae", "quality", "read_card", "train_sae", "train_sae_streamed", "update_card"]
