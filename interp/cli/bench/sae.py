"""`interp bench sae`: SAE training throughput, ours vs sae-lens' own runner, end to end and from a store.

All paths train the same architecture (BatchTopK, same width, k, batch size, lr schedule, seed and
number of activations) on the same model, hook and texts, on the CPU with one torch thread. sae-lens'
`LanguageModelSAETrainingRunner` runs a HookedTransformer built from the same weights
(`interp.cli.bench.checkpoints.hooked_transformer`) on the texts packed into fixed-length contexts and
mixes its activations in its own buffer (one forward per token per epoch). Ours:
- streamed (`saes.streaming.train_sae_streamed`): the one-SAE path, harvest forwards feed the mixing
  buffer directly, one forward per token, no disk; timed from the model to the saved SAE;
- stored: `harvest` to disk, then `saes.train_sae` on the store (the store pays off from the second SAE);
  the training-only ratio times `train_sae` alone;
- streamed + store (`store_out=`): the streamed path that also writes the store (a background harvest
  thread, so it uses a second core; reported, not the headline).
Each repeat times every path once, in an order that alternates between repeats; ratios are taken per
repeat (runner seconds / ours, same samples) and reported as the median with the min-max over repeats,
wall and CPU time both. The quality metrics our cards carry (the runner computes none) are timed apart.
The runner's timing starts after its constructor (its activation store and SAE are set up untimed,
`median_seconds.runner_setup_untimed`); ours is timed from the loaded model to the saved SAE. Same texts
and token count, not quite the same activations: the runner's packed contexts let a text attend to the
texts before it in its context; ours runs each text on its own (as every analysis here reads them).
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
    t1, c1 = time.perf_counter(), time.process_time()
    runner.run()
    seconds, cpu = time.perf_counter() - t1, time.process_time() - c1
    return {"seconds": seconds, "cpu_seconds": cpu, "setup_seconds": setup,
            "samples": -(-cfg.total_samples // cfg.batch_size) * cfg.batch_size}  # SAETrainer steps until >= total


def _median_spread(xs: list[float]) -> dict[str, float]:
    import statistics

    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}


def run_bench(model_name: str = "organism/base-s", hook: str = "blocks.1.hook_resid_post", n_problems: int = 2400,
              total_samples: int = 200_000, seed: int = 0, repeats: int = 3, with_store_out: bool = True
              ) -> dict[str, Any]:
    """Time every path on the same model, hook, texts and training configuration, `repeats` times alternated."""
    import os

    import numpy as np

    from interp.activations import AllTokens, PromptDataset, harvest
    from interp.models import load
    from interp.organism.dataset import problem_dataset
    from interp.organism.task import FORMATS, TaskConfig, sample_problems
    from saes.config import SAETrainConfig
    from saes.metrics import quality
    from saes.streaming import train_sae_streamed
    from saes.training import train_sae

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    model = load(model_name)
    problems = sample_problems(seed, n_problems, TaskConfig(min_steps=1, max_steps=4))
    rng = np.random.default_rng(seed)
    exs = []
    for p, i in zip(problems, rng.integers(0, 3, len(problems))):
        exs += problem_dataset([p], model, FORMATS[int(i)]).examples  # type: ignore[arg-type]
    dataset = PromptDataset(tuple(exs))
    cfg = SAETrainConfig(hook=hook, total_samples=total_samples, exclude_bos=False, n_checkpoints=0, seed=seed)
    times: dict[str, list[tuple[float, float]]] = {}
    samples: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)

        def timed(name: str, fn: Any) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            times.setdefault(name, []).append((time.perf_counter() - t0, time.process_time() - c0))
            return out

        def runner(r: int) -> None:
            anchor = run_runner(model, dataset, dataclasses.replace(cfg), out=tmp / f"runner{r}")
            times.setdefault("runner", []).append((anchor["seconds"], anchor["cpu_seconds"]))
            times.setdefault("runner_setup_untimed", []).append((anchor["setup_seconds"], 0.0))
            samples["runner"] = anchor["samples"]

        def streamed(r: int) -> None:
            t = timed("streamed", lambda: train_sae_streamed(model, dataset, cfg, tmp / f"streamed{r}", metrics=False))
            samples["ours"] = t.card["training"]["samples"]

        def stored(r: int) -> None:
            st = timed("harvest", lambda: harvest(model, dataset, [hook], AllTokens(), tmp / f"store{r}"))
            timed("stored_train", lambda: train_sae(st, cfg, tmp / f"stored{r}", metrics=False))
            samples["store_rows"] = st.n_rows

        def streamed_store(r: int) -> None:
            timed("streamed_store", lambda: train_sae_streamed(model, dataset, cfg, tmp / f"sstore{r}",
                                                              store_out=tmp / f"sstore{r}-acts", metrics=False))

        paths = [runner, streamed, stored] + ([streamed_store] if with_store_out else [])
        # untimed warm-up of both trainers (first-call imports and allocations), on a short run
        warm = dataclasses.replace(cfg, total_samples=cfg.batch_size * (cfg.lr_warm_up_steps + 4))
        run_runner(model, dataset, warm, out=tmp / "warm-runner")
        train_sae_streamed(model, dataset, warm, tmp / "warm-ours", metrics=False)
        for r in range(repeats):
            for path in (paths if r % 2 == 0 else paths[::-1]):
                path(r)
        from interp.activations import ActivationStore
        from saes.training import TrainedSAE

        sae, store0 = TrainedSAE(tmp / "stored0", {}).load(), ActivationStore.open(tmp / "store0")
        t0, c0 = time.perf_counter(), time.process_time()
        quality(sae, store0, hook, exclude_bos=cfg.exclude_bos)
        metrics_s, metrics_cpu = time.perf_counter() - t0, time.process_time() - c0
    n = samples["ours"]

    def ratios(ours: list[float], i: int) -> dict[str, float]:
        return _median_spread([times["runner"][r][i] / ours[r] for r in range(repeats)])

    e2e = [times["streamed"][r][0] for r in range(repeats)]
    e2e_cpu = [times["streamed"][r][1] for r in range(repeats)]
    train = [times["stored_train"][r][0] for r in range(repeats)]
    stored_e2e = [times["harvest"][r][0] + train[r] for r in range(repeats)]
    med = {k: float(np.median([t[0] for t in v])) for k, v in times.items()}
    med_cpu = {k: float(np.median([t[1] for t in v])) for k, v in times.items()}
    out: dict[str, Any] = {
        "model": model_name, "hook": hook, "store_rows": samples["store_rows"], "total_samples": total_samples,
        "samples_trained": n, "runner_samples_trained": samples["runner"], "batch_size": cfg.batch_size,
        "d_sae": cfg.width(model.d_model), "k": cfg.k, "repeats": repeats,
        "median_seconds": {k: round(v, 2) for k, v in med.items()},
        "median_cpu_seconds": {k: round(v, 2) for k, v in med_cpu.items()},
        "ratio_end_to_end_streamed": ratios(e2e, 0), "ratio_end_to_end_streamed_cpu": ratios(e2e_cpu, 1),
        "ratio_training_only": ratios(train, 0),
        "ratio_training_only_cpu": ratios([times["stored_train"][r][1] for r in range(repeats)], 1),
        "ratio_end_to_end_stored": ratios(stored_e2e, 0),
        "ratio_end_to_end_stored_cpu": ratios([times["harvest"][r][1] + times["stored_train"][r][1]
                                               for r in range(repeats)], 1),
        "quality_metrics_seconds": round(metrics_s, 2), "quality_metrics_cpu_seconds": round(metrics_cpu, 2),
        "ratio_end_to_end_streamed_with_metrics": ratios([x + metrics_s for x in e2e], 0),
        "ratio_end_to_end_streamed_with_metrics_cpu": ratios([x + metrics_cpu for x in e2e_cpu], 1),
    }
    if with_store_out:
        out["ratio_end_to_end_streamed_store"] = ratios([times["streamed_store"][r][0] for r in range(repeats)], 0)
        out["ratio_end_to_end_streamed_store_cpu"] = ratios([times["streamed_store"][r][1] for r in range(repeats)], 1)
    # the keys `interp bench sae` prints (medians); the target is end to end, for one SAE
    out |= {
        "ours_train_seconds": round(med["stored_train"], 2), "harvest_seconds": round(med["harvest"], 2),
        "streamed_seconds": round(med["streamed"], 2), "runner_train_seconds": round(med["runner"], 2),
        "ours_activations_per_s": round(n / med["stored_train"], 1),
        "ours_end_to_end_activations_per_s": round(n / med["streamed"], 1),
        "runner_activations_per_s": round(samples["runner"] / med["runner"], 1),
        "throughput_ratio": out["ratio_training_only"]["median"],
        "throughput_ratio_end_to_end": out["ratio_end_to_end_streamed"]["median"],
        "target_ratio": 1.0, "target_met": out["ratio_end_to_end_streamed"]["median"] >= 1.0,
        "torch_threads": torch.get_num_threads(), "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    return out


def bench_rows(r: dict[str, Any]) -> list[Any]:
    """The table `interp bench sae` prints: medians, ratios with their min-max over repeats (wall; CPU beside)."""
    from interp.benchmark import BenchRow

    def ratio(key: str) -> str:
        w, c = r[key], r.get(key + "_cpu")
        cpu = f"; CPU {c['median']:.2f}x [{c['min']:.2f}-{c['max']:.2f}]" if c else ""
        return f"{w['median']:.2f}x [{w['min']:.2f}-{w['max']:.2f}]{cpu}"

    med = r["median_seconds"]
    rows = [BenchRow("model / hook", f"{r['model']} / {r['hook']}"),
            BenchRow("activations trained (batch, d_sae, k)",
                     f"{r['samples_trained']:,} ({r['batch_size']}, {r['d_sae']}, {r['k']:g}); {r['store_rows']:,} rows"),
            BenchRow("sae-lens LanguageModelSAETrainingRunner (HookedTransformer)", f"{med['runner']:.2f} s"),
            BenchRow("ours streamed: model -> SAETrainer, no disk", f"{med['streamed']:.2f} s"),
            BenchRow("ours: harvest to a store + train_sae", f"{med['harvest']:.2f} s + {med['stored_train']:.2f} s")]
    if "streamed_store" in med:
        rows.append(BenchRow("ours streamed, writing the store too", f"{med['streamed_store']:.2f} s"))
    rows += [BenchRow("ratio end to end, streamed (target >= 1.0x)",
                      f"{ratio('ratio_end_to_end_streamed')} ({'met' if r['target_met'] else 'NOT met'})"),
             BenchRow("ratio end to end, harvest + store + train", ratio("ratio_end_to_end_stored")),
             BenchRow("ratio training from a store alone", ratio("ratio_training_only"))]
    if "ratio_end_to_end_streamed_store" in r:
        rows.append(BenchRow("ratio end to end, streamed + store", ratio("ratio_end_to_end_streamed_store")))
    rows += [BenchRow("quality metrics of our cards (not in the runner)",
                      f"{r['quality_metrics_seconds']:.2f} s; streamed incl. them {ratio('ratio_end_to_end_streamed_with_metrics')}"),
             BenchRow("load average before / after", f"{r['load_average_before'][0]:.1f} / {r['load_average_after'][0]:.1f}")]
    return rows


__all__ = ["bench_rows", "run_bench", "run_runner"]
