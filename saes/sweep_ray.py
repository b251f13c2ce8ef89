"""SAEs on several hooks of one store: one `train_sae` run per hook, in this process or one Ray task per hook.

Each Ray task trains in a scratch folder on its worker (the store is read at its path: on a multi-node
cluster, a shared filesystem) and returns the SAE's files as bytes; they are written to `out/<hook>`, where a
run in this process writes them. The SAE is initialised from the config's seed and trained on the same rows
in the same order, so the weights are the same bytes; the card differs only in the training time it records.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from interp.activations.store import ActivationStore
from interp.cluster import ray_enabled, read_tree, run_tasks, write_tree
from interp.io import atomic_dir
from saes.config import SAEError, SAETrainConfig
from saes.training import TrainedSAE, read_card, train_sae

# card fields that record how long training took (they differ between any two runs)
TIMING_FIELDS = ("seconds", "activations_per_s")


def _train_one(store: str, cfg: SAETrainConfig, out: str, metrics: bool) -> TrainedSAE:
    return train_sae(store, cfg, out, metrics=metrics)


def _hook_task(store: str, cfg: SAETrainConfig, metrics: bool) -> dict[str, bytes]:
    """One Ray task: an SAE on one hook, as the files of its folder."""
    tmp = Path(tempfile.mkdtemp(prefix="interp-sae-hook-"))
    try:
        train_sae(store, cfg, tmp / "sae", resume=False, metrics=metrics)
        return read_tree(tmp / "sae")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train_hooks(store: str | Path, cfg: SAETrainConfig, hooks: Sequence[str], out: str | Path, *,
                metrics: bool = True, ray: str | bool | None = None, num_cpus: float = 1, num_gpus: float = 0,
                progress: Callable[[int, int], None] | None = None) -> list[TrainedSAE]:
    """`train_sae(store, cfg with hook=h, out/h)` for every hook h (in order); `ray` (see `interp.cluster`) trains
    each as a Ray task declaring `num_cpus`/`num_gpus`. Quality metrics are computed on the store (no model:
    the CE metrics need `interp sae eval`)."""
    hooks = list(dict.fromkeys(hooks))
    if not hooks:
        raise SAEError("name at least one hook to train an SAE on")
    st = ActivationStore.open(store)
    for h in hooks:
        st.shape(h)  # an unknown hook fails here, with the store's hook names, before any training
    cfgs = [dataclasses.replace(cfg, hook=h) for h in hooks]
    root = Path(out)
    if not ray_enabled(ray):
        return run_tasks(_train_one, [(str(st.root), c, str(root / c.hook), metrics) for c in cfgs],
                         progress=progress)
    files = run_tasks(_hook_task, [(str(st.root), c, metrics) for c in cfgs], ray=ray, num_cpus=num_cpus,
                      num_gpus=num_gpus, progress=progress)
    trained = []
    for c, f in zip(cfgs, files):
        dst = root / c.hook
        with atomic_dir(dst) as tmp:
            write_tree(tmp, f)
        trained.append(TrainedSAE(dst, read_card(dst)))
    return trained


def comparable_card(card: dict[str, Any]) -> dict[str, Any]:
    """A card without the training time it records: what two runs of the same training agree on."""
    training = {k: v for k, v in card.get("training", {}).items() if k not in TIMING_FIELDS}
    return {**card, "training": training}


__all__ = ["TIMING_FIELDS", "comparable_card", "train_hooks"]
