"""Batches that fit: run work in batches and, when a batch runs out of accelerator memory, halve it and
retry, recording every halving so a result can say it happened.

Large models on one GPU (a 1.5B model's long thinking traces, a 7B model in bf16) cannot know their batch
size in advance; halving on `torch.OutOfMemoryError` keeps a job going with the largest batch that fits.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchLog:
    """What the adaptive batcher did: the batch size it started with, ended with, and each halving."""

    start: int
    final: int
    halvings: list[dict[str, int]] = field(default_factory=list)

    def note(self) -> str:
        """One sentence for a report ('' when no batch was halved)."""
        if not self.halvings:
            return ""
        return (f"out of memory {len(self.halvings)} time(s): batch size halved from {self.start} to {self.final} "
                f"and retried (results are identical; only speed changes)")

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "final": self.final, "halvings": list(self.halvings)}


def is_oom(e: BaseException) -> bool:
    """True for an accelerator out-of-memory error (CUDA's, MPS's, or a RuntimeError that says so)."""
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def map_batches(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T], batch_size: int,
                log: BatchLog | None = None) -> list[R]:
    """`fn` over consecutive batches of `items` (fn returns one result per item, in order); a batch that runs
    out of memory is halved and retried, down to one item (then the error is raised with advice)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    log = log if log is not None else BatchLog(batch_size, batch_size)
    out: list[R] = []
    size, start = batch_size, 0
    while start < len(items):
        chunk = items[start:start + size]
        try:
            res = fn(chunk)
        except Exception as e:
            if not is_oom(e):
                raise
            _free()
            if size == 1:
                raise torch.OutOfMemoryError(
                    "one item alone does not fit in accelerator memory: use a smaller dtype (bfloat16), "
                    "device_map='auto' to spread the model over devices, or shorter inputs") from e
            log.halvings.append({"at_item": start, "from": size, "to": size // 2})
            size //= 2
            continue
        if len(res) != len(chunk):
            raise ValueError(f"the batch function returned {len(res)} results for {len(chunk)} items")
        out += res
        start += len(chunk)
    log.final = size
    return out


__all__ = ["BatchLog", "is_oom", "map_batches"]
