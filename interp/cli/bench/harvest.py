"""`interp bench harvest`: harvest throughput against a plain HF forward, and peak memory vs dataset size.

Throughput: the same right-padded batches through (a) a `torch.no_grad` HF forward (the baseline), (b) our
harvest of one hook at every token, written to disk (last and middle block), and as anchors (c) the Bridge's
`run_with_cache` of all hooks and (d) an nnsight trace saving the last layer's output. Models: zoo models by
name, and random-init models of a named shape (`checkpoints.SHAPES`, e.g. gpt2-small, qwen2-1.5b) built
locally, never downloaded. Memory: a harvest of N and of 10N prompts, each in a fresh process, by peak RSS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp.benchmark import BenchRow, best_wall_and_cpu, peak_rss_bytes

THROUGHPUT_TARGET = 0.9  # issue 3: harvest >= 0.9x the tokens/s of a plain HF forward
MEMORY_TARGET = 1.2  # issue 3: 10x the prompts -> < 1.2x the peak RSS
ANCHORS = ("run_with_cache_all_hooks", "nnsight_trace_one_layer")


def organism_dataset(model: Any, problems: Sequence[Any], fmt: str | None = None) -> Any:
    """Organism problems as a dataset for `model`, built word by word from the organism tokenizer's ids, not by
    encoding text: transformers 5 loads the organism tokenizer of a random-init Qwen2 checkpoint as
    `Qwen2Tokenizer`, whose ids agree but whose character offsets do not, so text-based named positions fail."""
    import warnings

    from interp.organism.dataset import problem_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return problem_dataset(problems, model.tokenizer, fmt)  # type: ignore[arg-type]


def bench_dataset(model: Any, n: int, seed: int = 0) -> Any:
    """Organism problems with their verbose chain of thought (about 30-70 tokens each), for `model`."""
    from interp.organism.task import TaskConfig, sample_problems

    return organism_dataset(model, sample_problems(seed, n, TaskConfig(min_steps=1, max_steps=4)), "verbose")


def _batches(dataset: Any, batch_size: int, pad: int, device: Any) -> list[Any]:
    """The right-padded batches the harvest itself forms, on the model's device."""
    import torch

    out = []
    for i in range(0, len(dataset), batch_size):
        seqs = [e.ids for e in dataset.examples[i:i + batch_size]]
        width = max(len(s) for s in seqs)
        out.append(torch.tensor([list(s) + [pad] * (width - len(s)) for s in seqs], device=device))
    return out


def _layers_envoy(model: Any) -> Any:
    """nnsight's view of the decoder-layer list (the longest ModuleList of the HF model)."""
    import torch

    name = max(((n, m) for n, m in model.hf.named_modules() if isinstance(m, torch.nn.ModuleList)),
               key=lambda nm: len(nm[1]))[0]
    envoy = model.nn
    for part in name.split("."):
        envoy = getattr(envoy, part)
    return envoy


def throughput(model: Any, dataset: Any, batch_size: int = 32, repeats: int = 3, workdir: str | Path | None = None,
               anchors: bool = True, dtype: str = "float32") -> dict[str, tuple[float, float]]:
    """(wall, CPU) tokens/s of each way of getting a block's residual stream over the same batches; the
    harvest writes a store of `dtype`. On CUDA every method ends with a synchronize."""
    import torch

    from interp.activations.harvest import harvest
    from interp.positions import AllTokens

    hook = f"blocks.{model.n_layers - 1}.hook_resid_post"
    mid = f"blocks.{model.n_layers // 2}.hook_resid_post"
    pad = model.tokenizer.pad_token_id or 0
    batches = _batches(dataset, batch_size, pad, model.device)
    n_tokens = sum(len(e.ids) for e in dataset)
    tmp = Path(tempfile.mkdtemp(prefix="interp-bench-harvest-", dir=workdir))
    runs = [0]
    cuda = torch.device(model.device).type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def hf() -> None:
        with torch.no_grad():
            for b in batches:
                model.hf(input_ids=b)
        sync()

    def ours(h: str) -> Any:
        def go() -> None:
            runs[0] += 1
            harvest(model, dataset, [h], AllTokens(), tmp / f"r{runs[0]}", batch_size=batch_size,
                    shard_size=max(batch_size, 8 * batch_size), dtype=dtype)
            shutil.rmtree(tmp / f"r{runs[0]}")
        return go

    fns: dict[str, Any] = {"hf_forward": hf, "harvest_one_hook": ours(hook), "harvest_mid_hook": ours(mid)}
    if anchors:
        layers = _layers_envoy(model)

        def cache_all() -> None:
            with torch.no_grad():
                for b in batches:
                    model.bridge.run_with_cache(b)
            sync()

        def nnsight() -> None:
            with torch.no_grad():
                for b in batches:
                    with model.nn.trace({"input_ids": b, "attention_mask": torch.ones_like(b)}):
                        layers[model.n_layers - 1].output.save()
            sync()

        fns.update(run_with_cache_all_hooks=cache_all, nnsight_trace_one_layer=nnsight)
    try:
        t = best_wall_and_cpu(fns, repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {k: (n_tokens / wall, n_tokens / cpu) for k, (wall, cpu) in t.items()}


def rss_child(model_name: str, n: int, out: str) -> dict[str, Any]:
    """In this (fresh) process: load, harvest one hook at every token of n prompts, report peak RSS."""
    import torch

    from interp.activations.harvest import harvest
    from interp.models import load
    from interp.positions import AllTokens

    torch.set_num_threads(1)
    model = load(model_name)
    ds = bench_dataset(model, n, seed=1)
    before = peak_rss_bytes()
    t0 = time.perf_counter()
    store = harvest(model, ds, [f"blocks.{model.n_layers - 1}.hook_resid_post"], AllTokens(), out,
                    batch_size=64, shard_size=512)
    return {"n_prompts": n, "rows": store.n_rows, "seconds": time.perf_counter() - t0,
            "peak_rss_bytes": peak_rss_bytes(), "peak_rss_before_harvest_bytes": before,
            "store_bytes": sum(p.stat().st_size for p in Path(out).rglob("*.safetensors"))}


def memory(model_name: str, n: int, factor: int = 10, workdir: str | Path | None = None) -> dict[str, Any]:
    """Peak RSS of harvesting n and factor*n prompts, each in a fresh Python process."""
    tmp = Path(tempfile.mkdtemp(prefix="interp-bench-rss-", dir=workdir))
    out = {}
    try:
        for k in (n, factor * n):
            proc = subprocess.run([sys.executable, "-m", "interp.cli.bench.harvest", model_name, str(k),
                                   str(tmp / f"n{k}")], capture_output=True, text=True, check=False,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode != 0:
                raise RuntimeError(f"harvest subprocess failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            out[k] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    small, big = out[n], out[factor * n]
    return {"small": small, "big": big, "ratio": big["peak_rss_bytes"] / small["peak_rss_bytes"]}


def model_key(name: str) -> str:
    """The JSON key prefix of a model: `organism/base-l` -> `base_l`, `gpt2-small` -> `gpt2_small`."""
    return name.rsplit("/", 1)[-1].replace("-", "_").replace(".", "_")


def bench_harvest(n_prompts: int = 256, gpt2_prompts: int = 64, batch_size: int = 32, repeats: int = 5,
                  memory_prompts: int = 500, threads: int = 1, device: str = "cpu", dtype: str = "float32",
                  models: Sequence[str] = ("organism/base-l", "gpt2-small"), anchors: bool = True,
                  ) -> tuple[list[BenchRow], dict[str, Any]]:
    """Run everything; the rows to print and the JSON figures. `models`: zoo names (n_prompts prompts, repeats
    timed runs) or names of `checkpoints.SHAPES` (random init; gpt2_prompts prompts, repeats - 2 runs).
    `memory_prompts=0` skips the memory measurement (it always runs organism/base-l on CPU)."""
    import torch

    from interp.cli.bench.checkpoints import SHAPES, CheckpointSpec, build_checkpoint
    from interp.models import load

    torch.set_num_threads(threads)
    rows: list[BenchRow] = []
    figures: dict[str, Any] = {"torch_threads": threads, "batch_size": batch_size, "device": device, "dtype": dtype}
    tmp = Path(tempfile.mkdtemp(prefix="interp-bench-models-"))
    try:
        for name in models:
            zoo = name not in SHAPES
            path = name if zoo else str(build_checkpoint(tmp / name, CheckpointSpec.named(name, dtype=dtype), device))
            model = load(path, device=device, dtype=getattr(torch, dtype))
            key = model_key(name)
            ds = bench_dataset(model, n_prompts if zoo else gpt2_prompts)
            tps = throughput(model, ds, batch_size, repeats if zoo else max(1, repeats - 2), anchors=anchors,
                             dtype=dtype)
            base, base_cpu = tps["hf_forward"]
            label = name if zoo else f"{name} shape, random init ({model.n_params / 1e6:,.0f}M)"
            for k, (v, c) in tps.items():
                rows.append(BenchRow(f"{label}: {k.replace('_', ' ')}",
                                     f"{v:,.0f} tok/s ({v / base:.2f}x; CPU time {c / base_cpu:.2f}x)"))
                figures[f"{key}_{k}_tokens_per_s"] = round(v, 1)
                if k != "hf_forward":
                    figures[f"{key}_{k}_over_hf_forward"] = round(v / base, 4)
                    figures[f"{key}_{k}_over_hf_forward_cpu"] = round(c / base_cpu, 4)
            figures[f"{key}_tokens"] = sum(len(e.ids) for e in ds)
            figures[f"{key}_harvest_meets_target"] = tps["harvest_one_hook"][0] / base >= THROUGHPUT_TARGET
            del model
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures["throughput_target"] = THROUGHPUT_TARGET
    if memory_prompts > 0:
        mem = memory("organism/base-l", memory_prompts)
        rows.append(BenchRow(f"peak RSS, harvest of {memory_prompts} prompts ({mem['small']['rows']:,} rows)",
                             f"{mem['small']['peak_rss_bytes'] / 2**20:,.0f} MiB"))
        rows.append(BenchRow(f"peak RSS, harvest of {10 * memory_prompts} prompts ({mem['big']['rows']:,} rows, "
                             f"{mem['big']['store_bytes'] / 2**20:,.0f} MiB on disk)",
                             f"{mem['big']['peak_rss_bytes'] / 2**20:,.0f} MiB"))
        rows.append(BenchRow("peak RSS ratio, 10x prompts", f"{mem['ratio']:.3f} (target < {MEMORY_TARGET})"))
        figures.update({"peak_rss_ratio_10x_prompts": round(mem["ratio"], 4),
                        "peak_rss_small_bytes": mem["small"]["peak_rss_bytes"],
                        "peak_rss_big_bytes": mem["big"]["peak_rss_bytes"],
                        "peak_rss_before_harvest_small_bytes": mem["small"]["peak_rss_before_harvest_bytes"],
                        "peak_rss_before_harvest_big_bytes": mem["big"]["peak_rss_before_harvest_bytes"],
                        "memory_target": MEMORY_TARGET, "memory_meets_target": mem["ratio"] < MEMORY_TARGET})
    return rows, figures


if __name__ == "__main__":  # `python -m interp.cli.bench.harvest MODEL N OUT`: one memory measurement
    print(json.dumps(rss_child(sys.argv[1], int(sys.argv[2]), sys.argv[3])))


__all__ = ["ANCHORS", "bench_dataset", "bench_harvest", "memory", "model_key", "organism_dataset", "throughput"]
