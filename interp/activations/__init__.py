"""Activations over datasets: harvest at hooks and positions, stream to disk shards, read back lazily.

    from interp.activations import harvest, ActivationStore, PromptDataset, Named
    store = harvest(model, dataset, ["blocks.2.hook_resid_post"], Named(("answer",)), "acts/base-s")
    X = store.get("blocks.2.hook_resid_post", label="answer")      # [rows, d_model]
"""

from interp.activations.dataset import Example, PromptDataset
from interp.activations.harvest import DTYPES, NonFiniteActivationError, harvest
from interp.activations.store import ActivationStore, StoreError, merge
from interp.positions import (
    AllTokens,
    Indices,
    LastToken,
    Named,
    PositionError,
    Selector,
    TokenMatch,
    parse_selector,
)

__all__ = [
    "DTYPES",
    "ActivationStore",
    "AllTokens",
    "Example",
    "Indices",
    "LastToken",
    "Named",
    "NonFiniteActivationError",
    "PositionError",
    "PromptDataset",
    "Selector",
    "StoreError",
    "TokenMatch",
    "harvest",
    "merge",
    "parse_selector",
]
