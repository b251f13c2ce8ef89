"""The Hugging Face modules behind TransformerLens hook names, and torch hooks that read them.

Harvest, patching and steering all run on `Model.hf` (its own fast attention and KV cache) with hooks on
the modules the Bridge's component mapping names: decoder layer L's input is `blocks.L.hook_resid_pre`,
its output `hook_resid_post`, the attention / MLP outputs `hook_attn_out` / `hook_mlp_out`, the MLP
norm's input the residual stream mid-block, and the output projection's input the heads' `hook_z`.
Tested equal to the Bridge's hook values on llama, gpt2, qwen2 and gpt_neox.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from interp import hooks as H

if TYPE_CHECKING:
    from interp.models import Model

HOOK_KINDS: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")
_TL_NAME: dict[str, Callable[[int], str]] = {
    "resid_pre": H.resid_pre, "resid_mid": H.resid_mid, "resid_post": H.resid_post,
    "attn_out": H.attn_out, "mlp_out": H.mlp_out, "z": H.attn_z,
}


def tl_hook_name(kind: str, layer: int) -> str:
    """TransformerLens hook name of a hook kind at a layer (`z` -> `blocks.L.attn.hook_z`)."""
    check_kind(kind)
    return _TL_NAME[kind](layer)


def check_kind(kind: str) -> None:
    if kind not in HOOK_KINDS:
        raise ValueError(f"unknown hook kind {kind!r}: patching supports {', '.join(HOOK_KINDS)}")


# ------------------------------------------------------------------------------------ hook sites

@dataclass(frozen=True)
class Sites:
    """The Hugging Face modules behind the TransformerLens hook names of one model."""

    layers: tuple[torch.nn.Module, ...]
    attn: tuple[torch.nn.Module, ...]
    mlp: tuple[torch.nn.Module, ...]
    ln2: tuple[torch.nn.Module | None, ...]
    o: tuple[torch.nn.Module, ...]
    n_heads: int
    d_head: int


def sites(model: Model) -> Sites:
    """Map blocks/attn/mlp/ln2/attn.o of the Bridge's component mapping onto `model.hf`'s modules."""
    cm = model.bridge.adapter.component_mapping
    blocks = cm["blocks"]
    subs = blocks.submodules
    missing = [k for k in ("attn", "mlp") if k not in subs] + ([] if "o" in subs.get("attn").submodules else ["attn.o"])
    if missing:
        raise ValueError(f"{model.name}: the Bridge's block mapping has no {missing}; patching needs attn, mlp, attn.o")
    hf = model.hf
    n = model.n_layers

    def get(path: str | None) -> torch.nn.Module | None:
        return hf.get_submodule(path) if path else None

    base = blocks.name
    layers = tuple(hf.get_submodule(f"{base}.{i}") for i in range(n))
    attn = tuple(hf.get_submodule(f"{base}.{i}.{subs['attn'].name}") for i in range(n))
    mlp = tuple(hf.get_submodule(f"{base}.{i}.{subs['mlp'].name}") for i in range(n))
    ln2 = tuple(get(f"{base}.{i}.{subs['ln2'].name}") if "ln2" in subs else None for i in range(n))
    o = tuple(hf.get_submodule(f"{base}.{i}.{subs['attn'].name}.{subs['attn'].submodules['o'].name}") for i in range(n))
    cfg = model.bridge.cfg
    return Sites(layers, attn, mlp, ln2, o, int(cfg.n_heads), int(cfg.d_head))


def hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def with_hidden(args: tuple, kwargs: dict, h: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (h, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": h}


def first_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def replace_first_output(out: Any, new: torch.Tensor) -> Any:
    return (new, *out[1:]) if isinstance(out, tuple) else new


class Hooks:
    """Registered torch hooks, removed on exit even when the forward raises."""

    def __init__(self) -> None:
        self.handles: list[Any] = []

    def pre(self, mod: torch.nn.Module, fn: Callable) -> None:
        self.handles.append(mod.register_forward_pre_hook(fn, with_kwargs=True))

    def post(self, mod: torch.nn.Module, fn: Callable) -> None:
        self.handles.append(mod.register_forward_hook(fn))

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()


def add_capture(hk: Hooks, s: Sites, kind: str, layer: int, store: dict[int, torch.Tensor]) -> None:
    """Record the activation of `kind` at `layer` (the very tensor the model uses, so grads flow through it)."""
    if kind == "resid_pre":
        hk.pre(s.layers[layer], lambda m, a, k: store.__setitem__(layer, hidden_of(a, k)))
    elif kind == "resid_post":
        hk.post(s.layers[layer], lambda m, a, o: store.__setitem__(layer, first_output(o)))
    elif kind == "attn_out":
        hk.post(s.attn[layer], lambda m, a, o: store.__setitem__(layer, first_output(o)))
    elif kind == "mlp_out":
        hk.post(s.mlp[layer], lambda m, a, o: store.__setitem__(layer, first_output(o)))
    elif kind == "resid_mid":
        if s.ln2[layer] is None:
            raise ValueError("this architecture has no resid_mid (parallel attention and MLP)")
        hk.pre(s.ln2[layer], lambda m, a, k: store.__setitem__(layer, hidden_of(a, k)))
    elif kind == "z":  # the output projection's input, [.., n_heads * d_head]: see `heads_view`
        hk.pre(s.o[layer], lambda m, a, k: store.__setitem__(layer, hidden_of(a, k)))
    else:
        check_kind(kind)


def heads_view(x: torch.Tensor, s: Sites) -> torch.Tensor:
    """`[.., n_heads * d_head]` -> `[.., n_heads, d_head]` (TransformerLens' hook_z layout)."""
    return x.view(*x.shape[:-1], s.n_heads, s.d_head)


_SITES: weakref.WeakKeyDictionary[Any, Sites | None] = weakref.WeakKeyDictionary()


def cached_sites(model: Model) -> Sites | None:
    """`sites(model)`, computed once per model; None when the Bridge maps no attn/mlp blocks."""
    if model not in _SITES:
        try:
            _SITES[model] = sites(model)
        except (ValueError, KeyError, AttributeError):
            _SITES[model] = None
    return _SITES[model]


_KIND_OF_HOOK = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post", "hook_attn_out": "attn_out",
                 "hook_mlp_out": "mlp_out", "hook_resid_mid": "resid_mid", "attn.hook_z": "z"}


def kind_of_hook(hook: str) -> tuple[str, int] | None:
    """(hook kind, layer) of a TransformerLens name that is a module boundary here, else None."""
    parts = hook.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        return None
    kind = _KIND_OF_HOOK.get(".".join(parts[2:]))
    return (kind, int(parts[1])) if kind else None


__all__ = [
    "HOOK_KINDS",
    "Hooks",
    "Sites",
    "add_capture",
    "cached_sites",
    "check_kind",
    "first_output",
    "heads_view",
    "hidden_of",
    "kind_of_hook",
    "replace_first_output",
    "sites",
    "tl_hook_name",
    "with_hidden",
]
