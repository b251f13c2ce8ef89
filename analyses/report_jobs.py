"""Runs the report's sections: one after another in this process, in parallel worker processes, or as Ray
tasks, with one overall progress line (sections done, time elapsed, an estimate of the time left).

Sections are independent (each caches its own results, written atomically), so any order gives the same
report; the longest expected section starts first, so `jobs` workers finish close together.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

# A section's expected seconds when no earlier report in the same folder timed it; the estimate of the time
# left rescales as sections finish (by how long they took against what was expected).
UNKNOWN_SECONDS = 120.0


@dataclass
class Progress:
    """The report's progress line: `report: 3/16 sections done (layers 212 s) · 5m40s elapsed · about 9m left`.

    The estimate of the time left is the expected seconds of the sections not finished (the running ones less
    what they have run), scaled by how long the finished sections took against their expectation, shared over
    the workers and never less than the longest section still to finish."""

    expected: Mapping[str, float]
    jobs: int = 1
    stream: TextIO | None = None
    t0: float = field(default_factory=time.time)
    started: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)

    def start(self, name: str) -> None:
        self.started[name] = time.time()

    def finish(self, name: str, seconds: float) -> str:
        self.done[name] = seconds
        line = self.line(name)
        if self.stream is not None:
            print(line, file=self.stream, flush=True)
        return line

    def _expect(self, name: str) -> float:
        return float(self.expected.get(name) or UNKNOWN_SECONDS)

    def scale(self) -> float:
        """How much longer (or shorter) the finished sections took than expected (1 before any finished);
        sections done in under a second (skipped, or read from a cache) say nothing about the others."""
        timed = {n: t for n, t in self.done.items() if t >= 1.0}
        exp = sum(self._expect(n) for n in timed)
        return sum(timed.values()) / exp if exp > 0 and timed else 1.0

    def seconds_left(self, names: Sequence[str] | None = None) -> float:
        now, k = time.time(), self.scale()
        pending = [n for n in (names if names is not None else self.expected) if n not in self.done]
        left = [max(k * self._expect(n) - (now - self.started[n] if n in self.started else 0.0), 1.0)
                for n in pending]
        return max(sum(left) / max(self.jobs, 1), max(left, default=0.0))

    def line(self, last: str) -> str:
        total = len(self.expected)
        left = self.seconds_left()
        tail = "" if len(self.done) == total else f" · about {_clock(left)} left"
        return (f"report: {len(self.done)}/{total} sections done ({last} {self.done[last]:.0f} s) · "
                f"{_clock(time.time() - self.t0)} elapsed{tail}")


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


# Each section of the first zoo's report from an empty cache on 2 cores (2 workers, PNGs written; measured
# 2026-11-30): the order sections start in (longest first) when no earlier report timed them more slowly.
TYPICAL_SECONDS = {
    "seeds": 1.0, "zoo": 44.0, "latent": 78.0, "faithfulness": 48.0, "layers": 159.0, "reasoning_direction": 60.0,
    "sae": 102.0, "routing": 79.0, "verbosity": 327.0, "calibration": 42.0, "compute": 110.0, "rlsf": 34.0,
    "shift": 121.0, "shift_recovery": 216.0, "novelty": 71.0, "symbolic": 62.0, "dpo_teacher": 42.0,
}


def expected_seconds(names: Sequence[str], previous: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each section's expected seconds: the longer of an earlier report's time in the same folder (which may
    have read the section from the cache) and its typical time from an empty cache, else a flat guess."""
    previous = previous or {}
    return {n: max(float(previous.get(n) or 0.0), TYPICAL_SECONDS.get(n, 0.0)) or UNKNOWN_SECONDS for n in names}


def default_jobs(device: str = "cpu") -> int:
    """Worker processes for a report: one per CPU for models on the CPU, one for a GPU (the models of every
    section would otherwise share its memory)."""
    return max(1, os.cpu_count() or 1) if device == "cpu" else 1


def _worker_init(threads: int) -> None:
    """Each worker's thread count, set before torch is imported (torch reads it then)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def run_in_worker(make: Callable[..., Any], config_dict: dict[str, Any], out: str) -> dict[str, Any]:
    """One section in a worker process (a module-level function, so pools and Ray can ship it): the section
    as a dict, as report.json stores it."""
    from analyses import report as rep

    config = rep.ReportConfig.from_dict(config_dict)
    rep._LOAD_ARGS.update(device=config.device, dtype=config.dtype)
    try:
        return rep.run_section(make, config, Path(out)).to_dict()
    finally:
        rep.unload_models()


def run_on_node(make: Callable[..., Any], config_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """One section as a Ray task: run into a fresh folder on the node that runs it, and carry the files it
    wrote back as bytes (a cluster's nodes share no disk)."""
    import tempfile

    from interp.cluster import read_tree

    with tempfile.TemporaryDirectory(prefix="interp-section-") as tmp:
        d = run_in_worker(make, config_dict, tmp)
        return d, read_tree(tmp)


def run_sections(makes: Sequence[Callable[..., Any]], names: Sequence[str], config: Any, out: Path,
                 on_done: Callable[[str, Any], None], *, jobs: int = 1, ray: str | bool | None = None,
                 expected: Mapping[str, float] | None = None, stream: TextIO | None = None) -> Progress:
    """Run each section and hand `(name, Section)` to `on_done` as it finishes (in finishing order). `jobs` 1
    runs them here, in report order; more runs them in that many processes (one torch thread each when the
    CPUs allow no more), longest expected first; `ray` runs them as Ray tasks on that cluster instead."""
    from analyses import report as rep

    expected = dict(expected or expected_seconds(names))
    # the progress line goes to `stream`, else to sys.stderr as it is now (a notebook or a test may have swapped it)
    progress = Progress(expected, jobs=max(jobs, 1), stream=stream or sys.stderr)
    by_name = dict(zip(names, makes))
    if ray:
        from interp.cluster import iter_tasks, write_tree

        order = sorted(names, key=lambda n: -expected[n])
        for n in order:
            progress.start(n)
        for i, (d, files) in iter_tasks(run_on_node, [(by_name[n], config.to_dict()) for n in order], ray=ray,
                                        num_cpus=1):
            write_tree(out, files)  # the section's figures and JSON, made on whichever node ran it
            s = rep.Section.from_dict(d)
            progress.finish(order[i], s.seconds)
            on_done(order[i], s)
        return progress
    if jobs <= 1:
        for n in names:
            progress.start(n)
            s = rep.run_section(by_name[n], config, out)
            progress.finish(n, s.seconds)
            on_done(n, s)
        return progress
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(threads,))
    pending: dict[Future[dict[str, Any]], str] = {}
    try:
        for n in sorted(names, key=lambda n: -expected[n]):
            pending[pool.submit(run_in_worker, by_name[n], config.to_dict(), str(out))] = n
        # the pool starts the first `jobs` at once; later ones start as workers free up (counted from then)
        for n in list(pending.values())[:jobs]:
            progress.start(n)
        queue = list(pending.values())[jobs:]
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                n = pending.pop(f)
                s = rep.Section.from_dict(f.result())  # a section's error is raised here, as in one process
                progress.finish(n, s.seconds)
                on_done(n, s)
                if queue:
                    progress.start(queue.pop(0))
    finally:
        pool.shutdown(wait=not pending, cancel_futures=True)
    return progress


__all__ = ["TYPICAL_SECONDS", "Progress", "default_jobs", "expected_seconds", "run_in_worker", "run_on_node", "run_sections"]
