"""Where the parts of any Hugging Face causal LM live: decoder layers, final norm, unembedding, and which
layer and matrix kind a parameter name belongs to. Every intervention in this package acts on `Model.hf`
through these, so it works for Llama, Qwen2, GPT-2, GPT-NeoX and other HF decoder-only models alike."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from transformers import PreTrainedModel

_LAYER_IN_NAME = re.compile(r"\.(?:layers|h|blocks|layer|decoder_layers)\.(\d+)\.")
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")

# last module name -> matrix kind (first match wins); names cover Llama/Qwen2/Mistral, GPT-2 and GPT-NeoX
_KINDS: tuple[tuple[str, str], ...] = (
    ("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "o"),
    ("c_attn", "qkv"), ("query_key_value", "qkv"), ("attn.c_proj", "o"), ("attention.dense", "o"),
    ("gate_proj", "mlp_gate"), ("up_proj", "mlp_in"), ("down_proj", "mlp_out"),
    ("c_fc", "mlp_in"), ("mlp.c_proj", "mlp_out"), ("dense_h_to_4h", "mlp_in"), ("dense_4h_to_h", "mlp_out"),
    ("input_layernorm", "norm_attn"), ("ln_1", "norm_attn"),
    ("post_attention_layernorm", "norm_mlp"), ("ln_2", "norm_mlp"),
    ("q_norm", "norm_qk"), ("k_norm", "norm_qk"),
    ("embed_tokens", "embed"), ("wte", "embed"), ("embed_in", "embed"),
    ("wpe", "pos_embed"),
    ("lm_head", "unembed"), ("embed_out", "unembed"),
    ("model.norm", "final_norm"), ("ln_f", "final_norm"), ("final_layer_norm", "final_norm"),
)
MATRIX_KINDS: tuple[str, ...] = ("embed", "pos_embed", "norm_attn", "q", "k", "v", "qkv", "norm_qk", "o",
                                 "norm_mlp", "mlp_gate", "mlp_in", "mlp_out", "final_norm", "unembed", "other")


def layer_of_param(name: str) -> int | None:
    """Decoder layer index of a parameter name (`model.layers.3.mlp.up_proj.weight` -> 3); None outside layers."""
    m = _LAYER_IN_NAME.search(name)
    return int(m.group(1)) if m else None


def kind_of_param(name: str) -> str:
    """Matrix kind of a parameter name (q, k, v, o, mlp_in/gate/out, norms, embed, unembed, other)."""
    stem = name.removesuffix(".weight").removesuffix(".bias")
    for key, kind in _KINDS:
        if stem.endswith(key):
            return kind
    return "other"


def decoder_layers(hf: PreTrainedModel) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (the ModuleList whose length is the config's layer count)."""
    n = getattr(hf.config, "num_hidden_layers", None) or getattr(hf.config, "n_layer", None)
    lists = [(name, m) for name, m in hf.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n]
    if not lists:
        raise ValueError(f"cannot find the decoder layers of {type(hf).__name__}: no ModuleList of length {n}")
    return min(lists, key=lambda x: x[0].count("."))[1]


def final_norm(hf: PreTrainedModel) -> torch.nn.Module:
    """The norm applied to the last residual stream before the unembedding (identity if the model has none)."""
    base = hf.base_model
    for attr in _FINAL_NORMS:
        mod = getattr(base, attr, None)
        if isinstance(mod, torch.nn.Module):
            return mod
    raise ValueError(f"cannot find the final norm of {type(hf).__name__}: none of {', '.join(_FINAL_NORMS)} "
                     f"on {type(base).__name__}")


def block_output(output: object) -> torch.Tensor:
    """The residual stream a decoder block returns (a tensor, or the first item of a tuple)."""
    return output if isinstance(output, torch.Tensor) else output[0]  # type: ignore[index]


def replace_block_output(output: object, hidden: torch.Tensor) -> object:
    """The block's return value with its residual stream replaced, in the same structure."""
    if isinstance(output, torch.Tensor):
        return hidden
    return (hidden, *output[1:])  # type: ignore[index]


def block_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The residual stream a decoder block receives (first positional argument or `hidden_states=`)."""
    return args[0] if args else kwargs["hidden_states"]


def left_pad_positions(mask: Int[torch.Tensor, "batch pos"]) -> Int[torch.Tensor, "batch pos"]:
    """Position ids for a left-padded batch: 0 at each row's first real token (what HF generate uses)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def residual_streams(
    hf: PreTrainedModel, ids: Int[torch.Tensor, "batch pos"], mask: Int[torch.Tensor, "batch pos"]
) -> tuple[Float[torch.Tensor, "point batch pos d_model"], Float[torch.Tensor, "batch pos vocab"]]:
    """Residual stream entering block 0 and leaving every block (n_layers + 1 points), and the logits."""
    layers = decoder_layers(hf)
    got: list[torch.Tensor] = []
    handles = [layers[0].register_forward_pre_hook(
        lambda mod, args, kwargs: got.append(block_input(args, kwargs).detach()), with_kwargs=True)]
    handles += [layer.register_forward_hook(lambda mod, args, out: got.append(block_output(out).detach()))
                for layer in layers]
    try:
        logits = hf(input_ids=ids, attention_mask=mask, position_ids=left_pad_positions(mask)).logits
    finally:
        for h in handles:
            h.remove()
    return torch.stack(got), logits


@torch.no_grad()
def lens_logits(hf: PreTrainedModel, resid: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... vocab"]:
    """Logit lens: the final norm and the unembedding applied to a residual stream."""
    return hf.get_output_embeddings()(final_norm(hf)(resid))


def point_labels(n_layers: int) -> tuple[str, ...]:
    """TransformerLens names of the n_layers + 1 residual points `residual_streams` returns."""
    return ("blocks.0.hook_resid_pre", *(f"blocks.{i}.hook_resid_post" for i in range(n_layers)))


def check_block(block: Sequence[int], n_layers: int) -> tuple[int, int]:
    """Validate a half-open layer range [start, end) against a model's layer count."""
    if len(block) != 2:
        raise ValueError(f"a layer block is (start, end), got {tuple(block)}")
    start, end = int(block[0]), int(block[1])
    if not 0 <= start < end <= n_layers:
        raise ValueError(f"layer block [{start}, {end}) is out of range: the model has layers 0-{n_layers - 1}, "
                         f"so a block needs 0 <= start < end <= {n_layers}")
    return start, end


__all__ = [
    "MATRIX_KINDS",
    "block_input",
    "block_output",
    "check_block",
    "decoder_layers",
    "final_norm",
    "kind_of_param",
    "layer_of_param",
    "left_pad_positions",
    "lens_logits",
    "point_labels",
    "replace_block_output",
    "residual_streams",
]
