"""Steering as torch hooks on `Model.hf`, so it acts in plain forwards and inside HF cached generation.

TransformerLens hook names map to Hugging Face modules through the Bridge's component mapping
(`interp.sites`): `hook_resid_pre` is decoder layer L's input, `hook_resid_post` its
output, `hook_attn_out` / `hook_mlp_out` the attention / MLP module outputs. A pre-hook on the whole model
reads each forward's attention mask and cache length, so positions are known per row in a left-padded
batch, at prefill and at every cached decoding step. An intervention with `rows` acts only on those rows of
each batch as its prefill held it (one batched generation can hold many conditions; a decoding step that holds
fewer rows, `interp.generate.current_rows`, keeps each row's own); rows outside the batch are an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from interp.generate import current_rows, row_aware
from interp.sites import Sites, first_output, replace_first_output, sites
from interp.steering.interventions import Add, Intervention, Positions, Subtract, row_mask

if TYPE_CHECKING:
    from interp.models import Model

SUPPORTED = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")


class SteeringError(ValueError):
    """An intervention that cannot act on this model or these inputs."""


def hook_site(model: Model, hook: str, s: Sites | None = None) -> tuple[torch.nn.Module, str]:
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


def check_vector(model: Model, iv: Intervention, allow_other_model: bool) -> None:
    vec = iv.vector
    if vec.d_model != model.d_model:
        raise SteeringError(f"vector for {iv.at} has width {vec.d_model} but {model.name} has d_model "
                            f"{model.d_model}: it comes from another model")
    if vec.model_checksum and vec.model_checksum != model.checksum and not allow_other_model:
        raise SteeringError(f"vector for {iv.at} was read from {vec.model_name or 'another model'} (checksum "
                            f"{vec.model_checksum[:12]}), not {model.name} ({model.checksum[:12]}); pass "
                            f"allow_other_model=True to transfer it on purpose")


class _State:
    """Per-forward row geometry: the prompt width, which positions hold real tokens and their index within
    each row (`rel`, any padding side), the prompt lengths, and whether this forward runs in generation."""

    def __init__(self) -> None:
        self.prompt_width = 0
        self.lens: torch.Tensor | None = None
        self.real: torch.Tensor | None = None
        self.rel: torch.Tensor | None = None
        self.past = 0
        self.seq = 0
        self.generating = False
        self.live: torch.Tensor | None = None  # rows of the prefill's batch in this forward, on its device (None: all)
        self.sel: dict[int, Any] = {}


def _where_key(where: Any) -> int:
    return id(where)


def _select(st: _State, where: Any, device: torch.device) -> Any:
    """None: every position of this call; False: none; else a bool [batch, seq] tensor."""
    start, seq, width = st.past, st.seq, st.prompt_width
    if isinstance(where, str) and where == "auto":
        where = "generated" if st.generating else "all"
    if isinstance(where, str):
        if where == "generated":
            return None if start >= width else False
        if start >= width:  # a cached decoding step: only generated tokens here
            return None if where == "all" else False
        real = st.real
        return None if (where == "all" or where == "prompt") and bool(real.all()) else real
    if isinstance(where, Positions):
        if start >= width:
            return False
        lens = st.lens
        out = torch.zeros_like(st.real)
        for i in where.indices:
            j = lens + i if i < 0 else torch.full_like(lens, i)
            bad = (j < 0) | (j >= lens)
            if bad.any():
                row = int(bad.nonzero()[0, 0])
                raise SteeringError(f"position {i} is outside row {row}'s prompt, which has {int(lens[row])} tokens "
                                    f"(valid: {-int(lens[row])}..{int(lens[row]) - 1})")
            out |= st.real & (st.rel == j[:, None])
        return out
    mask = where.to(device)
    if mask.shape[0] != st.real.shape[0]:
        raise SteeringError(f"token mask has {mask.shape[0]} rows but the batch has {st.real.shape[0]}")
    part = mask[:, start:start + seq] if st.live is None else mask[st.live, start:start + seq]
    if part.shape[1] < seq:
        part = torch.cat([part, part.new_zeros(part.shape[0], seq - part.shape[1])], 1)
    return part


def _prefill(st: _State, batch: int, seq: int, mask: torch.Tensor | None, device: torch.device,
             generating: bool) -> None:
    """Geometry of a forward that starts a sequence (no KV cache yet): real tokens from the mask."""
    real = mask.bool() if mask is not None else torch.ones(batch, seq, dtype=torch.bool, device=device)
    st.prompt_width, st.past, st.seq, st.generating, st.live = seq, 0, seq, generating, None
    st.real, st.lens = real, real.sum(-1)
    st.rel = real.long().cumsum(-1) - 1


class Steering:
    """Registered steering hooks; `remove()` takes them all off (the context manager does it for you)."""

    def __init__(self, model: Model, interventions: Sequence[Intervention], allow_other_model: bool = False,
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
        self._bridge_points: list[Any] = []
        self.state = _State()
        self._vectors: dict[tuple[int, torch.device, torch.dtype], tuple[Any, torch.Tensor, Any]] = {}
        self._finite: list[tuple[Intervention, torch.Tensor]] = []  # this forward's NaN/inf flags, read at its end
        self._rows: dict[tuple[int, int, torch.device], torch.Tensor | None] = {}  # (iv, batch, device) -> [batch, 1]
        placed = []
        for iv in ivs:
            mod, side = hook_site(model, iv.at, s)
            check_vector(model, iv, allow_other_model)
            placed.append((iv, mod, side))
        if not ivs:
            return
        self.handles.append(model.hf.register_forward_pre_hook(row_aware(self._on_forward), with_kwargs=True))
        if check_finite:
            self.handles.append(model.hf.register_forward_hook(row_aware(self._check_finite)))
        self._wheres = list({_where_key(iv.where): iv.where for iv in ivs}.items())
        for iv, mod, side in placed:
            if side == "pre":
                self.handles.append(mod.register_forward_pre_hook(self._pre(iv), with_kwargs=True))
            else:
                self.handles.append(mod.register_forward_hook(self._post(iv)))
        # the Bridge runs its own module tree over the same weights: steer its calls too, through its hook points
        bridge = model.bridge
        self.handles.append(bridge.register_forward_pre_hook(self._on_bridge_forward, with_kwargs=True))
        if check_finite:
            self.handles.append(bridge.register_forward_hook(self._check_finite))
        for iv, _, _ in placed:
            point = bridge.hook_dict[iv.at]
            point.add_hook(self._bridge_hook(iv))
            self._bridge_points.append((point, point.fwd_hooks[-1]))  # our LensHandle, to remove only ours

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
            _prefill(st, batch, seq, mask, x.device, generating=cache is not None or current_rows() is not None)
        else:
            rows = current_rows()
            live = rows.live if rows is not None else None
            full = batch if live is None else rows.batch  # type: ignore[union-attr]
            if st.real is None or st.real.shape[0] != full or (live is not None and live.shape[0] != batch):
                raise SteeringError(f"a cached forward of {batch} rows continues no steered prompt of that batch size")
            st.past, st.seq, st.live = past, seq, None if live is None else live.to(x.device)
        st.sel = {k: _select(st, w, x.device) for k, w in self._wheres}
        self._check_rows(x.device)

    def _on_bridge_forward(self, mod: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """A TransformerBridge call (no KV cache, no generation): every row starts at position 0."""
        x = args[0] if args else kwargs.get("input")
        if isinstance(x, (str, list)):
            x = self.model.to_tokens(x)
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            raise SteeringError("steering a Bridge call needs token ids [batch, pos] or text")
        mask = kwargs.get("attention_mask")
        _prefill(self.state, int(x.shape[0]), int(x.shape[1]), mask if isinstance(mask, torch.Tensor) else None,
                 x.device, generating=False)
        self.state.sel = {k: _select(self.state, w, x.device) for k, w in self._wheres}
        self._check_rows(x.device)

    def _check_rows(self, device: torch.device) -> None:
        """Every intervention's `rows` must lie inside this forward's batch (checked before any edit)."""
        for iv in self.interventions:
            self._row_mask(iv, device)

    def _row_mask(self, iv: Intervention, device: torch.device) -> torch.Tensor | None:
        """[rows, 1] bool of the rows of this forward that `iv` acts on (None: all): its `rows` of the batch as the
        prefill held it (one copy per batch size and device), then the rows this decoding step holds; rows
        outside the batch are a SteeringError."""
        if iv.rows is None:
            return None
        st = self.state
        batch = int(st.real.shape[0])  # type: ignore[union-attr]
        key = (id(iv), batch, device)
        if key not in self._rows:
            try:
                m = row_mask(iv.rows, batch)
            except IndexError as e:
                raise SteeringError(f"intervention at {iv.at}: {e}") from None
            self._rows[key] = m.to(device)[:, None]  # type: ignore[union-attr]
        m = self._rows[key]
        return m if st.live is None else m[st.live]  # type: ignore[index]

    def _bridge_hook(self, iv: Intervention) -> Any:
        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return self._apply(iv, act)

        return fn

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
        rows = self._row_mask(iv, h.device)
        if rows is not None:
            sel = rows.expand(h.shape[0], h.shape[1]) if sel is None else sel & rows
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
        @row_aware
        def fn(mod: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                return (self._apply(iv, args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": self._apply(iv, kwargs["hidden_states"])}

        return fn

    def _post(self, iv: Intervention) -> Any:
        @row_aware
        def fn(mod: torch.nn.Module, args: tuple, out: Any) -> Any:
            return replace_first_output(out, self._apply(iv, first_output(out)))

        return fn

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        for point, handle in self._bridge_points:
            handle.hook.remove()
            if handle in point.fwd_hooks:
                point.fwd_hooks.remove(handle)
        self.handles, self._bridge_points = [], []


@contextlib.contextmanager
def steer(model: Model, interventions: Sequence[Intervention], allow_other_model: bool = False,
          check_finite: bool = True) -> Iterator[Steering]:
    """Interventions active on `model.hf` inside the block (forwards and `model.generate` alike)."""
    s = Steering(model, interventions, allow_other_model, check_finite)
    try:
        yield s
    finally:
        s.remove()


def generate_steered(model: Model, prompts: str | Sequence[str], interventions: Sequence[Intervention],
                     allow_other_model: bool = False, **kw: Any) -> list[str]:
    """`model.generate(prompts, **kw)` with the interventions active (greedy by default)."""
    with steer(model, interventions, allow_other_model):
        return model.generate(prompts, **kw)


__all__ = ["SUPPORTED", "Steering", "SteeringError", "check_vector", "generate_steered", "hook_site", "steer"]
