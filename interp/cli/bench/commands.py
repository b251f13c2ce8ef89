"""The `interp bench <name>` commands: each prints a table, then one JSON line of ratios measured in the same run.

Imports of the benchmark modules (and so of torch and the rest) happen inside each command, so
`interp bench --help` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from interp.cli.common import bench_app, fail

DTYPES = ("float32", "bfloat16", "float16")


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise typer.BadParameter(f"unknown dtype {dtype!r}; use {', '.join(DTYPES)}")


@bench_app.command("harvest")
def bench_harvest_cmd(
    n: Annotated[int, typer.Option(help="prompts for each zoo model")] = 256,
    gpt2_n: Annotated[int, typer.Option(help="prompts for each random-init model (gpt2-small, ...)")] = 64,
    batch_size: int = 32,
    repeats: Annotated[int, typer.Option(help="timed repeats per method (best of; random-init models get 2 fewer)")] = 5,
    memory_n: Annotated[int, typer.Option(help="prompts of the small memory run (the big one has 10x; 0 skips it)")] = 500,
    threads: Annotated[int, typer.Option(help="torch threads")] = 1,
    device: Annotated[str, typer.Option(help="torch device of the throughput runs, e.g. cuda")] = "cpu",
    dtype: Annotated[str, typer.Option(help="model and store dtype: float32, bfloat16 or float16")] = "float32",
    models: Annotated[str, typer.Option(help="comma-separated zoo models and random-init shapes "
                                             "(gpt2-small, qwen2-1.5b, qwen2-tiny)")] = "organism/base-l,gpt2-small",
    anchors: Annotated[bool, typer.Option(help="also time run_with_cache (all hooks) and an nnsight trace")] = True,
) -> None:
    """Harvest tokens/s vs a plain HF forward (plus run_with_cache and nnsight anchors); peak RSS at 10x prompts."""
    from interp.benchmark import print_bench
    from interp.cli.bench.harvest import bench_harvest

    _check_dtype(dtype)
    try:
        rows, figures = bench_harvest(n, gpt2_n, batch_size, repeats, memory_n, threads, device, dtype,
                                      tuple(m.strip() for m in models.split(",") if m.strip()), anchors)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as e:
        fail(e)
    print_bench("interp bench harvest", rows, figures)


@bench_app.command("layers")
def bench_layers_cmd(
    zoo_pair: Annotated[str, typer.Option(help="tuned zoo model whose whole analysis is timed ('' to skip)")] = "organism/sft",
    workdir: Annotated[Path | None, typer.Option(help="where the temporary 1.5B pair is written (~6 GiB)")] = None,
) -> None:
    """Peak memory of the streamed weight change on a local random-init Qwen2-1.5B-shaped pair, and zoo-pair time."""
    from interp.cli.bench.layers import bench_layers

    try:
        rows, figures = bench_layers(zoo_tuned=zoo_pair or None, workdir=workdir)
    except (ValueError, OSError, RuntimeError) as e:
        fail(e)
    from interp.benchmark import print_bench

    print_bench("interp bench layers", rows, figures)




@bench_app.command("patch")
def bench_patch(
    zoo_model: Annotated[str, typer.Option(help="zoo model to benchmark")] = "organism/base-l",
    n_steps: Annotated[int, typer.Option(help="steps of the benchmark problem")] = 3,
) -> None:
    """Full resid_pre grid of one prompt: our batched engine vs TransformerLens' patching module (speed-up, max abs
    diff) on a zoo model and a random GPT-2-small; attribution patching's Spearman with exact. Last line: JSON."""
    import torch

    from interp.cli.bench.patch import run_bench, summary

    torch.set_num_threads(1)
    try:
        rows = run_bench(zoo_model, n_steps)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    table = Table(title="interp bench patch: full resid_pre grid, one prompt (1 thread)")
    for col in ("model", "params", "layers x positions", "ours s (cpu s)", "TL on Bridge s (cpu s)", "speed-up (cpu)",
                "max |diff|", "TL on HookedTransformer s (cpu s)", "speed-up (cpu)", "max |diff|", "attribution s",
                "Spearman (all / changed cells)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], f"{r['n_params']:,}", f"{r['n_layers']} x {r['n_positions']}",
                      f"{r['ours_seconds']:.3f} ({r['ours_cpu_seconds']:.3f})",
                      f"{r['tl_seconds']:.2f} ({r['tl_cpu_seconds']:.2f})",
                      f"{r['speedup']:.1f}x ({r['speedup_cpu']:.1f}x)", f"{r['max_abs_diff']:.1e}",
                      f"{r['ht_seconds']:.2f} ({r['ht_cpu_seconds']:.2f})",
                      f"{r['speedup_vs_hooked_transformer']:.1f}x ({r['speedup_cpu_vs_hooked_transformer']:.1f}x)",
                      f"{r['max_abs_diff_vs_hooked_transformer']:.1e}",
                      f"{r['attribution_seconds']:.3f}", f"{r['spearman']:.3f} / {r['spearman_changed_cells']:.3f}")
    Console(width=200).print(table)
    print(json.dumps(summary(rows)))


@bench_app.command("steer")
def bench_steer_cmd(
    model: Annotated[str, typer.Option(help="model to generate with: zoo name, folder or random-init shape (qwen2-1.5b)")] = "organism/sft",
    n: Annotated[int, typer.Option(help="prompts in the batch")] = 64,
    new_tokens: Annotated[int, typer.Option(help="tokens generated per prompt (EOS suppressed)")] = 48,
    repeats: Annotated[int, typer.Option(help="timed repeats per method (best of)")] = 5,
    threads: Annotated[int, typer.Option(help="torch threads")] = 1,
    device: Annotated[str, typer.Option(help="torch device, e.g. cuda")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "float32",
) -> None:
    """Steered vs unsteered batched generation tokens/s on the same batch (target >= 0.85x)."""
    from interp.benchmark import print_bench
    from interp.cli.bench.steer import bench_steer

    _check_dtype(dtype)
    try:
        rows, figures = bench_steer(model, n, new_tokens, repeats, threads, device, dtype)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    print_bench("interp bench steer", rows, figures)


@bench_app.command("sae")
def bench_sae(
    model: str = "organism/base-s",
    hook: str = "blocks.1.hook_resid_post",
    total_samples: int = 200_000,
    repeats: Annotated[int, typer.Option(help="timed repeats of every path, alternated (median and min-max)")] = 3,
) -> None:
    """SAE training throughput vs sae-lens' LanguageModelSAETrainingRunner: streamed (harvest into training) end to
    end, harvest + store + train, and training from a store alone."""
    from interp.benchmark import print_bench
    from interp.cli.bench.sae import bench_rows, run_bench

    try:
        r = run_bench(model, hook, total_samples=total_samples, repeats=repeats)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as e:
        fail(e)
    rows = bench_rows(r)
    print_bench("interp bench sae", rows, r)


@bench_app.command("ray")
def bench_ray_cmd(
    model: Annotated[str, typer.Option(help="zoo model, local folder or cached hub id to harvest")] = "organism/base-l",
    n: Annotated[int, typer.Option(help="prompts harvested (every token of the last block's residual stream)")] = 4096,
    shards: Annotated[int, typer.Option(help="shards, each one Ray task")] = 8,
    cpus: Annotated[int, typer.Option(help="CPUs of the local Ray instance (1 per task)")] = 2,
    batch_size: int = 32,
    repeats: Annotated[int, typer.Option(help="timed repeats of each way (best of, interleaved)")] = 3,
    ray: Annotated[str | None, typer.Option("--ray", help="an existing cluster's address (auto, host:port) "
                                                          "instead of a local instance")] = None,
) -> None:
    """Harvest tokens/s of N shards as Ray tasks on a local instance vs one single-threaded process (target >= 1.6x),
    and whether the stores are byte-identical."""
    from interp.benchmark import print_bench
    from interp.cli.bench.ray import bench_ray

    try:
        rows, figures = bench_ray(model, n, shards, cpus, batch_size, repeats=repeats, address=ray)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as e:
        fail(e)
    print_bench("interp bench ray", rows, figures)
