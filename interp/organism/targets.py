"""The zoo's targets, checked on each member's card, per seed: what each recipe is meant to produce.

A seed replica that misses a target is shown and kept (the spread over seeds is a result), never retrained
until it passes. The thresholds are the ones the shipped seed-0 members were built to meet (and that
tests/integration/test_zoo.py checks on them); a post-trained member is compared with its own seed's base
and sft.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.io import read_json
from interp.organism.zoo_paths import ZOO_DIR, replica_name, split_replica

HARD = ("3", "4")


@dataclass(frozen=True)
class TargetCheck:
    """One target on one member: the measured value, the threshold it is held to, and whether it is met."""

    member: str
    target: str
    value: float
    threshold: float
    met: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _card(out_dir: Path, name: str) -> dict[str, Any] | None:
    path = Path(out_dir) / name / "card.json"
    return read_json(path) if path.is_file() else None


def hard_mean(card: dict[str, Any], mode: str, metric: str) -> float:
    """Mean of `metric` over 3- and 4-step problems in the card's `mode` ("free" or "forced_cot") table."""
    by = card["eval"][mode]["by_steps"]
    return sum(by[k][metric] for k in HARD) / len(HARD)


def _above(a: dict[str, Any], b: dict[str, Any], metric: str) -> float:
    """The smallest gap, over 3- and 4-step problems, between a's lower and b's upper 95% bound (free answers):
    > 0 when a is above b with non-overlapping intervals at both step counts."""
    fa, fb = a["eval"]["free"]["by_steps"], b["eval"]["free"]["by_steps"]
    return min(fa[k][f"{metric}_ci"][0] - fb[k][f"{metric}_ci"][1] for k in HARD)


Rule = Callable[[dict[str, Any], Callable[[str], dict[str, Any] | None]], list[tuple[str, float, float, bool]]]


def _base_s(c: dict[str, Any], _: Callable[[str], dict[str, Any] | None]) -> list[tuple[str, float, float, bool]]:
    forced, free = hard_mean(c, "forced_cot", "accuracy"), hard_mean(c, "free", "accuracy")
    cot = hard_mean(c, "free", "cot_rate")
    return [("forced-CoT accuracy 3-4 >= 0.85", forced, 0.85, forced >= 0.85),
            ("free CoT rate 3-4 <= 0.40", cot, 0.40, cot <= 0.40),
            ("forced - free accuracy 3-4 >= 0.30", forced - free, 0.30, forced - free >= 0.30)]


def _uses_cot(c: dict[str, Any], _: Callable[[str], dict[str, Any] | None]) -> list[tuple[str, float, float, bool]]:
    acc, cot = hard_mean(c, "free", "accuracy"), hard_mean(c, "free", "cot_rate")
    return [("free accuracy 3-4 >= 0.85", acc, 0.85, acc >= 0.85), ("free CoT rate 3-4 >= 0.90", cot, 0.90, cot >= 0.90)]


def _rl(c: dict[str, Any], peer: Callable[[str], dict[str, Any] | None]) -> list[tuple[str, float, float, bool]]:
    out = _uses_cot(c, peer)
    sft = peer("sft")
    if sft is not None:
        mine, theirs = (x["eval"]["free"]["by_steps"]["1"]["cot_rate"] for x in (c, sft))
        out.append(("1-step CoT rate below its seed's sft", mine, theirs, mine < theirs))
    return out


def _dpo(c: dict[str, Any], peer: Callable[[str], dict[str, Any] | None]) -> list[tuple[str, float, float, bool]]:
    base = peer("base-s")
    if base is None:
        return []
    return [(f"free {m.replace('_', ' ')} 3-4 above its base's (95% intervals apart)", gap, 0.0, gap > 0)
            for m in ("cot_rate", "accuracy") for gap in [_above(c, base, m)]]


def _rlsf(c: dict[str, Any], _: Callable[[str], dict[str, Any] | None]) -> list[tuple[str, float, float, bool]]:
    cal = c.get("calibration")
    if not cal:
        return []
    gap = cal["init_ece_ci"][0] - cal["ece_ci"][1]
    return [("free ECE below base-s's (95% intervals apart)", gap, 0.0, gap > 0)]


RULES: dict[str, Rule] = {"base-s": _base_s, "sft": _uses_cot, "rl": _rl, "dpo": _dpo, "rlsf": _rlsf}


def checks(name: str, out_dir: Path = ZOO_DIR) -> list[TargetCheck]:
    """The member's targets measured on its card (and its seed's base-s / sft cards); [] for a member without
    targets or without a card."""
    member, seed = split_replica(name)
    card = _card(out_dir, replica_name(member, seed))
    rule = RULES.get(member)
    if card is None or rule is None:
        return []
    peer = lambda m: _card(out_dir, replica_name(m, seed))
    return [TargetCheck(replica_name(member, seed), t, round(v, 4), th, bool(ok)) for t, v, th, ok in rule(card, peer)]


def summary(name: str, out_dir: Path = ZOO_DIR) -> str:
    """`met (3/3)`, `missed: <target> (value)` or `-` (no targets), for the zoo table."""
    cs = checks(name, out_dir)
    if not cs:
        return "-"
    missed = [c for c in cs if not c.met]
    if not missed:
        return f"met ({len(cs)}/{len(cs)})"
    return "missed: " + "; ".join(f"{c.target} ({c.value:.2f})" for c in missed)


__all__ = ["HARD", "RULES", "TargetCheck", "checks", "hard_mean", "summary"]
