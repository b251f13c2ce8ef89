"""A probe job: every (hook, position label, target) cell of a store, with control task and intervals.

`run(ProbeJobConfig(...))` fits one probe and one control probe per cell, scores both on held-out
problems, and writes each cell (its probe and its metrics) as it finishes, so a killed job resumes
where it stopped and gives the same numbers. A finished cell is reused only if it was computed from the
same store contents (model checksum, dataset hash, shard checksums): a store re-harvested at the same
path makes its cells recompute. `score` is the single place a probe is scored against
labels, for the job and for transfer (a probe applied to another model's activations).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp.activations.store import ActivationStore
from interp.hooks import layer_of
from interp.io import library_versions, read_json, write_json
from interp.stats import percentile_ci
from probes.linear import Kind, Probe, fit, infer_kind
from probes.splits import control_labels, group_bootstrap, split_by_group


@dataclass(frozen=True)
class ProbeJobConfig:
    """What to probe: a store, its hooks x position labels (empty: all), and meta targets."""

    store: str
    targets: tuple[str, ...]
    out: str
    hooks: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    kind: Kind | None = None  # None: logistic for discrete targets, ridge for real ones
    meta_filter: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # keep examples with meta[k] in values
    test_fraction: float = 0.3
    c: float = 1.0
    alpha: float = 1.0
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("name at least one target (a metadata key of the dataset, e.g. intermediate.step1)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["meta_filter"] = {k: list(v) for k, v in self.meta_filter.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProbeJobConfig:
        d = dict(d)
        for k in ("targets", "hooks", "labels"):
            d[k] = tuple(d.get(k, ()))
        d["meta_filter"] = {k: tuple(v) for k, v in d.pop("meta_filter", d.pop("where", {})).items()}
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown probe job keys {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(cls)]}")
        return cls(**d)


@dataclass(frozen=True)
class Score:
    """A probe's score on labelled rows with a bootstrap interval over problems."""

    metric: str  # "accuracy" or "r2"
    value: float
    ci: tuple[float, float]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Score:
        return cls(d["metric"], d["value"], tuple(d["ci"]), d["n"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class CellResult:
    """One probe and its control on held-out problems; selectivity = score - control score."""

    hook: str
    layer: int | None
    label: str
    target: str
    kind: str
    n_train: int
    n_test: int
    n_classes: int
    score: Score
    control: Score
    selectivity: float
    selectivity_ci: tuple[float, float]
    majority: float  # share of the most common training label among test rows (logistic); 0 for ridge
    probe_path: str

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["score"], d["control"] = self.score.to_dict(), self.control.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CellResult:
        d = dict(d)
        d["score"], d["control"] = Score.from_dict(d["score"]), Score.from_dict(d["control"])
        d["selectivity_ci"] = tuple(d["selectivity_ci"])
        return cls(**d)


@dataclass(frozen=True)
class SweepResult:
    config: ProbeJobConfig
    model_name: str
    model_checksum: str
    cells: tuple[CellResult, ...]
    libraries: Mapping[str, str]
    source: Mapping[str, str] = field(default_factory=dict)  # store_identity of the store the cells came from

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "model_name": self.model_name, "model_checksum": self.model_checksum,
                "cells": [c.to_dict() for c in self.cells], "libraries": dict(self.libraries),
                "source": dict(self.source)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepResult:
        return cls(ProbeJobConfig.from_dict(d["config"]), d["model_name"], d["model_checksum"],
                   tuple(CellResult.from_dict(c) for c in d["cells"]), d["libraries"], d.get("source", {}))

    def cell(self, hook: str, label: str, target: str) -> CellResult:
        for c in self.cells:
            if (c.hook, c.label, c.target) == (hook, label, target):
                return c
        raise KeyError(f"no cell ({hook}, {label}, {target}) in this sweep")


def _metric(kind: str, pred: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray | float:
    """Accuracy (logistic) or R^2 (ridge); with weights [n_boot, rows], one value per bootstrap replicate."""
    if w is None:
        return float(_metric(kind, pred, y, np.ones((1, len(y))))[0])
    if kind == "ridge":
        mean = (w @ y) / w.sum(1)
        sst = (w * (y[None, :] - mean[:, None]) ** 2).sum(1)
        sse = w @ ((y - pred) ** 2)
        return np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), 0.0)
    return (w @ (pred == y).astype(float)) / w.sum(1)


def score(probe: Probe, x: torch.Tensor, y: Sequence[Any], groups: Sequence[str], n_boot: int = 1000,
          seed: int = 0, checksum: str | None = None, allow_other_model: bool = False,
          ) -> tuple[Score, np.ndarray]:
    """Score `probe` on rows (x, y) with a bootstrap over problems; returns the score and the
    bootstrap replicates (paired with any other score made with the same groups and seed)."""
    y_arr = np.array(list(y), dtype=object if probe.kind == "logistic" else float)
    pred = probe.predict(x, checksum, allow_other_model)
    if probe.kind == "ridge":
        pred = pred.astype(float)
    value = float(_metric(probe.kind, pred, y_arr))
    boots = np.asarray(_metric(probe.kind, pred, y_arr, group_bootstrap(groups, n_boot, seed))) if n_boot else np.zeros(0)
    ci = percentile_ci(boots) if n_boot else (value, value)
    return Score("r2" if probe.kind == "ridge" else "accuracy", value, ci, len(y_arr)), boots


def _slug(*parts: str) -> str:
    return "__".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", p) for p in parts)


def rows_for(store: ActivationStore, hook: str, label: str, target: str,
             meta_filter: Mapping[str, Sequence[Any]] | None = None, dataset: Any = None
             ) -> tuple[torch.Tensor, list[Any], list[str], np.ndarray]:
    """Activations, target values, problem groups and example ids of the rows that have the target."""
    dataset = dataset if dataset is not None else store.dataset()
    x = store.get(hook, label)
    ex = store.index(label)["example"]
    meta = [dataset[int(e)].meta for e in ex]
    keep = np.array([target in m and m[target] is not None
                     and all(m.get(k) in tuple(v) for k, v in (meta_filter or {}).items()) for m in meta], dtype=bool)
    groups_all = dataset.groups()
    y = [meta[i][target] for i in np.flatnonzero(keep)]
    groups = [groups_all[int(e)] for e in ex[keep]]
    return x[torch.from_numpy(keep)], y, groups, ex[keep]


def fit_cell(store: ActivationStore, hook: str, label: str, target: str, cfg: ProbeJobConfig,
             dataset: Any = None, probe_path: Path | None = None, save_control: bool = False) -> CellResult:
    """Fit the probe and its control for one cell and score both on held-out problems; saved at
    `probe_path` (and the control at `<probe_path>.control`) if given."""
    x, y, groups, _ = rows_for(store, hook, label, target, cfg.meta_filter, dataset)
    if len(y) == 0:
        have = sorted({k for e in (dataset or store.dataset()) for k in e.meta})
        raise ValueError(f"no rows of label {label!r} have target {target!r}; the dataset's metadata keys are {have}")
    kind = cfg.kind or infer_kind(y)
    train, test = split_by_group(groups, cfg.test_fraction, cfg.seed)
    y_ctrl = control_labels(y, groups, cfg.seed)
    tr, te = torch.from_numpy(train), torch.from_numpy(test)
    y_tr, y_te = [v for v, t in zip(y, train) if t], [v for v, t in zip(y, test) if t]
    c_tr, c_te = [v for v, t in zip(y_ctrl, train) if t], [v for v, t in zip(y_ctrl, test) if t]
    g_te = [g for g, t in zip(groups, test) if t]
    info = {"hook": hook, "label": label, "target": target, "model_name": store.model_name,
            "model_checksum": store.model_checksum, "dataset_hash": store.manifest["dataset_hash"],
            "config": cfg.to_dict()}
    probe = fit(x[tr], y_tr, kind, cfg.c, cfg.alpha, info)
    ctrl = fit(x[tr], c_tr, kind, cfg.c, cfg.alpha, {**info, "control": True})
    s, boots = score(probe, x[te], y_te, g_te, cfg.n_boot, cfg.seed, store.model_checksum)
    cs, cboots = score(ctrl, x[te], c_te, g_te, cfg.n_boot, cfg.seed, store.model_checksum)
    diff = boots - cboots
    sel_ci = percentile_ci(diff) if cfg.n_boot else (0.0, 0.0)
    majority = 0.0
    if kind == "logistic":
        values, counts = np.unique(np.array(y_tr, dtype=str), return_counts=True)
        top = values[counts.argmax()]
        majority = float(np.mean(np.array(y_te, dtype=str) == top))
    saved = ""
    if probe_path is not None:
        probe.info["metrics"] = {"score": s.to_dict(), "control": cs.to_dict(), "selectivity": s.value - cs.value}
        saved = str(probe.save(probe_path))
        if save_control:
            ctrl.save(f"{probe_path}.control")
    return CellResult(hook, layer_of(hook), label, target, kind, int(train.sum()), int(test.sum()),
                      len(probe.classes), s, cs, s.value - cs.value, sel_ci, majority, saved)


def store_identity(store: ActivationStore) -> dict[str, str]:
    """What a cell's numbers depend on besides the job config: the model, the dataset (prompts and labels)
    and the stored activations (a digest of the manifest's per-shard sha256s)."""
    shards = store.manifest.get("shards", {})
    digest = hashlib.sha256(json.dumps([[k, shards[k].get("sha256")] for k in sorted(shards, key=int)]).encode())
    return {"model_checksum": store.model_checksum, "dataset_hash": str(store.manifest.get("dataset_hash")),
            "shards_sha256": digest.hexdigest()}


def _cached_cell(path: Path, identity: Mapping[str, str]) -> CellResult | None:
    """The cell stored at `path` if it was computed from a store with this identity, else None."""
    if not path.is_file():
        return None
    d = read_json(path)
    if d.pop("source", None) != identity:
        return None
    return CellResult.from_dict(d)


def run(cfg: ProbeJobConfig, progress: Callable[[int, int, str], None] | None = None, ray: str | bool | None = None,
        num_cpus: float = 1) -> SweepResult:
    """Fit every cell (resuming from `cfg.out`), write `result.json`, and return the sweep.

    `ray` (see `interp.cluster`) fits the missing cells as Ray tasks (`num_cpus` each; the store is read at
    its path on the workers) and writes the same cells, probes and result as a run in this process.

    Resuming reads back a finished cell only if it was computed from the same store contents
    (`store_identity`: model checksum, dataset hash, shard checksums); a cell of a store since re-harvested
    at the same path (another model, other prompts or labels) is recomputed and overwritten."""
    store = ActivationStore.open(cfg.store)
    hooks = list(cfg.hooks) or store.hooks
    for h in hooks:
        store.shape(h)  # unknown hook -> error with the closest names
    labels = list(cfg.labels) or store.labels
    store.label_ids(labels)
    out = Path(cfg.out)
    if (out / "config.json").is_file():
        old = read_json(out / "config.json")
        if old != json.loads(json.dumps(cfg.to_dict())):
            raise ValueError(f"{out} holds a probe job with another configuration; use another folder")
    write_json(out / "config.json", cfg.to_dict())
    dataset = store.dataset()
    identity = store_identity(store)
    cells = [(h, lab, t) for h in hooks for lab in labels for t in cfg.targets]
    results: list[CellResult | None] = [_cached_cell(out / "cells" / f"{_slug(*c)}.json", identity) for c in cells]
    if ray in (None, False, ""):
        for i, (h, lab, t) in enumerate(cells):
            slug = _slug(h, lab, t)
            if results[i] is None:
                r = fit_cell(store, h, lab, t, cfg, dataset, out / "probes" / slug)
                write_json(out / "cells" / f"{slug}.json", {"source": identity, **r.to_dict()})
                results[i] = r
            if progress is not None:
                progress(i + 1, len(cells), slug)
    else:
        from interp.cluster import iter_tasks, write_tree
        from probes.parallel import cell_task

        todo = [i for i, r in enumerate(results) if r is None]
        args = [(str(store.root), *cells[i], cfg, _slug(*cells[i]), str(out / "probes" / _slug(*cells[i])))
                for i in todo]
        for n, (j, (d, files)) in enumerate(iter_tasks(cell_task, args, ray=ray, num_cpus=num_cpus), start=1):
            i = todo[j]
            write_tree(out / "probes", files)
            write_json(out / "cells" / f"{_slug(*cells[i])}.json", {"source": identity, **d})
            results[i] = CellResult.from_dict(d)
            if progress is not None:
                progress(len(cells) - len(todo) + n, len(cells), _slug(*cells[i]))
    result = SweepResult(cfg, store.model_name, store.model_checksum, tuple(r for r in results if r is not None),
                         library_versions(), identity)
    write_json(out / "result.json", result.to_dict())
    return result


__all__ = [
    "CellResult",
    "ProbeJobConfig",
    "Score",
    "SweepResult",
    "fit_cell",
    "rows_for",
    "run",
    "score",
    "store_identity",
]
