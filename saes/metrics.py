"""How good an SAE is: explained variance, L0, dead and dense features, and next-token loss with it spliced in.

Reconstruction numbers come from the store's rows; the loss numbers from a forward of the store's own
texts with the SAE's reconstruction written over the hook (clean, SAE, zero-ablated), so
CE recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean). Batches are right-padded with no mask (a causal
model never sees the padding after a token) and only real next tokens count. Intervals: 95% bootstrap
over the store's examples (whole texts).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float

from interp.activations import ActivationStore
from interp.stats import group_bootstrap, percentile_ci
from saes.config import SAEError

if TYPE_CHECKING:
    from interp.models import Model

DENSE_THRESHOLD = 0.1  # a feature firing on more than this share of rows counts as dense


def sae_device(sae: Any) -> torch.device:
    """Where the SAE's weights live. Activations go there and results come back to the activations' device,
    so an SAE trained on a GPU reads CPU store rows and a CPU SAE splices into a model on a GPU."""
    return sae.W_dec.device


@torch.no_grad()
def encode(sae: Any, x: Float[torch.Tensor, "rows d_in"], chunk: int = 8192) -> Float[torch.Tensor, "rows d_sae"]:
    """Feature activations of rows, in chunks (on the rows' device)."""
    check_width(sae, x.shape[-1])
    dev = sae_device(sae)
    return torch.cat([sae.encode(x[i:i + chunk].to(dev).float()).to(x.device) for i in range(0, len(x), chunk)]) \
        if len(x) else torch.zeros(0, int(sae.cfg.d_sae))


@torch.no_grad()
def reconstruct(sae: Any, x: Float[torch.Tensor, "rows d_in"], chunk: int = 8192) -> Float[torch.Tensor, "rows d_in"]:
    check_width(sae, x.shape[-1])
    dev = sae_device(sae)
    return torch.cat([sae.decode(sae.encode(x[i:i + chunk].to(dev).float())).to(x.device)
                      for i in range(0, len(x), chunk)])


def check_width(sae: Any, d: int) -> None:
    if int(sae.cfg.d_in) != int(d):
        raise SAEError(f"the SAE reads vectors of width {sae.cfg.d_in}, these activations have width {d}: "
                       f"they come from another model or hook")


def explained_variance(x: Float[torch.Tensor, "rows d"], x_hat: Float[torch.Tensor, "rows d"]) -> float:
    """1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2 (over all rows at once)."""
    resid = (x - x_hat).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum()
    return float(1 - resid / total)


@dataclass(frozen=True)
class Quality:
    """Reconstruction and loss numbers of one SAE on one set of activations (and its texts)."""

    n_rows: int
    n_features: int
    explained_variance: float
    explained_variance_ci: tuple[float, float]
    mse: float
    l0: float
    dead_features: int
    dense_features: int
    ce_clean: float | None = None
    ce_sae: float | None = None
    ce_zero: float | None = None
    ce_recovered: float | None = None
    ce_recovered_ci: tuple[float, float] | None = None
    n_tokens_ce: int = 0
    ce_tokens: str = ""  # which tokens the CE numbers predict (see `quality`)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Quality:
        d = dict(d)
        d["explained_variance_ci"] = tuple(d["explained_variance_ci"])
        if d.get("ce_recovered_ci") is not None:
            d["ce_recovered_ci"] = tuple(d["ce_recovered_ci"])
        return cls(**d)


def _ci(values: np.ndarray) -> tuple[float, float]:
    return percentile_ci(values)


@torch.no_grad()
def reconstruction_quality(sae: Any, x: Float[torch.Tensor, "rows d"], groups: Sequence[Any], n_boot: int = 200,
                           seed: int = 0, chunk: int = 8192) -> tuple[Quality, torch.Tensor]:
    """EV (with a bootstrap over groups), MSE, L0, dead/dense counts; also the per-feature firing rate."""
    if len(x) == 0:
        raise SAEError("no activations to evaluate the SAE on")
    x = x.float()
    check_width(sae, x.shape[-1])
    mean = x.mean(0)
    err_parts, fired_parts = [], []
    fired_count = torch.zeros(int(sae.cfg.d_sae))
    dev = sae_device(sae)
    for i in range(0, len(x), chunk):  # chunks: the [rows, d_sae] features never exist all at once
        xc = x[i:i + chunk].to(dev)
        f = sae.encode(xc)
        fired = (f > 0).float()  # float sums run twice as fast as bool ones
        fired_count += fired.sum(0).cpu()
        fired_parts.append(fired.sum(-1).cpu())
        err_parts.append((xc - sae.decode(f)).pow(2).sum(-1).cpu())
    freq = fired_count / len(x)
    err = torch.cat(err_parts).double().numpy()
    dev = (x - mean).pow(2).sum(-1).double().numpy()
    # bootstrap over whole groups: per-group sums, weighted by how often each group is drawn (the same draws as
    # group_bootstrap's row weights, without a [n_boot, rows] matrix)
    keys, gid = np.unique(np.asarray([str(g) for g in groups], dtype=str), return_inverse=True)
    w = group_bootstrap(list(keys), n_boot, seed)
    ev_boot = 1 - (w @ np.bincount(gid, err, len(keys))) / (w @ np.bincount(gid, dev, len(keys)))
    q = Quality(n_rows=len(x), n_features=int(sae.cfg.d_sae), explained_variance=float(1 - err.sum() / dev.sum()),
                explained_variance_ci=_ci(ev_boot), mse=float(err.mean()),
                l0=float(torch.cat(fired_parts).double().mean()), dead_features=int((freq == 0).sum()),
                dense_features=int((freq > DENSE_THRESHOLD).sum()))
    return q, freq


# ------------------------------------------------------------------------------------------ splicing

@contextlib.contextmanager
def replace_at(model: Model, hook: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Inside the block, `model.hf`'s activation at TL hook `hook` is replaced by fn(activation)."""
    from interp.sites import first_output, replace_first_output
    from interp.steering import hook_site

    module, side = hook_site(model, hook)
    if side == "pre":
        def pre(mod: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    else:
        def post(mod: torch.nn.Module, args: tuple, out: Any) -> Any:
            return replace_first_output(out, fn(first_output(out)))

        handle = module.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


def _keep_where(out: torch.Tensor, h: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """`out` with the positions marked in `keep` [batch, pos] restored to `h`."""
    if keep is None:
        return out
    k = keep.to(h.device)
    if k.shape != h.shape[:2]:
        raise SAEError(f"the BOS mask has shape {tuple(k.shape)}, the activations {tuple(h.shape[:2])}")
    return torch.where(k[..., None], h, out)


def sae_splice(sae: Any, keep: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """fn(activation [batch, pos, d]) = the SAE's reconstruction, except at the positions marked in `keep`
    [batch, pos] (the BOS tokens, when they are left out), which pass through unchanged."""
    def fn(h: torch.Tensor) -> torch.Tensor:
        check_width(sae, h.shape[-1])
        out = sae.decode(sae.encode(h.float().to(sae_device(sae)))).to(h.device, h.dtype)
        return _keep_where(out, h, keep)

    return fn


def zero_splice(keep: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """fn(activation) = zeros except at the positions marked in `keep`: the ablation CE recovered is measured
    against."""
    def fn(h: torch.Tensor) -> torch.Tensor:
        return _keep_where(torch.zeros_like(h), h, keep)

    return fn


Splice = Callable[[torch.Tensor | None], Callable[[torch.Tensor], torch.Tensor]]


@torch.no_grad()
def per_text_ce(model: Model, texts: Sequence[Sequence[int]], batch_size: int = 64, starts: Sequence[int] | None = None,
                hook: str | None = None, splice: Splice | None = None, bos_id: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Summed next-token cross-entropy and number of predicted tokens per text (right-padded, unmasked);
    only tokens after index `starts[i]` are predicted (all but the first by default). With `hook` and
    `splice`, the activation at `hook` is replaced by `splice(keep)(activation)` in every batch, where
    `keep` [batch, pos] marks the tokens whose id is `bos_id` (None: no position is kept)."""
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    sums, counts = [], []
    for i in range(0, len(texts), batch_size):
        chunk = [list(t) for t in texts[i:i + batch_size]]
        width = max(len(t) for t in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        real = torch.zeros((len(chunk), width), dtype=torch.bool)
        for r, t in enumerate(chunk):
            ids[r, :len(t)] = torch.tensor(t)
            first = 1 + (starts[i + r] if starts is not None else 0)  # index of the first predicted token
            real[r, first:len(t)] = True
        with contextlib.ExitStack() as stack:
            if splice is not None:
                if hook is None:
                    raise ValueError("a splice needs the hook it replaces")
                keep = (ids == bos_id) & (torch.arange(width)[None, :] < torch.tensor([len(t) for t in chunk])[:, None]) \
                    if bos_id is not None else None
                stack.enter_context(replace_at(model, hook, splice(keep)))
            logits = model.hf(input_ids=ids.to(model.device)).logits.float().cpu()
        lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
        m = real[:, 1:]
        sums.append((-(lp * m)).sum(-1).double().numpy())
        counts.append(m.sum(-1).numpy())
    return np.concatenate(sums), np.concatenate(counts)


def ce_recovered(model: Model, sae: Any, hook: str, texts: Sequence[Sequence[int]], n_boot: int = 200, seed: int = 0,
                 batch_size: int = 64, starts: Sequence[int] | None = None, exclude_bos: bool = True) -> dict[str, Any]:
    """Mean next-token CE clean, with the SAE spliced in at `hook`, and with `hook` zero-ablated; CE recovered
    with a bootstrap over texts. `starts[i]`: predict only text i's tokens after that index. With
    `exclude_bos`, the tokens whose id is the tokenizer's BOS id keep their activation in both splices
    (matched by id: a tokenizer without BOS, GPT-2 style, has a text token at position 0)."""
    if not texts:
        raise SAEError("no texts to measure the loss on")
    model.check_hooks(hook)
    check_width(sae, model.d_model)
    bos = model.tokenizer.bos_token_id if exclude_bos else None
    clean, n = per_text_ce(model, texts, batch_size, starts)
    tot = n.sum()
    if tot == 0:
        raise SAEError("the texts have no tokens to predict after their start positions")
    spliced, _ = per_text_ce(model, texts, batch_size, starts, hook, lambda keep: sae_splice(sae, keep), bos)
    zero, _ = per_text_ce(model, texts, batch_size, starts, hook, zero_splice, bos)
    c, s, z = clean.sum() / tot, spliced.sum() / tot, zero.sum() / tot
    w = group_bootstrap([str(i) for i in range(len(texts))], n_boot, seed)
    cb, sb, zb = (w @ clean) / (w @ n), (w @ spliced) / (w @ n), (w @ zero) / (w @ n)
    rec_b = (zb - sb) / (zb - cb)
    return {"ce_clean": float(c), "ce_sae": float(s), "ce_zero": float(z), "ce_recovered": float((z - s) / (z - c)),
            "ce_recovered_ci": _ci(rec_b), "n_tokens_ce": int(tot)}


def loss_starts(examples: Sequence[Any], loss_after: str | None) -> tuple[list[int], str]:
    """Per text, the index after which tokens are predicted, and a description of those tokens.

    Texts predict the tokens after their named position `loss_after` (texts without that name: every token
    after the first). If no text has any token after `loss_after` (a store of bare prompts that end at the
    answer position), every text predicts all tokens after its first instead, and the description says so."""
    everything = "all tokens after the first of each text"
    if loss_after is None:
        return [0] * len(examples), everything
    named = [loss_after in e.positions for e in examples]
    if not any(named):
        return [0] * len(examples), f"{everything} (no text has a position named {loss_after!r})"
    starts = [int(e.positions[loss_after]) if n else 0 for e, n in zip(examples, named)]
    if not any(s < len(e.ids) - 1 for s, e, n in zip(starts, examples, named) if n):
        return [0] * len(examples), f"{everything} (no text has tokens after {loss_after!r})"
    return starts, f"tokens after {loss_after!r}" + ("" if all(named) else f" ({everything} without {loss_after!r})")


def quality(sae: Any, store: ActivationStore, hook: str, label: str | None = None, model: Model = None,
            max_rows: int | None = 100_000, max_texts: int = 500, n_boot: int = 200, seed: int = 0,
            allow_other_model: bool = False, exclude_bos: bool = True, loss_after: str | None = "answer"
            ) -> tuple[Quality, torch.Tensor]:
    """Every quality number of `sae` on a store's rows of `hook` (and, given the model, on the store's texts:
    the loss counts the tokens after each text's named position `loss_after`; when no text has tokens after
    it, all tokens after the first, as `Quality.ce_tokens` says). `exclude_bos` leaves out the rows, and keeps
    the activations, of the tokenizer's BOS token (by id, wherever it is)."""
    from saes.training import bos_token_id, shards

    bos = bos_token_id(store, model if model is not None and model.checksum == store.model_checksum else None) \
        if exclude_bos else None
    acts, idx = [], []
    for a, ix in shards(store, hook, label, exclude_bos, bos_id=bos):
        acts.append(a)
        idx.append(ix["example"])
    x = torch.cat(acts) if acts else torch.zeros(0, int(sae.cfg.d_in))
    ex = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    if len(x) == 0:
        raise SAEError(f"the activation store {store.root} holds no rows of {hook}"
                       + (f" with label {label!r}" if label else ""))
    if x.dim() != 2:
        raise SAEError(f"{hook} rows have shape {tuple(x.shape[1:])}, not one vector per row")
    check_width(sae, x.shape[1])
    if model is not None and not allow_other_model:
        store.check_model(model.checksum)
    return rows_quality(sae, x, ex, hook, model=model, examples=store.dataset().examples if model is not None else (),
                        max_rows=max_rows, max_texts=max_texts, n_boot=n_boot, seed=seed, exclude_bos=exclude_bos,
                        loss_after=loss_after)


def rows_quality(sae: Any, x: Float[torch.Tensor, "rows d"], ex: np.ndarray, hook: str, model: Model = None,
                 examples: Sequence[Any] = (), max_rows: int | None = 100_000, max_texts: int = 500, n_boot: int = 200,
                 seed: int = 0, exclude_bos: bool = True, loss_after: str | None = "answer"
                 ) -> tuple[Quality, torch.Tensor]:
    """`quality` on rows already in memory (`ex`: each row's example id, the bootstrap's groups) and, given the
    model, on the texts `examples` those rows came from (the model must be theirs)."""
    if x.dim() != 2:
        raise SAEError(f"{hook} rows have shape {tuple(x.shape[1:])}, not one vector per row")
    check_width(sae, x.shape[1])
    if max_rows is not None and len(x) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), max_rows, replace=False))
        x, ex = x[torch.from_numpy(keep)], ex[keep]
    q, freq = reconstruction_quality(sae, x, ex.tolist(), n_boot, seed)
    if model is not None:
        examples = list(examples)[:max_texts]
        starts, what = loss_starts(examples, loss_after)
        q = dataclasses.replace(q, ce_tokens=what, **ce_recovered(model, sae, hook, [e.ids for e in examples], n_boot,
                                                                  seed, starts=starts, exclude_bos=exclude_bos))
    return q, freq


__all__ = [
    "DENSE_THRESHOLD",
    "Quality",
    "ce_recovered",
    "check_width",
    "encode",
    "explained_variance",
    "loss_starts",
    "per_text_ce",
    "quality",
    "reconstruct",
    "reconstruction_quality",
    "replace_at",
    "rows_quality",
    "sae_device",
    "sae_splice",
    "zero_splice",
]
