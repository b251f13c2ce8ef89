"""`run(ReplicationConfig(seeds=(0, 1, 2))) -> ReplicationResult`: the analyses behind the zoo report's headline
findings, rerun on each seed's replicas of the zoo (seed 0: the shipped members; seed k: `organism/<member>-seed<k>`,
post-trained from their own seed's base), each finding's numbers extracted per seed and aggregated over seeds.

Each analysis runs through its own `run(config)` with its own config pointed at the seed's members and sized to
stay affordable (the numbers are then on fewer problems than the report's; the bootstrap intervals say so). The
per-seed numbers of each analysis are cached as JSON under the toolkit's cache (`replication/`), keyed by the
members' checksums and the configs, so a rerun is fast and a killed run resumes where it stopped."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from analyses.replication.aggregate import Finding
from analyses.replication.findings import HARD, ROUTED, TUNED, Measure, Metrics, evaluate, specs
from interp.io import cache_dir, library_versions, read_json, write_json

ANALYSES = ("zoo", "layers", "latent", "verbosity", "faithfulness", "reasoning", "calibration", "routing")
MEMBERS = ("base-s", *TUNED)  # the members with seed replicas
SCALE = ("base-m", "base-l")  # one run each (seed 0), the scale axis of the zoo findings
VERSION = 1  # part of the cache key: bump when the metrics extracted change
GRAFT_BLOCKS = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 3), (1, 4))  # single layers and the two 3-layer blocks


def member_name(member: str, seed: int) -> str:
    """`organism/<member>` for seed 0 (the shipped originals), `organism/<member>-seed<k>` otherwise."""
    if seed < 0:
        raise ValueError(f"seeds are non-negative integers, got {seed}")
    return f"organism/{member}" if seed == 0 else f"organism/{member}-seed{seed}"


def missing_members(seed: int, members: Sequence[str] = MEMBERS) -> list[str]:
    """The seed's members that are not trained (or not known to the zoo) yet."""
    from interp.organism.zoo_paths import organism_path

    out = []
    for m in members:
        try:
            organism_path(member_name(m, seed))
        except (ValueError, FileNotFoundError):
            out.append(member_name(m, seed))
    return out


@dataclass(frozen=True)
class ReplicationConfig:
    """Which seeds, which analyses, and how many problems each analysis uses per step count (smaller than the
    report's, so that three seeds cost about a quarter of an hour of CPU; measured 2026-11-30, one torch thread,
    CPU seconds per seed: faithfulness 18-21, reasoning 25-29, calibration 9-10, routing 33-40; about 90 in all). `skip_missing`
    leaves out (and records) the analyses of a seed whose members are not all trained yet instead of failing."""

    seeds: tuple[int, ...] = (0, 1, 2)
    analyses: tuple[str, ...] = ANALYSES
    n_eval: int = 50  # zoo evaluation, per step count 1-4 (free, forced CoT, forced direct)
    n_layers: int = 20  # layer changes (grafting and ablation), per step count 1-4
    n_latent: int = 150  # probes, per step count 2-4
    n_verbosity: int = 25  # verbosity validation and test problems, per step count 1-4
    verbosity_gammas: tuple[float, ...] = (0.5, 0.625, 0.75)
    n_faithfulness: int = 30  # text tests, per step count 3-4 (every member's own CoTs; base-s forced into one)
    n_patch: int = 8  # step-level patching, CoTs per step count 3-4
    n_calibration: int = 50  # free-generation calibration, per step count 1-4
    n_routing: int = 25  # routing, evaluation and classifier-training problems each, per step count 1-4
    n_reasoning: int = 25  # reasoning-mode direction, validation and test problems per step count 3-4
    skip_missing: bool = True
    cache_dir: str = field(default_factory=lambda: str(cache_dir("replication")))

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds}")
        valid = (*ANALYSES, *(f"layers.{t}" for t in TUNED))  # one pair's layer changes alone: layers.rl
        bad = [a for a in self.analyses if a not in valid]
        if bad or not self.analyses:
            raise ValueError(f"unknown analyses {bad}; valid: {', '.join(valid)}")
        for k in ("n_eval", "n_layers", "n_latent", "n_verbosity", "n_faithfulness", "n_patch", "n_calibration",
                  "n_routing", "n_reasoning"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1, got {getattr(self, k)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReplicationConfig:
        d = dict(d)
        for k in ("seeds", "analyses", "verbosity_gammas"):
            d[k] = tuple(d[k])
        return cls(**d)


@dataclass(frozen=True)
class ReplicationResult:
    """Per-seed metrics (seed -> metric key -> value with its bootstrap interval), the findings aggregated over
    the measured seeds, the members and checksums of each seed, seeds left out and why, time per analysis."""

    config: ReplicationConfig
    members: dict[int, dict[str, str]]  # seed -> role -> model name
    checksums: dict[str, str]
    metrics: dict[int, Metrics]
    findings: tuple[Finding, ...]
    missing: dict[int, str]  # seed -> which analyses did not run there, and why
    seconds: dict[int, dict[str, float]]  # seed -> analysis -> wall seconds it took to compute (when first run)
    cpu_seconds: dict[int, dict[str, float]]  # the same in process CPU seconds
    libraries: dict[str, str]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted(self.metrics))

    def finding(self, finding_id: str) -> Finding:
        for f in self.findings:
            if f.id == finding_id:
                return f
        raise KeyError(f"no finding {finding_id!r}; findings: {', '.join(f.id for f in self.findings)}")

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "config": self.config.to_dict(),
                "members": {str(s): m for s, m in self.members.items()}, "checksums": self.checksums,
                "metrics": {str(s): {k: _measure_dict(v) for k, v in m.items()} for s, m in self.metrics.items()},
                "findings": [f.to_dict() for f in self.findings], "missing": {str(s): r for s, r in self.missing.items()},
                "seconds": {str(s): _nulls(v) for s, v in self.seconds.items()},
                "cpu_seconds": {str(s): _nulls(v) for s, v in self.cpu_seconds.items()}, "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReplicationResult:
        return cls(ReplicationConfig.from_dict(d["config"]), {int(s): m for s, m in d["members"].items()},
                   d["checksums"], {int(s): {k: _measure(v) for k, v in m.items()} for s, m in d["metrics"].items()},
                   tuple(Finding.from_dict(f) for f in d["findings"]), {int(s): r for s, r in d["missing"].items()},
                   {int(s): {k: _num(x) for k, x in v.items()} for s, v in d["seconds"].items()},
                   {int(s): {k: _num(x) for k, x in v.items()} for s, v in d["cpu_seconds"].items()},
                   d["libraries"])


def _measure(d: Mapping[str, Any]) -> Measure:
    """A Measure from its JSON (nan is stored as null)."""
    return Measure(float("nan") if d["value"] is None else float(d["value"]),
                   None if d.get("ci") is None else (float(d["ci"][0]), float(d["ci"][1])), d.get("note", ""))


def _num(x: float | None) -> float:
    """A number from JSON, where null stands for not recorded (nan)."""
    return math.nan if x is None else float(x)


def _nulls(d: Mapping[str, float]) -> dict[str, float | None]:
    return {k: None if math.isnan(v) else v for k, v in d.items()}


def _measure_dict(m: Measure) -> dict[str, Any]:
    return {"value": None if math.isnan(m.value) else m.value, "ci": None if m.ci is None else list(m.ci),
            "note": m.note}


def aggregate(metrics: Mapping[int, Metrics]) -> tuple[Finding, ...]:
    """Every finding evaluated over the seeds' metrics (a finding whose analysis did not run in a seed counts
    that seed as not measured)."""
    return tuple(evaluate(s, metrics) for s in specs())


# ------------------------------------------------------------------------------------------ per seed

def analysis_configs(config: ReplicationConfig, seed: int) -> dict[str, Any]:
    """Each analysis' own config, pointed at the seed's members and sized by `config`. Faithfulness tests 3-4-step
    problems only; calibration measures free generation only; routing runs no steering variant (no finding
    rests on it); the reasoning direction sweeps the last position only, on a coarser grid (the report's
    off-zoo sweep, `PAIR_SWEEP`)."""
    from analyses.calibration.analysis import CalibrationConfig
    from analyses.faithfulness.analysis import FaithfulnessConfig
    from analyses.latent_reasoning import LatentConfig
    from analyses.layer_changes.analysis import LayerChangesConfig
    from analyses.routing.analysis import RoutingConfig
    from analyses.verbosity.analysis import VerbosityConfig
    from analyses.verbosity.figures import PAIR_SWEEP
    from analyses.verbosity.reasoning import ReasoningConfig
    from analyses.zoo_eval import ZooEvalConfig
    from interp.organism.evaluate import EvalConfig

    name = {m: member_name(m, seed) for m in MEMBERS}
    out: dict[str, Any] = {}
    if "zoo" in config.analyses:
        out["zoo"] = ZooEvalConfig(models=(*name.values(), *(member_name(b, 0) for b in SCALE)),
                                   eval=EvalConfig(n_per_step=config.n_eval))
    for t in TUNED:
        if "layers" in config.analyses or f"layers.{t}" in config.analyses:
            out[f"layers.{t}"] = LayerChangesConfig(base=name["base-s"], tuned=name[t], large=None,
                                                    eval=EvalConfig(n_per_step=config.n_layers, n_boot=1000),
                                                    blocks=GRAFT_BLOCKS, parts=("weights", "grafting", "ablation"))
    if "latent" in config.analyses:
        out["latent"] = LatentConfig(models=tuple(name.values()), base=name["base-s"], n_per_step=config.n_latent)
    if "verbosity" in config.analyses:
        out["verbosity"] = VerbosityConfig(model=name["sft"], base=name["base-s"], variants=("decision",),
                                           gammas=config.verbosity_gammas, n_val_per_step=config.n_verbosity,
                                           n_test_per_step=config.n_verbosity, timing_repeats=1, latency_problems=2)
    if "faithfulness" in config.analyses:
        out["faithfulness"] = FaithfulnessConfig(models=tuple(name.values()), forced_cot=(name["base-s"],), steps=HARD,
                                                 n_per_step=config.n_faithfulness, n_patch=config.n_patch)
    if "reasoning" in config.analyses:
        out["reasoning"] = ReasoningConfig(base=name["base-s"], tuned=name["sft"], **PAIR_SWEEP,
                                           n_val_per_step=config.n_reasoning, n_test_per_step=config.n_reasoning)
    if "calibration" in config.analyses:
        out["calibration"] = CalibrationConfig(models=tuple(name.values()), conditions=("free",),
                                               n_per_step=config.n_calibration)
    if "routing" in config.analyses:
        out["routing"] = RoutingConfig(base=name["base-s"], tuned=tuple(name[t] for t in ROUTED),
                                       n_per_step=config.n_routing, train_per_step=config.n_routing, steer=False)
    return out


def analysis_members(key: str, seed: int) -> dict[str, str]:
    """Role -> model name of the members one analysis of one seed needs (all of them for the zoo evaluation
    and the probes; base-s and the tuned member for a layer-changes pair; base-s and sft for verbosity and the
    reasoning direction; base-s, rl and sft for routing)."""
    r = roles(seed)
    if key == "zoo":
        return r
    if key in ("latent", "faithfulness", "calibration"):
        return {m: r[m] for m in MEMBERS}
    if key.startswith("layers."):
        return {m: r[m] for m in ("base-s", key.removeprefix("layers."))}
    if key in ("verbosity", "reasoning"):
        return {m: r[m] for m in ("base-s", "sft")}
    if key == "routing":
        return {m: r[m] for m in ("base-s", *ROUTED)}
    raise ValueError(f"unknown analysis {key!r}")


def cache_key(cfg: Any, checksums: Mapping[str, str]) -> str:
    """The key of one analysis' per-seed numbers: its config (not where it caches) and its members' checksums."""
    return _digest({"config": _config_key(cfg), "checksums": dict(checksums), "version": VERSION})


def roles(seed: int) -> dict[str, str]:
    """Role -> model name for one seed (the scale bases are always seed 0's)."""
    return {**{m: member_name(m, seed) for m in MEMBERS}, **{b: member_name(b, 0) for b in SCALE}}


def run_one(key: str, cfg: Any, seed: int, progress: bool = True) -> Metrics:
    """Run one analysis of one seed (through the analysis' own cached `run`) and extract its numbers."""
    from analyses.replication import findings as fd

    r = roles(seed)
    if key == "zoo":
        from analyses import zoo_eval

        return fd.zoo_metrics(zoo_eval.run(cfg, progress=progress), r)
    if key.startswith("layers."):
        from analyses.layer_changes.analysis import run as layers_run

        return fd.layer_metrics(layers_run(cfg, progress=progress), key.removeprefix("layers."))
    if key == "latent":
        from analyses import latent_reasoning

        return fd.latent_metrics(latent_reasoning.run_cached(cfg, progress=progress), r)
    if key == "verbosity":
        from analyses.verbosity.analysis import run_cached

        return fd.verbosity_metrics(run_cached(cfg, progress=progress))
    if key == "faithfulness":
        from analyses.faithfulness.analysis import run as faithfulness_run

        return fd.faithfulness_metrics(faithfulness_run(cfg, progress=progress), r)
    if key == "reasoning":
        from analyses.verbosity.reasoning import run_cached as reasoning_run

        return fd.reasoning_metrics(reasoning_run(cfg, progress=progress))
    if key == "calibration":
        from analyses.calibration.analysis import run_cached as calibration_run

        return fd.calibration_metrics(calibration_run(cfg), r)
    if key == "routing":
        from analyses.routing.analysis import run_cached as routing_run

        return fd.routing_metrics(routing_run(cfg), r)
    raise ValueError(f"unknown analysis {key!r}")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _config_key(cfg: Any) -> dict[str, Any]:
    d = cfg.to_dict()
    d.pop("cache_dir", None)
    return d


def run(config: ReplicationConfig = ReplicationConfig(), progress: bool = True) -> ReplicationResult:
    """Every analysis on every seed's members (cached per seed and analysis), then the findings over seeds."""
    import torch

    from interp.models import load

    metrics: dict[int, Metrics] = {}
    members: dict[int, dict[str, str]] = {}
    checksums: dict[str, str] = {}
    missing: dict[int, str] = {}
    seconds: dict[int, dict[str, float]] = {}
    cpu: dict[int, dict[str, float]] = {}
    for seed in config.seeds:
        absent = missing_members(seed)
        if absent and not config.skip_missing:
            raise FileNotFoundError(f"seed {seed}: not trained yet: {', '.join(absent)}")
        skipped = []
        for key, cfg in tqdm(analysis_configs(config, seed).items(), desc=f"seed {seed}", disable=not progress):
            names = analysis_members(key, seed)
            lacking = [n for n in names.values() if n in absent]
            if lacking:  # the members this analysis needs are not all trained: the seed's other analyses still run
                skipped.append(f"{key} ({', '.join(lacking)} not trained yet)")
                continue
            for n in names.values():
                checksums.setdefault(n, load(n).checksum)
            own = {n: checksums[n] for n in names.values()}  # the cache key: this analysis' members only
            path = Path(config.cache_dir) / f"seed{seed}-{key}-{cache_key(cfg, own)}.json"
            if path.is_file():  # computed before (this run was resumed): its numbers and what they cost then
                saved = read_json(path)
                got = {k: _measure(v) for k, v in saved["metrics"].items()}
                wall, used = _num(saved.get("seconds")), _num(saved.get("cpu_seconds"))
            else:
                t0, c0 = time.perf_counter(), time.process_time()
                torch.manual_seed(0)
                got = run_one(key, cfg, seed, progress=False)
                wall, used = round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)
                write_json(path, {"seed": seed, "analysis": key, "config": _config_key(cfg), "checksums": own,
                                  "metrics": {k: _measure_dict(v) for k, v in got.items()},
                                  "seconds": wall, "cpu_seconds": used})
            metrics.setdefault(seed, {}).update(got)
            members.setdefault(seed, {}).update(names)
            seconds.setdefault(seed, {})[key] = wall
            cpu.setdefault(seed, {})[key] = used
        if skipped:
            missing[seed] = "not run: " + "; ".join(skipped)
    return ReplicationResult(config, members, checksums, metrics, aggregate(metrics), missing, seconds, cpu,
                             library_versions())


__all__ = ["ANALYSES", "MEMBERS", "ReplicationConfig", "ReplicationResult", "aggregate", "analysis_configs",
           "analysis_members", "cache_key", "member_name", "missing_members", "roles", "run", "run_one"]
