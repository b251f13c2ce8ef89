"""`interp bench steer`: tokens/s of steered vs unsteered batched HF generation on the same batch.

Both runs generate exactly `new_tokens` tokens per row (EOS suppressed via `min_new_tokens`), so they do the
same forwards and the ratio measures the steering hooks alone. Best of `repeats`, interleaved. The model is a zoo
name, a local folder, or a random-init shape of `checkpoints.SHAPES` built on the spot.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from interp.benchmark import BenchRow, best_wall_and_cpu
from interp.generate import left_pad
from interp.hooks import resid_post
from interp.organism.task import TaskConfig, sample_problems
from interp.steering.engine import steer
from interp.steering.interventions import Add, Subtract
from interp.steering.vector import SteeringVector

TARGET = 0.85


def bench_steer(model_name: str = "organism/sft", n: int = 64, new_tokens: int = 48, repeats: int = 3,
                threads: int = 1, device: str = "cpu", dtype: str = "float32") -> tuple[list[BenchRow], dict[str, Any]]:
    """Rows for the table and the JSON figures (ratios against unsteered generation of the same batch). Prompts are
    organism problems, so a model of another vocabulary needs the organism's tokens in its tokenizer; a name of
    `checkpoints.SHAPES` (e.g. qwen2-1.5b) builds a random-init model with the organism tokenizer first."""
    from interp.cli.bench.checkpoints import SHAPES, CheckpointSpec, build_checkpoint
    from interp.models import load

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="interp-bench-steer-") as tmp:
        path: str | Path = model_name
        if model_name in SHAPES:
            path = build_checkpoint(Path(tmp) / model_name, CheckpointSpec.named(model_name, dtype=dtype), device)
        m = load(path, device=device, dtype=getattr(torch, dtype))
        return _bench(m, model_name, n, new_tokens, repeats, threads, dtype)


def _bench(m: Any, model_name: str, n: int, new_tokens: int, repeats: int, threads: int, dtype: str
           ) -> tuple[list[BenchRow], dict[str, Any]]:
    tok = m.tokenizer
    probs = sample_problems(7, n, TaskConfig())
    ids, mask = left_pad([[tok.bos_token_id, *tok.convert_tokens_to_ids(p.prompt_tokens())] for p in probs],
                         tok.pad_token_id)
    ids, mask = ids.to(m.device), mask.to(m.device)
    g = torch.Generator().manual_seed(0)
    mid = m.n_layers // 2
    one = [Subtract(SteeringVector(torch.randn(m.d_model, generator=g), resid_post(mid)), scale=0.5,
                    where="generated")]
    every = [Add(SteeringVector(torch.randn(m.d_model, generator=g), resid_post(layer)), scale=0.25, where="generated")
             for layer in range(m.n_layers)]

    def gen(ivs: list) -> Any:
        def f() -> None:
            with steer(m, ivs), torch.no_grad():
                m.hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id)
            if m.device.type == "cuda":
                torch.cuda.synchronize()
        return f

    fns = {"unsteered": gen([]), "steered": gen(one), "steered_every_layer": gen(every)}
    best = best_wall_and_cpu(fns, repeats)  # CPU time too: steadier than wall clock on a shared machine
    times, cpu = {k: w for k, (w, _) in best.items()}, {k: c for k, (_, c) in best.items()}
    n_tok = n * new_tokens
    tps = {k: n_tok / t for k, t in times.items()}
    ratio = tps["steered"] / tps["unsteered"]
    ratio_all = tps["steered_every_layer"] / tps["unsteered"]
    ratio_cpu = cpu["unsteered"] / cpu["steered"]
    rows = [BenchRow("model", f"{model_name} ({m.n_layers} layers, d_model {m.d_model}, {dtype} on {m.device})"),
            BenchRow("batch", f"{n} prompts x {new_tokens} new tokens, greedy, HF KV cache, {threads} thread(s)"),
            BenchRow("unsteered tokens/s", f"{tps['unsteered']:,.0f}"),
            BenchRow(f"steered tokens/s (subtract at {resid_post(mid)}, every generated token)", f"{tps['steered']:,.0f}"),
            BenchRow("steered / unsteered (wall clock)", f"{ratio:.3f} (target >= {TARGET})"),
            BenchRow("steered / unsteered (process CPU time)", f"{ratio_cpu:.3f}"),
            BenchRow(f"steered at all {m.n_layers} layers tokens/s", f"{tps['steered_every_layer']:,.0f}"),
            BenchRow("all layers / unsteered", f"{ratio_all:.3f}")]
    figures = {"model": model_name, "device": str(m.device), "dtype": dtype, "batch": n, "new_tokens": new_tokens,
               "threads": threads,
               "unsteered_tokens_per_s": round(tps["unsteered"], 1), "steered_tokens_per_s": round(tps["steered"], 1),
               "steered_tokens_per_s_ratio": round(ratio, 3), "steered_tokens_per_cpu_s_ratio": round(ratio_cpu, 3),
               "steered_every_layer_tokens_per_s_ratio": round(ratio_all, 3), "target_ratio": TARGET,
               "meets_target": bool(ratio >= TARGET)}
    return rows, figures


__all__ = ["TARGET", "bench_steer"]
