"""Byte-level BPE tokenizers trained in a test (offline), shaped like real models' tokenizers, and tiny
random-init checkpoints that carry them.

- `gpt2_style`: GPT-2's byte-level pre-tokenizer (`Ġ` marks a leading space), `<|endoftext|>` as EOS and
  pad, no BOS token of its own (`interp.load`'s Bridge then prepends `<|endoftext|>`, as for GPT-2), no
  chat template.
- `qwen_style`: Qwen2's split (each digit its own pre-token, so numbers take several tokens), ChatML
  special tokens with a chat template, `<think>`/`</think>` as added tokens as in R1-distilled models.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from tests.conftest import tiny_config

EOT = "<|endoftext|>"
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _train(core: Tokenizer, texts: Iterable[str], vocab_size: int, special: list[str]) -> None:
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)


def gpt2_style(texts: Iterable[str], vocab_size: int = 600, model_max_length: int = 256) -> PreTrainedTokenizerFast:
    """A GPT-2-like byte-level BPE trained on `texts` (no BOS; EOS and pad `<|endoftext|>`)."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    _train(core, texts, vocab_size, [EOT])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOT, pad_token=EOT,
                                   model_max_length=model_max_length, clean_up_tokenization_spaces=False)


def qwen_style(texts: Iterable[str], vocab_size: int = 600, model_max_length: int = 256,
               think: bool = True) -> PreTrainedTokenizerFast:
    """A Qwen2-like byte-level BPE (digits split, ChatML template; `<think>` tokens when `think`)."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    special = [EOT, "<|im_start|>", "<|im_end|>"]
    _train(core, texts, vocab_size, special)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token=EOT,
                                  model_max_length=model_max_length, clean_up_tokenization_spaces=False)
    if think:
        tok.add_tokens(["<think>", "</think>"])
    tok.chat_template = CHATML
    return tok


def save_checkpoint(path: Path, tok: PreTrainedTokenizerFast, arch: str = "gpt2", seed: int = 0,
                    **shape: int) -> Path:
    """A random-init `arch` model sized for `tok`, saved with it by `save_pretrained`; returns `path`."""
    # no BOS stays no BOS (GPT2Config's default id 50256 would be outside the vocabulary)
    special = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    cfg = tiny_config(arch, vocab_size=len(tok), **{"max_len": tok.model_max_length, **shape}, **special)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg).float().eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


__all__ = ["CHATML", "EOT", "gpt2_style", "qwen_style", "save_checkpoint"]
