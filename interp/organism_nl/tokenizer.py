"""A byte-level BPE tokenizer trained on the task's own text, shaped like Qwen2's.

Pre-tokenization is Qwen2's: its regex (one digit per token, so ` 7` is a space token and a digit token)
followed by GPT-2's byte-level mapping; the 256 byte symbols are all in the vocabulary, so any text
encodes. `<|endoftext|>` ends every sequence and pads; `<think>` and `</think>` are added tokens; `<think>`
absorbs the whitespace on its left (` <think>` is one token: the format decision after the prompt). No BOS token, as in
Qwen2: prompts start with their first word.
"""

from __future__ import annotations

import os

import numpy as np
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from interp.organism_nl.task import (
    END_OF_TEXT,
    FORMATS,
    THINK_CLOSE,
    THINK_OPEN,
    NLTaskConfig,
    sample_phrasings,
    sample_problems,
)

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL = (END_OF_TEXT, THINK_OPEN, THINK_CLOSE)


def corpus(n_problems: int, seed: int, cfg: NLTaskConfig | None = None) -> list[str]:
    """Prompt + completion texts in every format and phrasing, from a seeded generator."""
    cfg = cfg or NLTaskConfig()
    rng = np.random.default_rng(seed)
    texts = []
    for p in sample_problems(seed, n_problems, cfg):
        for fmt in FORMATS:
            ph = sample_phrasings(rng, p.n_steps, cfg) if fmt == "think" else None
            texts.append(p.prompt() + p.completion(fmt, ph))
    return texts


def build_tokenizer(vocab_size: int = 320, n_problems: int = 2000, seed: int = 0,
                    model_max_length: int = 256) -> PreTrainedTokenizerFast:
    """Train the BPE on `n_problems` problems' texts; the same arguments give the same tokenizer."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if vocab_size < 256 + len(SPECIAL):
        raise ValueError(f"vocab_size must hold the 256 byte symbols and {len(SPECIAL)} special tokens: "
                         f">= {256 + len(SPECIAL)}, got {vocab_size}")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[END_OF_TEXT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(corpus(n_problems, seed), trainer=trainer)
    core.add_tokens([AddedToken(THINK_OPEN, lstrip=True, rstrip=False, normalized=False, special=False),
                     AddedToken(THINK_CLOSE, lstrip=False, rstrip=False, normalized=False, special=False)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT,
                                  model_max_length=model_max_length, padding_side="left")
    return tok


def digit_token_ids(tok: PreTrainedTokenizerFast) -> list[int]:
    """Ids of the digits 0-9 (each one token under the Qwen2 pre-tokenizer)."""
    out = []
    for d in range(10):
        ids = tok(str(d), add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"digit {d} is {len(ids)} tokens in this tokenizer; expected one")
        out.append(int(ids[0]))
    return out


__all__ = ["QWEN2_PATTERN", "SPECIAL", "build_tokenizer", "corpus", "digit_token_ids"]
