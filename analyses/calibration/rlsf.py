"""rlsf and dpo-teacher against their initial model and the labelled post-training members.

Both are shipped zoo members trained by `interp organism train` (recipes in interp/organism/zoo.py):
- `organism/rlsf` (RLSF-like, arXiv 2507.21931): DPO from base-s on pairs of base-s's own samples ranked by
  its answer-token confidence, no labels and no verifier; dpo's recipe on the same samples, so the two
  differ only in how pairs are chosen.
- `organism/dpo-teacher` (arXiv 2410.18890): DPO from base-s on base-l's right vs wrong samples.
This module measures them: free-generation accuracy, CoT rate, invalid rate, and calibration (ECE with
bootstrap intervals, paired ECE difference to the initial model) against base-s, rl and dpo.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses.routing.common import sample_items
from interp.io import cache_dir, library_versions

MEMBERS = ("organism/rlsf", "organism/dpo-teacher")


@dataclass(frozen=True)
class MemberInfo:
    """What the compared member's card says about its training: init, pool source, ranking, steps, pool."""

    name: str
    init: str
    source: str | None
    rank: str
    steps: int
    pool: dict[str, Any]
    checksum: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemberInfo:
        return cls(**d)

    @classmethod
    def of(cls, name: str) -> MemberInfo:
        """Read from the shipped member's card; a clear error for a model that is not a preference member."""
        import interp
        from interp.io import read_json
        from interp.models import resolve_path

        card_path = Path(resolve_path(name)) / "card.json"
        card = read_json(card_path) if card_path.is_file() else {}
        cfg = card.get("config", {})
        if cfg.get("kind") != "dpo" or "preference_pool" not in card:
            raise ValueError(f"{name} is not a preference-trained zoo member with a card (expected one of "
                             f"{', '.join(MEMBERS)})")
        d = cfg["dpo"]
        return cls(card["name"], cfg["init"], d.get("source"), d.get("rank", "correct"), int(cfg["steps"]),
                   dict(card["preference_pool"]), interp.load(name).checksum)

COMPARED = ("organism/base-s", "organism/rl", "organism/dpo")


@dataclass(frozen=True)
class RLSFComparison:
    """rlsf against its initial model and the labelled post-training members on the same problems."""

    member: MemberInfo
    behaviour: dict[str, dict[str, Any]]  # model -> free-generation accuracy, CoT rate, invalid rate (with CIs)
    calibration: dict[str, Any]  # CalibrationResult.to_dict() over the compared models and rlsf
    ece_vs_init: dict[str, dict[str, Any]]  # condition -> ECE(rlsf) - ECE(init) with a paired CI

    def to_dict(self) -> dict[str, Any]:
        return {"member": self.member.to_dict(), "behaviour": self.behaviour, "calibration": self.calibration,
                "ece_vs_init": self.ece_vs_init}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RLSFComparison:
        return cls(MemberInfo.from_dict(d["member"]), d["behaviour"], d["calibration"], d["ece_vs_init"])


def compare(member: str = "organism/rlsf", compared: tuple[str, ...] = COMPARED, n_per_step: int = 100
            ) -> RLSFComparison:
    """Free-generation behaviour and calibration (direct, forced CoT, free) of the shipped member and the
    compared models (the pool's source too, when it is another model), on the same problems."""
    import interp
    from analyses.calibration.analysis import (
        CalibrationConfig,
        CalibrationResult,
        ece_difference,
        measure,
    )
    from interp.evaluation import GenerationConfig, GroupStats, evaluate

    cfg = CalibrationConfig(models=compared, n_per_step=n_per_step)
    task = interp.task(cfg.task)
    items = sample_items(task, cfg.steps, cfg.n_per_step, cfg.eval_seed)
    t0 = time.time()
    info = MemberInfo.of(member)
    name_ = info.name
    if info.source is not None and info.source not in compared:
        compared = (*compared, info.source)
    models = [(n, interp.load(n)) for n in (*compared, name_)]
    behaviour, cals = {}, []
    for name, m in models:
        ev = evaluate(m, task, items, GenerationConfig())
        g = GroupStats.of(ev.grades, cfg.n_boot, cfg.seed)
        behaviour[name] = {"accuracy": g.accuracy, "accuracy_ci": g.accuracy_ci, "cot_rate": g.cot_rate,
                           "cot_rate_ci": g.cot_rate_ci, "invalid_rate": g.invalid_rate,
                           "mean_tokens": g.mean_tokens}
        cals.append(dataclasses.replace(measure(m, task, items, cfg), name=name))
    result = CalibrationResult(dataclasses.replace(cfg, models=(*compared, name_)), task.describe(), tuple(cals),
                               tuple(int(it.meta.get("n_steps", 0)) for it in items), time.time() - t0,
                               library_versions())
    init = result.model(info.init)
    diffs = {}
    for cond in cfg.conditions:
        d, ci = ece_difference(result.model(name_).get(cond), init.get(cond), cfg.n_bins, cfg.n_boot, cfg.seed)
        diffs[cond] = {"diff": d, "diff_ci": ci}
    return RLSFComparison(info, behaviour, result.to_dict(), diffs)


def run_cached(member: str = "organism/rlsf", n_per_step: int = 100, compared: tuple[str, ...] = COMPARED
               ) -> RLSFComparison:
    """`compare`, reusing a stored comparison for the same models (by checksum) and settings."""
    import interp
    from analyses.routing.common import cached

    info = MemberInfo.of(member)
    models = (*compared, *([info.source] if info.source else []), member)
    key = {"member": member, "checksums": [interp.load(n).checksum for n in models], "n_per_step": n_per_step,
           "version": 2}
    return cached(Path(cache_dir("rlsf")) / "comparisons", key,
                  lambda: compare(member, compared, n_per_step), RLSFComparison.to_dict, RLSFComparison.from_dict)


def card_calibration(c: RLSFComparison, condition: str = "free") -> dict[str, Any]:
    """The member's calibration against its initial model, as its card records it (the rlsf target: ECE
    below base-s's with non-overlapping intervals)."""
    from analyses.calibration.analysis import CalibrationResult

    cal = CalibrationResult.from_dict(c.calibration)
    mine, init = cal.model(c.member.name).get(condition), cal.model(c.member.init).get(condition)
    return {"condition": condition, "ece": mine.ece, "ece_ci": list(mine.ece_ci), "init": c.member.init,
            "init_ece": init.ece, "init_ece_ci": list(init.ece_ci),
            "ece_minus_init": c.ece_vs_init[condition]["diff"], "ece_minus_init_ci": list(c.ece_vs_init[condition]["diff_ci"]),
            "accuracy": c.behaviour[c.member.name]["accuracy"], "accuracy_ci": list(c.behaviour[c.member.name]["accuracy_ci"]),
            "n_problems": len(cal.n_steps), "eval_seed": cal.config.eval_seed, "n_boot": cal.config.n_boot,
            "measured_by": "analyses.calibration.rlsf.compare", "checksum": c.member.checksum,
            "libraries": library_versions()}


def record_in_card(c: RLSFComparison) -> Path:
    """Write `card_calibration` into the shipped member's card (only if it still has the compared weights)."""
    import interp
    from interp.organism.zoo import update_card

    if interp.load(c.member.name).checksum != c.member.checksum:
        raise ValueError(f"{c.member.name} changed since it was compared: compare it again")
    return update_card(c.member.name, {"calibration": card_calibration(c)})


__all__ = ["COMPARED", "MEMBERS", "MemberInfo", "RLSFComparison", "card_calibration", "compare", "record_in_card",
           "run_cached"]
