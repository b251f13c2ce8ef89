"""Interventions on one hook's activations: add, subtract, project out, or clamp a component of a direction.

Each says where it acts: `"auto"` (the default: the generated tokens inside generation, every token in any
other forward, so a steered forward is never silently unsteered), `"prompt"` (every real prompt token, padding never), `"generated"` (every token
the model writes), `"all"`, `Positions((-1,))` (indices in each row's own prompt; negative from its end),
or a bool mask `[batch, pos]` laid out like the attention mask of the padded batch the model receives.
`rows` (optional) restricts an intervention to some rows of the batch (a tuple of row indices, a range or a
slice; default every row), so one batched forward or generation can hold many conditions, each steering only
its own rows (as nnsight's per-invoke batch groups do).
`"generated"` acts at the positions whose input is a generated token, so the first new token (predicted at the
prompt's last position) is unsteered and every later one is (ASC's "every new token").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float

from interp.positions import AllTokens, Indices, LastToken, Selector, as_selector
from interp.steering.vector import SteeringVector

WHERE_NAMES = ("auto", "prompt", "generated", "all")


Positions = Indices
"""Token indices within each row's prompt (BOS included when the model prepends one); -1 is the last. The
same `interp.positions.Indices` harvest and patching take."""


Where = Literal["auto", "prompt", "generated", "all"] | Positions | Bool[torch.Tensor, "batch pos"]


def normalize_where(where: Any) -> Any:
    """`where` in the engine's terms: a name, Indices, or a bool mask; ints, lists of ints, LastToken and
    AllTokens (the toolkit's positions type) are accepted too."""
    if isinstance(where, str) and where in WHERE_NAMES:
        return where
    if isinstance(where, torch.Tensor):
        return where
    if isinstance(where, (int, list, tuple, str, Selector)):
        sel = as_selector(where)
        if isinstance(sel, LastToken):
            return Indices((-1,))
        if isinstance(sel, AllTokens):
            return "prompt"
        if isinstance(sel, Indices):
            return sel
        if isinstance(where, str):
            raise ValueError(f"where={where!r}: use one of {', '.join(WHERE_NAMES)}, 'last', indices, Positions((i, ...)) "
                             f"or a bool mask [batch, pos]")
        raise ValueError(f"steering positions must be indices, 'all'/'last' or a name in {WHERE_NAMES}; "
                         f"{type(sel).__name__} needs a dataset (map names to a token mask with interp.tasks)")
    return where


def check_where(where: Any) -> None:
    if isinstance(where, str):
        if where not in WHERE_NAMES:
            raise ValueError(f"where={where!r}: use one of {', '.join(WHERE_NAMES)}, Positions((i, ...)) or a bool "
                             f"mask [batch, pos]")
    elif isinstance(where, torch.Tensor):
        if where.dim() != 2 or where.dtype != torch.bool:
            raise ValueError(f"a token mask must be a bool tensor [batch, pos], got {where.dtype} {tuple(where.shape)}")
    elif not isinstance(where, Positions):
        raise ValueError(f"where={where!r}: use 'auto', 'prompt', 'generated', 'all', Positions((i, ...)) or a bool mask")


Rows = tuple[int, ...] | range | slice | None


def normalize_rows(rows: Any) -> Rows:
    """`rows` as a tuple of non-negative row indices, a range or a slice (None: every row); clear errors otherwise."""
    if rows is None or isinstance(rows, range):
        return rows
    if isinstance(rows, slice):
        if any(x is not None and (not isinstance(x, int) or x < 0) for x in (rows.start, rows.stop)) or \
                (rows.step is not None and (not isinstance(rows.step, int) or rows.step < 1)):
            raise ValueError(f"rows={rows!r}: a slice of rows needs non-negative int bounds and a positive step")
        return rows
    if isinstance(rows, int) or not all(isinstance(r, int) and not isinstance(r, bool) for r in rows):
        raise ValueError(f"rows={rows!r}: give a tuple of row indices, a range or a slice")
    rows = tuple(rows)
    if any(r < 0 for r in rows):
        raise ValueError(f"rows={rows!r}: row indices count from 0 (no negative indices)")
    return rows


def row_mask(rows: Rows, batch: int) -> torch.Tensor | None:
    """Bool [batch] of the rows an intervention acts on (None: all); an error names rows outside the batch."""
    if rows is None:
        return None
    if isinstance(rows, slice):
        if rows.stop is not None and rows.stop > batch:
            raise IndexError(f"rows {rows.start or 0}..{rows.stop - 1} fall outside a batch of {batch} rows")
        idx = list(range(batch))[rows]
    else:
        idx = list(rows)
        bad = [r for r in idx if r >= batch]
        if bad:
            raise IndexError(f"rows {bad[:5]} fall outside a batch of {batch} rows (valid: 0..{batch - 1})")
    mask = torch.zeros(batch, dtype=torch.bool)
    mask[idx] = True
    return mask


@dataclass(frozen=True, eq=False)
class Intervention:
    """Base: a direction at a hook, and where it acts. Subclasses say what they change (`delta`)."""

    vector: SteeringVector
    where: Any = "auto"
    hook: str | None = None  # defaults to the vector's own hook
    rows: Rows = field(default=None, kw_only=True)  # batch rows it acts on (indices, range, slice); None: all

    def __post_init__(self) -> None:
        if not isinstance(self.vector, SteeringVector):
            raise TypeError(f"{type(self).__name__} takes a SteeringVector (wrap a tensor with "
                            f"SteeringVector(tensor, hook=...)), got {type(self.vector).__name__}")
        object.__setattr__(self, "where", normalize_where(self.where))
        check_where(self.where)
        object.__setattr__(self, "rows", normalize_rows(self.rows))

    @property
    def at(self) -> str:
        return self.hook or self.vector.hook

    def delta(self, h: Float[torch.Tensor, "batch pos d"], v: torch.Tensor | None = None,
              u: torch.Tensor | None = None) -> torch.Tensor:
        """The change to `h`; `v` and `u` (the vector and its unit, already on h's device and dtype) spare a copy."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        where = self.where if not isinstance(self.where, torch.Tensor) else f"mask{tuple(self.where.shape)}"
        where = dataclasses.asdict(where) if isinstance(where, Positions) else where
        extra = {k: getattr(self, k) for k in ("scale", "value") if hasattr(self, k)}
        if self.rows is not None:
            r = self.rows
            extra["rows"] = [r.start, r.stop, r.step] if isinstance(r, (slice, range)) else list(r)
        return {"kind": type(self).__name__, "hook": self.at, "where": where, "norm": self.vector.norm, **extra}


@dataclass(frozen=True, eq=False)
class Add(Intervention):
    """h + scale * v."""

    scale: float = 1.0

    def delta(self, h: torch.Tensor, v: torch.Tensor | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
        return (self.scale * (self.vector.vector.to(h) if v is None else v)).expand_as(h)


@dataclass(frozen=True, eq=False)
class Subtract(Intervention):
    """h - scale * v (ASC's compression step with v = verbose - concise)."""

    scale: float = 1.0

    def delta(self, h: torch.Tensor, v: torch.Tensor | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
        return (-self.scale * (self.vector.vector.to(h) if v is None else v)).expand_as(h)


@dataclass(frozen=True, eq=False)
class ProjectOut(Intervention):
    """h - (h . u) u with u = v / |v|: the component along v becomes zero."""

    def delta(self, h: torch.Tensor, v: torch.Tensor | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
        u = self.vector.unit().to(h) if u is None else u
        return -(h @ u)[..., None] * u


@dataclass(frozen=True, eq=False)
class Clamp(Intervention):
    """h + (value - h . u) u: the component along u = v / |v| is set to `value`."""

    value: float = 0.0

    def delta(self, h: torch.Tensor, v: torch.Tensor | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
        u = self.vector.unit().to(h) if u is None else u
        return (self.value - h @ u)[..., None] * u


__all__ = ["WHERE_NAMES", "Add", "Clamp", "Intervention", "Positions", "ProjectOut", "Rows", "Subtract", "Where",
           "normalize_rows", "row_mask"]
