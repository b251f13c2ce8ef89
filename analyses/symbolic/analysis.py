"""Semantics vs symbols (Tang et al. 2023, arXiv 2305.14825) on the organism: the same problems with the rules
kept and the familiar meaning stripped or contradicted, within the organism's own words.

Variants of each problem (every one has at least one + or -): plain; identity definitions (`+ = + ;` clauses, the
control for the clause format); `+` and `-` swapped by definition (`+ = - ; - = + ;`: contradicted meaning);
operators shown as symbols defined in context (held-out `n u v`, and the `x y z` a definitions-trained member saw);
variables renamed to digits (`5 = 3 ; 7 = 5 + 4`, names that contradict their meaning) and to unseen letters.
Measured on the zoo and on members trained with definitions in a share of their data
(interp.organism.recipes_symbolic), which makes the definition variants fair. Effects are paired differences over the same problems.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from analyses.shift.analysis import ZOO, Condition, Score, measure_many
from analyses.shift.transforms import ShiftedProblem, as_shown
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.organism.recipes_symbolic import (
    RECIPES_SYMBOLIC,
    DefinedProblem,
    SymbolicRecipe,
    redefine,
    symbolic_member,
    with_symbols,
)
from interp.organism.task import FORMATS, Problem, TaskConfig, sample_problems
from interp.stats import percentile_ci

RESULT_VERSION = 1
VARIANTS = ("plain", "identity definitions", "swap + - (defined)", "unseen symbols defined (n u v)",
            "trained symbols defined (x y z)", "digit variable names", "unseen variable names")
SWAP = {"+": "-", "-": "+"}


def defined_shown(d: DefinedProblem) -> ShiftedProblem:
    """A defined problem as the shift machinery grades it (values under the definitions)."""
    p = d.problem
    return ShiftedProblem(tuple(d.prompt_tokens()), tuple((s.target, s.value) for s in p.steps), p.answer,
                          tuple((f, tuple(d.completion_tokens(f))) for f in FORMATS), p.n_steps,
                          tuple(dict.fromkeys(zip(d.symbols, (s.op for s in p.steps)))))


def renamed(problem: Problem, names: str) -> ShiftedProblem:
    """The problem with its chain variables renamed, in order, to the characters of `names`."""
    return as_shown(_rename(problem, names))


def _rename(p: Problem, names: str) -> Problem:
    m = dict(zip([p.start_var, *(s.target for s in p.steps)], names))
    return dataclasses.replace(p, start_var=m[p.start_var], steps=tuple(
        dataclasses.replace(s, target=m[s.target], source=m[s.source]) for s in p.steps))


def variant(problem: Problem, name: str, rng: np.random.Generator) -> ShiftedProblem:
    """One variant of one problem (`rng` draws the digit names)."""
    if name == "plain":
        return as_shown(problem)
    if name == "identity definitions":
        return defined_shown(redefine(problem, {}))
    if name == "swap + - (defined)":
        return defined_shown(redefine(problem, SWAP))
    if name == "unseen symbols defined (n u v)":
        return defined_shown(with_symbols(problem, {"+": "n", "-": "u", "*": "v"}))
    if name == "trained symbols defined (x y z)":
        return defined_shown(with_symbols(problem, {"+": "x", "-": "y", "*": "z"}))
    if name == "digit variable names":
        return renamed(problem, "".join(str(d) for d in rng.permutation(10)[: problem.n_steps + 1]))
    if name == "unseen variable names":
        return renamed(problem, "pqrstuvw")
    raise ValueError(f"unknown variant {name!r}; variants are {VARIANTS}")


@dataclass(frozen=True)
class SymbolicConfig:
    models: tuple[str, ...] = ZOO
    # members trained with definitions, also measured (each trained first if missing: minutes on one thread)
    recipes: tuple[SymbolicRecipe, ...] = RECIPES_SYMBOLIC
    variants: tuple[str, ...] = VARIANTS
    steps: tuple[int, ...] = (1, 2, 3, 4)
    n_per_step: int = 100
    seed: int = 717_000
    n_boot: int = 1000
    max_new_tokens: int = 96
    cache_dir: str = field(default_factory=lambda: str(cache_dir("symbolic")))

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"unknown variants {bad}; variants are {VARIANTS}")
        if not self.variants or self.variants[0] != "plain":
            raise ValueError("the first variant must be 'plain' (the reference of every paired difference)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["recipes"] = [r.to_dict() for r in self.recipes]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SymbolicConfig:
        d = dict(d)
        for k in ("models", "variants", "steps"):
            d[k] = tuple(d[k])
        d["recipes"] = tuple(_recipe(r) for r in d["recipes"])
        return cls(**d)

    def key(self, name: str, checksum: str) -> str:
        d = {k: v for k, v in self.to_dict().items() if k not in ("models", "cache_dir", "recipes")}
        blob = json.dumps({"name": name, "checksum": checksum, "version": RESULT_VERSION, **d}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def problems(self) -> list[Problem]:
        """`n_per_step` problems per step count, each with at least one + or - (so the swap changes it)."""
        out = []
        for k in self.steps:
            pool = sample_problems(self.seed + k, 4 * self.n_per_step, TaskConfig(min_steps=1, max_steps=max(4, k)), k)
            keep = [p for p in pool if any(s.op in SWAP for s in p.steps)][: self.n_per_step]
            if len(keep) < self.n_per_step:
                raise ValueError(f"only {len(keep)} {k}-step problems with + or - in the pool")
            out += keep
        return out

    def shown(self) -> dict[str, list[ShiftedProblem]]:
        problems = self.problems()
        out = {}
        for i, v in enumerate(self.variants):
            rng = np.random.default_rng([self.seed, i])
            out[v] = [variant(p, v, rng) for p in problems]
        return out


@dataclass(frozen=True)
class Contrast:
    """A paired difference of accuracies between two variants, with its 95% bootstrap interval."""

    name: str
    value: float
    ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "ci": list(self.ci)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Contrast:
        return cls(d["name"], float(d["value"]), (float(d["ci"][0]), float(d["ci"][1])))


@dataclass(frozen=True)
class MemberSymbolic:
    name: str
    checksum: str
    conditions: tuple[Condition, ...]
    familiar_answer_rate: Score  # swap variant: answers equal to the answer under the familiar meaning (when it differs)
    contrasts: tuple[Contrast, ...]

    def get(self, v: str) -> Condition:
        for c in self.conditions:
            if c.shift == v:
                return c
        raise KeyError(f"{self.name} has no variant {v!r}")

    def contrast(self, name: str) -> Contrast:
        return next(c for c in self.contrasts if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "conditions": [c.to_dict() for c in self.conditions],
                "familiar_answer_rate": self.familiar_answer_rate.to_dict(),
                "contrasts": [c.to_dict() for c in self.contrasts]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemberSymbolic:
        return cls(d["name"], d["checksum"], tuple(Condition.from_dict(c) for c in d["conditions"]),
                   Score.from_dict(d["familiar_answer_rate"]), tuple(Contrast.from_dict(c) for c in d["contrasts"]))


@dataclass(frozen=True)
class SymbolicResult:
    config: SymbolicConfig
    members: tuple[MemberSymbolic, ...]
    definitions_members: tuple[str, ...]  # their paths
    libraries: dict[str, str]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "members": [m.to_dict() for m in self.members],
                "definitions_members": list(self.definitions_members), "libraries": self.libraries, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SymbolicResult:
        return cls(SymbolicConfig.from_dict(d["config"]), tuple(MemberSymbolic.from_dict(m) for m in d["members"]),
                   tuple(d["definitions_members"]), d["libraries"], d["seed"])

    def member(self, name: str) -> MemberSymbolic:
        for m in self.members:
            if m.name in (name, f"organism/{name}") or Path(m.name).name == name:
                return m
        raise KeyError(f"{name!r} was not measured; measured: {[m.name for m in self.members]}")


CONTRASTS = (("format cost: plain - identity definitions", "plain", "identity definitions"),
             ("contradiction cost: identity - swapped definitions", "identity definitions", "swap + - (defined)"),
             ("symbol cost: identity definitions - unseen symbols", "identity definitions",
              "unseen symbols defined (n u v)"),
             ("name cost: plain - digit variable names", "plain", "digit variable names"),
             ("name cost: plain - unseen variable names", "plain", "unseen variable names"))


def contrasts(conds: dict[str, Condition], n_boot: int, seed: int) -> tuple[Contrast, ...]:
    """Paired accuracy differences (same problems, resampled together)."""
    out = []
    for i, (name, a, b) in enumerate(CONTRASTS):
        if a not in conds or b not in conds:
            continue
        x, y = conds[a].arr("correct"), conds[b].arr("correct")
        rng = np.random.default_rng([seed, i])
        idx = rng.integers(0, len(x), (n_boot, len(x)))
        out.append(Contrast(name, float(x.mean() - y.mean()), percentile_ci(x[idx].mean(1) - y[idx].mean(1))))
    return tuple(out)


def familiar_rate(plain: list[ShiftedProblem], swapped: list[ShiftedProblem], cond: Condition, n_boot: int,
                  seed: int) -> Score:
    """Among swapped problems whose answer differs from the plain one: share of answers equal to the plain
    (familiar-meaning) answer; the defined answer's share is the accuracy on the same problems."""
    ans = np.asarray(cond.answers)
    differ = np.array([p.answer != s.answer for p, s in zip(plain, swapped)])
    follows = np.array([a == p.answer for a, p in zip(ans, plain)], dtype=float)
    return Score.mean(follows[differ], n_boot, seed)


def _recipe(d: dict[str, Any]) -> SymbolicRecipe:
    from interp.organism.task import FormatMix

    r = dict(d)
    r["task"] = TaskConfig.from_dict(r["task"])
    r["mix"] = FormatMix.from_dict(r["mix"])
    for k in ("train_symbols", "held_out_symbols"):
        r[k] = tuple(r[k])
    r["held_out_meanings"] = tuple(tuple(x) for x in r["held_out_meanings"])
    return SymbolicRecipe(**r)


def analyse_member(model: Any, cfg: SymbolicConfig, shown: dict[str, list[ShiftedProblem]]) -> MemberSymbolic:
    """Every variant's greedy answers (one generation for all of them), the familiar-answer rate and the contrasts."""
    conds = dict(zip(shown, measure_many(model, list(shown.items()), cfg.max_new_tokens)))
    swap = "swap + - (defined)"
    fam = familiar_rate(shown["plain"], shown[swap], conds[swap], cfg.n_boot, cfg.seed) if swap in conds \
        else Score(float("nan"), (float("nan"), float("nan")), 0)
    return MemberSymbolic(model.name, model.checksum, tuple(conds.values()), fam,
                          contrasts(conds, cfg.n_boot, cfg.seed + 1))


def run(config: SymbolicConfig = SymbolicConfig(), progress: bool = True) -> SymbolicResult:
    """Every member (and the definitions-trained one); results cached per member checksum and config."""
    from interp.models import load

    defs = tuple(str(symbolic_member(r)) for r in config.recipes)
    names = [*config.models, *defs]
    shown = config.shown()
    out = []
    for name in tqdm(names, desc="symbolic", disable=not progress):
        model = load(name)
        path = Path(config.cache_dir) / f"{config.key(Path(name).name, model.checksum)}-{Path(name).name}.json"
        if path.exists():
            out.append(MemberSymbolic.from_dict(read_json(path)))
            continue
        res = analyse_member(model, config, shown)
        write_json(path, res.to_dict(), indent=None)
        out.append(res)
    return SymbolicResult(config, tuple(out), defs, library_versions(), config.seed)


__all__ = [
    "CONTRASTS",
    "VARIANTS",
    "Contrast",
    "MemberSymbolic",
    "SymbolicConfig",
    "SymbolicResult",
    "analyse_member",
    "contrasts",
    "defined_shown",
    "familiar_rate",
    "renamed",
    "run",
    "variant",
]
