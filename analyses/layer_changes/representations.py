"""Representation change per layer: linear CKA and mean cosine between base and tuned residual streams on the
same tokens, with bootstrap intervals over problems and two references: a shuffled-token control (CKA when
the token correspondence is broken: the floor) and the base's CKA between adjacent layers (how much one
layer of processing changes the representation: the scale)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from transformers import PreTrainedModel

from analyses.layer_changes.anatomy import residual_streams
from interp.generate import left_pad
from interp.stats import bootstrap_ci

if TYPE_CHECKING:
    from interp.models import Model

MAX_STATS_BYTES = 2 << 30  # per-problem d x d statistics for the exact bootstrap


def linear_cka(x: Float[torch.Tensor, "n d"], y: Float[torch.Tensor, "n e"]) -> float:
    """Linear CKA of two sets of row vectors (centred): ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F), in float64."""
    x0, y0 = x.double(), y.double()
    x, y = x0 - x0.mean(0), y0 - y0.mean(0)
    if x.norm() <= 1e-10 * x0.norm() or y.norm() <= 1e-10 * y0.norm():
        return float("nan")  # a side without variance: CKA is undefined
    num = (y.T @ x).square().sum()
    den = (x.T @ x).norm() * (y.T @ y).norm()
    return float(num / den)


def _cka_from_stats(n: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor,
                    xy: torch.Tensor) -> torch.Tensor:
    """CKA from (batched) sums: token count, sums of x and y, and the uncentred products x'x, y'y, x'y."""
    xxc = xx - torch.einsum("...i,...j->...ij", sx, sx) / n[..., None, None]
    yyc = yy - torch.einsum("...i,...j->...ij", sy, sy) / n[..., None, None]
    xyc = xy - torch.einsum("...i,...j->...ij", sx, sy) / n[..., None, None]
    nx, ny = xxc.flatten(-2).norm(dim=-1), yyc.flatten(-2).norm(dim=-1)
    return _undefined_as_nan(xyc.square().sum((-1, -2)) / (nx * ny), nx, xx.flatten(-2).norm(dim=-1), ny,
                             yy.flatten(-2).norm(dim=-1))


def _undefined_as_nan(cka: torch.Tensor, nx: torch.Tensor, rx: torch.Tensor, ny: torch.Tensor,
                      ry: torch.Tensor) -> torch.Tensor:
    """NaN where a side has (numerically) no variance, i.e. its centred statistic is rounding noise of the raw one."""
    dead = (nx <= 1e-10 * rx) | (ny <= 1e-10 * ry)
    return torch.where(dead, torch.full_like(cka, float("nan")), cka)


def _boot_features(xs: list[torch.Tensor], ys: list[torch.Tensor], boot: torch.Tensor) -> torch.Tensor:
    """Resampled CKA from per-problem feature statistics (memory ~ (problems + resamples) x 3 x d^2)."""
    counts = torch.tensor([x.shape[0] for x in xs], dtype=torch.float64)
    sx = torch.stack([x.sum(0) for x in xs])
    sy = torch.stack([y.sum(0) for y in ys])
    prod = {k: torch.stack([a.T @ b for a, b in pairs]) for k, pairs in
            (("xx", zip(xs, xs)), ("yy", zip(ys, ys)), ("xy", zip(xs, ys)))}
    return _cka_from_stats(boot @ counts, boot @ sx, boot @ sy, *(torch.einsum("bp,pij->bij", boot, prod[k])
                                                                  for k in ("xx", "yy", "xy")))


def _boot_gram(xs: list[torch.Tensor], ys: list[torch.Tensor], boot: torch.Tensor) -> torch.Tensor:
    """Resampled CKA from token Gram matrices reduced to problem-level sums (memory ~ tokens^2 + problems^3),
    for wide models. With token weights w (the problem's resampling count), the weighted-centred HSIC is
    sum_ij w_i w_j Kx_ij Ky_ij - 2/W sum_i w_i (Kx w)_i (Ky w)_i + (w'Kx w)(w'Ky w)/W^2."""
    sizes = [x.shape[0] for x in xs]
    g = torch.repeat_interleave(torch.arange(len(xs)), torch.tensor(sizes))
    onehot = torch.nn.functional.one_hot(g, len(xs)).double()  # [token, problem]
    X, Y = torch.cat(xs), torch.cat(ys)
    K = {"x": X @ X.T, "y": Y @ Y.T}
    R = {k: v @ onehot for k, v in K.items()}  # [token, problem]: sum of K over each problem's tokens
    B = {k: onehot.T @ v for k, v in R.items()}  # [problem, problem]
    n_tok = boot @ torch.tensor(sizes, dtype=torch.float64)
    c2 = torch.einsum("bq,br->bqr", boot, boot).flatten(1)  # [boot, problem^2]

    def hsic(a: str, b: str) -> tuple[torch.Tensor, torch.Tensor]:
        s = onehot.T @ (K[a] * K[b]) @ onehot
        m = torch.einsum("ip,iq,ir->pqr", onehot, R[a], R[b]).flatten(1)  # [problem, problem^2]
        t1 = torch.einsum("bp,pq,bq->b", boot, s, boot)
        t2 = ((c2 @ m.T) * boot).sum(1)
        t3 = torch.einsum("bp,pq,bq->b", boot, B[a], boot) * torch.einsum("bp,pq,bq->b", boot, B[b], boot)
        return t1 - 2 * t2 / n_tok + t3 / n_tok**2, t1  # centred, and the uncentred term for scale

    (xy, _), (xx, rx), (yy, ry) = hsic("x", "y"), hsic("x", "x"), hsic("y", "y")
    return _undefined_as_nan(xy / (xx.clamp(min=0) * yy.clamp(min=0)).sqrt(), xx, rx, yy, ry)


def bootstrap_cka(xs: list[Float[torch.Tensor, "tok d"]], ys: list[Float[torch.Tensor, "tok e"]],
                  boot: Float[torch.Tensor, "boot problem"], method: str = "auto") -> Float[torch.Tensor, " boot"]:
    """CKA of each problem-level resample (`boot` holds how often each problem is drawn), computed exactly
    without materialising the resampled data: from feature statistics for narrow models, from the Gram
    matrix for wide ones ("auto" picks the one that needs less memory)."""
    xs, ys = [x.double() for x in xs], [y.double() for y in ys]
    n_prob, n_boot, d = len(xs), boot.shape[0], max(xs[0].shape[1], ys[0].shape[1])
    n_tok = sum(x.shape[0] for x in xs)
    feature_bytes = (n_prob + n_boot) * 3 * d * d * 8
    gram_bytes = (4 * n_tok * n_tok + 3 * n_prob**3 + n_boot * n_prob**2) * 8
    if method == "auto":
        method = "features" if feature_bytes <= gram_bytes else "gram"
    need = feature_bytes if method == "features" else gram_bytes
    if need > MAX_STATS_BYTES:
        raise ValueError(f"the CKA bootstrap needs {need / 2**30:.1f} GiB ({n_prob} problems, {n_tok} tokens, "
                         f"{n_boot} resamples, width {d}), more than {MAX_STATS_BYTES >> 30} GiB: use fewer "
                         f"problems, shorter texts or fewer resamples")
    if method == "features":
        return _boot_features(xs, ys, boot)
    if method == "gram":
        return _boot_gram(xs, ys, boot)
    raise ValueError(f"unknown CKA bootstrap method {method!r}; valid: auto, features, gram")


@dataclass(frozen=True)
class RepChange:
    """Per residual point: CKA and mean cosine (with 95% CIs over problems) and the shuffled-token CKA control."""

    points: tuple[str, ...]
    positions: str  # "prompt" or "generation"
    n_problems: int
    n_tokens: int
    cka: tuple[float, ...]
    cka_ci: tuple[tuple[float, float], ...]
    cosine: tuple[float, ...]
    cosine_ci: tuple[tuple[float, float], ...]
    cka_shuffled: tuple[float, ...]
    cka_base_adjacent: tuple[float, ...] = ()  # CKA of the base's point p with its point p-1, for p = 1, 2, ...:
    # one layer's worth of change inside one model, the scale a base-vs-tuned CKA is read against

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RepChange:
        return cls(tuple(d["points"]), d["positions"], d["n_problems"], d["n_tokens"], tuple(d["cka"]),
                   tuple(tuple(c) for c in d["cka_ci"]), tuple(d["cosine"]), tuple(tuple(c) for c in d["cosine_ci"]),
                   tuple(d["cka_shuffled"]), tuple(d.get("cka_base_adjacent", ())))


@torch.no_grad()
def _streams(hf: PreTrainedModel, seqs: Sequence[Sequence[int]], pad_id: int,
             keep: Sequence[Sequence[int]], batch_size: int) -> list[torch.Tensor]:
    """Per problem, the residual streams `[point, kept positions, d]` (positions index the unpadded sequence)."""
    out: list[torch.Tensor] = []
    dev = next(hf.parameters()).device
    for s in range(0, len(seqs), batch_size):
        chunk = [list(x) for x in seqs[s:s + batch_size]]
        ids, mask = left_pad(chunk, pad_id)
        streams, _ = residual_streams(hf, ids.to(dev), mask.to(dev))
        width = ids.shape[1]
        for row, (seq, k) in enumerate(zip(chunk, keep[s:s + batch_size])):
            idx = torch.tensor([width - len(seq) + i for i in k], dtype=torch.long)
            out.append(streams[:, row, idx].float().cpu())
    return out


def representation_change(base: Model, tuned: Model, seqs: Sequence[Sequence[int]],
                          keep: Sequence[Sequence[int]], points: Sequence[str], positions: str,
                          n_boot: int = 1000, seed: int = 0, batch_size: int = 256) -> RepChange:
    """CKA and cosine between the two models' residual streams at the kept positions of each token-id
    sequence (`keep[i]` indexes sequence i)."""
    pad_id = base.pad_token_id
    keep = [list(k) for k in keep]
    use = [i for i, k in enumerate(keep) if k]
    if not use:
        raise ValueError(f"no {positions} positions to compare (every sequence kept zero tokens)")
    seqs, keep = [seqs[i] for i in use], [keep[i] for i in use]
    xb, xt = _streams(base.hf, seqs, pad_id, keep, batch_size), _streams(tuned.hf, seqs, pad_id, keep, batch_size)
    n_points = xb[0].shape[0]
    n_prob = len(seqs)
    rng = np.random.default_rng(seed)
    boot = torch.from_numpy(np.stack([np.bincount(rng.integers(0, n_prob, n_prob), minlength=n_prob)
                                      for _ in range(n_boot)])).double()  # [boot, problem] resampling counts
    counts = torch.tensor([x.shape[1] for x in xb], dtype=torch.float64)
    cka, cka_ci, cos, cos_ci, shuffled, adjacent = [], [], [], [], [], []
    perm = torch.from_numpy(np.random.default_rng(seed + 1).permutation(int(counts.sum())))
    for p in range(n_points):
        xs = [x[p].double() for x in xb]
        ys = [y[p].double() for y in xt]
        X, Y = torch.cat(xs), torch.cat(ys)
        cka.append(linear_cka(X, Y))
        if p > 0:
            adjacent.append(linear_cka(torch.cat([x[p - 1] for x in xb]), X))
        shuffled.append(linear_cka(X, Y[perm]))
        b = bootstrap_cka(xs, ys, boot).numpy()
        finite = b[np.isfinite(b)]  # a resample without variance (e.g. one repeated token) has no CKA
        lo, hi = np.quantile(finite, [0.025, 0.975]) if finite.size else (np.nan, np.nan)
        cka_ci.append((float(lo), float(hi)))
        per = np.array([float(F.cosine_similarity(x, y, dim=-1).mean()) for x, y in zip(xs, ys)])
        cos.append(float(per.mean()))
        cos_ci.append(bootstrap_ci(per, n_boot, seed))
    return RepChange(tuple(points), positions, n_prob, int(counts.sum()), tuple(cka), tuple(cka_ci), tuple(cos),
                     tuple(cos_ci), tuple(shuffled), tuple(adjacent))


__all__ = ["RepChange", "bootstrap_cka", "linear_cka", "representation_change"]
