"""Activation-steered compression (ASC, arXiv 2507.04742) on the zoo: one verbosity direction from 50
(verbose, concise) CoT pairs, subtracted at every generated token of the sft model.

Directions (verbose - concise, difference of means) are read from the residual stream after every layer,
at two kinds of position: `last` (ASC's recipe: the last token of problem + CoT) and `decision` (the `=`
after each step's target from step 2 on, where the format of that step is chosen; step 1's context is the
same in both texts). Layer, gamma and sign are chosen on a validation split (largest length reduction with
accuracy within `accuracy_tolerance` of unsteered and mean KL(steered || unsteered) per generated token
under `kl_bound`); the test split compares the choice with no steering, random directions of equal norm,
prompting the concise format (its first step forced, the value the model's own best digit) and the same
direction read from the base model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from analyses.verbosity.common import (
    Cell,
    Run,
    arrays,
    cell_of,
    digest,
    forced_concise_prefixes,
    generate_graded,
    paired_bootstrap,
    problems_per_step,
    steered_kl,
    teacher_forced_steps,
)
from interp.activations import Named, PromptDataset
from interp.benchmark import best_wall_and_cpu
from interp.hooks import resid_post
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.organism.dataset import problem_dataset
from interp.organism.task import Problem, TaskConfig, sample_problems
from interp.steering import Add, SteeringVector, Subtract
from interp.steering.directions import (
    DirectionSet,
    directions_from_texts,
    random_directions,
)

RESULT_VERSION = 5
VARIANTS = ("decision", "target", "last")
N_RANDOM = 3


@dataclass(frozen=True)
class VerbosityConfig:
    model: str = "organism/sft"
    base: str = "organism/base-s"
    n_pairs: int = 50
    pair_seed: int = 3_000_017
    val_seed: int = 3_100_019
    test_seed: int = 3_200_023
    steps: tuple[int, ...] = (1, 2, 3, 4)
    n_val_per_step: int = 50
    n_test_per_step: int = 50
    variants: tuple[str, ...] = VARIANTS
    gammas: tuple[float, ...] = (0.125, 0.25, 0.375, 0.4375, 0.5, 0.625, 0.75, 1.0, 1.5)
    accuracy_tolerance: float = 0.01
    kl_bound: float = 0.5
    max_invalid_aggressive: float = 0.05
    n_boot: int = 1000
    seed: int = 0
    max_new_tokens: int = 72
    batch_size: int = 400
    timing_repeats: int = 5
    latency_problems: int = 40
    cache_dir: str = field(default_factory=lambda: str(cache_dir("verbosity")))

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"unknown direction variants {bad}; known: {', '.join(VARIANTS)}")
        if self.n_pairs < 4:
            raise ValueError(f"need at least 4 pairs (a held-out split validates the direction), got {self.n_pairs}")
        if not self.gammas or any(g <= 0 for g in self.gammas):
            raise ValueError(f"gammas must be positive (both signs are swept), got {self.gammas}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VerbosityConfig:
        d = dict(d)
        for k in ("steps", "variants", "gammas"):
            d[k] = tuple(d[k])
        return cls(**d)

    def key(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k != "cache_dir"}


@dataclass(frozen=True)
class SweepCell:
    variant: str
    hook: str
    gamma: float  # signed: negative subtracts the verbose - concise direction (compresses if the sign is right)
    cell: Cell

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "hook": self.hook, "gamma": self.gamma, "cell": self.cell.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepCell:
        return cls(d["variant"], d["hook"], d["gamma"], Cell.from_dict(d["cell"]))


@dataclass(frozen=True)
class VerbosityResult:
    config: VerbosityConfig
    model_checksum: str
    base_checksum: str
    directions: dict[str, dict[str, Any]]  # "<model>/<variant>" -> DirectionSet.to_dict()
    base_cosines: dict[str, dict[str, float]]  # variant -> hook -> cos(sft direction, base direction)
    val_unsteered: Cell
    sweep: tuple[SweepCell, ...]
    chosen: SweepCell | None
    aggressive: SweepCell | None
    test: dict[str, Cell]
    reduction: dict[str, dict[str, Any]]  # test condition -> reduction %, accuracy change, with paired CIs
    speed: dict[str, float]
    seconds: float
    libraries: dict[str, str]
    teacher_forced: dict[str, dict[str, Any]] = field(default_factory=dict)  # format -> step accuracy on a correct chain

    def to_dict(self) -> dict[str, Any]:
        return {"version": RESULT_VERSION, "config": self.config.to_dict(), "model_checksum": self.model_checksum,
                "teacher_forced": self.teacher_forced,
                "base_checksum": self.base_checksum, "directions": self.directions, "base_cosines": self.base_cosines,
                "val_unsteered": self.val_unsteered.to_dict(), "sweep": [s.to_dict() for s in self.sweep],
                "chosen": self.chosen.to_dict() if self.chosen else None,
                "aggressive": self.aggressive.to_dict() if self.aggressive else None,
                "test": {k: v.to_dict() for k, v in self.test.items()}, "reduction": self.reduction,
                "speed": self.speed, "seconds": self.seconds, "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VerbosityResult:
        sc = lambda x: SweepCell.from_dict(x) if x else None
        return cls(VerbosityConfig.from_dict(d["config"]), d["model_checksum"], d["base_checksum"], d["directions"],
                   d["base_cosines"], Cell.from_dict(d["val_unsteered"]),
                   tuple(SweepCell.from_dict(s) for s in d["sweep"]), sc(d["chosen"]), sc(d["aggressive"]),
                   {k: Cell.from_dict(v) for k, v in d["test"].items()}, d["reduction"], d["speed"], d["seconds"],
                   d["libraries"], d.get("teacher_forced", {}))


# ------------------------------------------------------------------------------------------ pairs

def decision_positions(problem: Problem, fmt: str) -> dict[str, int]:
    """`step{i}.eq`: the `=` after step i's target in the written CoT (the token before the format choice);
    `step{i}.target`: the target itself (the next token is `=` in both formats, so no value is predicted there)."""
    per = 4 if fmt == "concise" else 12
    start = 1 + len(problem.prompt_tokens())
    return ({f"step{i + 1}.eq": start + i * per + 1 for i in range(problem.n_steps)}
            | {f"step{i + 1}.target": start + i * per for i in range(problem.n_steps)})


def pair_datasets(problems: Sequence[Problem], tok: Any) -> tuple[PromptDataset, PromptDataset]:
    """(verbose, concise) texts of the same problems, with `decision` positions added."""
    out = []
    for fmt in ("verbose", "concise"):
        ds = problem_dataset(problems, tok, fmt)  # type: ignore[arg-type]
        out.append(PromptDataset(tuple(dataclasses.replace(e, positions=dict(e.positions) | decision_positions(p, fmt))
                                       for e, p in zip(ds.examples, problems))))
    return out[0], out[1]


def selector(variant: str, max_steps: int) -> Named:
    if variant == "last":
        return Named(("final.value",))
    key = "eq" if variant == "decision" else "target"
    return Named(tuple(f"step{i}.{key}" for i in range(2, max_steps + 1)), missing="skip")


def pair_problems(cfg: VerbosityConfig) -> list[Problem]:
    """Pair problems have 2-4 steps (a 1-step CoT has no step whose context differs before its format choice)."""
    return sample_problems(cfg.pair_seed, cfg.n_pairs, TaskConfig(min_steps=2, max_steps=max(cfg.steps)))


def directions(model: Any, cfg: VerbosityConfig) -> dict[str, DirectionSet]:
    probs = pair_problems(cfg)
    verbose, concise = pair_datasets(probs, model.tokenizer)
    hooks = [resid_post(layer) for layer in range(model.n_layers)]
    prov = {"pairs": cfg.n_pairs, "pair_seed": cfg.pair_seed, "text": "verbose - concise"}
    return {v: directions_from_texts(model, verbose, concise, hooks, selector(v, max(cfg.steps)), seed=cfg.seed,
                                     provenance=prov | {"position": v}) for v in cfg.variants}


# ------------------------------------------------------------------------------------------ run

def _intervention(vec: SteeringVector, gamma: float) -> Any:
    return Subtract(vec, scale=-gamma, where="generated") if gamma < 0 else Add(vec, scale=gamma, where="generated")


def _measure(model: Any, probs: list[Problem], name: str, ivs: list, cfg: VerbosityConfig, *, kl: bool = True,
             allow_other_model: bool = False, hook: str = "", scale: float = 0.0, direction: str = "",
             prefixes: list | None = None) -> tuple[Cell, Run]:
    run = generate_graded(model, probs, ivs, prefixes=prefixes, max_new_tokens=cfg.max_new_tokens,
                          batch_size=cfg.batch_size, allow_other_model=allow_other_model)
    k = steered_kl(model, probs, run, ivs, allow_other_model) if kl and ivs else (0.0 if kl else None)
    return cell_of(name, run, cfg.n_boot, k, hook, scale, direction), run


def choose(sweep: Sequence[SweepCell], base: Cell, cfg: VerbosityConfig) -> tuple[SweepCell | None, SweepCell | None]:
    """(chosen, aggressive): the largest length reduction with accuracy within tolerance and KL under the bound;
    and the largest reduction under the KL bound with at most `max_invalid_aggressive` unparseable answers."""
    ok = [s for s in sweep if s.cell.kl is not None and s.cell.kl <= cfg.kl_bound]
    within = [s for s in ok if s.cell.accuracy >= base.accuracy - cfg.accuracy_tolerance - 1e-12
              and s.cell.mean_tokens < base.mean_tokens]
    valid = [s for s in ok if s.cell.formats.get("invalid", 0) / s.cell.n <= cfg.max_invalid_aggressive
             and s.cell.mean_tokens < base.mean_tokens]
    best = lambda xs: min(xs, key=lambda s: (s.cell.mean_tokens, -s.cell.accuracy)) if xs else None
    return best(within), best(valid)


def _reduction(runs: Mapping[str, Run], ref: str, n_boot: int) -> dict[str, dict[str, Any]]:
    a0 = arrays(runs[ref])
    out = {}
    for name, run in runs.items():
        a = arrays(run)
        if len(a["tokens"]) != len(a0["tokens"]):
            continue
        n = len(a0["tokens"])
        red = lambda i, a=a: 1 - a["tokens"][i].mean() / a0["tokens"][i].mean()
        dacc = lambda i, a=a: a["correct"][i].mean() - a0["correct"][i].mean()
        out[name] = {"reduction": float(red(np.arange(n))), "reduction_ci": list(paired_bootstrap(red, n, n_boot, 1)),
                     "accuracy_change": float(dacc(np.arange(n))),
                     "accuracy_change_ci": list(paired_bootstrap(dacc, n, n_boot, 2))}
    return out


def run(config: VerbosityConfig = VerbosityConfig(), progress: bool = True) -> VerbosityResult:
    """Directions, validation sweep, choice, and the test comparison (see the module docstring)."""
    from interp.models import load

    t0 = time.time()
    cfg = config
    model, base = load(cfg.model), load(cfg.base)
    if (model.d_model, model.n_layers) != (base.d_model, base.n_layers):
        raise ValueError(f"{cfg.base} and {cfg.model} differ in shape; the base's direction cannot be applied")
    dirs = directions(model, cfg)
    base_dirs = directions(base, cfg)
    pair_prompts = {p.prompt() for p in pair_problems(cfg)}
    val = [p for p in problems_per_step(cfg.val_seed, cfg.n_val_per_step, cfg.steps) if p.prompt() not in pair_prompts]
    test = [p for p in problems_per_step(cfg.test_seed, cfg.n_test_per_step, cfg.steps)
            if p.prompt() not in pair_prompts]

    val_base, _ = _measure(model, val, "unsteered", [], cfg)
    sweep = []
    grid = [(v, h.hook, s * g) for v in cfg.variants for h in dirs[v].hooks for g in cfg.gammas for s in (-1, 1)]
    for v, hook, g in tqdm(grid, desc="verbosity sweep", disable=not progress):
        vec = dirs[v].get(hook).mean_diff
        c, _ = _measure(model, val, f"{v} {hook} {g:+g}", [_intervention(vec, g)], cfg, hook=hook, scale=g,
                        direction=f"{v}/{cfg.model}")
        sweep.append(SweepCell(v, hook, g, c))
    chosen, aggressive = choose(sweep, val_base, cfg)

    runs: dict[str, Run] = {}
    test_cells: dict[str, Cell] = {}

    def measure(name: str, ivs: list, **kw: Any) -> None:
        test_cells[name], runs[name] = _measure(model, test, name, ivs, cfg, **kw)

    measure("unsteered", [])
    prefixes = forced_concise_prefixes(model, test)
    measure("prompt: concise first step", [], prefixes=prefixes)
    points = {"chosen": chosen, "aggressive": aggressive}
    for label, pt in points.items():
        if pt is None:
            continue
        vec = dirs[pt.variant].get(pt.hook).mean_diff
        measure(label, [_intervention(vec, pt.gamma)], hook=pt.hook, scale=pt.gamma, direction=f"{pt.variant}/sft")
        rand_runs = []
        for r in random_directions(vec.d_model, vec.norm, N_RANDOM, cfg.seed + 11):
            rv = SteeringVector(r, pt.hook, model.name, model.checksum, "random", {"norm_of": "mean_difference"})
            rand_runs.append(_measure(model, test, "", [_intervention(rv, pt.gamma)], cfg, hook=pt.hook)[1])
        pooled = Run(tuple(g for r in rand_runs for g in r.grades), tuple(c for r in rand_runs for c in r.completions),
                     sum(r.seconds for r in rand_runs))
        test_cells[f"{label}: random direction"] = cell_of(f"{label}: random direction", pooled, cfg.n_boot,
                                                           None, pt.hook, pt.gamma, f"random x{N_RANDOM}")
        bvec = base_dirs[pt.variant].get(pt.hook).mean_diff
        measure(f"{label}: base-s direction", [_intervention(bvec, pt.gamma)], allow_other_model=True,
                hook=pt.hook, scale=pt.gamma, direction=f"{pt.variant}/{cfg.base}")

    speed: dict[str, float] = {}
    timed = {k: v for k, v in points.items() if v is not None}
    if timed:
        from analyses.verbosity.common import prompt_ids
        from interp.generate import generate_ids
        from interp.steering import steer

        ids = prompt_ids(model.tokenizer, test)

        def gen(ivs: list) -> Any:
            def f() -> None:
                with steer(model, ivs):
                    generate_ids(model.hf, model.tokenizer, ids, cfg.max_new_tokens, batch_size=cfg.batch_size)
            return f

        fns = {"unsteered": gen([])}
        for label, pt in timed.items():
            fns[label] = gen([_intervention(dirs[pt.variant].get(pt.hook).mean_diff, pt.gamma)])
        best = best_wall_and_cpu(fns, cfg.timing_repeats)
        times, cpu = {k: w for k, (w, _) in best.items()}, {k: c for k, (_, c) in best.items()}
        n_gen = {k: sum(len(c) for c in runs[k].completions) for k in fns}
        for k, t in times.items():
            speed[f"{k}_seconds"] = round(t, 4)
            speed[f"{k}_cpu_seconds"] = round(cpu[k], 4)
            speed[f"{k}_tokens_per_s"] = round(n_gen[k] / t, 1)
        for label in timed:
            speed[f"{label}_wall_clock_speedup"] = round(times["unsteered"] / times[label], 3)
            speed[f"{label}_cpu_speedup"] = round(cpu["unsteered"] / cpu[label], 3)
            speed[f"{label}_tokens_per_s_ratio"] = round(speed[f"{label}_tokens_per_s"] / speed["unsteered_tokens_per_s"], 3)
        # per-problem latency (ASC's measure): `latency_problems` test problems spread over the split, one at a time
        one = ids[:: max(1, len(ids) // cfg.latency_problems)][: cfg.latency_problems]

        def seq(ivs: list) -> Any:
            def f() -> None:
                with steer(model, ivs):
                    for p in one:
                        generate_ids(model.hf, model.tokenizer, [p], cfg.max_new_tokens)
            return f

        best = best_wall_and_cpu(
            {k: seq([] if pt is None else [_intervention(dirs[pt.variant].get(pt.hook).mean_diff, pt.gamma)])
             for k, pt in {"unsteered": None, **timed}.items()}, max(1, cfg.timing_repeats - 1))
        lat, lat_cpu = {k: w for k, (w, _) in best.items()}, {k: c for k, (_, c) in best.items()}
        speed["latency_problems"] = len(one)
        for k, t in lat.items():
            speed[f"{k}_seconds_per_problem"] = round(t / len(one), 5)
        for label in timed:
            speed[f"{label}_per_problem_speedup"] = round(lat["unsteered"] / lat[label], 3)
            speed[f"{label}_per_problem_cpu_speedup"] = round(lat_cpu["unsteered"] / lat_cpu[label], 3)

    cos = {}
    for v in cfg.variants:
        cos[v] = {h.hook: float(torch.nn.functional.cosine_similarity(
            h.mean_diff.vector, base_dirs[v].get(h.hook).mean_diff.vector, dim=0)) for h in dirs[v].hooks}
    return VerbosityResult(
        cfg, model.checksum, base.checksum,
        {f"{cfg.model}/{v}": dirs[v].to_dict() for v in cfg.variants}
        | {f"{cfg.base}/{v}": base_dirs[v].to_dict() for v in cfg.variants},
        cos, val_base, tuple(sweep), chosen, aggressive, test_cells, _reduction(runs, "unsteered", cfg.n_boot), speed,
        round(time.time() - t0, 1), library_versions(),
        {fmt: teacher_forced_steps(model, test, fmt, cfg.n_boot) for fmt in ("concise", "verbose")})


def run_cached(config: VerbosityConfig = VerbosityConfig(), progress: bool = True) -> VerbosityResult:
    """`run`, reusing a saved result for the same config and model checksums."""
    from interp.models import load

    key = {"config": config.key(), "models": [load(config.model).checksum, load(config.base).checksum],
           "version": RESULT_VERSION}
    path = Path(config.cache_dir) / f"result-{digest(key)}.json"
    if path.is_file():
        return VerbosityResult.from_dict(read_json(path))
    result = run(config, progress)
    write_json(path, result.to_dict())
    return result


__all__ = [
    "SweepCell",
    "VerbosityConfig",
    "VerbosityResult",
    "choose",
    "decision_positions",
    "directions",
    "pair_datasets",
    "run",
    "run_cached",
]
