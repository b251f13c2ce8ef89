"""Shared test fixtures: Hugging Face kept offline, tiny random-init checkpoints of several architectures."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub / transformers: tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Results the analyses cache go to a fresh folder: tests never reuse (or pollute) the user's cache.
import tempfile

os.environ["INTERP_CACHE"] = tempfile.mkdtemp(prefix="interp-test-cache-")

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

ARCHS = ("gpt2", "llama", "qwen2", "gpt_neox")


def make_tokenizer(words: Sequence[str] | None = None, model_max_length: int = 64) -> PreTrainedTokenizerFast:
    """The organism tokenizer (default), or one built the same way over another word list."""
    from interp.organism.tokenizer import SPECIAL_TOKENS, build_tokenizer

    if words is None:
        return build_tokenizer(model_max_length=model_max_length)
    vocab = {w: i for i, w in enumerate([*SPECIAL_TOKENS, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=model_max_length, padding_side="left",
    )


def tiny_config(arch: str, vocab_size: int, n_layers: int = 2, d_model: int = 32, n_heads: int = 4,
                d_mlp: int = 64, max_len: int = 64, **special: int) -> PretrainedConfig:
    """A config for a random-init model of `arch` small enough to load in a fraction of a second."""
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                          n_inner=d_mlp, n_positions=max_len, **special)
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
                           num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
                           max_position_embeddings=max_len, tie_word_embeddings=False, **special)
    if arch == "qwen2":
        return Qwen2Config(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
                           num_hidden_layers=n_layers, num_attention_heads=n_heads,
                           num_key_value_heads=max(1, n_heads // 2), max_position_embeddings=max_len, **special)
    if arch == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
                             num_hidden_layers=n_layers, num_attention_heads=n_heads,
                             max_position_embeddings=max_len, **special)
    raise ValueError(f"unknown test architecture {arch!r}; known: {', '.join(ARCHS)}")


def make_checkpoint(path: Path, arch: str = "llama", seed: int = 0, words: Sequence[str] | None = None,
                    **shape: int) -> Path:
    """Save a random-init `arch` model plus tokenizer to `path` with save_pretrained; returns `path`."""
    tok = make_tokenizer(words)
    special = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = tiny_config(arch, vocab_size=len(tok), **shape, **special)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg).float().eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory `tiny_checkpoint(arch, seed=0, words=None, **shape) -> Path`, built once per argument set."""
    built: dict[tuple, Path] = {}

    def get(arch: str = "llama", seed: int = 0, words: Sequence[str] | None = None, **shape: int) -> Path:
        key = (arch, seed, tuple(words) if words is not None else None, tuple(sorted(shape.items())))
        if key not in built:
            built[key] = make_checkpoint(tmp_path_factory.mktemp(f"{arch}-s{seed}"), arch, seed, words, **shape)
        return built[key]

    return get
