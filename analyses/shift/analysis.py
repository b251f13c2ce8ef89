"""The shift battery (DataAlchemy, arXiv 2508.01191, on the zoo): accuracy, CoT rate, chain validity and edit
distance to the reference chain for every member, in distribution and under shifts of length, task, format and
variables; each shift's accuracy drop with a bootstrap interval, and whether a post-trained member drops more or
less than base-s (the difference of drops, resampled over the same problems for every member).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from analyses.shift.grading import OUTCOMES, chain_distance, grade_chain
from analyses.shift.transforms import (
    DEFAULT_SHIFTS,
    Shift,
    ShiftedProblem,
    shifted_problems,
)
from interp.generate import generate_ids
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.stats import bootstrap_ci, percentile_ci

ZOO = ("organism/base-s", "organism/base-m", "organism/base-l", "organism/sft", "organism/rl", "organism/dpo")
BASELINE = "organism/base-s"
RESULT_VERSION = 2


@dataclass(frozen=True)
class Score:
    """A statistic with its 95% bootstrap interval and the number of problems it rests on."""

    value: float
    ci: tuple[float, float]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci": list(self.ci), "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Score:
        return cls(float(d["value"]), (float(d["ci"][0]), float(d["ci"][1])), int(d["n"]))

    @classmethod
    def mean(cls, x: np.ndarray, n_boot: int, seed: int) -> Score:
        x = np.asarray(x, dtype=float)
        if len(x) == 0:
            return cls(float("nan"), (float("nan"), float("nan")), 0)
        return cls(float(x.mean()), bootstrap_ci(x, n_boot, seed), len(x))

    def fmt(self, pct: bool = True) -> str:
        if not np.isfinite(self.value):
            return "n/a"
        f = (lambda v: f"{100 * v:.0f}%") if pct else (lambda v: f"{v:.2f}")
        return f"{f(self.value)} [{f(self.ci[0])}, {f(self.ci[1])}]"


@dataclass(frozen=True)
class ShiftConfig:
    """Members, shift conditions and problems per step count; paired shifts reuse the in-distribution problems."""

    models: tuple[str, ...] = ZOO
    shifts: tuple[Shift, ...] = DEFAULT_SHIFTS
    n_per_step: int = 100
    seed: int = 515_000
    n_boot: int = 1000
    max_new_tokens: int = 96
    batch_size: int = 256
    baseline: str = BASELINE
    cache_dir: str = field(default_factory=lambda: str(cache_dir("shift")))

    def __post_init__(self) -> None:
        if self.n_per_step < 2:
            raise ValueError(f"n_per_step must be >= 2 for an interval, got {self.n_per_step}")
        if not self.shifts or self.shifts[0].kind != "none":
            raise ValueError("the first shift must be the in-distribution condition (kind 'none')")
        if self.baseline not in self.models:
            raise ValueError(f"baseline {self.baseline!r} is not among the models {list(self.models)}")
        names = [s.name for s in self.shifts]
        if len(set(names)) != len(names):
            raise ValueError(f"shift names must be unique, got {names}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shifts"] = [s.to_dict() for s in self.shifts]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShiftConfig:
        d = dict(d)
        d["models"] = tuple(d["models"])
        d["shifts"] = tuple(Shift.from_dict(s) for s in d["shifts"])
        return cls(**d)

    def key(self, checksum: str) -> str:
        d = {k: v for k, v in self.to_dict().items() if k not in ("models", "cache_dir", "baseline")}
        blob = json.dumps({"checksum": checksum, "version": RESULT_VERSION, **d}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def problems(self, shift: Shift) -> list[ShiftedProblem]:
        out: list[ShiftedProblem] = []
        for k in shift.steps:
            out += shifted_problems(shift, k, self.n_per_step, self.seed)
        return out


@dataclass(frozen=True)
class Condition:
    """One member under one shift: per-problem outcomes (aligned with `ShiftConfig.problems(shift)`) and scores."""

    shift: str
    n_steps: tuple[int, ...]
    correct: tuple[int, ...]
    cot: tuple[int, ...]
    invalid: tuple[int, ...]
    chain_correct: tuple[int, ...]
    inconsistent: tuple[int, ...]  # verbose steps with wrong written arithmetic
    steps_written: tuple[int, ...]
    distance: tuple[float, ...]  # normalised edit distance to the nearest reference chain (NaN for direct answers)
    examples: tuple[tuple[str, str], ...]  # (prompt, completion) of the first few problems
    answers: tuple[int, ...] = ()  # the answer read from each completion, -1 when none could be read

    def arr(self, name: str) -> np.ndarray:
        return np.asarray(getattr(self, name), dtype=float)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["distance"] = [None if not np.isfinite(x) else x for x in self.distance]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Condition:
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        for k, v in kw.items():
            if isinstance(v, list):
                kw[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        kw["distance"] = tuple(float("nan") if x is None else float(x) for x in d["distance"])
        return cls(**kw)

    def scores(self, n_boot: int, seed: int = 0) -> dict[str, Score]:
        """Accuracy, CoT rate, invalid rate; among CoT answers: chain validity, the four (chain, answer) cells,
        inconsistent-step rate and edit distance to the reference chain."""
        cot = self.arr("cot").astype(bool)
        c, ch = self.arr("correct"), self.arr("chain_correct")
        out = {"accuracy": Score.mean(c, n_boot, seed), "cot_rate": Score.mean(self.arr("cot"), n_boot, seed),
               "invalid_rate": Score.mean(self.arr("invalid"), n_boot, seed),
               "chain_valid": Score.mean(ch[cot], n_boot, seed)}
        cells = {"right_chain_right_answer": (ch == 1) & (c == 1), "wrong_chain_right_answer": (ch == 0) & (c == 1),
                 "right_chain_wrong_answer": (ch == 1) & (c == 0), "wrong_chain_wrong_answer": (ch == 0) & (c == 0)}
        for name in OUTCOMES:
            out[name] = Score.mean(cells[name][cot].astype(float), n_boot, seed)
        sw = self.arr("steps_written")[cot]
        inc = self.arr("inconsistent")[cot]
        out["inconsistent_step_rate"] = Score.mean(inc / np.maximum(sw, 1), n_boot, seed)
        dist = self.arr("distance")
        out["edit_distance"] = Score.mean(dist[cot], n_boot, seed)
        return out


@dataclass(frozen=True)
class MemberShift:
    name: str
    checksum: str
    conditions: tuple[Condition, ...]

    def get(self, shift: str) -> Condition:
        for c in self.conditions:
            if c.shift == shift:
                return c
        raise KeyError(f"{self.name} has no condition {shift!r}; it has {[c.shift for c in self.conditions]}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "conditions": [c.to_dict() for c in self.conditions]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemberShift:
        return cls(d["name"], d["checksum"], tuple(Condition.from_dict(c) for c in d["conditions"]))


@dataclass(frozen=True)
class Drop:
    """In-distribution minus shifted accuracy for one member, and that drop minus the baseline's (same problems,
    same resamples: `vs_baseline` > 0 means the member degrades more); `retention` = shifted / in-distribution."""

    model: str
    shift: str
    drop: Score
    retention: Score
    vs_baseline: Score
    verdict: str  # more | less | same (95% interval of vs_baseline above 0, below 0, or across it)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "shift": self.shift, "drop": self.drop.to_dict(),
                "retention": self.retention.to_dict(), "vs_baseline": self.vs_baseline.to_dict(),
                "verdict": self.verdict}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Drop:
        return cls(d["model"], d["shift"], Score.from_dict(d["drop"]), Score.from_dict(d["retention"]),
                   Score.from_dict(d["vs_baseline"]), d["verdict"])


@dataclass(frozen=True)
class ShiftResult:
    config: ShiftConfig
    members: tuple[MemberShift, ...]
    drops: tuple[Drop, ...]
    libraries: dict[str, str]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "members": [m.to_dict() for m in self.members],
                "drops": [d.to_dict() for d in self.drops], "libraries": self.libraries, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShiftResult:
        return cls(ShiftConfig.from_dict(d["config"]), tuple(MemberShift.from_dict(m) for m in d["members"]),
                   tuple(Drop.from_dict(x) for x in d["drops"]), d["libraries"], d["seed"])

    def member(self, name: str) -> MemberShift:
        for m in self.members:
            if m.name in (name, f"organism/{name}"):
                return m
        raise KeyError(f"{name!r} was not measured; measured: {[m.name for m in self.members]}")

    def drop(self, model: str, shift: str) -> Drop:
        for d in self.drops:
            if d.model in (model, f"organism/{model}") and d.shift == shift:
                return d
        raise KeyError(f"no drop for {model!r} under {shift!r}")


# ------------------------------------------------------------------------------------------- measuring

def measure(model: Any, problems: Sequence[ShiftedProblem], shift: str, max_new_tokens: int = 96,
            batch_size: int = 256, n_examples: int = 3) -> Condition:
    """Greedy completions of `model` (an `interp.Model` over the organism tokenizer) to the shown prompts,
    graded against each problem's true chain."""
    return measure_many(model, [(shift, problems)], max_new_tokens, batch_size, n_examples)[0]


def measure_many(model: Any, conditions: Sequence[tuple[str, Sequence[ShiftedProblem]]], max_new_tokens: int = 96,
                 batch_size: int = 256, n_examples: int = 3) -> list[Condition]:
    """`measure` of several conditions at once: every prompt goes through one greedy generation, ordered by
    prompt length so a batch holds problems of similar length (less padding, completions of similar length
    end together), which on the organism's tiny models costs far less than a call per condition. Greedy
    completions do not depend on which rows share a batch, so each condition comes out as `measure` gives it."""
    tok = model.tokenizer
    unk = tok.unk_token_id
    ids, owner = [], []
    for c, (_, problems) in enumerate(conditions):
        for p in problems:
            x = [tok.bos_token_id, *tok.convert_tokens_to_ids(list(p.prompt))]
            if unk is not None and unk in x:
                raise ValueError(f"a shifted prompt has words the tokenizer does not know: {' '.join(p.prompt)!r}")
            ids.append(x)
            owner.append(c)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    done = generate_ids(model.hf, tok, [ids[i] for i in order], max_new_tokens, batch_size=batch_size)
    outs: list[list[int]] = [[] for _ in ids]
    for i, o in zip(order, done):
        outs[i] = o
    out, start = [], 0
    for shift, problems in conditions:
        out.append(_grade(tok, problems, outs[start:start + len(problems)], shift, n_examples))
        start += len(problems)
    return out


def _grade(tok: Any, problems: Sequence[ShiftedProblem], outs: Sequence[Sequence[int]], shift: str,
           n_examples: int) -> Condition:
    """One condition's completions graded against each problem's true chain."""
    rows: dict[str, list[Any]] = {k: [] for k in ("correct", "cot", "invalid", "chain_correct", "inconsistent",
                                                  "steps_written", "distance", "answers")}
    examples = []
    for i, (p, o) in enumerate(zip(problems, outs)):
        words = tok.convert_ids_to_tokens(o)
        g = grade_chain(p.truth, p.answer, words, dict(p.ops) if p.ops else None)
        rows["correct"].append(int(g.correct))
        rows["cot"].append(int(g.cot))
        rows["invalid"].append(int(g.format == "invalid"))
        rows["chain_correct"].append(int(g.chain_correct))
        rows["inconsistent"].append(g.inconsistent_steps)
        rows["steps_written"].append(g.steps_written)
        refs = {f: list(r) for f, r in p.references}
        rows["distance"].append(chain_distance(words, refs) if g.format != "direct" else float("nan"))
        rows["answers"].append(-1 if g.answer is None else g.answer)
        if i < n_examples:
            examples.append((" ".join(p.prompt), " ".join(words)))
    cols = {k: tuple(v) for k, v in rows.items()}
    return Condition(shift, tuple(p.n_steps for p in problems), cols["correct"], cols["cot"], cols["invalid"],
                     cols["chain_correct"], cols["inconsistent"], cols["steps_written"], cols["distance"],
                     tuple(examples), cols["answers"])


def member_shift(model: Any, config: ShiftConfig, progress: bool = False) -> MemberShift:
    """Every shift condition on one loaded member."""
    named = [(s.name, config.problems(s)) for s in tqdm(config.shifts, desc=f"shift {model.name}", disable=not progress)]
    conds = measure_many(model, named, config.max_new_tokens, config.batch_size)
    return MemberShift(model.name, model.checksum, tuple(conds))


def _boot_drop(acc_in: np.ndarray, acc_sh: np.ndarray, idx_in: np.ndarray, idx_sh: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap replicates of the drop (in - shifted accuracy) and of the retention (shifted / in)."""
    ma, mb = acc_in[idx_in].mean(1), acc_sh[idx_sh].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ma - mb, np.where(ma > 0, mb / ma, np.nan)


def drops(members: Sequence[MemberShift], config: ShiftConfig) -> list[Drop]:
    """Accuracy drop of every member under every shift, with intervals from one set of resamples shared by all
    members (problems are the same for every member): paired shifts resample in-distribution and shifted
    problems together, unpaired ones independently."""
    base = next(m for m in members if m.name == config.baseline)
    rng_seed = config.seed + 17
    out = []
    for si, shift in enumerate(config.shifts[1:], 1):
        acc_in = {m.name: m.get(config.shifts[0].name).arr("correct") for m in members}
        acc_sh = {m.name: m.get(shift.name).arr("correct") for m in members}
        n_in, n_sh = len(acc_in[base.name]), len(acc_sh[base.name])
        paired = shift.paired and n_in == n_sh
        rng = np.random.default_rng([rng_seed, si])
        idx_in = rng.integers(0, n_in, size=(config.n_boot, n_in))
        idx_sh = idx_in if paired else rng.integers(0, n_sh, size=(config.n_boot, n_sh))

        base_drop, _ = _boot_drop(acc_in[base.name], acc_sh[base.name], idx_in, idx_sh)
        point_base = acc_in[base.name].mean() - acc_sh[base.name].mean()
        for m in members:
            a, b = acc_in[m.name], acc_sh[m.name]
            d_boot, r_boot = _boot_drop(a, b, idx_in, idx_sh)
            d = float(a.mean() - b.mean())
            r = float(b.mean() / a.mean()) if a.mean() > 0 else float("nan")
            vs = d - float(point_base)
            vs_ci = percentile_ci(d_boot - base_drop)
            verdict = "more" if vs_ci[0] > 0 else "less" if vs_ci[1] < 0 else "same"
            if m.name == base.name:
                verdict = "baseline"
            out.append(Drop(m.name, shift.name, Score(d, percentile_ci(d_boot), n_sh),
                            Score(r, percentile_ci(r_boot), n_sh), Score(vs, vs_ci, n_sh), verdict))
    return out


def run(config: ShiftConfig = ShiftConfig(), progress: bool = True) -> ShiftResult:
    """Every member under every shift; each member's conditions are cached by its checksum and the config."""
    from interp.models import load

    members = []
    for name in config.models:
        model = load(name)
        path = Path(config.cache_dir) / f"{config.key(model.checksum)}-{name.replace('/', '_')}.json"
        if path.exists():
            members.append(MemberShift.from_dict(read_json(path)))
            continue
        ms = member_shift(model, config, progress)
        write_json(path, ms.to_dict(), indent=None)
        members.append(ms)
    return ShiftResult(config, tuple(members), tuple(drops(members, config)), library_versions(), config.seed)


__all__ = [
    "BASELINE",
    "ZOO",
    "Condition",
    "Drop",
    "MemberShift",
    "Score",
    "ShiftConfig",
    "ShiftResult",
    "drops",
    "measure",
    "measure_many",
    "member_shift",
    "run",
]
