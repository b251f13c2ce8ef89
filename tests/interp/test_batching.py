"""Adaptive batches: an out-of-memory batch is halved and retried, results stay identical and in order, the
log says what happened; other errors pass through; one item that does not fit is an error with advice."""

from __future__ import annotations

import pytest
import torch

from interp.batching import BatchLog, map_batches


def squares_that_fit(limit: int, seen: list[int]):  # type: ignore[no-untyped-def]
    """Our own batch function that behaves like a model on a small GPU: batches above `limit` run out of memory."""
    def fn(chunk):  # type: ignore[no-untyped-def]
        seen.append(len(chunk))
        if len(chunk) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * x for x in chunk]
    return fn


def test_halves_on_oom_and_keeps_order() -> None:
    seen: list[int] = []
    log = BatchLog(16, 16)
    out = map_batches(squares_that_fit(5, seen), list(range(37)), 16, log)
    assert out == [x * x for x in range(37)]
    assert seen[:3] == [16, 8, 4] and all(s <= 4 for s in seen[3:])
    assert log.final == 4 and [h["to"] for h in log.halvings] == [8, 4]
    assert "batch size halved from 16 to 4" in log.note()


def test_no_halving_says_nothing_and_other_errors_pass() -> None:
    log = BatchLog(8, 8)
    assert map_batches(squares_that_fit(100, []), list(range(10)), 8, log) == [x * x for x in range(10)]
    assert log.note() == "" and log.final == 8

    def broken(chunk):  # type: ignore[no-untyped-def]
        raise KeyError("not memory")

    with pytest.raises(KeyError):
        map_batches(broken, [1, 2], 2)


def test_one_item_that_does_not_fit_is_named() -> None:
    with pytest.raises(torch.OutOfMemoryError, match="bfloat16"):
        map_batches(squares_that_fit(0, []), [1, 2, 3], 4)
