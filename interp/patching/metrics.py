"""Metric callbacks for patching: logits at the readout position `[batch, vocab]` -> one value per row `[batch]`.

Patched runs are batched, so a metric scores every row at once; `check_metric` rejects callbacks that
return anything but one finite value per row, with a message that says what came back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float

MetricFn = Callable[[Float[torch.Tensor, "batch vocab"]], Float[torch.Tensor, " batch"]]


@dataclass(frozen=True)
class Metric:
    """A named metric callback (the name goes into results and figure titles)."""

    name: str
    fn: MetricFn

    def __call__(self, logits: Float[torch.Tensor, "batch vocab"]) -> Float[torch.Tensor, " batch"]:
        return self.fn(logits)


def logit_diff(correct: int, wrong: int) -> Metric:
    """logit[correct] - logit[wrong]: how strongly the readout prefers the clean answer over the corrupt one."""
    return Metric(f"logit_diff({correct}-{wrong})", lambda lg: lg[:, correct] - lg[:, wrong])


def answer_prob(token: int) -> Metric:
    """Probability of `token` at the readout position."""
    return Metric(f"prob({token})", lambda lg: torch.softmax(lg.float(), -1)[:, token])


def kl_div(reference: Float[torch.Tensor, " vocab"] | Float[torch.Tensor, "1 vocab"]) -> Metric:
    """KL(reference || patched) over the next-token distribution: 0 when the patched run matches the reference."""
    ref = torch.log_softmax(reference.detach().reshape(1, -1).float(), -1)

    def fn(lg: torch.Tensor) -> torch.Tensor:
        lp = torch.log_softmax(lg.float(), -1)
        return (ref.exp() * (ref - lp)).sum(-1)

    return Metric("kl(reference||patched)", fn)


def as_metric(metric: Metric | MetricFn, name: str | None = None) -> Metric:
    """Wrap a plain callable as a Metric (named after the function unless `name` is given)."""
    if isinstance(metric, Metric):
        return metric
    return Metric(name or getattr(metric, "__name__", "metric"), metric)


def check_metric(metric: Metric, logits: Float[torch.Tensor, "batch vocab"]) -> Float[torch.Tensor, " batch"]:
    """Call `metric` and insist on one finite float per row; raise a ValueError saying what it returned."""
    out = metric(logits)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"metric {metric.name!r} must return a tensor with one value per row "
                         f"(shape [{logits.shape[0]}]), got {type(out).__name__}")
    if out.shape != (logits.shape[0],):
        raise ValueError(f"metric {metric.name!r} must return one scalar per row: shape [{logits.shape[0]}] "
                         f"for logits of shape {list(logits.shape)}, got shape {list(out.shape)}. Reduce over "
                         f"everything but the batch axis (e.g. index the answer token)")
    if not torch.isfinite(out).all():
        raise ValueError(f"metric {metric.name!r} returned non-finite values: {out.tolist()[:5]}")
    return out


__all__ = ["Metric", "MetricFn", "answer_prob", "as_metric", "check_metric", "kl_div", "logit_diff"]
