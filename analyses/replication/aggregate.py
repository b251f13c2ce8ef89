"""Aggregation over training seeds: one number per seed (with that seed's bootstrap interval kept beside it),
its mean and spread over seeds, and a finding's verdict (in how many seeds its claim holds).

The bootstrap intervals say how sure we are about one checkpoint; the spread over seeds says how much the
number moves when the same recipe is trained again. Both are kept, never merged."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

VERDICTS = ("every seed", "most seeds", "some seeds", "one seed", "no seed", "not measured")


@dataclass(frozen=True)
class SeedValue:
    """One seed's number, its 95% bootstrap interval over problems (None when the analysis gives none) and
    a note (e.g. why the number could not be measured in that seed: then `value` is nan)."""

    seed: int
    value: float
    ci: tuple[float, float] | None = None
    note: str = ""

    @property
    def measured(self) -> bool:
        return not math.isnan(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "value": None if math.isnan(self.value) else self.value,
                "ci": None if self.ci is None else list(self.ci), "note": self.note}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SeedValue:
        v = d["value"]
        return cls(int(d["seed"]), math.nan if v is None else float(v),
                   None if d.get("ci") is None else (float(d["ci"][0]), float(d["ci"][1])), d.get("note", ""))


@dataclass(frozen=True)
class Replicated:
    """One quantity over seeds: per-seed values (ordered by seed), their mean, sample sd (ddof=1; 0 for one
    seed) and min-max range over the measured seeds."""

    name: str
    values: tuple[SeedValue, ...]
    mean: float
    sd: float
    lo: float
    hi: float
    fmt: str = "num"  # how the values are written: see `format_value`

    @property
    def n(self) -> int:
        return sum(v.measured for v in self.values)

    @classmethod
    def of(cls, name: str, values: Sequence[SeedValue], fmt: str = "num") -> Replicated:
        """Aggregate `values` (seeds must be distinct); unmeasured (nan) seeds are kept but not averaged."""
        seeds = [v.seed for v in values]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{name}: seeds repeat ({seeds}); one value per seed")
        vals = tuple(sorted(values, key=lambda v: v.seed))
        xs = [v.value for v in vals if v.measured]
        if not xs:
            return cls(name, vals, math.nan, math.nan, math.nan, math.nan, fmt)
        mean = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        return cls(name, vals, mean, sd, min(xs), max(xs), fmt)

    def to_dict(self) -> dict[str, Any]:
        nan = lambda x: None if math.isnan(x) else x
        return {"name": self.name, "values": [v.to_dict() for v in self.values], "mean": nan(self.mean),
                "sd": nan(self.sd), "min": nan(self.lo), "max": nan(self.hi), "n": self.n, "fmt": self.fmt}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Replicated:
        nan = lambda x: math.nan if x is None else float(x)
        return cls(d["name"], tuple(SeedValue.from_dict(v) for v in d["values"]), nan(d["mean"]), nan(d["sd"]),
                   nan(d["min"]), nan(d["max"]), d.get("fmt", "num"))


def verdict(k: int, n: int) -> str:
    """How widely a claim holds: in every measured seed, in most (more than half), in some (more than one,
    at most half), in one, in none; "not measured" when no seed could decide it."""
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n], got k={k}, n={n}")
    if n == 0:
        return "not measured"
    if k == n:
        return "every seed"
    if k == 0:
        return "no seed"
    if k == 1:
        return "one seed"
    return "most seeds" if 2 * k > n else "some seeds"


@dataclass(frozen=True)
class Finding:
    """A headline claim checked in every seed: `holds` maps seed -> True/False (None: not measurable there,
    with the reason in that seed's value note); `value` holds the per-seed numbers that decide it, `context`
    any further per-seed numbers the sentence shows. `verdict` and the counts k of n follow from `holds`."""

    id: str
    claim: str  # the claim as the report states it, with its threshold
    metric: str  # what `value` is, in words ("share of the CoT-rate gap closed by grafting layer 3 alone")
    holds: Mapping[int, bool | None]
    value: Replicated
    context: tuple[Replicated, ...] = ()
    note: str = ""  # e.g. "base-m and base-l were trained with one seed only"

    @property
    def k(self) -> int:
        return sum(1 for h in self.holds.values() if h is True)

    @property
    def n(self) -> int:
        return sum(1 for h in self.holds.values() if h is not None)

    @property
    def verdict(self) -> str:
        return verdict(self.k, self.n)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "claim": self.claim, "metric": self.metric,
                "holds": {str(s): h for s, h in sorted(self.holds.items())}, "verdict": self.verdict,
                "k": self.k, "n": self.n, "value": self.value.to_dict(),
                "context": [c.to_dict() for c in self.context], "note": self.note}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        return cls(d["id"], d["claim"], d["metric"], {int(s): h for s, h in d["holds"].items()},
                   Replicated.from_dict(d["value"]), tuple(Replicated.from_dict(c) for c in d.get("context", ())),
                   d.get("note", ""))

    @property
    def fmt(self) -> str:
        return self.value.fmt

    def with_note(self, note: str) -> Finding:
        return dataclasses.replace(self, note=note)


def format_value(x: float, fmt: str) -> str:
    """A number as the report writes it: `pct` 0.76 -> 76%, `signed` +0.06, `num` 0.76, `int` 3; nan -> n/a."""
    if math.isnan(x):
        return "n/a"
    if fmt == "pct":
        return f"{100 * x:.0f}%"
    if fmt == "signed":
        return f"{x:+.2f}"
    if fmt == "num":
        return f"{x:.2f}"
    if fmt == "int":
        return f"{x:.0f}"
    raise ValueError(f"unknown format {fmt!r}; use pct, num, signed or int")


def counts_text(f: Finding) -> str:
    """`3 of 3 seeds (every seed)`, the verdict with its counts."""
    if f.n == 0:
        return "not measured in any seed"
    return f"{f.k} of {f.n} seed{'s' if f.n != 1 else ''} ({f.verdict})"


def finding_sentence(f: Finding) -> str:
    """The finding with its verdict and numbers: claim: k of n seeds (verdict); per seed, the deciding value
    with its bootstrap interval and whether the claim holds there; mean and sd over seeds; context numbers."""
    note = f" Note: {f.note.rstrip('.')}." if f.note else ""
    if f.n == 0:
        why = "; ".join(dict.fromkeys(v.note for v in f.value.values if v.note))
        return f"{f.claim.rstrip('.')}: not measured in any seed{f' ({why})' if why else ''}.{note}"
    per_seed = []
    for v in f.value.values:
        ci = f" [{format_value(v.ci[0], f.fmt)}, {format_value(v.ci[1], f.fmt)}]" if v.ci is not None and v.measured else ""
        holds = f.holds.get(v.seed)
        mark = "" if holds is None else (" holds" if holds else " fails")
        per_seed.append(f"seed {v.seed} {format_value(v.value, f.fmt)}{ci}{mark}" + (f" ({v.note})" if v.note else ""))
    spread = (f"; mean {format_value(f.value.mean, f.fmt)}, sd {format_value(f.value.sd, 'pct' if f.fmt == 'pct' else 'num')}"
              f" over {f.value.n} seeds" if f.value.n > 1 else "")
    ctx = "".join(f"; {c.name} " + " / ".join(format_value(v.value, c.fmt) for v in c.values) for c in f.context)
    return f"{f.claim.rstrip('.')}: {counts_text(f)}. Per seed, {f.metric}: {'; '.join(per_seed)}{spread}{ctx}.{note}"


__all__ = ["VERDICTS", "Finding", "Replicated", "SeedValue", "counts_text", "finding_sentence", "format_value",
           "verdict"]
