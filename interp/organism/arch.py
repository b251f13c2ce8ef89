"""Architectures of the organism: small Llama models (RMSNorm, RoPE, SwiGLU) with untied embeddings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


@dataclass(frozen=True)
class ArchConfig:
    """Shape of one organism model. Embeddings stay untied: tied ones collapsed the digit embeddings."""

    n_layers: int = 4
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 256
    max_len: int = 128

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchConfig:
        return cls(**d)

    def hf_config(self, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=self.d_model, intermediate_size=self.d_mlp,
            num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads,
            num_key_value_heads=self.n_heads, max_position_embeddings=self.max_len,
            tie_word_embeddings=False, rms_norm_eps=1e-5, rope_theta=10000.0,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, attention_bias=False, mlp_bias=False,
        )


def init_model(arch: ArchConfig, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A freshly initialised model; the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(arch.hf_config(tokenizer))
    return model.float()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ArchConfig", "init_model", "n_params"]
