"""Shared pieces of `interp bench ...` and the report: best-of timing, peak memory of a process or a block,
the printed output.

Every benchmark prints a readable table and then, as its last line, one JSON object of the ratios and
figures it measured, so scripts can read them. Ratios are taken against a baseline measured in the same
run (interleaved repeats, best of each), never against a number from another machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BenchRow:
    what: str
    value: str


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM of /proc/self/status (per address space, so a fresh
    `exec` starts from zero; `ru_maxrss` would carry over a forking parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def reset_peak_rss() -> bool:
    """Start this process's peak resident memory afresh (VmHWM back to the current resident set, through
    /proc/self/clear_refs); False where the platform does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory while a block runs: this process's resident set and, for a CUDA device, the most memory
    torch allocated on it. A figure that could not be measured (no peak reset here, no CUDA) stays 0.

        with PeakMemory("cuda") as peak:
            run()
        peak.rss_bytes, peak.gpu_bytes
    """

    def __init__(self, device: Any = "cpu") -> None:
        self.device, self.rss_bytes, self.gpu_bytes = str(device), 0, 0
        self._rss = False

    def __enter__(self) -> PeakMemory:
        self._rss = reset_peak_rss()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        self.rss_bytes = peak_rss_bytes() if self._rss else 0
        if self.device.startswith("cuda"):
            import torch

            self.gpu_bytes = int(torch.cuda.max_memory_allocated(self.device))


def best_wall_and_cpu(fns: Mapping[str, Callable[[], Any]], repeats: int = 3, warmup: bool = True
                      ) -> dict[str, tuple[float, float]]:
    """(wall seconds, this process's CPU seconds) per call of each function, each the best of `repeats`,
    interleaved so drifts hit all alike. CPU time is the steadier one on a shared machine."""
    if warmup:
        for f in fns.values():
            f()
    best = {k: (float("inf"), float("inf")) for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[k] = (min(best[k][0], wall), min(best[k][1], cpu))
    return best


def best_times(fns: Mapping[str, Callable[[], Any]], repeats: int = 3, warmup: bool = True) -> dict[str, float]:
    """Wall seconds per call of each function: best of `repeats`, interleaved."""
    return {k: v[0] for k, v in best_wall_and_cpu(fns, repeats, warmup).items()}


def print_bench(title: str, rows: Sequence[BenchRow], figures: Mapping[str, Any]) -> None:
    """The table for people, then the JSON line for scripts (always last)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("measurement")
    table.add_column("value", justify="right")
    for r in rows:
        table.add_row(r.what, r.value)
    Console(width=140).print(table)
    print(json.dumps(dict(figures)), flush=True)


__all__ = ["BenchRow", "PeakMemory", "best_times", "best_wall_and_cpu", "peak_rss_bytes", "print_bench",
           "reset_peak_rss"]
