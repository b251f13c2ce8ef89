"""Steering as torch hooks on `Model.hf`, so it acts in plain forwards and inside HF cached generation.

TransformerLens hook names map to Hugging Face modules through the Bridge's component mapping
(`interp.sites`): `hook_resid_pre` is decoder layer L's input, `hook_resid_post` its
output, `hook_attn_out` / `hook_mlp_out` the attention / MLP module outputs. A pre-hook on the whole model
reads each forward's attention mask and cache length, so positions are known per row in a left-padded
batch, at prefill and at every cached decoding step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from interp.sites import Sites, first_output, replace_first_output, sites
from interp.steering.interventions import Add, Intervention, Positions, Subtract

SUPPORTED = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")


class SteeringError(ValueError):
    """An intervention that cannot act on this model or these inputs."""


def hook_site(model: Any, hook: str, s: Sites | None = None) -> tuple[torch.nn.Module, str]:
    """The HF module behind a TL hook name and whether its `input` (pre) or `output` (post) is that activation."""
    model.check_hooks(hook)
    kind = hook.rsplit(".", 1)[-1]
    if not hook.startswith("blocks.") or kind not in SUPPORTED:
        raise SteeringError(f"steering acts on {', '.join('blocks.L.' + k for k in SUPPORTED)}; got {hook!r}")
    s = s or sites(model)
    layer = int(hook.split(".")[1])
    if kind == "hook_resid_pre":
        return s.layers[layer], "pre"
    if kind == "hook_resid_post":
        return s.layers[layer], "post"
    return (s.attn if kind == "hook_attn_out" else s.mlp)[layer], "post"


def check_vector(model: Any, iv: Intervention, allow_other_model: bool) -> None:
    vec = iv.vector
    if vec.d_model != model.d_model:
        raise SteeringError(f"vector for {iv.at} has width {vec.d_model} but {model.name} has d_model "
                            f"{model.d_model}: it comes from another model")
    if vec.model_checksum and vec.model_checksum != model.checksum and not allow_other_model:
        raise SteeringError(f"vector for {iv.at} was read from {vec.model_name or 'another model'} (checksum "
                            f"{vec.model_checksum[:12]}), not {model.name} ({model.checksum[:12]}); pass "
                            f"allow_other_model=True to transfer it on purpose")


class _State:
    """Per-forward row geometry: prompt width, left pads, and the absolute positions of this call."""

    def __init__(self) -> None:
        self.prompt_width = 0
        self.pads: torch.Tensor | None = None
        self.past = 0
        self.seq = 0
        self.mask: torch.Tensor | None = None
        self.sel: dict[int, Any] = {}


def _where_key(where: Any) -> int:
    return id(where)


def _select(st: _State, where: Any, device: torch.device) -> Any:
    """None: every position of this call; False: none; else a bool [batch, seq] tensor."""
    start, seq, width = st.past, st.seq, st.prompt_width
    if isinstance(where, str):
        if where == "generated":
            if start >= width:
                return None
            if start + seq <= width:
                return False
            pos = torch.arange(start, start + seq, device=device)
            return (pos >= width)[None].expand(st.pads.shape[0], -1)
        pos = torch.arange(start, start + seq, device=device)
        real = (pos[None] - st.pads[:, None]) >= 0
        if st.mask is not None:
            real = real & st.mask.bool()
        if where == "all":
            return None if bool(real.all()) else real
        if start >= width:
            return False
        return real & (pos < width)[None]
    if isinstance(where, Positions):
        if start >= width:
            return False
        lens = width - st.pads  # [batch]
        pos = torch.arange(start, start + seq, device=device)
        rel = pos[None] - st.pads[:, None]
        out = torch.zeros_like(rel, dtype=torch.bool)
        for i in where.indices:
            j = lens + i if i < 0 else torch.full_like(lens, i)
            bad = (j < 0) | (j >= lens)
            if bad.any():
                row = int(bad.nonzero()[0, 0])
                raise SteeringError(f"position {i} is outside row {row}'s prompt, which has {int(lens[row])} tokens "
                                    f"(valid: {-int(lens[row])}..{int(lens[row]) - 1})")
            out |= rel == j[:, None]
        return out
    mask = where.to(device)
    if mask.shape[0] != st.pads.shape[0]:
        raise SteeringError(f"token mask has {mask.shape[0]} rows but the batch has {st.pads.shape[0]}")
    part = mask[:, start:start + seq]
    if part.shape[1] < seq:
        part = torch.cat([part, part.new_zeros(part.shape[0], seq - part.shape[1])], 1)
    return part


class Steering:
    """Registered steering hooks; `remove()` takes them all off (the context manager does it for you)."""

    def __init__(self, model: Any, interventions: Sequence[Intervention], allow_other_model: bool = False,
                 check_finite: bool = True) -> None:
        ivs = list(interventions)
        for iv in ivs:
            if not isinstance(iv, Intervention):
                raise TypeError(f"not an intervention: {iv!r} (use Add, Subtract, ProjectOut or Clamp)")
        s = sites(model) if ivs else None
        self.model = model
        self.interventions = ivs
        self.check_finite = check_finite
        self.handles: list[Any] = []
        self.state = _State()
        self._vectors: dict[tuple[int, torch.device, torch.dtype], tuple[Any, torch.Tensor, Any]] = {}
        self._finite: list[tuple[Intervention, torch.Tensor]] = []  # this forward's NaN/inf flags, read at its end
        placed = []
        for iv in ivs:
            mod, side = hook_site(model, iv.at, s)
            check_vector(model, iv, allow_other_model)
            placed.append((iv, mod, side))
        if not ivs:
            return
        self.handles.append(model.hf.register_forward_pre_hook(self._on_forward, with_kwargs=True))
        if check_finite:
            self.handles.append(model.hf.register_forward_hook(self._check_finite))
        self._wheres = list({_where_key(iv.where): iv.where for iv in ivs}.items())
        for iv, mod, side in placed:
            if side == "pre":
                self.handles.append(mod.register_forward_pre_hook(self._pre(iv), with_kwargs=True))
            else:
                self.handles.append(mod.register_forward_hook(self._post(iv)))

    # ------------------------------------------------------------------ geometry of each forward
    def _on_forward(self, mod: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        x = ids if ids is not None else kwargs.get("inputs_embeds")
        if x is None:
            raise SteeringError("cannot steer a forward without input_ids or inputs_embeds")
        batch, seq = int(x.shape[0]), int(x.shape[1])
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            mask = None
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        if cache is not None and hasattr(cache, "get_seq_length"):
            past = int(cache.get_seq_length())  # tokens already in the KV cache (HF may omit an all-ones mask)
        elif mask is not None:
            past = int(mask.shape[1]) - seq
        else:
            past = 0
        if mask is not None:
            mask = mask[:, -seq:]  # this call's tokens (HF masks cover past + current)
        st = self.state
        if past == 0:
            st.prompt_width = seq
            if mask is not None:
                m = mask.bool()
                n_real = m.sum(-1)
                # left padding only: each row's real tokens are the last n_real positions
                expect = torch.arange(seq, device=m.device)[None] >= (seq - n_real)[:, None]
                if not torch.equal(m, expect):
                    raise SteeringError("the attention mask is not left-padded: steering positions assume left "
                                        "padding (interp.generate.left_pad, or a tokenizer with padding_side='left')")
                st.pads = (seq - n_real).to(x.device)
            else:
                st.pads = torch.zeros(batch, dtype=torch.long, device=x.device)
        elif st.pads is None or st.pads.shape[0] != batch:
            raise SteeringError(f"a cached forward of {batch} rows continues no steered prompt of that batch size")
        st.past, st.seq, st.mask = past, seq, mask
        st.sel = {k: _select(st, w, x.device) for k, w in self._wheres}

    # ------------------------------------------------------------------ the edits
    def _prepare(self, iv: Intervention, h: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """The vector (and unit) on h's device and dtype, and for Add/Subtract the constant shift itself."""
        vec = iv.vector
        v = vec.vector.to(h)
        u = vec.unit().to(h) if vec.norm > 0 else None
        shift = iv.delta(h[:1, :1], v, u)[0, 0] if isinstance(iv, (Add, Subtract)) else None
        return shift, v, u

    def _apply(self, iv: Intervention, h: torch.Tensor) -> torch.Tensor:
        sel = self.state.sel.get(_where_key(iv.where), False)
        if sel is False:
            return h
        if h.dim() != 3 or h.shape[-1] != iv.vector.d_model:
            raise SteeringError(f"{iv.at} gives activations of shape {tuple(h.shape)}, not [batch, pos, "
                                f"{iv.vector.d_model}]")
        key = (id(iv), h.device, h.dtype)
        prep = self._vectors.get(key)
        if prep is None:  # one copy per device and dtype, not one per forward
            prep = self._vectors[key] = self._prepare(iv, h)
        shift, v, u = prep
        d = shift if shift is not None else iv.delta(h, v, u)
        out = h + d if sel is None else h + d * sel[..., None].to(h.dtype)
        if self.check_finite:  # flags stay on the device; read once per forward (no GPU sync per hook)
            self._finite.append((iv, torch.isfinite(out).all()))
        return out

    def _check_finite(self, mod: torch.nn.Module, args: tuple, out: Any) -> None:
        flags, self._finite = self._finite, []
        if not flags or bool(torch.stack([f for _, f in flags]).all()):
            return
        bad = next(iv for iv, f in flags if not bool(f))
        raise FloatingPointError(f"steering made NaN/inf at {bad.at} ({bad.describe()}): the scale is too large "
                                 f"for this model's activations; stopped")

    def _pre(self, iv: Intervention) -> Any:
        def fn(mod: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                return (self._apply(iv, args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": self._apply(iv, kwargs["hidden_states"])}

        return fn

    def _post(self, iv: Intervention) -> Any:
        def fn(mod: torch.nn.Module, args: tuple, out: Any) -> Any:
            return replace_first_output(out, self._apply(iv, first_output(out)))

        return fn

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


@contextlib.contextmanager
def steer(model: Any, interventions: Sequence[Intervention], allow_other_model: bool = False,
          check_finite: bool = True) -> Iterator[Steering]:
    """Interventions active on `model.hf` inside the block (forwards and `model.generate` alike)."""
    s = Steering(model, interventions, allow_other_model, check_finite)
    try:
        yield s
    finally:
        s.remove()


def generate_steered(model: Any, prompts: str | Sequence[str], interventions: Sequence[Intervention],
                     allow_other_model: bool = False, **kw: Any) -> list[str]:
    """`model.generate(prompts, **kw)` with the interventions active (greedy by default)."""
    with steer(model, interventions, allow_other_model):
        return model.generate(prompts, **kw)


__all__ = ["SUPPORTED", "Steering", "SteeringError", "check_vector", "generate_steered", "hook_site", "steer"]
