"""Token positions, one type for the whole toolkit: all, the last, given indices (negative from the end),
matching tokens, or names from the task. Harvest, steering and patching all take these.

A selector maps one example to a list of (label, index) pairs; the label says which kind of position a
stored row is (`last`, `answer`, `step2.value`, `=`, `-1`), so one store can hold several and a probe
picks one. Selectors are frozen dataclasses with `to_dict`/`from_dict` (they go into the manifest).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:
    from interp.activations.dataset import Example


class PositionError(ValueError):
    """A requested position that is not in the example."""


@dataclass(frozen=True)
class Selector:
    kind: ClassVar[str] = ""

    def select(self, example: Example, index: int, tokenizer: PreTrainedTokenizerBase | None = None
               ) -> list[tuple[str, int]]:
        raise NotImplementedError

    def labels(self) -> tuple[str, ...]:
        """Every label this selector can give, in a fixed order (stored rows refer to them by index)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Selector:
        d = dict(d)
        kind = d.pop("kind")
        classes = {c.kind: c for c in (AllTokens, LastToken, Indices, TokenMatch, Named)}
        if kind not in classes:
            raise ValueError(f"unknown position selector {kind!r}; known: {', '.join(classes)}")
        return classes[kind](**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class AllTokens(Selector):
    """Every token of the prompt (label `all`)."""

    kind: ClassVar[str] = "all"

    def labels(self) -> tuple[str, ...]:
        return ("all",)

    def select(self, example: Example, index: int, tokenizer: PreTrainedTokenizerBase | None = None
               ) -> list[tuple[str, int]]:
        return [("all", i) for i in range(len(example.ids))]


@dataclass(frozen=True)
class LastToken(Selector):
    """The prompt's last token (label `last`): where the next token is predicted."""

    kind: ClassVar[str] = "last"

    def labels(self) -> tuple[str, ...]:
        return ("last",)

    def select(self, example: Example, index: int, tokenizer: PreTrainedTokenizerBase | None = None
               ) -> list[tuple[str, int]]:
        return [("last", len(example.ids) - 1)]


@dataclass(frozen=True)
class Indices(Selector):
    """Fixed indices, negative ones counted from the end (label: the index as written)."""

    kind: ClassVar[str] = "indices"
    indices: tuple[int, ...] = (-1,)

    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(str(i) for i in self.indices))

    def select(self, example: Example, index: int, tokenizer: PreTrainedTokenizerBase | None = None
               ) -> list[tuple[str, int]]:
        n = len(example.ids)
        out = []
        for i in self.indices:
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise PositionError(f"position {i} is outside example {index}, which has {n} tokens "
                                    f"(valid: {-n}..{n - 1})")
            out.append((str(i), j))
        return out


@dataclass(frozen=True)
class TokenMatch(Selector):
    """Every position whose token reads as one of `tokens` (label: the string as given). A token matches by
    its vocabulary string or by its text without surrounding whitespace, so `"="` finds `=` in a word-level
    vocabulary and `Ġ=` (a space then `=`) in a byte-level BPE one."""

    kind: ClassVar[str] = "tokens"
    tokens: tuple[str, ...] = ()

    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.tokens))

    def select(self, example: Example, index: int, tokenizer: PreTrainedTokenizerBase | None = None
               ) -> list[tuple[str, int]]:
        if tokenizer is None:
            raise ValueError("TokenMatch needs the tokenizer to read token strings")
        ids = list(example.ids)
        raw = tokenizer.convert_ids_to_tokens(ids)
        wanted = dict.fromkeys(self.tokens)
        out = []
        for i, (t, tid) in enumerate(zip(raw, ids)):
            if t in wanted:
                out.append((t, i))
                continue
            text = tokenizer.decode([tid]).strip()
            if text in wanted:
                out.append((text, i))
        return out


@dataclass(frozen=True)
class Named(Selector):
    """Positions by name from the example (e.g. the task's `answer` or `step2.value`).

    `missing="error"` refuses an example without one of the names; `"skip"` leaves that row out
    (a 2-step problem has no `step3.value`)."""

    kind: ClassVar[str] = "named"
    names: tuple[str, ...] = ()
    missing: Literal["error", "skip"] = "error"

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("Named needs at least one position name")
        if self.missing not in ("error", "skip"):
            raise ValueError(f"missing must be 'error' or 'skip', got {self.missing!r}")

    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.names))

    def select(self, example: Example, index: int, tokenizer: PreTrainedTokenizerBase | None = None
               ) -> list[tuple[str, int]]:
        out = []
        n = len(example.ids)
        for name in self.names:
            if name not in example.positions:
                if self.missing == "skip":
                    continue
                have = ", ".join(sorted(example.positions)) or "none"
                raise PositionError(f"example {index} has no position named {name!r} (it has: {have}); "
                                    f"pass missing='skip' to leave such rows out")
            j = int(example.positions[name])
            if not 0 <= j < n:
                raise PositionError(f"position {name!r}={j} is outside example {index}, which has {n} tokens")
            out.append((name, j))
        return out


PositionsLike = Selector | int | Sequence[int] | str | None


def as_selector(positions: PositionsLike, default: Selector | None = None) -> Selector:
    """The selector meant by an int, a list of ints (negatives count from the end), `"all"`, `"last"`, a
    CLI string (`indices:-1,-2`, `named:answer`), a name from the task (`"answer"`), or a selector itself."""
    if positions is None:
        if default is None:
            raise ValueError("no positions given: pass indices, 'all', 'last' or a selector")
        return default
    if isinstance(positions, Selector):
        return positions
    if isinstance(positions, bool):
        raise TypeError("positions cannot be a bool")
    if isinstance(positions, int):
        return Indices((positions,))
    if isinstance(positions, str):
        kind = positions.partition(":")[0]
        if kind in ("all", "last", "indices", "tokens", "named"):
            return parse_selector(positions)
        return Named((positions,))
    items = list(positions)
    if not items or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise ValueError(f"positions {positions!r}: give integers (negative from the end), 'all', 'last', a task "
                         f"position name or a selector")
    return Indices(tuple(int(i) for i in items))


def absolute_indices(positions: PositionsLike, n: int, what: str = "the sequence") -> tuple[int, ...]:
    """Absolute indices in a sequence of `n` tokens (no example needed): ints, Indices, LastToken or AllTokens."""
    sel = as_selector(positions, AllTokens())
    if isinstance(sel, AllTokens):
        return tuple(range(n))
    if isinstance(sel, LastToken):
        return (n - 1,)
    if not isinstance(sel, Indices):
        raise ValueError(f"{type(sel).__name__} positions need an example with named positions or tokens; here "
                         f"give indices (negative from the end), 'all' or 'last'")
    out = []
    for i in sel.indices:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise PositionError(f"position {i} is outside {what}, which has {n} tokens (valid: {-n}..{n - 1})")
        out.append(j)
    return tuple(out)


def parse_selector(text: str) -> Selector:
    """CLI form: `all`, `last`, `indices:-1,-2`, `tokens:=,;`, `named:answer,step1.value[:skip]`."""
    kind, _, rest = text.partition(":")
    if kind == "all":
        return AllTokens()
    if kind == "last":
        return LastToken()
    if kind == "indices":
        try:
            return Indices(tuple(int(x) for x in rest.split(",") if x))
        except ValueError:
            raise ValueError(f"indices take integers, e.g. indices:-1,-2; got {text!r}") from None
    if kind == "tokens":
        return TokenMatch(tuple(t for t in rest.split(",") if t))
    if kind == "named":
        names, _, missing = rest.partition(":")
        return Named(tuple(n for n in names.split(",") if n), missing or "error")  # type: ignore[arg-type]
    raise ValueError(f"unknown positions {text!r}; use all, last, indices:I,J, tokens:T,U or named:NAME,NAME[:skip]")


__all__ = ["AllTokens", "Indices", "LastToken", "Named", "PositionError", "PositionsLike", "Selector", "TokenMatch",
           "absolute_indices", "as_selector", "parse_selector"]
