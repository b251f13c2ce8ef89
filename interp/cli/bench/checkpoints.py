"""The one builder of random-init checkpoints that every benchmark (and scripts/gpu_check.py) uses.

A benchmark needs models of a known architecture and size without downloading anything: this builds one
from a named shape (GPT-2 small, Qwen2-1.5B, ...) with the organism's WordLevel tokenizer, so organism
prompts are valid input (or the natural-language organism's byte-level BPE, for its task and the pair report),
and saves it with `save_pretrained` like any Hugging Face checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Shapes written out from the models' config.json, so nothing is fetched. The vocabulary stays the real
# model's size (the organism tokenizer uses its first few hundred ids): embedding cost is part of the shape.
QWEN2_1_5B: dict[str, Any] = {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                                  "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 32768,
                                  "tie_word_embeddings": True, "rms_norm_eps": 1e-6}
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2-small": ("gpt2", {}),  # GPT2Config defaults: 124M parameters
    "qwen2-1.5b": ("qwen2", QWEN2_1_5B),  # Qwen2-1.5B and Qwen2.5-1.5B share these dimensions
    "qwen2-tiny": ("qwen2", {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                                 "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
                                 "tie_word_embeddings": True}),  # a dry run of the 1.5B path on CPU
}
ARCHITECTURES = ("gpt2", "llama", "qwen2")
TOKENIZERS = ("organism", "organism-nl")  # the first zoo's WordLevel; the natural-language zoo's byte-level BPE
DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class CheckpointSpec:
    """What to build: architecture, config fields (the size), parameter dtype, init seed, tokenizer and its
    context."""

    architecture: str = "gpt2"
    shape: Mapping[str, Any] = field(default_factory=dict, hash=False)
    dtype: str = "float32"
    seed: int = 0
    model_max_length: int = 1024
    tokenizer: str = "organism"

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer {self.tokenizer!r} is not one of {TOKENIZERS}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {self.architecture!r} is not one of {ARCHITECTURES}")
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {DTYPE_NAMES}")

    @classmethod
    def named(cls, name: str, **changes: Any) -> CheckpointSpec:
        """A spec from `SHAPES` (e.g. "qwen2-1.5b"); `changes` replace spec fields, `shape` entries merge."""
        if name not in SHAPES:
            raise ValueError(f"unknown benchmark shape {name!r}; known: {', '.join(SHAPES)}")
        arch, shape = SHAPES[name]
        extra = changes.pop("shape", {})
        return cls(architecture=arch, shape={**shape, **extra}, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "shape": dict(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckpointSpec:
        return cls(**{**d, "shape": dict(d.get("shape", {}))})


def tokenizer(model_max_length: int = 1024, name: str = "organism") -> Any:
    """The organism's WordLevel tokenizer (organism prompts are valid input to every benchmark model), or with
    `name="organism-nl"` the shipped byte-level BPE of the natural-language zoo."""
    if name == "organism-nl":
        from transformers import AutoTokenizer

        from interp.organism_nl.zoo import member_path

        return AutoTokenizer.from_pretrained(member_path("base"), local_files_only=True,
                                             model_max_length=model_max_length)
    from interp.organism.tokenizer import build_tokenizer

    return build_tokenizer(model_max_length=model_max_length)


def config(spec: CheckpointSpec, tok: Any) -> Any:
    """The transformers config of `spec`, with the tokenizer's special token ids."""
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    special = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    cls = {"gpt2": GPT2Config, "llama": LlamaConfig, "qwen2": Qwen2Config}[spec.architecture]
    cfg = cls(**{**special, **spec.shape})
    if cfg.vocab_size < len(tok):
        raise ValueError(f"the shape's vocab_size {cfg.vocab_size} is smaller than the {spec.tokenizer} tokenizer's "
                         f"{len(tok)} tokens: give shape={{'vocab_size': {len(tok)}}} or more")
    return cfg


def random_model(spec: CheckpointSpec, device: str = "cpu") -> tuple[Any, Any]:
    """(HF model in eval mode, tokenizer): random init from `spec.seed`, parameters in `spec.dtype`,
    initialised directly on `device` (a 1.5B model inits in seconds on a GPU). The global RNG is untouched."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = tokenizer(spec.model_max_length, spec.tokenizer)
    cfg = config(spec, tok)
    dev = torch.device(device)
    forked = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), dev:
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, spec.dtype))
    return model.eval(), tok


def build_checkpoint(folder: str | Path, spec: CheckpointSpec, device: str = "cpu",
                     max_shard_size: str = "2GB") -> Path:
    """Write a random-init model of `spec` plus its tokenizer to `folder` (safetensors); returns `folder`."""
    folder = Path(folder)
    model, tok = random_model(spec, device)
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    tok.save_pretrained(folder)
    return folder


def hooked_transformer(model: Any) -> Any:
    """A HookedTransformer over copies of `model`'s weights (config from the Bridge, no weight processing): the
    classic TransformerLens model class, anchor of the patching and SAE benchmarks. GPT-2 and Llama only."""
    import warnings

    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import (
        convert_gpt2_weights,
        convert_llama_weights,
    )

    convert = {"gpt2": convert_gpt2_weights, "llama": convert_llama_weights}.get(model.hf.config.model_type)
    if convert is None:
        raise ValueError(f"no HookedTransformer conversion for model_type {model.hf.config.model_type!r}")
    bc = model.bridge.cfg
    keys = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx", "act_fn", "normalization_type",
            "positional_embedding_type", "rotary_dim", "rotary_base", "eps", "gated_mlp", "final_rms",
            "original_architecture", "n_key_value_heads", "rotary_adjacent_pairs", "default_prepend_bos")
    kw = {k: getattr(bc, k) for k in keys if getattr(bc, k, None) is not None}
    cfg = HookedTransformerConfig(**kw, d_vocab_out=bc.d_vocab)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ht = HookedTransformer(cfg)
    ht.load_and_process_state_dict(convert(model.hf, cfg), fold_ln=False, center_writing_weights=False,
                                   center_unembed=False, fold_value_biases=False)
    return ht.eval()


def perturb_checkpoint(src: str | Path, dst: str | Path, layer: int, scale: float = 0.05, only: str | None = None,
                       seed: int = 1) -> Path:
    """A control pair with a known answer: copy a checkpoint with Gaussian noise of std `scale` added to the
    parameters of one decoder layer (optionally only those whose name contains `only`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analyses.layer_changes.anatomy import decoder_layers

    model = AutoModelForCausalLM.from_pretrained(src, local_files_only=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in decoder_layers(model)[layer].named_parameters():
            if only is None or only in name:
                p.add_(scale * torch.randn(p.shape, generator=gen))
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src, local_files_only=True).save_pretrained(dst)
    return Path(dst)


__all__ = ["ARCHITECTURES", "QWEN2_1_5B", "SHAPES", "TOKENIZERS", "CheckpointSpec", "build_checkpoint", "config",
           "hooked_transformer", "perturb_checkpoint", "random_model", "tokenizer"]
