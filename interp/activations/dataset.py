"""A dataset of prompts to harvest: token ids, optional named positions, and per-example metadata.

Positions by name (`answer`, `step2.value`, ...) and metadata (intermediate values, step count, the
model's own choice of format) travel with the ids, so a probe's labels come from the same place as its
activations. The dataset's hash (of ids, positions and metadata) goes into every store's manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from interp.io import read_json, write_json

Meta = Mapping[str, Any]


@dataclass(frozen=True)
class Example:
    """One prompt: token ids (BOS included if the model wants one), named positions, metadata."""

    ids: tuple[int, ...]
    positions: Mapping[str, int] = field(default_factory=dict)
    meta: Meta = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "positions": dict(self.positions), "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Example:
        return cls(tuple(int(i) for i in d["ids"]), dict(d.get("positions", {})), dict(d.get("meta", {})))


@dataclass(frozen=True)
class PromptDataset:
    """An ordered, immutable list of examples; `group` names the meta key that identifies a problem
    (examples sharing it are never split between a probe's train and test sets)."""

    examples: tuple[Example, ...]
    group: str = "problem"

    def __post_init__(self) -> None:
        if not self.examples:
            raise ValueError("the dataset is empty: give at least one prompt")
        for i, e in enumerate(self.examples):
            if not e.ids:
                raise ValueError(f"example {i} has no tokens")

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]

    @property
    def max_len(self) -> int:
        return max(len(e.ids) for e in self.examples)

    def groups(self) -> list[str]:
        """Problem identity per example: meta[group] if present, else the example's token ids."""
        return [str(e.meta.get(self.group, ",".join(map(str, e.ids)))) for e in self.examples]

    def meta_column(self, key: str) -> list[Any]:
        """meta[key] per example (None where an example lacks it)."""
        return [e.meta.get(key) for e in self.examples]

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "examples": [e.to_dict() for e in self.examples]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PromptDataset:
        return cls(tuple(Example.from_dict(e) for e in d["examples"]), d.get("group", "problem"))

    def hash(self) -> str:
        """sha256 of the canonical JSON of the group key and of each example, fed one example at a time."""
        h = hashlib.sha256(json.dumps({"group": self.group}, sort_keys=True).encode())
        for e in self.examples:
            h.update(json.dumps(e.to_dict(), sort_keys=True, separators=(",", ":")).encode())
        return h.hexdigest()

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | Path) -> PromptDataset:
        return cls.from_dict(read_json(path))

    @classmethod
    def from_texts(cls, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                   metas: Sequence[Meta] | None = None, max_len: int | None = None) -> PromptDataset:
        """Tokenize texts with the tokenizer's own BOS rule; words it does not know are a clear error."""
        from interp.tokens import check_known_tokens

        if metas is not None and len(metas) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(metas)} metadata entries")
        examples = []
        for i, t in enumerate(texts):
            check_known_tokens(tokenizer, t)  # type: ignore[arg-type]
            ids = tuple(tokenizer(t)["input_ids"])
            if max_len is not None and len(ids) > max_len:
                raise ValueError(f"text {i} has {len(ids)} tokens, more than the context length {max_len}: "
                                 f"shorten it to at most {max_len} tokens")
            examples.append(Example(ids, {}, dict(metas[i]) if metas is not None else {}))
        return cls(tuple(examples))


__all__ = ["Example", "PromptDataset"]
