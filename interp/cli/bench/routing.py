"""`interp bench routing`: lock-step decoding of base and tuned against greedy generation with one model."""

from __future__ import annotations

from typing import Any

from analyses.routing.common import prompt_ids, sample_items
from analyses.routing.decode import Never, lockstep
from interp.benchmark import BenchRow, best_wall_and_cpu


def bench_routing(base: str = "organism/base-s", tuned: str = "organism/rl", task: str = "organism",
                  n: int = 200, repeats: int = 3, threads: int = 1, max_new_tokens: int = 72
                  ) -> tuple[list[BenchRow], dict[str, Any]]:
    """Best-of-`repeats` wall and CPU time of greedy `generate_ids` with the base alone and of the lock-step
    loop (both models, `never` router: the same tokens), on the same prompts; ratio = lock-step / one model."""
    import torch

    import interp
    from interp.generate import generate_ids

    torch.set_num_threads(threads)
    b, t = interp.load(base), interp.load(tuned)
    tk = interp.task(task)
    steps = (1, 2, 3, 4)
    prompts = prompt_ids(b, tk, sample_items(tk, steps, max(1, n // len(steps)), seed=14_200_003))
    times = best_wall_and_cpu({
        "one model (generate_ids)": lambda: generate_ids(b.hf, b.tokenizer, prompts, max_new_tokens),
        "lock-step base + tuned": lambda: lockstep(b, t, prompts, Never(), max_new_tokens),
    }, repeats)
    (w1, c1), (w2, c2) = times.values()
    rows = [BenchRow(f"{k} ({len(prompts)} prompts)", f"{w:.3f} s wall, {c:.3f} s CPU") for k, (w, c) in times.items()]
    rows += [BenchRow("lock-step / one model", f"{w2 / w1:.2f}x wall, {c2 / c1:.2f}x CPU")]
    return rows, {"bench": "routing", "prompts": len(prompts), "threads": threads, "one_model_s": w1,
                  "lockstep_s": w2, "ratio_wall": w2 / w1, "ratio_cpu": c2 / c1, "target_ratio": 2.3}


__all__ = ["bench_routing"]
