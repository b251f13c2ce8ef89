"""Exact activation patching: a source (clean) run's activations into a target (corrupt) run, many cells per forward.

A cell is (layer, position[, head]) at one hook kind. Every patched run is one row of a batch, and three
facts make the batch cheap, all exact: a patch at position p cannot change positions before p (causal
attention), so a row starts at p and reads the target's keys/values for the prefix; a patch at layer L
cannot change layers before L, so a row joins the batch at layer L as a copy of the target's residual
stream there (each layer's KV cache holds just its active rows); and the metric reads one position, so
only it is unembedded. Runs on `Model.hf` with torch hooks on the modules behind the TransformerLens
names (mapped through the Bridge's adapter), and is tested equal to TransformerLens' patching module.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int

from interp.patching.metrics import Metric, check_metric
from interp.positions import absolute_indices
from interp.sites import (
    HOOK_KINDS,
    Hooks,
    Sites,
    add_capture,
    check_kind,
    first_output,
    heads_view,
    hidden_of,
    replace_first_output,
    sites,
    tl_hook_name,
    with_hidden,
)

if TYPE_CHECKING:
    from interp.models import Model


def _forward_kwargs(model: Model) -> set[str]:
    return set(inspect.signature(model.hf.forward).parameters)


def capture(model: Model, ids: Int[torch.Tensor, "1 pos"], kind: str, layers: Sequence[int], use_cache: bool = False,
            grad: bool = False, readout: int | None = None
            ) -> tuple[Float[torch.Tensor, "1 pos vocab"], dict[int, torch.Tensor], Any]:
    """One forward of `ids` on `model.hf`: logits (only at `readout` when given: `[1, 1, vocab]`), the `kind`
    activations at `layers`, and the KV cache if asked."""
    s = sites(model)
    store: dict[int, torch.Tensor] = {}
    kw: dict[str, Any] = {}
    if readout is not None and "logits_to_keep" in _forward_kwargs(model):
        kw["logits_to_keep"] = torch.tensor([readout], device=ids.device)  # skip unembedding every other position
    with Hooks() as hk, torch.set_grad_enabled(grad):
        for layer in layers:
            add_capture(hk, s, kind, layer, store)
        out = model.hf(input_ids=ids, use_cache=use_cache, **kw)
    logits = out.logits if "logits_to_keep" in kw or readout is None else out.logits[:, [readout]]
    if kind == "z" and not grad:
        store = {k: heads_view(v, s) for k, v in store.items()}
    return logits, store, (out.past_key_values if hasattr(out, "past_key_values") else out.get("cache"))


# ------------------------------------------------------------------------------------ the engine

@dataclass(frozen=True)
class Cell:
    """One patched run: the target `pos` at `layer` (and `head` for z) gets the source's value at `src_pos`."""

    layer: int
    pos: int
    src_pos: int
    head: int | None = None


def _set_rows(act: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, heads: torch.Tensor | None,
              vals: torch.Tensor) -> None:
    rows, pos = rows.to(act.device), pos.to(act.device)
    if heads is None:
        act[rows, pos] = vals.to(act.device, act.dtype)
    else:
        act[rows, pos, heads.to(act.device)] = vals.to(act.device, act.dtype)


def _run_group(model: Model, s: Sites, kind: str, target: torch.Tensor, target_cache: Any, src: dict[int, torch.Tensor],
               cells: list[Cell], start: int, metric: Metric, kw: set[str]) -> tuple[torch.Tensor, list[Cell]]:
    """Metric of every cell's patched run, all in one forward of the target suffix `target[start:]`."""
    n_layers = len(s.layers)
    cells = sorted(cells, key=lambda c: c.layer)
    by_layer: dict[int, list[int]] = {}
    for i, c in enumerate(cells):
        by_layer.setdefault(c.layer, []).append(i)
    active, count = [], 1  # row 0 carries the unpatched target run
    for layer in range(n_layers):
        count += len(by_layer.get(layer, []))
        active.append(count)
    cache = None
    if start > 0:
        cache = copy.copy(target_cache)
        cache.layers = [copy.copy(lay) for lay in target_cache.layers]
        for layer, lay in enumerate(cache.layers):
            b = active[layer]
            lay.keys = lay.keys[..., :start, :].expand(b, -1, -1, -1)
            lay.values = lay.values[..., :start, :].expand(b, -1, -1, -1)
    resid_in: dict[int, torch.Tensor] = {}

    def index(layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        idx = by_layer[layer]
        first = active[layer] - len(idx)
        rows = torch.arange(first, first + len(idx))
        pos = torch.tensor([cells[i].pos - start for i in idx])
        sp = torch.tensor([cells[i].src_pos for i in idx])
        if kind == "z":
            heads = torch.tensor([cells[i].head for i in idx])
            vals = src[layer][0, sp, heads]
        else:
            heads, vals = None, src[layer][0, sp]
        return rows, pos, heads, vals

    with Hooks() as hk:
        for layer in by_layer:
            rows, pos, heads, vals = index(layer)

            def grow(m: Any, a: tuple, k: dict, layer: int = layer, rows: torch.Tensor = rows, pos: torch.Tensor = pos,
                     vals: torch.Tensor = vals) -> tuple[tuple, dict]:
                h = hidden_of(a, k)
                h = torch.cat([h, h[:1].expand(len(rows), *h.shape[1:])], 0)
                if kind == "resid_pre":
                    _set_rows(h, rows, pos, None, vals)
                resid_in[layer] = h
                return with_hidden(a, k, h)

            hk.pre(s.layers[layer], grow)
            if kind in ("resid_post", "attn_out", "mlp_out", "resid_mid"):
                mod = {"resid_post": s.layers, "attn_out": s.attn, "mlp_out": s.mlp, "resid_mid": s.attn}[kind][layer]

                def post(m: Any, a: tuple, o: Any, layer: int = layer, rows: torch.Tensor = rows, pos: torch.Tensor = pos,
                         vals: torch.Tensor = vals) -> Any:
                    x = first_output(o).clone()
                    if kind == "resid_mid":  # resid_mid = resid_pre + attn_out: set attn_out so the sum is the source's
                        vals = vals - resid_in[layer][rows, pos]
                    _set_rows(x, rows, pos, None, vals)
                    return replace_first_output(o, x)

                hk.post(mod, post)
            elif kind == "z":
                def zpre(m: Any, a: tuple, k: dict, rows: torch.Tensor = rows, pos: torch.Tensor = pos,
                         heads: torch.Tensor | None = heads, vals: torch.Tensor = vals) -> tuple[tuple, dict]:
                    x = hidden_of(a, k).clone()
                    _set_rows(x.view(*x.shape[:-1], s.n_heads, s.d_head), rows, pos, heads, vals)
                    return with_hidden(a, k, x)

                hk.pre(s.o[layer], zpre)
        ids = target[:, start:]
        fwd: dict[str, Any] = {"input_ids": ids}
        if "position_ids" in kw:
            fwd["position_ids"] = torch.arange(start, target.shape[1], device=ids.device)[None]
        if "logits_to_keep" in kw:
            fwd["logits_to_keep"] = 1
        if cache is not None:
            fwd["cache" if "cache" in kw else "past_key_values"] = cache
            fwd["use_cache"] = True
        logits = model.hf(**fwd).logits[:, -1]
    if logits.shape[0] != active[-1]:
        raise RuntimeError(f"{model.name}: expected {active[-1]} patched rows, the forward returned {logits.shape[0]}")
    values = metric(logits[1:])
    out = torch.empty(len(cells))
    out[:] = values.detach().float().cpu()
    return out, cells


def plan_groups(positions: Sequence[int], n_rows_at: dict[int, float], n: int, n_layers: int,
                overhead_tokens: float) -> list[list[int]]:
    """Split sorted cell positions into runs that start at their first position, minimising estimated work.

    A run starting at s costs `overhead_tokens` full-depth tokens plus, for every row, its layers x (n - s)
    tokens; `n_rows_at[p]` is the summed depth fraction of the rows at position p. Dynamic programming."""
    ps = sorted(set(positions))
    best = [0.0] * (len(ps) + 1)
    cut = [0] * (len(ps) + 1)
    for j in range(1, len(ps) + 1):
        best[j] = float("inf")
        rows = 0.0
        for i in range(j, 0, -1):
            rows += n_rows_at[ps[i - 1]]
            c = best[i - 1] + (overhead_tokens + (rows + 1.0) * (n - ps[i - 1])) * n_layers
            if c < best[j]:
                best[j], cut[j] = c, i - 1
    groups, j = [], len(ps)
    while j > 0:
        groups.append(ps[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def as_ids(model: Model, x: str | torch.Tensor | Sequence[int]) -> Int[torch.Tensor, "1 pos"]:
    """Token ids `[1, pos]` from text (model's tokenizer, with BOS), a 1-D/2-D tensor or a list of ids."""
    if isinstance(x, str):
        return model.to_tokens(x)
    t = torch.as_tensor(x, dtype=torch.long)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[0] != 1:
        raise ValueError(f"patching takes one prompt per side: ids of shape [1, pos], got {list(t.shape)}")
    return t.to(model.device)


@dataclass(frozen=True)
class Grid:
    """A validated grid: hook kind, layers, target positions with their aligned source positions, heads."""

    kind: str
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    src_positions: tuple[int, ...]
    heads: tuple[int, ...] | None
    readout: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.layers), len(self.positions)) + ((len(self.heads),) if self.heads is not None else ())

    def cells(self) -> list[tuple[tuple[int, ...], Cell]]:
        out = []
        for i, layer in enumerate(self.layers):
            for j, (p, sp) in enumerate(zip(self.positions, self.src_positions)):
                if self.heads is None:
                    out.append(((i, j), Cell(layer, p, sp)))
                else:
                    out += [((i, j, k), Cell(layer, p, sp, h)) for k, h in enumerate(self.heads)]
        return out


_SUFFIX_KIND = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post",
                "hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out", "attn.hook_z": "z"}


def parse_hook(model: Model, hook: str, layers: Sequence[int] | None) -> tuple[str, tuple[int, ...]]:
    """Hook kind and layers from a TransformerLens name (`blocks.3.hook_resid_pre`), a pattern over layers
    (`blocks.*.hook_resid_pre`), or a kind (`resid_pre`) with `layers` (default: every layer)."""
    if hook.startswith("blocks."):
        _, layer, rest = hook.split(".", 2)
        if rest not in _SUFFIX_KIND:
            raise ValueError(f"patching supports blocks.L.{', blocks.L.'.join(_SUFFIX_KIND)}; got {hook!r}")
        kind = _SUFFIX_KIND[rest]
        if layer != "*":
            if not layer.isdigit():
                raise ValueError(f"{hook!r}: the layer is a number or '*' (every layer)")
            if layers is not None and tuple(layers) != (int(layer),):
                raise ValueError(f"{hook!r} names layer {layer} but layers={list(layers)}: give one or the other")
            layers = (int(layer),)
    else:
        kind = hook
    check_kind(kind)
    out = tuple(range(model.n_layers)) if layers is None else tuple(int(x) for x in layers)
    if not out:
        raise ValueError("no layers to patch")
    model.check_hooks([tl_hook_name(kind, layer) for layer in out])
    return kind, out


def make_grid(model: Model, source: torch.Tensor, target: torch.Tensor, hook: str, layers: Sequence[int] | None,
              positions: Any, heads: Sequence[int] | None, align: Sequence[int] | None,
              readout: int | None) -> Grid:
    """Check hooks, positions (any `interp.positions` form; negatives count from the end), heads and the
    clean (source) / corrupted (target) alignment; every error says what is valid."""
    kind, layers = parse_hook(model, hook, layers)
    n, n_src = target.shape[1], source.shape[1]
    positions = absolute_indices(positions, n, "the corrupted prompt")
    if not positions:
        raise ValueError("no positions to patch")
    if align is None:
        if n_src != n:
            raise ValueError(f"the clean prompt has {n_src} tokens and the corrupted one {n}: patched positions must "
                             f"align. Pass prompts of equal length, or align=[clean position for each corrupted one]")
        src_positions = positions
    else:
        src_positions = absolute_indices(align, n_src, "the clean prompt")
        if len(src_positions) != len(positions):
            raise ValueError(f"align has {len(src_positions)} entries but there are {len(positions)} positions")
    if kind == "z":
        heads = tuple(range(model.n_heads)) if heads is None else tuple(int(h) for h in heads)
        bad = [h for h in heads if not 0 <= h < model.n_heads]
        if bad:
            raise ValueError(f"heads {bad} do not exist: this model has heads 0..{model.n_heads - 1}")
    elif heads is not None:
        raise ValueError(f"heads only apply to per-head hooks (z), not {kind!r}")
    for what, xs in (("layers", layers), ("positions", positions), ("heads", heads or ())):
        dup = sorted({x for x in xs if list(xs).count(x) > 1})
        if dup:
            raise ValueError(f"{what} {dup} are listed more than once")
    readout = n - 1 if readout is None else absolute_indices(int(readout), n, "the corrupted prompt")[0]
    return Grid(kind, layers, positions, src_positions, tuple(heads) if heads is not None else None, readout)


@torch.no_grad()
def exact_values(model: Model, source: torch.Tensor, target: torch.Tensor, grid: Grid, metric: Metric,
                 max_batch: int = 512, overhead_tokens: float = 48.0) -> tuple[torch.Tensor, float, float]:
    """Metric of every cell's patched run `[grid.shape]`, and the source's and target's own metric values."""
    n_run = grid.readout + 1
    # the source's own metric at the readout (at its last token when an alignment maps unequal lengths)
    src_readout = grid.readout if source.shape[1] == target.shape[1] else source.shape[1] - 1
    src_logits, src, _ = capture(model, source, grid.kind, grid.layers, readout=src_readout)
    clean = float(check_metric(metric, src_logits[:, -1])[0])
    tgt = target[:, :n_run]
    tgt_logits, tgt_acts, cache = capture(model, tgt, grid.kind, grid.layers, use_cache=True, readout=n_run - 1)
    corrupt = float(check_metric(metric, tgt_logits[:, -1])[0])
    values = torch.full(grid.shape, corrupt)

    def differs(c: Cell) -> bool:
        a, b = src[c.layer][0, c.src_pos], tgt_acts[c.layer][0, c.pos]
        return not torch.equal(a[c.head], b[c.head]) if c.head is not None else not torch.equal(a, b)

    # positions after the readout cannot reach it, and writing a value the target already has is a no-op:
    # those cells keep the target's metric exactly (no batching noise), and cost nothing
    todo = [(ix, c) for ix, c in grid.cells() if c.pos <= grid.readout and differs(c)]
    if not todo:
        return values, clean, corrupt
    s = sites(model)
    kw = _forward_kwargs(model)
    depth: dict[int, float] = {}
    for _, c in todo:
        depth[c.pos] = depth.get(c.pos, 0.0) + (model.n_layers - c.layer) / model.n_layers
    where = {(c.layer, c.pos, c.head): ix for ix, c in todo}
    for group in plan_groups([c.pos for _, c in todo], depth, n_run, model.n_layers, overhead_tokens):
        gset = set(group)
        cells = [c for _, c in todo if c.pos in gset]
        for k in range(0, len(cells), max_batch):
            vals, ordered = _run_group(model, s, grid.kind, tgt, cache, src, cells[k:k + max_batch], group[0], metric, kw)
            for v, c in zip(vals.tolist(), ordered):
                values[where[(c.layer, c.pos, c.head)]] = v
    return values, clean, corrupt


__all__ = [
    "HOOK_KINDS",
    "Cell",
    "Grid",
    "Hooks",
    "Sites",
    "add_capture",
    "as_ids",
    "capture",
    "check_kind",
    "exact_values",
    "first_output",
    "heads_view",
    "hidden_of",
    "make_grid",
    "plan_groups",
    "replace_first_output",
    "sites",
    "tl_hook_name",
    "with_hidden",
]
