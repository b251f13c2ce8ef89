"""Latent reasoning: do a base model's activations already hold the chain's intermediate values?

For each model, linear probes read every value of the chain from the residual stream, per layer: at the
answer position (the prompt's last token, before any answer token is written, so nothing of a chain of
thought is visible) and at the separator that closes each step's clause (where the value could be
computed as the prompt is read). Each probe has a control task; selectivity = accuracy - control.
Probes trained on the base are applied to the post-trained models (transfer: the same directions?),
and a probe reads "this model is about to write a chain of thought" from the answer position.

Any task runs: probe targets are the task's intermediate values (`task.intermediate_keys`) and answer,
positions are the task's named spans, and the chain-of-thought label is the task's grade of the model's
own greedy generation. The organism task (its seeded problems, the variables below) is the default; a
variable a task cannot provide (no such position or value) is recorded with the reason, not an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

from interp.activations import ActivationStore, Named, harvest
from interp.generate import left_pad
from interp.hooks import resid_post, resid_pre
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.plots import color_for, save_figure, style
from interp.stats import percentile_ci
from probes import (
    CellResult,
    Probe,
    ProbeJobConfig,
    Score,
    control_labels,
    fit_cell,
    rows_for,
    score,
    split_by_group,
)

if TYPE_CHECKING:
    from interp.activations.dataset import PromptDataset
    from interp.models import Model
    from interp.tasks import Item, Task

ANSWER = "answer"
WILL_COT = "will_cot"
RESULT_VERSION = 2  # bump when the result's fields change: cached results of other versions are recomputed


@dataclass(frozen=True)
class Variable:
    """A value of the chain read at one kind of position."""

    name: str  # shown in figures
    label: str  # position label in the store
    target: str  # metadata key
    text: str = "prompt"  # "prompt": the bare prompt; "verbose": prompt + the verbose chain of thought, written


VARIABLES = (
    Variable("step 1 @ answer", ANSWER, "intermediate.step1"),
    Variable("step 2 @ answer", ANSWER, "intermediate.step2"),
    Variable("step 3 @ answer", ANSWER, "intermediate.step3"),
    Variable("answer @ answer", ANSWER, "answer"),
    Variable("step 1 @ its clause", "prompt.step1.end", "value.step1"),
    Variable("step 2 @ its clause", "prompt.step2.end", "value.step2"),
    Variable("step 3 @ its clause", "prompt.step3.end", "value.step3"),
    # positive control: in a written verbose CoT (`c = b * 2 = 7 * 2 =`), where the model is about to write
    # the value it has just computed from the operands it copied (forced-CoT accuracy is ~1.0 there)
    Variable("step 2 @ written CoT", "step2.before_value", "value.step2", "verbose"),
    Variable("step 3 @ written CoT", "step3.before_value", "value.step3", "verbose"),
)
TEXTS = ("prompt", "verbose")
INTERMEDIATE_AT_ANSWER = tuple(v for v in VARIABLES if v.label == ANSWER and v.target.startswith("intermediate"))
COT_VARIABLE = Variable("will write a CoT", ANSWER, WILL_COT)
ALL = "*"  # the hook of a Skipped entry that concerns a variable at every layer


@dataclass(frozen=True)
class LatentConfig:
    models: tuple[str, ...] = ("organism/base-s", "organism/sft", "organism/rl", "organism/dpo",
                               "organism/base-m", "organism/base-l")
    base: str = "organism/base-s"
    steps: tuple[int, ...] = (2, 3, 4)
    n_per_step: int = 400
    problem_seed: int = 2_000_003
    probe_seed: int = 0
    test_fraction: float = 0.3
    c: float = 1.0
    n_boot: int = 500
    batch_size: int = 200
    cache_dir: str = field(default_factory=lambda: str(cache_dir("latent_reasoning")))
    task: str = "organism"  # a name for `interp.task`; "organism" draws the organism's problems as it always has
    max_new_tokens: int = 72  # greedy generation that decides the chain-of-thought label

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatentConfig:
        d = dict(d)
        d["models"], d["steps"] = tuple(d["models"]), tuple(d["steps"])
        return cls(**d)

    def key(self) -> dict[str, Any]:
        """What decides the numbers (not where they are cached; the defaults of fields added later are left
        out, so results cached before them stay valid)."""
        d = {k: v for k, v in self.to_dict().items() if k != "cache_dir"}
        for k, default in (("task", "organism"), ("max_new_tokens", 72)):
            if d[k] == default:
                d.pop(k)
        return d


@dataclass(frozen=True)
class Skipped:
    """A cell that could not be fitted, and why (e.g. a model that always writes a CoT)."""

    hook: str
    variable: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelProbes:
    name: str
    checksum: str
    n_layers: int
    d_model: int
    hooks: tuple[str, ...]
    cot_rate: float  # share of the problems on which the greedy first token starts a chain of thought
    cells: tuple[CellResult, ...]
    direct_only: tuple[CellResult, ...]  # answer-position cells scored on problems it answers directly
    skipped: tuple[Skipped, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "n_layers": self.n_layers, "d_model": self.d_model,
                "hooks": list(self.hooks), "cot_rate": self.cot_rate, "cells": [c.to_dict() for c in self.cells],
                "direct_only": [c.to_dict() for c in self.direct_only], "skipped": [s.to_dict() for s in self.skipped]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelProbes:
        return cls(d["name"], d["checksum"], d["n_layers"], d["d_model"], tuple(d["hooks"]), d["cot_rate"],
                   tuple(CellResult.from_dict(c) for c in d["cells"]),
                   tuple(CellResult.from_dict(c) for c in d["direct_only"]), tuple(Skipped(**s) for s in d["skipped"]))

    def cell(self, hook: str, var: Variable, direct_only: bool = False) -> CellResult | None:
        for c in (self.direct_only if direct_only else self.cells):
            if (c.hook, c.label, c.target) == (hook, var.label, var.target):
                return c
        return None

    def best(self, var: Variable) -> CellResult | None:
        """The layer where the variable is read best (highest selectivity)."""
        cells = [c for c in self.cells if (c.label, c.target) == (var.label, var.target)]
        return max(cells, key=lambda c: c.selectivity) if cells else None


@dataclass(frozen=True)
class Transfer:
    """A base probe applied to a post-trained model's activations, against that model's own probe."""

    model: str
    hook: str
    label: str
    target: str
    own: Score
    transfer: Score
    control: Score
    # the base probe on the tuned activations shifted by (base mean - tuned mean) over the training
    # problems: separates "same directions, moved" from "other directions"
    transfer_centred: Score

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "hook": self.hook, "label": self.label, "target": self.target,
                "own": self.own.to_dict(), "transfer": self.transfer.to_dict(), "control": self.control.to_dict(),
                "transfer_centred": self.transfer_centred.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Transfer:
        return cls(d["model"], d["hook"], d["label"], d["target"], Score.from_dict(d["own"]),
                   Score.from_dict(d["transfer"]), Score.from_dict(d["control"]),
                   Score.from_dict(d["transfer_centred"]))


@dataclass(frozen=True)
class LatentResult:
    config: LatentConfig
    models: tuple[ModelProbes, ...]
    transfers: tuple[Transfer, ...]
    seconds: float
    libraries: Mapping[str, str]
    variables: tuple[Variable, ...] = VARIABLES  # the variables this task provides (the organism's: all)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "models": [m.to_dict() for m in self.models],
                "transfers": [t.to_dict() for t in self.transfers], "seconds": self.seconds,
                "libraries": dict(self.libraries), "variables": [dataclasses.asdict(v) for v in self.variables]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatentResult:
        variables = tuple(Variable(**v) for v in d["variables"]) if "variables" in d else VARIABLES
        return cls(LatentConfig.from_dict(d["config"]), tuple(ModelProbes.from_dict(m) for m in d["models"]),
                   tuple(Transfer.from_dict(t) for t in d["transfers"]), d["seconds"], d["libraries"], variables)

    def get(self, name: str) -> ModelProbes:
        for m in self.models:
            if m.name in (name, f"organism/{name}"):
                return m
        raise KeyError(f"{name!r} was not probed; probed: {[m.name for m in self.models]}")


# ------------------------------------------------------------------------------------------ steps

@torch.no_grad()
def will_write_cot(model: Model, prompts: Sequence[Sequence[int]], batch_size: int = 200,
                   answer_ids: Sequence[int] | None = None) -> list[bool]:
    """Per prompt (token ids): is the greedy first token something other than the first token of a direct
    answer (`answer_ids`; the organism's digits by default)? One forward pass, no generation."""
    if answer_ids is None:
        from interp.organism.tokenizer import digit_ids  # the default task's answers

        answer_ids = digit_ids(model.tokenizer).tolist()
    firsts = {int(t) for t in answer_ids}
    out: list[bool] = []
    for i in range(0, len(prompts), batch_size):
        ids, mask = left_pad([list(p) for p in prompts[i:i + batch_size]], model.pad_token_id)
        logits = model.hf(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits[:, -1]
        out += [int(t) not in firsts for t in logits.argmax(-1).tolist()]
    return out


def cot_labels(model: Model, task: Task, items: Sequence[Item], batch_size: int = 200,
               max_new_tokens: int = 72) -> list[bool]:
    """Per item: does the model, left free (greedy), write a chain of thought? The task's grade of its own
    generation says; a completion the task cannot parse counts as a chain unless it begins with one of the
    task's direct answers (an abandoned chain is still the decision to write one)."""
    from interp.evaluation import GenerationConfig, generate_completions

    texts, _ = generate_completions(model, task, items, GenerationConfig(max_new_tokens=max_new_tokens,
                                                                         batch_size=batch_size))
    cands = getattr(task, "answer_candidates", None)
    out = []
    for it, text in zip(items, texts):
        g = task.grade(it, text)
        if g.valid or cands is None:
            out.append(bool(g.cot))
        else:
            t = text.lstrip()
            out.append(not any(t.startswith(c.strip()) and (len(t) == len(c.strip()) or not t[len(c.strip())].isalnum())
                               for c in cands(it)))
    return out


def probe_hooks(n_layers: int) -> list[str]:
    """The embedding (resid_pre of block 0) and every block's resid_post."""
    return [resid_pre(0)] + [resid_post(layer) for layer in range(n_layers)]


def layer_name(hook: str) -> str:
    return "emb" if hook.endswith("hook_resid_pre") else f"L{hook.split('.')[1]}"


def _job(cfg: LatentConfig, store: ActivationStore, out: Path,
         variables: Sequence[Variable] = VARIABLES) -> ProbeJobConfig:
    targets = tuple(dict.fromkeys(v.target for v in (*variables, COT_VARIABLE)))
    return ProbeJobConfig(store=str(store.root), targets=targets, out=str(out), kind="logistic",
                          test_fraction=cfg.test_fraction, c=cfg.c, n_boot=cfg.n_boot, seed=cfg.probe_seed)


def _direct_only(store: ActivationStore, cell: CellResult, job: ProbeJobConfig, dataset: Any) -> CellResult | None:
    """Re-score an answer-position cell on the test problems the model answers directly."""
    x, y, groups, ex = rows_for(store, cell.hook, cell.label, cell.target, None, dataset)
    _, test = split_by_group(groups, job.test_fraction, job.seed)
    direct = np.array([not dataset[int(e)].meta[WILL_COT] for e in ex])
    keep = test & direct
    if keep.sum() < 10:
        return None
    k = torch.from_numpy(keep)
    sel = [v for v, t in zip(y, keep) if t]
    g = [v for v, t in zip(groups, keep) if t]
    probe = Probe.load(cell.probe_path)
    s, boots = score(probe, x[k], sel, g, job.n_boot, job.seed, store.model_checksum)
    cy = [v for v, t in zip(control_labels(y, groups, job.seed), keep) if t]
    ctrl = Probe.load(cell.probe_path.removesuffix(".json") + ".control")
    cs, cboots = score(ctrl, x[k], cy, g, job.n_boot, job.seed, store.model_checksum)
    d = boots - cboots
    return dataclasses.replace(cell, n_test=int(keep.sum()), score=s, control=cs, selectivity=s.value - cs.value,
                               selectivity_ci=percentile_ci(d))


_DATASETS: dict[str, Any] = {}


def _dataset(store: ActivationStore) -> Any:
    """A store's dataset, read once per process (the cells of a model share it)."""
    key = str(store.root)
    if key not in _DATASETS:
        _DATASETS[key] = store.dataset()
    return _DATASETS[key]


def problem_items(cfg: LatentConfig, task: Task | None = None) -> list[Item]:
    """`cfg.n_per_step` items per step count: the organism's problems as this analysis has always drawn them
    (seed `problem_seed + k`, a config of exactly k steps) by default, else `task.sample(n, seed + k, n_steps=k)`
    (or `n * len(steps)` items from `problem_seed` for a task that does not sample by steps)."""
    if task is None:
        from interp.organism.reasoning_task import problem_item
        from interp.organism.task import TaskConfig, sample_problems

        return [problem_item(p) for k in cfg.steps
                for p in sample_problems(cfg.problem_seed + k, cfg.n_per_step, TaskConfig(min_steps=k, max_steps=k))]
    if task.has_steps:
        return [it for k in cfg.steps for it in task.sample(cfg.n_per_step, cfg.problem_seed + k, n_steps=k)]
    return task.sample(cfg.n_per_step * len(cfg.steps), cfg.problem_seed)


def resolve_task(cfg: LatentConfig) -> Task:
    """The task a config names (the organism by default)."""
    from interp.registry import task

    return task(cfg.task)


def available_variables(task: Task, items: Sequence[Item], datasets: Mapping[str, PromptDataset]
                        ) -> tuple[list[Variable], list[Skipped]]:
    """The variables the task's items provide (a named position in that text and a value in the metadata):
    the organism's `VARIABLES` that apply, then one "@ answer" variable per intermediate value they miss;
    with the reason for each that does not apply."""
    labels = {t: {k for e in ds for k in e.positions} for t, ds in datasets.items()}
    keys = {k for e in datasets["prompt"] for k in e.meta}
    inter = list(dict.fromkeys(k for it in items for k in task.intermediate_keys(it)))
    out, skipped = [], []
    for v in VARIABLES:
        if v.text not in datasets:
            skipped.append(Skipped(ALL, v.name, f"the task {task.name!r} has no {v.text!r} format to write"))
        elif v.label not in labels[v.text]:
            skipped.append(Skipped(ALL, v.name, f"the task {task.name!r} names no position {v.label!r}"))
        elif v.target not in keys:
            why = ("the task has no intermediate values" if v.target.startswith("intermediate") and not inter
                   else f"the task's items carry no value {v.target!r}")
            skipped.append(Skipped(ALL, v.name, why))
        else:
            out.append(v)
    have = {v.target for v in out if v.label == ANSWER}
    out += [Variable(f"{k.removeprefix('intermediate.')} @ answer", ANSWER, k) for k in inter
            if k not in have and ANSWER in labels["prompt"]]
    return out, skipped


def probe_model(name: str | Model, cfg: LatentConfig, progress: bool = True, task: Task | None = None
                ) -> tuple[ModelProbes, dict[str, ActivationStore]]:
    """Harvest one model's activations (cached by checksum and dataset) and fit every cell, on the task's
    items (the organism's by default)."""
    from interp.models import load
    from interp.tasks import task_dataset

    model = load(name) if isinstance(name, str) else name
    if task is None and cfg.task != "organism":
        task = resolve_task(cfg)
    items = problem_items(cfg, task)  # task None: the organism's problems as this analysis has always drawn them
    task = task if task is not None else resolve_task(cfg)
    cot = cot_labels(model, task, items, cfg.batch_size, cfg.max_new_tokens)
    extra = [{WILL_COT: c} for c in cot]
    hooks = probe_hooks(model.n_layers)
    texts = [t for t in TEXTS if t == "prompt" or t in task.formats]
    datasets = {t: task_dataset(model, task, items, None if t == "prompt" else t, extra_meta=extra) for t in texts}
    variables, unavailable = available_variables(task, items, datasets)
    stores = {}
    for text, dataset in datasets.items():
        labels = tuple(dict.fromkeys(v.label for v in (*variables, COT_VARIABLE) if v.text == text))
        if not labels:
            continue
        tag = f"{model.checksum[:16]}-{dataset.hash()[:16]}"
        stores[text] = harvest(model, dataset, hooks, Named(labels, missing="skip"),
                               Path(cfg.cache_dir) / "stores" / tag, batch_size=cfg.batch_size, seed=cfg.problem_seed)
    store = stores["prompt"]
    dataset = _dataset(store)
    out = Path(cfg.cache_dir) / "probes"
    job = _job(cfg, store, out, variables)
    cells, direct, skipped = [], [], list(unavailable)
    todo = [(h, v) for h in hooks for v in (*variables, COT_VARIABLE)]
    for h, v in tqdm(todo, desc=f"probing {model.name}", disable=not progress, leave=False):
        try:
            cell = _cached_cell(stores[v.text], h, v, job, out)
        except ValueError as e:
            skipped.append(Skipped(h, v.name, str(e)))
            continue
        cells.append(cell)
        if (v.label == ANSWER and v.target.startswith("intermediate")) or v.target == "answer":
            d = _direct_only(store, cell, job, dataset)
            if d is not None:
                direct.append(d)
    probes = ModelProbes(model.name, model.checksum, model.n_layers, model.d_model, tuple(hooks), float(np.mean(cot)),
                         tuple(cells), tuple(direct), tuple(skipped))
    return probes, stores


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _cached_cell(store: ActivationStore, hook: str, var: Variable, job: ProbeJobConfig, out: Path) -> CellResult:
    stem = out / f"{store.root.name}-{_digest(job.to_dict() | {'store': ''})}" / f"{hook}__{var.label}__{var.target}"
    done = Path(f"{stem}.cell.json")
    if done.is_file():
        return CellResult.from_dict(read_json(done))
    cell = fit_cell(store, hook, var.label, var.target, dataclasses.replace(job, store=str(store.root)),
                    _dataset(store), stem, save_control=True)
    write_json(done, cell.to_dict())
    return cell


def transfer(base: ModelProbes, tuned: ModelProbes, base_stores: Mapping[str, ActivationStore],
             tuned_stores: Mapping[str, ActivationStore], cfg: LatentConfig) -> list[Transfer]:
    """Base probes on the tuned model's activations at the same hook and position, on the same test
    problems: as they are, and re-centred on the base's mean."""
    if base.d_model != tuned.d_model or base.hooks != tuned.hooks:
        return []
    text_of = {v.label: v.text for v in VARIABLES} | {ANSWER: "prompt"}
    out = []
    for cell in base.cells:
        own = tuned.cell(cell.hook, Variable("", cell.label, cell.target))
        if own is None or cell.target == WILL_COT:
            continue
        store, bstore = tuned_stores[text_of[cell.label]], base_stores[text_of[cell.label]]
        x, y, groups, _ = rows_for(store, cell.hook, cell.label, cell.target, None, _dataset(store))
        xb, _, groups_b, _ = rows_for(bstore, cell.hook, cell.label, cell.target, None, _dataset(bstore))
        train, test = split_by_group(groups, cfg.test_fraction, cfg.probe_seed)
        train_b, _ = split_by_group(groups_b, cfg.test_fraction, cfg.probe_seed)
        shift = xb[torch.from_numpy(train_b)].mean(0) - x[torch.from_numpy(train)].mean(0)
        k = torch.from_numpy(test)
        y_te, g_te = [v for v, t in zip(y, test) if t], [g for g, t in zip(groups, test) if t]
        probe = Probe.load(cell.probe_path)
        s, _ = score(probe, x[k], y_te, g_te, cfg.n_boot, cfg.probe_seed, tuned.checksum, allow_other_model=True)
        sc, _ = score(probe, x[k] + shift, y_te, g_te, cfg.n_boot, cfg.probe_seed, tuned.checksum,
                      allow_other_model=True)
        out.append(Transfer(tuned.name, cell.hook, cell.label, cell.target, own.score, s, own.control, sc))
    return out


def run(config: LatentConfig = LatentConfig(), progress: bool = True, models: Sequence[Model] | None = None,
        task: Task | None = None) -> LatentResult:
    """Probe every model (loaded `models`, the first one the base, or `config.models` by name), then transfer
    the base's probes; on `task` (the organism's problems by default)."""
    t0 = time.time()
    if models is not None:
        config = dataclasses.replace(config, models=tuple(m.name for m in models), base=models[0].name)
    if task is not None and task.name != config.task:
        config = dataclasses.replace(config, task=task.name)
    given = {m.name: m for m in models or ()}
    results, stores = {}, {}
    names = list(dict.fromkeys([config.base, *config.models]))
    for name in tqdm(names, desc="latent reasoning", disable=not progress):
        results[name], stores[name] = probe_model(given.get(name, name), config, progress, task)
    base = results[config.base]
    transfers = []
    for name in names:
        if name != config.base:
            transfers += transfer(base, results[name], stores[config.base], stores[name], config)
    models_out = tuple(results[n] for n in names if n in config.models or n == config.base)
    variables = tuple(_variables_of(base))
    return LatentResult(config, models_out, tuple(transfers), round(time.time() - t0, 1), library_versions(), variables)


def _variables_of(m: ModelProbes) -> list[Variable]:
    """The variables a model was probed for: `VARIABLES` but those its task cannot provide, then any
    intermediate value the task added (read at the answer position)."""
    unavailable = {x.variable for x in m.skipped if x.hook == ALL}
    extra = dict.fromkeys(c.target for c in m.cells if c.label == ANSWER and c.target.startswith("intermediate.")
                          and not any(v.target == c.target and v.label == ANSWER for v in VARIABLES))
    return [v for v in VARIABLES if v.name not in unavailable] + [
        Variable(f"{t.removeprefix('intermediate.')} @ answer", ANSWER, t) for t in extra]


def run_cached(config: LatentConfig = LatentConfig(), progress: bool = True) -> LatentResult:
    """`run`, reusing the saved result when the config and every model's checksum are unchanged."""
    from interp.models import load

    checksums = [load(n).checksum for n in dict.fromkeys([config.base, *config.models])]
    variables = [dataclasses.asdict(v) for v in (*VARIABLES, COT_VARIABLE)]
    key = {"config": config.key(), "models": checksums, "variables": variables, "version": RESULT_VERSION}
    path = Path(config.cache_dir) / f"result-{_digest(key)}.json"
    if path.is_file():
        return LatentResult.from_dict(read_json(path))
    result = run(config, progress)
    write_json(path, result.to_dict())
    return result


# ------------------------------------------------------------------------------------------ figures

def _short(name: str) -> str:
    return name.removeprefix("organism/")


def figures(result: LatentResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Selectivity heatmaps (variable x layer) per model, transfer bars, and the CoT-decision curve."""
    out_dir = Path(out_dir)
    figs: dict[str, go.Figure] = {}
    n = len(result.models)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[_short(m.name) for m in result.models],
                        horizontal_spacing=0.04, vertical_spacing=0.16)
    for i, m in enumerate(result.models):
        z, text = [], []
        for v in result.variables:
            row = [m.cell(h, v) for h in m.hooks]
            z.append([c.selectivity if c else None for c in row])
            text.append([f"acc {c.score.value:.2f}<br>ctrl {c.control.value:.2f}" if c else "" for c in row])
        fig.add_trace(go.Heatmap(z=z, x=[layer_name(h) for h in m.hooks], y=[v.name for v in result.variables],
                                 text=text, hovertemplate="%{y}, %{x}: selectivity %{z:.2f}<br>%{text}<extra></extra>",
                                 zmin=0, zmax=1, colorscale="Viridis", showscale=i == 0,
                                 colorbar={"title": "selectivity"}), row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(template="plotly_white", width=1100, height=330 * rows + 80,
                      title="Which values of the chain a linear probe reads, per layer (selectivity = accuracy - control)",
                      margin={"l": 140, "r": 20, "t": 90, "b": 40})
    fig.update_yaxes(autorange="reversed")
    for i in range(n):
        if i % cols:
            fig.update_yaxes(showticklabels=False, row=i // cols + 1, col=i % cols + 1)
    figs["latent_selectivity"] = fig

    if result.transfers:
        fig = go.Figure()
        last = {m.name: m.hooks[-1] for m in result.models}
        shown = [t for t in result.transfers if t.hook == last[t.model]]
        names = [Variable("", t.label, t.target) for t in shown]
        label_of = {(v.label, v.target): v.name for v in result.variables}
        base_name = _short(result.config.base)
        x = [[_short(t.model) for t in shown], [label_of.get((v.label, v.target), v.target) for v in names]]
        for what, color in (("own", None), ("transfer", "#555"), ("transfer_centred", "#999"), ("control", "#ccc")):
            ys = [getattr(t, what).value for t in shown]
            cis = [getattr(t, what).ci for t in shown]
            fig.add_trace(go.Bar(
                x=x, y=ys, name={"own": "own probe", "transfer": f"{base_name} probe (transfer)",
                              "transfer_centred": f"{base_name} probe, re-centred", "control": "control"}[what],
                marker_color=[color_for(t.model) for t in shown] if color is None else color,
                error_y={"type": "data", "symmetric": False, "array": [c[1] - y for c, y in zip(cis, ys)],
                             "arrayminus": [y - c[0] for c, y in zip(cis, ys)]}))
        style(fig, "Do post-trained models use the base's directions? (last layer, held-out problems)", "", "accuracy")
        fig.update_layout(barmode="group", width=1100, height=480)
        figs["latent_transfer"] = fig

    fig = go.Figure()
    for m in result.models:
        cells = [m.cell(h, COT_VARIABLE) for h in m.hooks]
        if not any(cells):
            continue
        xs = [layer_name(h) for h, c in zip(m.hooks, cells) if c]
        ys = [c.score.value for c in cells if c]
        fig.add_trace(go.Scatter(x=xs, y=ys, name=f"{_short(m.name)} (CoT rate {m.cot_rate:.2f})",
                                 mode="lines+markers", line={"color": color_for(m.name)}))
        fig.add_trace(go.Scatter(x=xs, y=[c.majority for c in cells if c], mode="lines", showlegend=False,
                                 line={"color": color_for(m.name), "dash": "dot", "width": 1}))
    style(fig, "Decoding 'about to write a chain of thought' at the answer position (dotted: majority)", "layer",
          "probe accuracy (held-out)")
    figs["latent_will_cot"] = fig
    return {name: save_figure(f, out_dir / name, png=png) for name, f in figs.items()}


def summary_sentences(result: LatentResult) -> list[str]:
    """The numbers behind the figures, one sentence each."""
    lines = []
    fmt = lambda c: (f"{c.score.value:.2f} [{c.score.ci[0]:.2f}, {c.score.ci[1]:.2f}] vs control "
                     f"{c.control.value:.2f} (selectivity {c.selectivity:+.2f})")
    base = result.get(result.config.base)
    for v in result.variables:
        b = base.best(v)
        if b is not None:
            direct = base.cell(b.hook, v, direct_only=True)
            extra = (f"; on the {direct.n_test} test problems it answers directly (no CoT): {direct.score.value:.2f} "
                     f"vs control {direct.control.value:.2f}") if direct else ""
            lines.append(f"{_short(base.name)}, {v.name}: best at {layer_name(b.hook)}, accuracy {fmt(b)}{extra}.")
    for m in result.models:
        if m.name == base.name:
            continue
        parts = []
        at_answer = [v for v in result.variables if v.label == ANSWER and v.target.startswith("intermediate")]
        for v in (*at_answer, *(v for v in result.variables if v == VARIABLES[4])):
            b = m.best(v)
            if b is not None:
                parts.append(f"{v.name} {b.score.value:.2f} (control {b.control.value:.2f}, {layer_name(b.hook)})")
        if parts:
            lines.append(f"{_short(m.name)} (CoT rate {m.cot_rate:.2f}), best layer per value: " + "; ".join(parts) + ".")
    by_model: dict[str, list[Transfer]] = {}
    for t in result.transfers:
        by_model.setdefault(t.model, []).append(t)
    shown = ("answer @ answer", "step 1 @ answer", "step 1 @ its clause", "step 2 @ written CoT")
    label_of = {(v.label, v.target): v.name for v in result.variables}
    for name, ts in by_model.items():
        m = result.get(name)
        parts = [f"{label_of[(t.label, t.target)]} {t.transfer.value:.2f} [{t.transfer.ci[0]:.2f}, {t.transfer.ci[1]:.2f}] "
                 f"(re-centred {t.transfer_centred.value:.2f}; own probe {t.own.value:.2f}, control {t.control.value:.2f})"
                 for t in ts if t.hook == m.hooks[-1] and label_of.get((t.label, t.target)) in shown]
        lines.append(f"{_short(base.name)} probes on {_short(name)}'s last layer: " + "; ".join(parts) + ".")
    for m in result.models:
        cells = [c for c in (m.cell(h, COT_VARIABLE) for h in m.hooks) if c]
        if cells:
            best = max(cells, key=lambda c: c.score.value - c.majority)
            lines.append(f"{_short(m.name)}: whether it will write a CoT (rate {m.cot_rate:.2f}) is read at "
                         f"{layer_name(best.hook)} with accuracy {best.score.value:.2f} against a majority baseline of "
                         f"{best.majority:.2f} and a control of {best.control.value:.2f}.")
        elif any(s.variable == COT_VARIABLE.name for s in m.skipped):
            lines.append(f"{_short(m.name)}: its CoT decision cannot be probed, it always makes the same choice "
                         f"(CoT rate {m.cot_rate:.2f}).")
    reasons = {x.variable: x.reason for x in base.skipped if x.hook == ALL}
    for v, why in reasons.items():
        lines.append(f"{v}: not probed ({why}).")
    return lines


__all__ = [
    "VARIABLES",
    "LatentConfig",
    "LatentResult",
    "ModelProbes",
    "Transfer",
    "Variable",
    "available_variables",
    "cot_labels",
    "figures",
    "probe_model",
    "problem_items",
    "run",
    "run_cached",
    "summary_sentences",
    "transfer",
    "will_write_cot",
]
