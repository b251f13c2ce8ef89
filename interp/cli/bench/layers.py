"""`interp bench layers`: peak memory of the streamed weight change on a locally built random-init pair of
Qwen2-1.5B shape (`checkpoints`, never downloaded) against the size of one model, measured in a clean subprocess, and
the wall time of the whole analysis on one zoo pair. The tuned model is the base plus noise of a known
relative size per layer, so the benchmark also checks the measured change against the injected one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from interp.benchmark import BenchRow
from interp.cli.bench.checkpoints import (
    QWEN2_1_5B,
    CheckpointSpec,
    perturb_checkpoint,
    random_model,
)

MEMORY_LIMIT_RATIO = 2.5  # issue 5: peak memory under 2.5x one model
ZOO_LIMIT_SECONDS = 180.0  # issue 5: one zoo pair in under 3 minutes on 2 cores


def injected_change(layer: int, n_layers: int) -> float:
    """Relative noise added to every matrix of `layer` in the tuned model: 0.01 at layer 0 up to 0.05 at the top."""
    return 0.01 + 0.04 * layer / max(1, n_layers - 1)


@torch.no_grad()
def build_pair(folder: str | Path, shape: dict[str, Any] = QWEN2_1_5B, dtype: torch.dtype = torch.bfloat16,
               seed: int = 0, max_shard_size: str = "1GB", tokenizer: str = "organism", device: str = "cpu",
               model_max_length: int = 1024) -> tuple[Path, Path]:
    """Write a random-init Qwen2 base and a tuned copy (base + injected noise per layer, `injected_change`) as
    safetensors shards, both built by the shared `checkpoints.random_model` (with the organism tokenizer, or
    `tokenizer="organism-nl"`), initialised on `device`; the noise is drawn on the CPU, the same on any device."""
    from analyses.layer_changes.anatomy import layer_of_param

    folder = Path(folder)
    spec = CheckpointSpec("qwen2", shape, dtype=str(dtype).removeprefix("torch."), seed=seed, tokenizer=tokenizer,
                          model_max_length=model_max_length)
    model, tok = random_model(spec, device)
    base, tuned = folder / "base", folder / "tuned"
    model.save_pretrained(base, max_shard_size=max_shard_size)
    tok.save_pretrained(base)
    n = model.config.num_hidden_layers
    gen = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        layer = layer_of_param(name)
        eps = injected_change(layer, n) if layer is not None else 0.005
        rms = p.float().square().mean().sqrt()
        p.add_((torch.randn(p.shape, dtype=torch.float32, generator=gen).to(p.device) * (eps * rms)).to(p.dtype))
    model.save_pretrained(tuned, max_shard_size=max_shard_size)
    tok.save_pretrained(tuned)
    del model
    return base, tuned


def model_bytes(folder: str | Path) -> int:
    """Bytes of one model's weights: the sum of its safetensors files."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def weight_change_subprocess(base: str | Path, tuned: str | Path) -> dict[str, Any]:
    """Run the streamed weight change in a fresh Python process; its result, seconds and peak RSS."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "analyses.layer_changes.weights", str(base), str(tuned)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[3],
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"weight-change subprocess failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_layers(shape: dict[str, Any] = QWEN2_1_5B, zoo_tuned: str | None = "organism/sft",
                 workdir: str | Path | None = None, progress: bool = True) -> tuple[list[BenchRow], dict[str, Any]]:
    """Build the pair in a temp folder (removed after), measure, and time one zoo pair; rows and the JSON figures."""
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix="interp-bench-layers-", dir=workdir))
    try:
        t0 = time.perf_counter()
        base, tuned = build_pair(tmp, shape)
        build_s = time.perf_counter() - t0
        size = model_bytes(base)
        wc = weight_change_subprocess(base, tuned)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = wc["result"]
    n_layers = res["n_layers"]
    expected = [injected_change(i, n_layers) for i in range(n_layers)]
    err = max(abs(m - e) / e for m, e in zip(res["per_layer"], expected))
    ratio = wc["peak_rss_bytes"] / size
    figures: dict[str, Any] = {
        "n_params": res["n_params"], "model_bytes": size, "weight_change_peak_rss_bytes": wc["peak_rss_bytes"],
        "weight_change_rss_after_imports_bytes": wc["rss_after_imports_bytes"],
        "peak_memory_over_model_size": round(ratio, 4), "peak_memory_limit_ratio": MEMORY_LIMIT_RATIO,
        "peak_memory_within_limit": ratio < MEMORY_LIMIT_RATIO,
        "weight_change_seconds": round(wc["seconds"], 2), "build_pair_seconds": round(build_s, 2),
        "max_relative_error_vs_injected_change": round(err, 5),
    }
    rows = [BenchRow("pair built locally", f"Qwen2 shape, {n_layers} layers, {res['n_params'] / 1e9:.3f}B params, "
                                           f"bf16, {build_s:.0f} s"),
            BenchRow("one model's weights", f"{size / 2**30:.2f} GiB"),
            BenchRow("weight change: peak RSS (subprocess)", f"{wc['peak_rss_bytes'] / 2**30:.2f} GiB "
                                                            f"(of which {wc['rss_after_imports_bytes'] / 2**30:.2f} GiB "
                                                            f"after imports)"),
            BenchRow("peak RSS / one model", f"{ratio:.3f} (limit {MEMORY_LIMIT_RATIO})"),
            BenchRow("weight change wall time", f"{wc['seconds']:.1f} s"),
            BenchRow("measured vs injected change per layer", f"max relative error {err:.2e}")]
    if zoo_tuned is not None:
        from analyses.layer_changes.analysis import LayerChangesConfig, run

        torch.set_num_threads(1)
        t0 = time.perf_counter()
        run(LayerChangesConfig(tuned=zoo_tuned), progress=progress, use_cache=False)
        zoo_s = time.perf_counter() - t0
        figures.update({"zoo_pair": zoo_tuned, "zoo_pair_analysis_seconds": round(zoo_s, 1),
                        "zoo_pair_limit_seconds": ZOO_LIMIT_SECONDS, "zoo_pair_within_limit": zoo_s < ZOO_LIMIT_SECONDS,
                        "torch_threads": torch.get_num_threads()})
        rows.append(BenchRow(f"whole analysis, {zoo_tuned} vs organism/base-s (1 thread, uncached)",
                             f"{zoo_s:.1f} s (limit {ZOO_LIMIT_SECONDS:.0f} s)"))
    return rows, figures


__all__ = ["QWEN2_1_5B", "bench_layers", "build_pair", "injected_change", "model_bytes", "perturb_checkpoint",
           "weight_change_subprocess"]
