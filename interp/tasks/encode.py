"""Texts to token ids with named positions, for any tokenizer: the one place prompts become `Example`s.

A prompt is tokenized on its own (with the model's BOS rule, or through its chat template) and a
completion on its own, then concatenated: exactly what generation sees (prompt ids, then generated ids),
so positions in a written completion match positions in a generated one even where a BPE merge could
cross the boundary. Named character spans map to the token holding the span's last character.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interp.activations.dataset import Example, PromptDataset
from interp.tasks.base import Item, Span, Task, require_items

if TYPE_CHECKING:
    from interp.models import Model


class SpanError(ValueError):
    """A named span that no token covers (e.g. it ends in whitespace a word-level tokenizer drops)."""


@dataclass(frozen=True)
class Encoded:
    """Token ids of `prompt + completion`, how many belong to the prompt, and each token's character range
    in the plain text `prompt + completion` (None for tokens the text does not hold: BOS, chat template)."""

    ids: tuple[int, ...]
    n_prompt: int
    offsets: tuple[tuple[int, int] | None, ...]

    def position(self, span: Span, name: str = "span") -> int:
        """Index of the token that holds the span's last character."""
        start, end = span
        if not 0 <= start < end:
            raise SpanError(f"span {name!r}={span} is empty or negative: a span is [start, end) with start < end")
        char = end - 1
        for i, off in enumerate(self.offsets):
            if off is not None and off[0] <= char < off[1]:
                return i
        covered = max((o[1] for o in self.offsets if o is not None), default=0)
        raise SpanError(f"no token holds character {char} of span {name!r}={span} (the text's tokens cover "
                        f"characters up to {covered}); a span must end on a character the tokenizer keeps, "
                        f"not on whitespace")


def render_prompt(model: Model, prompt: str, chat: bool = False) -> tuple[str, int]:
    """The text given to the model and where `prompt` starts in it (0 unless a chat template wraps it)."""
    if not chat:
        return prompt, 0
    tok = model.tokenizer
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"{model.name} has no chat template: pass chat=False (base models get plain prompts)")
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    at = text.find(prompt)
    if at < 0:
        raise ValueError(f"{model.name}'s chat template does not contain the prompt verbatim; cannot map spans")
    return text, at


# encodings each model keeps (least recently used dropped first): an analysis encodes the same items again for
# each of its conditions, and tokenizing is a fifth of the organism report's non-model time
ENCODINGS_KEPT = 16_384


def encode_text(model: Model, prompt: str, completion: str = "", chat: bool = False) -> Encoded:
    """Ids of `prompt` (BOS by the model's rule, or the chat template) followed by ids of `completion`
    (remembered per model, keyed by the texts and the tokenizer's size, so an added token is seen)."""
    key = (prompt, completion, chat, len(model.tokenizer))
    kept = model.encodings
    hit = kept.get(key)
    if hit is not None:
        kept.move_to_end(key)
        return hit  # type: ignore[no-any-return]
    enc = _encode_text(model, prompt, completion, chat)
    kept[key] = enc
    if len(kept) > ENCODINGS_KEPT:
        kept.popitem(last=False)
    return enc


def _encode_text(model: Model, prompt: str, completion: str, chat: bool) -> Encoded:
    tok = model.tokenizer
    model.check_text(prompt)  # each part on its own: they are tokenized on their own
    model.check_text(completion)
    rendered, shift = render_prompt(model, prompt, chat)
    p = tok(rendered, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = []
    offsets: list[tuple[int, int] | None] = []
    if model.prepend_bos and not chat:
        ids.append(int(model.bos_token_id))  # type: ignore[arg-type]
        offsets.append(None)
    for t, (a, b) in zip(p["input_ids"], p["offset_mapping"]):
        ids.append(int(t))
        inside = a >= shift and b <= shift + len(prompt) and b > a
        offsets.append((a - shift, b - shift) if inside else None)
    n_prompt = len(ids)
    if completion:
        c = tok(completion, add_special_tokens=False, return_offsets_mapping=True)
        for t, (a, b) in zip(c["input_ids"], c["offset_mapping"]):
            ids.append(int(t))
            offsets.append((a + len(prompt), b + len(prompt)) if b > a else None)
    return Encoded(tuple(ids), n_prompt, tuple(offsets))


def encode_item(model: Model, task: Task, item: Item, completion: str | None = None, chat: bool = False,
                extra_meta: Mapping[str, Any] | None = None) -> Example:
    """One item as an `Example`: ids of prompt (+ completion), the task's named positions, its metadata."""
    prompt = task.prompt(item)
    enc = encode_text(model, prompt, completion or "", chat)
    positions = {name: enc.position(span, name) for name, span in task.spans(item, completion).items()}
    meta = {"problem": item.id, **dict(item.meta), "format": "prompt" if completion is None else "completion",
            **dict(extra_meta or {})}
    return Example(enc.ids, positions, meta)


def task_dataset(model: Model, task: Task, items: Sequence[Item], fmt: str | None = None,
                 completions: Sequence[str] | None = None, chat: bool = False,
                 extra_meta: Sequence[Mapping[str, Any]] | None = None) -> PromptDataset:
    """Prompts of `items` (fmt and completions None), prompts plus the reference completion in `fmt`, or
    prompts plus given completions (e.g. the model's own generations), with named positions and metadata."""
    items = require_items(items)
    if fmt is not None and completions is not None:
        raise ValueError("give fmt (reference completions) or completions (your own), not both")
    if completions is not None and len(completions) != len(items):
        raise ValueError(f"{len(items)} items but {len(completions)} completions")
    if extra_meta is not None and len(extra_meta) != len(items):
        raise ValueError(f"{len(items)} items but {len(extra_meta)} extra metadata entries")
    if fmt is not None:
        task.check_formats(fmt)
    out = []
    for i, it in enumerate(items):
        comp = task.completion(it, fmt) if fmt is not None else (completions[i] if completions is not None else None)
        ex = encode_item(model, task, it, comp, chat, extra_meta[i] if extra_meta is not None else None)
        if fmt is not None:
            ex = Example(ex.ids, ex.positions, {**ex.meta, "format": fmt})
        out.append(ex)
    return PromptDataset(tuple(out))


__all__ = ["Encoded", "SpanError", "encode_item", "encode_text", "render_prompt", "task_dataset"]
