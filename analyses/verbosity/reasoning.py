"""The reasoning-mode direction: does adding "CoT mode minus direct mode" to base-s make it reason?

base-s answers free prompts greedily; the prompts it starts a chain of thought on are "CoT mode", the others
"direct mode". The direction is the difference of their mean residual streams at the prompt's last token
(the `:` of `A :`, where the first answer token is chosen), per layer, validated by held-out AUROC. Adding
gamma times it (at that one position, or at every prompt position) is swept over layer and signed gamma on a
validation split of 3-4-step problems, and so is clamping each prompt's component along the direction to the
CoT-mode prompts' mean projection plus k standard deviations (the same change, sized per prompt). The best
validation accuracy is tested against random directions (of equal norm for `add`; for `clamp`, random unit
directions clamped the same way from their own training projections), with the fraction of the base-s -> sft
accuracy gap recovered and the share of tokens steered.

A base that never (or too rarely: fewer than `min_per_mode` prompts of either kind) chooses a chain of thought has
no such natural contrast. Its direction then comes from forcing (`contrast="forced"`, or `"auto"` falling back):
each training prompt followed by the task's chain-of-thought prefix (what `GenerationConfig(force="cot")`
appends, e.g. `<think>`) against the same prompt followed by its forced direct answer (`force="direct"`: the
most likely of the task's answer candidates, else the task's reference direct answer), read at the same
position in both: the first token where the two differ (the token that commits to thinking or to answering).
The pairs share their prompt, so the direction is validated on held-out pairs. The steering, controls and
intervals are the same; the result records which contrast was used.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from analyses.verbosity.common import (
    Cell,
    Run,
    arrays,
    cell_of,
    chat_of,
    digest,
    generate_graded,
    generate_graded_many,
    items_per_step,
    paired_bootstrap,
    prompt_ids,
)
from interp.activations import Example, Named, PromptDataset
from interp.hooks import resid_post
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.steering import Add, Clamp, Positions, SteeringVector
from interp.steering.directions import (
    DirectionSet,
    activations_of_texts,
    directions_from_activations,
    random_directions,
)
from interp.tasks.base import Item, Task
from interp.tasks.encode import encode_text, task_dataset

if TYPE_CHECKING:
    from interp.models import Model

RESULT_VERSION = 3
MODES = ("add", "clamp")
CONTRASTS = ("auto", "natural", "forced")
WHERE = {"last": Positions((-1,)), "prompt": "prompt"}
N_RANDOM = 3


@dataclass(frozen=True)
class ReasoningConfig:
    base: str = "organism/base-s"
    tuned: str = "organism/sft"
    train_seed: int = 4_000_037
    val_seed: int = 4_100_039
    test_seed: int = 4_200_043
    train_steps: tuple[int, ...] = (2, 3, 4)
    n_train_per_step: int = 400
    eval_steps: tuple[int, ...] = (3, 4)
    n_val_per_step: int = 100
    n_test_per_step: int = 200
    gammas: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0, 4.0)
    wheres: tuple[str, ...] = ("last", "prompt")
    modes: tuple[str, ...] = MODES
    clamp_ks: tuple[float, ...] = (-1.5, -1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0)
    n_boot: int = 1000
    seed: int = 0
    max_new_tokens: int = 72
    batch_size: int = 400
    task: str = "organism"
    cache_dir: str = field(default_factory=lambda: str(cache_dir("reasoning_direction")))
    contrast: str = "auto"  # natural (the model's own choice), forced, or auto: natural unless too rare
    min_per_mode: int = 10  # auto: fewer CoT-mode or direct-mode training prompts than this -> forced

    def __post_init__(self) -> None:
        if self.contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}")
        if self.min_per_mode < 2:
            raise ValueError(f"min_per_mode must be at least 2 (a held-out AUROC needs both kinds), got {self.min_per_mode}")
        bad = [w for w in self.wheres if w not in WHERE]
        if bad:
            raise ValueError(f"unknown positions {bad}; known: {', '.join(WHERE)}")
        if not self.modes or any(m not in MODES for m in self.modes):
            raise ValueError(f"modes must be some of {', '.join(MODES)}, got {self.modes}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReasoningConfig:
        d = dict(d)
        for k in ("train_steps", "eval_steps", "gammas", "wheres", "modes", "clamp_ks"):
            d[k] = tuple(d[k])
        return cls(**d)

    def key(self) -> dict[str, Any]:
        d = {k: v for k, v in self.to_dict().items() if k != "cache_dir"}
        if d["task"] == "organism":  # the zoo's defaults keep their cached results
            del d["task"]
        for k, default in (("contrast", "auto"), ("min_per_mode", 10)):  # (added later: same keys as before)
            if d[k] == default:
                del d[k]
        return d


@dataclass(frozen=True)
class ReasoningCell:
    """`add`: + gamma x direction; `clamp`: component set to the CoT-mode mean projection + gamma x std."""

    where: str
    hook: str
    gamma: float
    cell: Cell
    mode: str = "add"

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "hook": self.hook, "gamma": self.gamma, "mode": self.mode,
                "cell": self.cell.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReasoningCell:
        return cls(d["where"], d["hook"], d["gamma"], Cell.from_dict(d["cell"]), d.get("mode", "add"))


@dataclass(frozen=True)
class ReasoningResult:
    config: ReasoningConfig
    base_checksum: str
    tuned_checksum: str
    train_cot_rate: float
    n_cot: int
    n_direct: int
    directions: dict[str, Any]
    val_unsteered: Cell
    sweep: tuple[ReasoningCell, ...]
    chosen: ReasoningCell
    test: dict[str, Cell]
    gap: dict[str, dict[str, Any]]  # condition -> fraction of the base -> tuned accuracy gap recovered, with CI
    tokens_steered: dict[str, float]
    seconds: float
    libraries: dict[str, str]
    best_add: ReasoningCell | None = None  # the best constant-offset cell, tested too when a clamp was chosen
    contrast: str = "natural"  # which contrast the direction came from: natural (greedy choice) or forced

    def to_dict(self) -> dict[str, Any]:
        return {"version": RESULT_VERSION, "config": self.config.to_dict(), "base_checksum": self.base_checksum,
                "contrast": self.contrast,
                "best_add": self.best_add.to_dict() if self.best_add else None,
                "tuned_checksum": self.tuned_checksum, "train_cot_rate": self.train_cot_rate, "n_cot": self.n_cot,
                "n_direct": self.n_direct, "directions": self.directions, "val_unsteered": self.val_unsteered.to_dict(),
                "sweep": [s.to_dict() for s in self.sweep], "chosen": self.chosen.to_dict(),
                "test": {k: v.to_dict() for k, v in self.test.items()}, "gap": self.gap,
                "tokens_steered": self.tokens_steered, "seconds": self.seconds, "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReasoningResult:
        return cls(ReasoningConfig.from_dict(d["config"]), d["base_checksum"], d["tuned_checksum"], d["train_cot_rate"],
                   d["n_cot"], d["n_direct"], d["directions"], Cell.from_dict(d["val_unsteered"]),
                   tuple(ReasoningCell.from_dict(s) for s in d["sweep"]), ReasoningCell.from_dict(d["chosen"]),
                   {k: Cell.from_dict(v) for k, v in d["test"].items()}, d["gap"], d["tokens_steered"], d["seconds"],
                   d["libraries"], ReasoningCell.from_dict(d["best_add"]) if d.get("best_add") else None,
                   d.get("contrast", "natural"))


@dataclass(frozen=True)
class ModeDirections:
    """The directions, base-s's CoT rate on the training prompts, the training activations (for clamping) and
    the contrast they came from (`natural` or `forced`)."""

    dirs: DirectionSet
    cot_rate: float
    acts: dict[str, tuple[torch.Tensor, torch.Tensor]]  # hook -> (CoT-mode rows, direct-mode rows)
    contrast: str = "natural"

    def clamp_value(self, hook: str, u: torch.Tensor, k: float) -> float:
        """CoT-mode mean projection on the unit vector `u` plus k standard deviations of all projections."""
        cot, direct = self.acts[hook]
        proj = torch.cat([cot, direct]) @ u
        return float((cot @ u).mean() + k * proj.std())


def forced_pairs(model: Model, task: Task, items: list[Item], batch_size: int = 256) -> tuple[PromptDataset, PromptDataset]:
    """Each item's prompt with thinking forced (the task's chain-of-thought prefix) and with a direct answer
    forced (`force="direct"`: the most likely of the task's candidates; the task's reference direct answer when it
    lists none), both cut after the first token where they differ, which is named `mode` (the same index in
    both). Raises when the task cannot force a chain or a direct answer, or when the two never differ."""
    from interp.evaluation import GenerationConfig, generate_completions

    chat = chat_of(task)
    prefixes = [task.cot_prefix(it) for it in items]
    if not all(prefixes):
        raise ValueError(f"task {task.name!r} has no chain-of-thought prefix to force thinking with: no forced "
                         f"contrast either")
    if getattr(task, "answer_candidates", None) is not None:
        direct, _ = generate_completions(model, task, items, GenerationConfig(force="direct", batch_size=batch_size,
                                                                              chat=chat))
    elif "direct" in task.formats:
        direct = [task.completion(it, "direct") for it in items]
    else:
        raise ValueError(f"task {task.name!r} can force no direct answer (no answer candidates, no direct format)")
    pos, neg = [], []
    for it, pre, d in zip(items, prefixes, direct):
        a, b = encode_text(model, task.prompt(it), pre, chat), encode_text(model, task.prompt(it), d, chat)
        j = next((i for i in range(a.n_prompt, min(len(a.ids), len(b.ids))) if a.ids[i] != b.ids[i]), None)
        if j is None:
            raise ValueError(f"item {it.id!r}: the forced chain-of-thought prefix {pre!r} and the direct answer "
                             f"{d!r} do not differ in any token after the prompt")
        meta = {"problem": it.id, **dict(it.meta)}
        pos.append(Example(a.ids[:j + 1], {"mode": j}, meta | {"format": "forced_cot"}))
        neg.append(Example(b.ids[:j + 1], {"mode": j}, meta | {"format": "forced_direct"}))
    return PromptDataset(tuple(pos)), PromptDataset(tuple(neg))


def mode_direction(model: Model, cfg: ReasoningConfig, task: Task | None = None) -> ModeDirections:
    """CoT-mode minus direct-mode: at the prompt's last token (`answer`) from the model's own greedy choices as
    the task grades them (`Grade.cot`), or, when that contrast is missing or too rare (module docstring), from
    forced thinking vs forced direct answers at their first differing token (`forced_pairs`)."""
    import interp

    task = task if task is not None else interp.task(cfg.task)
    items = items_per_step(task, cfg.train_seed, cfg.n_train_per_step, cfg.train_steps)
    run = generate_graded(model, task, items, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    cot = [g.cot for g in run.grades]
    hooks = [resid_post(layer) for layer in range(model.n_layers)]
    rare = min(sum(cot), len(cot) - sum(cot)) < cfg.min_per_mode
    if cfg.contrast == "forced" or (cfg.contrast == "auto" and rare):
        pos, neg = forced_pairs(model, task, items, cfg.batch_size)
        acts = activations_of_texts(model, pos, neg, hooks, Named(("mode",)), seed=cfg.seed)
        dirs = directions_from_activations(
            acts, paired=True, seed=cfg.seed, model_name=model.name, model_checksum=model.checksum,
            provenance={"text": "forced thinking - forced direct answer, at the first token where they differ",
                        "train_seed": cfg.train_seed, "free_cot": int(sum(cot)), "free_direct": len(cot) - sum(cot)})
        return ModeDirections(dirs, float(np.mean(cot)), acts, "forced")
    if all(cot) or not any(cot):
        raise ValueError(f"{model.name} {'always' if all(cot) else 'never'} writes a chain of thought on the "
                         f"{len(cot)} training prompts: no CoT-mode vs direct-mode contrast")
    ds = task_dataset(model, task, items, chat=chat_of(task))
    pos = PromptDataset(tuple(e for e, c in zip(ds.examples, cot) if c))
    neg = PromptDataset(tuple(e for e, c in zip(ds.examples, cot) if not c))
    acts = activations_of_texts(model, pos, neg, hooks, Named(("answer",)), seed=cfg.seed)
    dirs = directions_from_activations(acts, paired=False, seed=cfg.seed, model_name=model.name,
                                       model_checksum=model.checksum,
                                       provenance={"text": "CoT-mode - direct-mode prompts (greedy choice)",
                                                   "train_seed": cfg.train_seed})
    return ModeDirections(dirs, float(np.mean(cot)), acts)


def _intervention(md: ModeDirections, vec: SteeringVector, mode: str, gamma: float, where: str) -> Any:
    if mode == "add":
        return Add(vec, scale=gamma, where=WHERE[where])
    return Clamp(vec, value=md.clamp_value(vec.hook, vec.unit(), gamma), where=WHERE[where])


def _gap(runs: Mapping[str, Run], base: str, tuned: str, n_boot: int) -> dict[str, dict[str, Any]]:
    b, t = arrays(runs[base])["correct"], arrays(runs[tuned])["correct"]
    out = {}
    for name, run in runs.items():
        x = arrays(run)["correct"]
        if len(x) != len(b):
            continue

        def frac(i: np.ndarray, x: np.ndarray = x) -> float:
            gap = t[i].mean() - b[i].mean()
            return float((x[i].mean() - b[i].mean()) / gap) if gap > 0 else float("nan")

        out[name] = {"gap_recovered": frac(np.arange(len(b))), "gap_recovered_ci": list(paired_bootstrap(frac, len(b), n_boot, 3))}
    return out


def _short(name: str) -> str:
    return name.removeprefix("organism/")


def run(config: ReasoningConfig = ReasoningConfig(), progress: bool = True, base: Model | None = None,
        tuned: Model | None = None, task: Task | None = None) -> ReasoningResult:
    """The base's CoT-mode direction, swept on validation items and tested (see the module docstring); the
    models default to the config's names, the task to `interp.task(config.task)`."""
    import interp

    t0 = time.time()
    cfg = config
    task = task if task is not None else interp.task(cfg.task)
    base = base if base is not None else interp.load(cfg.base)
    tuned = tuned if tuned is not None else interp.load(cfg.tuned)
    if (base.name, tuned.name) != (cfg.base, cfg.tuned):
        cfg = dataclasses.replace(cfg, base=base.name, tuned=tuned.name)
    b, t = _short(base.name), _short(tuned.name)
    md = mode_direction(base, cfg, task)
    dirs = md.dirs
    n_cot, n_direct = (len(md.acts[dirs.hooks[0].hook][i]) for i in (0, 1))
    val = items_per_step(task, cfg.val_seed, cfg.n_val_per_step, cfg.eval_steps)
    test = items_per_step(task, cfg.test_seed, cfg.n_test_per_step, cfg.eval_steps)
    gen = lambda m, ps, ivs=(), **kw: generate_graded(m, task, ps, list(ivs), max_new_tokens=cfg.max_new_tokens,
                                                     batch_size=cfg.batch_size, **kw)
    val_base = cell_of("unsteered", gen(base, val), cfg.n_boot)
    sweep = []
    grid = [(mode, w, h.hook, g) for mode in cfg.modes for w in cfg.wheres for h in dirs.hooks
            for g in (cfg.gammas if mode == "add" else cfg.clamp_ks)]
    conds = [[_intervention(md, dirs.get(hook).mean_diff, mode, g, w)] for mode, w, hook, g in grid]
    sweep_runs = generate_graded_many(base, task, val, conds, max_new_tokens=cfg.max_new_tokens,
                                      batch_size=cfg.batch_size, desc="reasoning-direction sweep" if progress else None)
    for (mode, w, hook, g), r in zip(grid, sweep_runs):
        sweep.append(ReasoningCell(w, hook, g, cell_of(f"{mode} {w} {hook} {g:+g}", r, cfg.n_boot, hook=hook, scale=g,
                                                         direction="cot-direct"), mode))
    chosen = max(sweep, key=lambda s: (s.cell.accuracy, s.cell.cot_rate))

    runs: dict[str, Run] = {f"{b} unsteered": gen(base, test)}
    points = {"": chosen}
    adds = [s for s in sweep if s.mode == "add"]
    if chosen.mode != "add" and adds:  # the constant-offset (ASC-style) alternative, tested the same way
        points[" (best add)"] = max(adds, key=lambda s: (s.cell.accuracy, s.cell.cot_rate))
    rand_runs: dict[str, list[Run]] = {}
    for label, pt in points.items():
        vec = dirs.get(pt.hook).mean_diff
        runs[f"{b} + reasoning direction{label}"] = gen(base, test, [_intervention(md, vec, pt.mode, pt.gamma,
                                                                                     pt.where)])
        rand = []
        for r in random_directions(vec.d_model, vec.norm, N_RANDOM, cfg.seed + 13):
            rv = SteeringVector(r, pt.hook, base.name, base.checksum, "random", {"norm_of": "mean_difference"})
            rand.append(gen(base, test, [_intervention(md, rv, pt.mode, pt.gamma, pt.where)]))
        rand_runs[label] = rand
        runs[f"{b} + random direction{label}"] = Run(tuple(g for r in rand for g in r.grades),
                                                        tuple(c for r in rand for c in r.completions),
                                                        sum(r.seconds for r in rand))
    runs[f"{b} forced CoT"] = gen(base, test, prefixes=[task.cot_prefix(it) for it in test])
    runs[f"{t} unsteered"] = gen(tuned, test)
    test_cells = {k: cell_of(k, v, cfg.n_boot) for k, v in runs.items()}
    gap_runs = {k: v for k, v in runs.items() if not k.startswith(f"{b} + random direction")}
    gap = _gap(gap_runs, f"{b} unsteered", f"{t} unsteered", cfg.n_boot)
    for label, rand in rand_runs.items():  # each random direction against the same problems
        for i, r in enumerate(rand):
            gap[f"{b} + random direction{label} {i + 1}"] = _gap(
                {"b": runs[f"{b} unsteered"], "t": runs[f"{t} unsteered"], "x": r}, "b", "t", cfg.n_boot)["x"]
    best_add = points.get(" (best add)")
    st = runs[f"{b} + reasoning direction"]
    n_prompt = np.array([len(p) for p in prompt_ids(base, task, test)], float)
    n_gen = np.array([len(c) for c in st.completions], float)
    per = np.ones_like(n_prompt) if chosen.where == "last" else n_prompt
    tokens = {"positions_per_problem": float(per.mean()),
              "of_prompt_and_completion": float(per.sum() / (n_prompt + n_gen).sum()),
              "of_generated": float(per.sum() / max(n_gen.sum(), 1))}
    return ReasoningResult(cfg, base.checksum, tuned.checksum, md.cot_rate, n_cot, n_direct, dirs.to_dict(), val_base,
                           tuple(sweep), chosen, test_cells, gap, tokens, round(time.time() - t0, 1),
                           library_versions(), best_add, md.contrast)


def run_cached(config: ReasoningConfig = ReasoningConfig(), progress: bool = True, base: Model | None = None,
               tuned: Model | None = None, task: Task | None = None) -> ReasoningResult:
    """`run`, reusing a saved result for the same config, task and model checksums."""
    import interp

    base = base if base is not None else interp.load(config.base)
    tuned = tuned if tuned is not None else interp.load(config.tuned)
    key: dict[str, Any] = {"config": config.key(), "models": [base.checksum, tuned.checksum], "version": RESULT_VERSION}
    if task is not None and task.name != "organism":
        key["task"] = task.describe()
    path = Path(config.cache_dir) / f"result-{digest(key)}.json"
    if path.is_file():
        return ReasoningResult.from_dict(read_json(path))
    result = run(config, progress, base, tuned, task)
    write_json(path, result.to_dict())
    return result


__all__ = ["CONTRASTS", "ModeDirections", "ReasoningCell", "ReasoningConfig", "ReasoningResult", "forced_pairs", "mode_direction", "run", "run_cached"]
