"""The organism's tokenizer: one WordLevel token per task word, wrapped as a Hugging Face fast tokenizer.

A `<bos> $A` post-processor makes `tok(text)`, TransformerBridge's `to_tokens` and nnsight agree on
the token ids; padding is on the left so batched generation continues every row from its last token.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from interp.organism.task import vocabulary

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = SPECIAL_TOKENS


def build_tokenizer(model_max_length: int = 128) -> PreTrainedTokenizerFast:
    """Build the task tokenizer; ids are fixed by the word list, so every build is identical."""
    words = list(SPECIAL_TOKENS) + vocabulary()
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=model_max_length, padding_side="left",
    )
    return tok


def digit_ids(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Token ids of the ten digits 0..9, in order (the direct answers)."""
    return torch.tensor(tokenizer.convert_tokens_to_ids([str(d) for d in range(10)]))


__all__ = ["BOS", "EOS", "PAD", "SPECIAL_TOKENS", "UNK", "build_tokenizer", "digit_ids"]
