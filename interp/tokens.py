"""Tokenizer facts every model needs, whatever its tokenizer: unknown words, single tokens, BOS.

Word-level vocabularies have gaps (a word they do not know becomes `<unk>`); byte-level BPE can spell any
text but splits most strings into several pieces, so a string meant as one token is checked here.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


class TokenError(ValueError):
    """Text the tokenizer cannot represent as asked (an unknown word, a string that is not one token)."""


def check_known_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> None:
    """Raise if `text` holds a word a word-level tokenizer would map to its unknown token, naming the words."""
    core = getattr(tokenizer, "backend_tokenizer", None)
    if core is None or type(core.model).__name__ != "WordLevel":
        return  # subword tokenizers can spell any text; only word-level vocabularies have gaps
    vocab = tokenizer.get_vocab()
    pre = core.pre_tokenizer
    words = [w for w, _ in pre.pre_tokenize_str(text)] if pre is not None else text.split()
    unknown = [w for w in words if w not in vocab]
    if unknown:
        known = " ".join(sorted((w for w in vocab if not w.startswith("<")), key=lambda w: (len(w), w)))
        raise TokenError(f"token(s) {unknown} are not in the tokenizer's vocabulary; known words: {known}")


def single_token(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """Id of `text` if it is exactly one token (no BOS added); else a TokenError naming its pieces.

    On byte-level BPE a number after a space is `" 9"` (one token `Ġ9`), not `"9"`: write the string as it
    appears in the text."""
    check_known_tokens(tokenizer, text)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        hint = ""
        if not text.startswith(" ") and len(tokenizer(" " + text, add_special_tokens=False)["input_ids"]) == 1:
            hint = f"; {' ' + text!r} (with the leading space it has after a word) is one token"
        raise TokenError(f"{text!r} is {len(ids)} tokens, not one: {pieces}{hint}")
    return int(ids[0])


__all__ = ["TokenError", "check_known_tokens", "single_token"]
