"""Shared pieces of `interp bench ...`: best-of timing, peak memory of a process, the printed output.

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


__all__ = ["BenchRow", "best_times", "best_wall_and_cpu", "peak_rss_bytes", "print_bench"]
