"""Canonical TransformerLens hook names and their validation, with near-match suggestions.

Every tool in the toolkit names activations the TransformerLens way (`blocks.{L}.hook_resid_post`);
TransformerBridge exposes these names for every supported architecture (GPT-NeoX with its parallel
attention/MLP has no `hook_resid_mid`). Validate names against `Model.hook_names` before a long run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def resid_pre(layer: int) -> str:
    """Residual stream entering block `layer`."""
    return f"blocks.{layer}.hook_resid_pre"


def resid_mid(layer: int) -> str:
    """Residual stream after attention, before the MLP of block `layer` (absent for parallel blocks)."""
    return f"blocks.{layer}.hook_resid_mid"


def resid_post(layer: int) -> str:
    """Residual stream leaving block `layer` (the HF decoder layer's output)."""
    return f"blocks.{layer}.hook_resid_post"


def attn_out(layer: int) -> str:
    """Attention output of block `layer`, as added to the residual stream."""
    return f"blocks.{layer}.hook_attn_out"


def mlp_out(layer: int) -> str:
    """MLP output of block `layer`, as added to the residual stream."""
    return f"blocks.{layer}.hook_mlp_out"


def attn_z(layer: int) -> str:
    """Per-head attention values mixed by the pattern, before the output projection."""
    return f"blocks.{layer}.attn.hook_z"


def attn_pattern(layer: int) -> str:
    """Attention probabilities `[batch, head, query, key]` of block `layer`."""
    return f"blocks.{layer}.attn.hook_pattern"


CANONICAL_HOOKS = (resid_pre, resid_mid, resid_post, attn_out, mlp_out, attn_z, attn_pattern)


def layer_of(hook_name: str) -> int | None:
    """Block index of a `blocks.{L}...` hook name; None for hooks outside the blocks (e.g. `hook_embed`)."""
    m = _LAYER.match(hook_name)
    return int(m.group(1)) if m else None


class UnknownHookError(ValueError):
    """One or more hook names the model does not expose; the message suggests the nearest valid ones."""

    def __init__(self, message: str, unknown: list[str]):
        super().__init__(message)
        self.unknown = unknown


def validate_hook_names(names: str | Iterable[str], valid: Iterable[str]) -> None:
    """Raise UnknownHookError listing every unknown name, its nearest valid names and the layer range."""
    names = [names] if isinstance(names, str) else list(names)
    valid = list(valid)
    valid_set = set(valid)
    unknown = [n for n in names if n not in valid_set]
    if not unknown:
        return
    layers = sorted({layer for v in valid if (layer := layer_of(v)) is not None})
    lines = []
    for name in unknown:
        line = f"unknown hook {name!r}"
        layer = layer_of(name)
        if layer is not None and layers and layer not in layers:
            line += f": layer {layer} is out of range, this model has layers {layers[0]}-{layers[-1]}"
            # suggest the same hook point at valid layers rather than string neighbours
            suffix = name[len(f"blocks.{layer}."):]
            near = [v for v in (f"blocks.{layers[-1]}.{suffix}", f"blocks.{layers[0]}.{suffix}") if v in valid_set]
        else:
            # same layer and same final component first (`blocks.0.hook_pattern` -> `blocks.0.attn.hook_pattern`)
            same_layer = [v for v in valid if layer_of(v) == layer]
            near = [v for v in same_layer if v.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]]
            near += difflib.get_close_matches(name, same_layer, n=5, cutoff=0.5)
        near += difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
        near = list(dict.fromkeys(near))
        if near[:5]:
            line += f"; did you mean {', '.join(near[:5])}?"
        lines.append(line)
    raise UnknownHookError("\n".join(lines), unknown)


def expand_hook_names(names: str | Iterable[str], valid: Iterable[str]) -> list[str]:
    """Hook names with `*` patterns expanded over the model's hooks (`blocks.*.hook_resid_post` -> every
    layer's, in layer order; `*` stands for one dotted part); plain names pass through; a pattern that
    matches nothing is an UnknownHookError."""
    names = [names] if isinstance(names, str) else list(names)
    valid = list(valid)
    out: list[str] = []
    for name in names:
        if "*" not in name:
            out.append(name)
            continue
        pattern = re.compile("^" + re.escape(name).replace(r"\*", "[^.]+") + "$")
        hits = sorted((v for v in valid if pattern.match(v)),
                      key=lambda v: (layer_of(v) if layer_of(v) is not None else -1, v))
        if not hits:
            raise UnknownHookError(f"hook pattern {name!r} matches no hook of this model (e.g. "
                                   f"{', '.join(valid[:3])})", [name])
        out += hits
    return list(dict.fromkeys(out))


__all__ = [
    "CANONICAL_HOOKS",
    "UnknownHookError",
    "attn_out",
    "attn_pattern",
    "attn_z",
    "expand_hook_names",
    "layer_of",
    "mlp_out",
    "resid_mid",
    "resid_post",
    "resid_pre",
    "validate_hook_names",
]
