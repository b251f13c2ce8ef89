"""`interp bench sae`: SAE training throughput, our store -> SAETrainer path vs sae-lens' own runner.

Both train the same architecture (BatchTopK, same width, k, batch size, lr schedule and number of
activations) on the same model and hook. Ours reads a harvested store; sae-lens'
`LanguageModelSAETrainingRunner` runs a HookedTransformer built from the same weights
(`interp.cli.bench.checkpoints.hooked_transformer`) on the same texts, packed into fixed-length contexts, and
mixes its activations in its own buffer. Throughput = activations trained / wall seconds, one torch
thread; the harvest is timed too, so the end-to-end ratio (harvest + train) is reported next to the
training-only one.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _packed_tokens(dataset: Any, context: int) -> list[list[int]]:
    """The dataset's texts (each with its BOS) concatenated and cut into contexts of `context` tokens."""
    flat = [t for e in dataset.examples for t in e.ids]
    return [flat[i:i + context] for i in range(0, len(flat) - context + 1, context)]


def run_runner(model: Any, dataset: Any, cfg: Any, out: Path, context: int = 64) -> dict[str, Any]:
    """Train with sae-lens' LanguageModelSAETrainingRunner on a HookedTransformer copy; seconds and samples."""
    from datasets import Dataset
    from sae_lens import (
        BatchTopKTrainingSAEConfig,
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
    )

    from interp.cli.bench.checkpoints import hooked_transformer

    ht = hooked_transformer(model)
    rows = _packed_tokens(dataset, context)
    ds = Dataset.from_dict({"tokens": rows})
    rc = LanguageModelSAERunnerConfig(
        sae=BatchTopKTrainingSAEConfig(d_in=model.d_model, d_sae=cfg.width(model.d_model), k=float(cfg.k)),
        model_name="organism", hook_name=cfg.hook, dataset_path="local", is_dataset_tokenized=True, streaming=False,
        context_size=context, prepend_bos=False, training_tokens=cfg.total_samples,
        train_batch_size_tokens=cfg.batch_size, store_batch_size_prompts=32,
        n_batches_in_buffer=max(1, cfg.buffer_size // context), lr=cfg.lr, lr_end=cfg.lr * cfg.lr_end_fraction,
        lr_scheduler_name=cfg.lr_scheduler, lr_warm_up_steps=cfg.lr_warm_up_steps, device="cpu", seed=cfg.seed,
        dead_feature_window=cfg.dead_feature_window, logger=LoggingConfig(log_to_wandb=False), checkpoint_path=None,
        output_path=str(out), n_checkpoints=0, verbose=False,
    )
    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    runner = LanguageModelSAETrainingRunner(rc, override_dataset=ds, override_model=ht)
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    runner.run()
    seconds = time.perf_counter() - t1
    return {"seconds": seconds, "setup_seconds": setup, "samples": cfg.total_samples - cfg.total_samples % cfg.batch_size}


def run_bench(model_name: str = "organism/base-s", hook: str = "blocks.1.hook_resid_post", n_problems: int = 2400,
              total_samples: int = 200_000, seed: int = 0, repeats: int = 2) -> dict[str, Any]:
    """Time both paths on the same model, hook, texts and training configuration (interleaved, best of `repeats`)."""
    import numpy as np

    from interp.activations import AllTokens, PromptDataset, harvest
    from interp.models import load
    from interp.organism.dataset import problem_dataset
    from interp.organism.task import FORMATS, TaskConfig, sample_problems
    from saes.config import SAETrainConfig
    from saes.training import train_sae

    torch.set_num_threads(1)
    model = load(model_name)
    problems = sample_problems(seed, n_problems, TaskConfig(min_steps=1, max_steps=4))
    rng = np.random.default_rng(seed)
    exs = []
    for p, i in zip(problems, rng.integers(0, 3, len(problems))):
        exs += problem_dataset([p], model, FORMATS[int(i)]).examples  # type: ignore[arg-type]
    dataset = PromptDataset(tuple(exs))
    cfg = SAETrainConfig(hook=hook, total_samples=total_samples, exclude_bos=False, n_checkpoints=0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = harvest(model, dataset, [hook], AllTokens(), Path(tmp) / "store")
        harvest_s = time.perf_counter() - t0
        ours_s, runner_s = float("inf"), float("inf")
        for r in range(repeats):
            t0 = time.perf_counter()
            trained = train_sae(store, cfg, Path(tmp) / f"sae{r}")
            ours_s = min(ours_s, time.perf_counter() - t0)
            anchor = run_runner(model, dataset, dataclasses.replace(cfg), out=Path(tmp) / f"runner{r}")
            runner_s = min(runner_s, anchor["seconds"])
        ours_samples = trained.card["training"]["samples"]
    ours_rate = ours_samples / ours_s
    runner_rate = anchor["samples"] / runner_s
    e2e = ours_samples / (ours_s + harvest_s)
    return {
        "model": model_name, "hook": hook, "store_rows": store.n_rows, "total_samples": total_samples,
        "batch_size": cfg.batch_size, "d_sae": cfg.width(model.d_model), "k": cfg.k,
        "ours_train_seconds": round(ours_s, 2), "harvest_seconds": round(harvest_s, 2),
        "runner_train_seconds": round(runner_s, 2), "repeats": repeats, "runner_setup_seconds": round(anchor["setup_seconds"], 2),
        "ours_activations_per_s": round(ours_rate, 1), "ours_end_to_end_activations_per_s": round(e2e, 1),
        "runner_activations_per_s": round(runner_rate, 1),
        "throughput_ratio": round(ours_rate / runner_rate, 3),
        "throughput_ratio_end_to_end": round(e2e / runner_rate, 3),
        "target_ratio": 1.0, "target_met": ours_rate / runner_rate >= 1.0, "torch_threads": torch.get_num_threads(),
    }


__all__ = ["run_bench", "run_runner"]
