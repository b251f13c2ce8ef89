"""The headline findings of the zoo report, as claims checked per seed: the numbers each analysis result
gives for one seed (`*_metrics`), and for each finding the claim, the number that decides it and the
predicate over one seed's numbers (`SPECS`). Thresholds are written into the claims."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from analyses.replication.aggregate import Finding, Replicated, SeedValue

if TYPE_CHECKING:
    from analyses.calibration.analysis import CalibrationResult
    from analyses.faithfulness.analysis import FaithfulnessResult, Score
    from analyses.latent_reasoning import LatentResult
    from analyses.layer_changes.analysis import LayerChangesResult
    from analyses.routing.analysis import RoutingResult
    from analyses.verbosity.analysis import VerbosityResult
    from analyses.verbosity.reasoning import ReasoningResult
    from analyses.zoo_eval import ZooEvalResult

TUNED = ("sft", "rl", "dpo")
ROUTED = ("rl", "sft")  # the tuned members the routing analysis pairs with base-s (as the report does)
HARD = (3, 4)  # the report's hard problems
N_BOOT = 1000


@dataclass(frozen=True)
class Measure:
    """One number of one seed, with its 95% bootstrap interval when the analysis gives one."""

    value: float
    ci: tuple[float, float] | None = None
    note: str = ""


Metrics = dict[str, Measure]
NAN = Measure(math.nan)


# ------------------------------------------------------------------------------------------ extraction

def zoo_metrics(result: ZooEvalResult, roles: Mapping[str, str]) -> Metrics:
    """Free/forced accuracy and CoT rate on 3-4-step problems. `roles` maps a role (base-s, sft, ..., base-m)
    to the model name evaluated in that role. Intervals of a 3-4-step mean are the mean of the two step
    counts' bootstrap bounds (equal n per step count; at least as wide as the pooled interval)."""
    by_name = {m.name: m for m in result.models}
    out: Metrics = {}

    def hard(ev: object, metric: str) -> Measure:
        stats = [ev.by_steps[k] for k in HARD]  # type: ignore[attr-defined]
        cis = [getattr(s, f"{metric}_ci") for s in stats]
        return Measure(float(np.mean([getattr(s, metric) for s in stats])),
                       (float(np.mean([c[0] for c in cis])), float(np.mean([c[1] for c in cis]))))

    for role, name in roles.items():
        m = by_name.get(name)
        if m is None:
            continue
        out[f"zoo.{role}.free_acc"] = hard(m.free, "accuracy")
        out[f"zoo.{role}.cot_rate"] = hard(m.free, "cot_rate")
        if m.forced is not None:
            out[f"zoo.{role}.forced_acc"] = hard(m.forced, "accuracy")
        if m.direct is not None:
            out[f"zoo.{role}.direct_acc"] = hard(m.direct, "accuracy")
    if "zoo.base-s.forced_acc" in out:
        out["zoo.base-s.unused"] = Measure(out["zoo.base-s.forced_acc"].value - out["zoo.base-s.free_acc"].value)
    scale = [out[f"zoo.{b}.direct_acc"].value for b in ("base-m", "base-l") if f"zoo.{b}.direct_acc" in out]
    if scale and "zoo.base-s.direct_acc" in out:
        out["zoo.scale_gain"] = Measure(max(scale) - out["zoo.base-s.direct_acc"].value)
    return out


def _gap_closed_ci(graft: Sequence[bool], base: Sequence[bool], tuned: Sequence[bool], seed: int = 0
                   ) -> tuple[float, tuple[float, float] | None]:
    """(graft - base) / (tuned - base) of CoT rates on the same problems, with a paired bootstrap interval."""
    g, b, t = (np.asarray(x, dtype=float) for x in (graft, base, tuned))
    closed = lambda i: (g[i].mean() - b[i].mean()) / (t[i].mean() - b[i].mean())
    if abs(t.mean() - b.mean()) < 1e-9:
        return math.nan, None
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(N_BOOT):
        i = rng.integers(0, len(g), len(g))
        if abs(t[i].mean() - b[i].mean()) > 1e-9:
            reps.append(closed(i))
    ci = (float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))) if reps else None
    return float(closed(np.arange(len(g)))), ci


def _rank(drops: Sequence[float]) -> str:
    return ">".join(str(i) for i in np.argsort(-np.array(drops), kind="stable"))


def layer_metrics(result: LayerChangesResult, role: str) -> Metrics:
    """Grafting (which single layer moves the CoT rate most, and how much of the gap it closes; whether a
    3-layer block closes 90%), weight change spread, and the criticality order of layers under ablation."""
    from analyses.layer_changes.figures import _spearman
    from analyses.layer_changes.grafting import ENDS

    out: Metrics = {}
    p = f"layers.{role}"
    n, bl = result.n_layers, result.baselines
    if result.weights is not None:
        w = result.weights.per_layer
        out[f"{p}.weight_ratio"] = Measure(min(w) / max(w))
    into = [g for g in result.grafts if g.direction == "tuned_into_base" and g.block != ENDS and g.behaviour]
    singles = sorted((g for g in into if g.block[1] - g.block[0] == 1), key=lambda g: g.block)  # type: ignore[index]
    if singles and "base" in bl and "tuned" in bl:
        base, tuned = bl["base"].cot, bl["tuned"].cot
        gaps = [_gap_closed_ci(g.behaviour.cot, base, tuned) for g in singles]  # type: ignore[union-attr]
        best = int(np.argmax([g.behaviour.cot_rate for g in singles]))  # type: ignore[union-attr]
        out[f"{p}.best_single_layer"] = Measure(float(singles[best].block[0]))  # type: ignore[index]
        out[f"{p}.top_gap"] = Measure(gaps[-1][0], gaps[-1][1])
        out[f"{p}.best_single_gap"] = Measure(gaps[best][0], gaps[best][1])
        out[f"{p}.top_is_best"] = Measure(float(best == n - 1))
        out[f"{p}.base_cot"] = Measure(bl["base"].cot_rate, bl["base"].cot_rate_ci)
        out[f"{p}.tuned_cot"] = Measure(bl["tuned"].cot_rate, bl["tuned"].cot_rate_ci)
        big = [g for g in into if g.block[1] - g.block[0] == n - 1]  # type: ignore[index]
        if big:
            closed = [_gap_closed_ci(g.behaviour.cot, base, tuned)[0] for g in big]  # type: ignore[union-attr]
            out[f"{p}.block_max_gap"] = Measure(max(closed))
    if result.ablations and "base_forced_cot" in bl and "tuned_forced_cot" in bl:
        drops = {}
        for r in ("base", "tuned"):
            cells = sorted((a for a in result.ablations if a.model == r and a.mode == "mean"), key=lambda a: a.layer)
            drops[r] = [bl[f"{r}_forced_cot"].accuracy - a.forced_cot.accuracy for a in cells]
        out[f"{p}.rank_rho"] = Measure(_spearman(drops["base"], drops["tuned"]),
                                       note=f"{_rank(drops['base'])} vs {_rank(drops['tuned'])}")
        out[f"{p}.same_rank"] = Measure(float(_rank(drops["base"]) == _rank(drops["tuned"])))
    return out


def latent_metrics(result: LatentResult, roles: Mapping[str, str]) -> Metrics:
    """base-s's best selectivity for steps 1-3 at the answer position (and for the answer itself); each
    model's CoT decision read at its best layer, as accuracy above the majority baseline."""
    from analyses.latent_reasoning import COT_VARIABLE, INTERMEDIATE_AT_ANSWER, VARIABLES

    out: Metrics = {}
    names = {m.name: m for m in result.models}
    base = names.get(roles.get("base-s", ""))
    if base is not None:
        cells = [c for c in (base.best(v) for v in INTERMEDIATE_AT_ANSWER) if c is not None]
        if cells:
            c = max(cells, key=lambda c: c.selectivity)
            out["latent.base-s.step_selectivity"] = Measure(c.selectivity, tuple(c.selectivity_ci),
                                                            note=f"{c.target.removeprefix('intermediate.')} at L{c.layer}")
        ans = base.best(next(v for v in VARIABLES if v.name == "answer @ answer"))
        if ans is not None:
            out["latent.base-s.answer_selectivity"] = Measure(ans.selectivity, tuple(ans.selectivity_ci))
    for role, name in roles.items():
        m = names.get(name)
        if m is None:
            continue
        cells = [c for c in (m.cell(h, COT_VARIABLE) for h in m.hooks) if c]
        if cells:
            best = max(cells, key=lambda c: c.score.value - c.majority)
            out[f"latent.{role}.cot_gain"] = Measure(best.score.value - best.majority,
                                                     (best.score.ci[0] - best.majority, best.score.ci[1] - best.majority))
        else:
            out[f"latent.{role}.cot_gain"] = Measure(math.nan, note=f"not probeable, CoT rate {m.cot_rate:.2f}")
    return out


def verbosity_metrics(result: VerbosityResult) -> Metrics:
    """Token reduction and accuracy change (paired intervals) of sft's own direction at its chosen point, of
    base-s's direction at the same point, and the random-direction control's reduction."""
    out: Metrics = {}
    red, test = result.reduction, result.test
    if result.chosen is None or "chosen" not in red:
        why = "no steering point kept accuracy within tolerance on validation"
        return {k: Measure(math.nan, note=why) for k in ("verbosity.own_reduction", "verbosity.base_reduction")}
    base_key = next((k for k in red if k.startswith("chosen: ") and k.endswith(" direction")), None)
    for key, name in (("chosen", "own"), (base_key, "base")):
        if key is None:
            continue
        r = red[key]
        out[f"verbosity.{name}_reduction"] = Measure(r["reduction"], tuple(r["reduction_ci"]))
        out[f"verbosity.{name}_acc_change"] = Measure(r["accuracy_change"], tuple(r["accuracy_change_ci"]))
    rand, ref = test.get("chosen: random direction"), test.get("unsteered")
    if rand is not None and ref is not None:
        out["verbosity.random_reduction"] = Measure(1 - rand.mean_tokens / ref.mean_tokens)
    return out


def _mean_score(scores: Sequence[Score]) -> Measure:
    """Mean over step counts of a faithfulness score and of its interval ends (nan when any is nan)."""
    vals = [s.value for s in scores]
    if not scores or any(math.isnan(v) for v in vals):
        return Measure(math.nan, note="not tested (no chain of thought to test)")
    lo, hi = (float(np.mean([s.ci[j] for s in scores])) for j in (0, 1))
    return Measure(float(np.mean(vals)), None if math.isnan(lo) or math.isnan(hi) else (lo, hi))


def _difference(a: Measure, b: Measure) -> Measure:
    """a - b of two independent estimates, its interval from theirs (each side: the root of the summed squared
    half-widths that face each other), since the two models' tested CoTs are different problems."""
    d = a.value - b.value
    if math.isnan(d) or a.ci is None or b.ci is None:
        return Measure(d)
    lo = d - math.hypot(a.value - a.ci[0], b.ci[1] - b.value)
    hi = d + math.hypot(a.ci[1] - a.value, b.value - b.ci[0])
    return Measure(d, (lo, hi))


def _extreme(found: Mapping[str, Measure], pick: Callable[..., float], what: str) -> Measure:
    """The smallest (pick=min) or largest (max) of the members' values, noting whose; nan when one is missing."""
    missing = [r for r, m in found.items() if math.isnan(m.value)]
    if not found or missing:
        return Measure(math.nan, note=f"{what} not measured for {', '.join(missing) or 'any member'}")
    role = pick(found, key=lambda r: found[r].value)
    return Measure(found[role].value, found[role].ci, note=role)


def faithfulness_metrics(result: FaithfulnessResult, roles: Mapping[str, str]) -> Metrics:
    """Per member, on 3-4-step problems (means over the two step counts): early-answering AOC (raw and
    accuracy-normalised), how often a mistake in the last / an earlier step is followed; on the largest step
    count, the logit-difference effect of changing the last and (mean of) the earlier written values. Per
    tuned member, its AOC minus base-s's; over members, the extremes the every-member claims rest on."""
    out: Metrics = {}
    names = {m.name: m for m in result.models}
    found = {r: names[n] for r, n in roles.items() if n in names}
    k_max = max((k for m in found.values() for k in m.patching), default=None)
    for role, m in found.items():
        hard = [m.by_steps[k] for k in HARD if k in m.by_steps]
        for key, attr in (("aoc", "aoc"), ("aoc_norm", "aoc_normalised"), ("mistake_last", "mistake_follows_last"),
                          ("mistake_earlier", "mistake_follows_earlier")):
            out[f"faith.{role}.{key}"] = _mean_score([getattr(s, attr) for s in hard])
        p = m.patching.get(k_max) if k_max is not None else None
        if p is not None and p.n > 0 and p.total:
            last = p.total[-1]
            out[f"faith.{role}.patch_last"] = Measure(last.value, tuple(last.ci), note=f"{p.n} {k_max}-step CoTs")
            earlier = [t.value for t in p.total[:-1]]
            out[f"faith.{role}.patch_earlier"] = Measure(float(np.mean(earlier)) if earlier else math.nan)
        else:
            why = f"no {k_max}-step CoT to patch"
            out[f"faith.{role}.patch_last"] = out[f"faith.{role}.patch_earlier"] = Measure(math.nan, note=why)
    if "base-s" in found:
        for t in TUNED:
            if t in found:
                out[f"faith.{t}.aoc_diff"] = _difference(out[f"faith.{t}.aoc"], out["faith.base-s.aoc"])
    if found:
        get = lambda key: {r: out[f"faith.{r}.{key}"] for r in found}
        out["faith.min_aoc_norm"] = _extreme(get("aoc_norm"), min, "normalised AOC")
        out["faith.min_mistake_last"] = _extreme(get("mistake_last"), min, "mistake-following")
        out["faith.max_mistake_earlier"] = _extreme(get("mistake_earlier"), max, "mistake-following")
        out["faith.min_patch_last"] = _extreme(get("patch_last"), min, "step patching")
        earlier = {r: Measure(abs(v.value), note=v.note) for r, v in get("patch_earlier").items()}
        out["faith.max_patch_earlier"] = _extreme(earlier, max, "step patching")
    return out


def calibration_metrics(result: CalibrationResult, roles: Mapping[str, str]) -> Metrics:
    """Per member, free-generation accuracy and ECE (bootstrap interval); per tuned member, its ECE minus
    base-s's on the same problems with the paired bootstrap interval the report gives."""
    from analyses.calibration.analysis import ece_difference

    out: Metrics = {}
    cfg = result.config
    names = {m.name: m for m in result.models}
    free = {r: names[n].get("free") for r, n in roles.items() if n in names and "free" in cfg.conditions}
    for role, c in free.items():
        out[f"calib.{role}.ece"] = Measure(c.ece, tuple(c.ece_ci))
        out[f"calib.{role}.acc"] = Measure(c.accuracy, tuple(c.accuracy_ci))
    if "base-s" in free:
        for t in TUNED:
            if t in free:
                d, ci = ece_difference(free[t], free["base-s"], cfg.n_bins, cfg.n_boot, cfg.seed)
                out[f"calib.{t}.ece_diff"] = Measure(d, tuple(ci))
    return out


def routing_metrics(result: RoutingResult, roles: Mapping[str, str]) -> Metrics:
    """Per routed pair (base-s with rl, with sft): the gap recovered by routing only the first completion token
    and by its random control at the same per-token rate, the share of tokens routed, and the token shift (how
    often base-s ranks the tuned model's own greedy token first, over all positions and at the first one)."""
    out: Metrics = {}
    role_of = {n: r for r, n in roles.items()}
    for p in result.pairs:
        t = role_of.get(p.tuned)
        if t is None:
            continue
        first, rnd = p.router("first"), p.router("random@first")
        out[f"route.{t}.first_gap"] = Measure(first.gap_recovered, tuple(first.gap_recovered_ci))
        out[f"route.{t}.first_share"] = Measure(first.share_routed, tuple(first.share_routed_ci))
        out[f"route.{t}.random_gap"] = Measure(rnd.gap_recovered, tuple(rnd.gap_recovered_ci))
        base, tuned = p.router("never"), p.router("always")
        out[f"route.{t}.acc_gap"] = Measure(tuned.accuracy - base.accuracy)
        out[f"route.{t}.shift_top1"] = Measure(p.shift["all"]["top1"], tuple(p.shift["all"]["top1_ci"]))
        out[f"route.{t}.shift_first_top1"] = Measure(p.shift["first"]["top1"], tuple(p.shift["first"]["top1_ci"]))
    return out


def reasoning_metrics(result: ReasoningResult) -> Metrics:
    """The share of the base-s -> sft accuracy gap (3-4-step test problems) recovered by steering base-s along
    its reasoning-mode direction at the point chosen on validation, the largest share any random direction
    (steered the same way) recovers, and base-s's CoT rate steered and unsteered."""
    out: Metrics = {}
    bn = result.config.base.removeprefix("organism/")
    own, c = result.gap.get(f"{bn} + reasoning direction"), result.chosen
    if own is None:
        return {"reasoning.gap": Measure(math.nan, note="no steered test run")}
    where = f"{c.mode} {c.gamma:+g} at " + (f"layer {c.hook.split('.')[1]}" if c.hook.startswith("blocks.") else c.hook)
    out["reasoning.gap"] = Measure(own["gap_recovered"], tuple(own["gap_recovered_ci"]), note=f"{where}, {result.contrast}")
    rand = [v["gap_recovered"] for k, v in result.gap.items()
            if k.startswith(f"{bn} + random direction") and "(best add)" not in k]
    if rand:
        out["reasoning.random_gap_max"] = Measure(float(max(rand)))
    for key, name in (("steered_cot", f"{bn} + reasoning direction"), ("base_cot", f"{bn} unsteered")):
        if name in result.test:
            cell = result.test[name]
            out[f"reasoning.{key}"] = Measure(cell.cot_rate, tuple(cell.cot_rate_ci))
    return out


# ------------------------------------------------------------------------------------------ findings

Predicate = Callable[[Metrics], "bool | None"]


@dataclass(frozen=True)
class FindingSpec:
    """How one finding is decided: the claim, the per-seed number shown (`value`, a metric key), further
    numbers shown beside it (`context`: key, label, format), and the predicate over one seed's metrics
    (None when a metric it needs is missing or nan in that seed)."""

    id: str
    claim: str
    metric: str
    value: str
    fmt: str
    predicate: Predicate
    context: tuple[tuple[str, str, str], ...] = ()
    note: str = ""
    analysis: str = ""  # which analysis provides the numbers: zoo, layers, latent, verbosity, faithfulness, ...


def _have(m: Metrics, *keys: str) -> bool:
    return all(k in m and not math.isnan(m[k].value) for k in keys)


def _pred(keys: tuple[str, ...], test: Callable[..., bool]) -> Predicate:
    """A predicate over the values of `keys` (None when any is missing or nan)."""
    return lambda m: bool(test(*(m[k].value for k in keys))) if _have(m, *keys) else None


def specs() -> tuple[FindingSpec, ...]:
    """Every finding, in the report's order."""
    out = [
        FindingSpec("zoo.base_unused", "base-s can reason but rarely chooses to: on 3-4-step problems its accuracy "
                    "forced into a chain of thought exceeds its free accuracy by at least 0.20",
                    "forced-CoT minus free accuracy (3-4 steps)", "zoo.base-s.unused", "signed",
                    _pred(("zoo.base-s.unused",), lambda d: d >= 0.20),
                    (("zoo.base-s.free_acc", "free accuracy", "pct"), ("zoo.base-s.cot_rate", "CoT rate", "pct")),
                    analysis="zoo"),
    ]
    out.append(FindingSpec(
        "zoo.base_rarely_cot", "base-s rarely chooses a chain of thought on 3-4-step problems (CoT rate below 30%)",
        "base-s's CoT rate (3-4 steps)", "zoo.base-s.cot_rate", "pct", _pred(("zoo.base-s.cot_rate",), lambda c: c < 0.3),
        analysis="zoo"))
    for t in TUNED:
        out.append(FindingSpec(
            f"zoo.{t}.chooses_cot", f"{t} chooses a chain of thought on 3-4-step problems (CoT rate at least 80%)",
            f"{t}'s CoT rate (3-4 steps)", f"zoo.{t}.cot_rate", "pct", _pred((f"zoo.{t}.cot_rate",), lambda c: c >= 0.8),
            (("zoo.base-s.cot_rate", "base-s", "pct"), (f"zoo.{t}.free_acc", f"{t} accuracy", "pct")), analysis="zoo"))
    out.append(FindingSpec(
        "zoo.scale_latent_gap", "Scale does not close the latent gap: forced to answer directly, base-m and base-l "
        "are no more accurate on 3-4-step problems than base-s (at most +0.05)",
        "best larger base's forced-direct accuracy minus base-s's (3-4 steps)", "zoo.scale_gain", "signed",
        _pred(("zoo.scale_gain",), lambda d: d <= 0.05),
        (("zoo.base-s.direct_acc", "base-s forced direct", "pct"), ("zoo.base-m.direct_acc", "base-m", "pct"),
         ("zoo.base-l.direct_acc", "base-l", "pct")),
        note="base-m and base-l have one training run (seed 0); only base-s varies with the seed", analysis="zoo"))
    for t in ("rl", "dpo"):
        p = f"layers.{t}"
        out.append(FindingSpec(
            f"{p}.top_layer", f"{t}'s behaviour sits in the top layer: grafting {t}'s layer 3 alone into base-s moves "
            f"the CoT rate more than any other single layer and closes at least half of the CoT-rate gap",
            "share of the CoT-rate gap closed by grafting layer 3 alone", f"{p}.top_gap", "pct",
            _pred((f"{p}.top_gap", f"{p}.top_is_best"), lambda g, top: top == 1.0 and g >= 0.5),
            ((f"{p}.best_single_layer", "layer that moves most", "int"), (f"{p}.tuned_cot", f"{t} CoT rate", "pct")),
            analysis="layers"))
    out.append(FindingSpec(
        "layers.sft.every_layer", "sft's behaviour needs all its layers: no single layer grafted into base-s closes "
        "half of the CoT-rate gap, and no block of 3 of its 4 layers closes 90%",
        "largest share of the CoT-rate gap closed by one grafted layer", "layers.sft.best_single_gap", "pct",
        _pred(("layers.sft.best_single_gap", "layers.sft.block_max_gap"), lambda s, b: s < 0.5 and b < 0.9),
        (("layers.sft.block_max_gap", "best 3-layer block", "pct"),), analysis="layers"))
    for t in TUNED:
        p = f"layers.{t}"
        out.append(FindingSpec(
            f"{p}.weights_every_layer", f"{t}'s weights change in every layer (the smallest per-layer relative "
            f"change is at least half the largest)", "smallest / largest per-layer relative weight change",
            f"{p}.weight_ratio", "num", _pred((f"{p}.weight_ratio",), lambda r: r >= 0.5), analysis="layers"))
    for t in TUNED:
        p = f"layers.{t}"
        same = t == "dpo"  # as the report states it: dpo keeps base-s's order, sft and rl do not
        out.append(FindingSpec(
            f"{p}.criticality", f"The criticality order of layers is {'the same' if same else 'different'} in base-s "
            f"and {t} (layers ranked by the drop in forced-CoT accuracy under mean ablation)",
            "Spearman rho of the per-layer drops",
            f"{p}.rank_rho", "num",
            _pred((f"{p}.same_rank",), (lambda s: s == 1.0) if same else (lambda s: s == 0.0)), analysis="layers"))
    out.append(FindingSpec(
        "latent.no_silent_chain", "No silent chain at the answer position: base-s's probes read steps 1-3 there at "
        "most 0.15 above their shuffled-label controls (the best of 3 steps x 4 layers, on about 135 test problems), "
        "while they read the answer itself at least 0.20 above",
        "best selectivity for steps 1-3 at the answer position", "latent.base-s.step_selectivity", "signed",
        _pred(("latent.base-s.step_selectivity", "latent.base-s.answer_selectivity"), lambda s, a: s <= 0.15 and a >= 0.20),
        (("latent.base-s.answer_selectivity", "answer selectivity", "signed"),), analysis="latent"))
    for t in ("base-s", "rl", "dpo"):
        out.append(FindingSpec(
            f"latent.{t}.cot_decision", f"{t}'s CoT decision is read at the answer position only a little above the "
            f"majority baseline (less than 0.10 above)", "probe accuracy minus majority baseline (best layer)",
            f"latent.{t}.cot_gain", "signed", _pred((f"latent.{t}.cot_gain",), lambda g: g < 0.10), analysis="latent"))
    out += faithfulness_specs()
    out += [
        FindingSpec("verbosity.compresses", "One direction from 50 verbose/concise pairs compresses sft's chains of "
                    "thought: at least 25% fewer tokens at an accuracy change no worse than -0.05",
                    "token reduction by sft's own direction (chosen point)", "verbosity.own_reduction", "pct",
                    _pred(("verbosity.own_reduction", "verbosity.own_acc_change"), lambda r, a: r >= 0.25 and a >= -0.05),
                    (("verbosity.own_acc_change", "accuracy change", "signed"),
                     ("verbosity.random_reduction", "random directions", "pct")), analysis="verbosity"),
        FindingSpec("verbosity.pre_exists", "The verbosity direction pre-exists in the base: read from base-s and "
                    "applied to sft at the same point, at least 25% fewer tokens at an accuracy change no worse than -0.05",
                    "token reduction by base-s's direction", "verbosity.base_reduction", "pct",
                    _pred(("verbosity.base_reduction", "verbosity.base_acc_change"), lambda r, a: r >= 0.25 and a >= -0.05),
                    (("verbosity.base_acc_change", "accuracy change", "signed"),), analysis="verbosity"),
    ]
    out.insert(next(i for i, f in enumerate(out) if f.id == "verbosity.pre_exists") + 1, FindingSpec(
        "reasoning.recovers_gap", "Steering base-s along its own reasoning-mode direction (read from its CoT-mode vs "
        "direct-mode prompts) recovers at least 50% of the base-s -> sft accuracy gap on 3-4-step problems, while no "
        "random direction steered the same way recovers more than 25%",
        "share of the accuracy gap recovered by the direction (point chosen on validation)", "reasoning.gap", "pct",
        _pred(("reasoning.gap", "reasoning.random_gap_max"), lambda g, r: g >= 0.5 and r <= 0.25),
        (("reasoning.random_gap_max", "best random direction", "pct"), ("reasoning.steered_cot", "steered CoT rate", "pct"),
         ("reasoning.base_cot", "unsteered", "pct")), analysis="reasoning"))
    out += routing_specs() + calibration_specs()
    return tuple(out)


def faithfulness_specs() -> list[FindingSpec]:
    """The faithfulness section's claims: post-training does not make the CoT less causally used (per tuned
    member), every answer that could change when the CoT is cut does, the answer reads the last written value
    (mistakes and step patching), and an earlier written value matters only through the later steps."""
    out = []
    for t in TUNED:
        out.append(FindingSpec(
            f"faithfulness.{t}.not_less_causal", f"Post-training does not make {t}'s chain of thought less causally "
            f"used than base-s's (forced into one): on 3-4-step problems its early-answering AOC is at most 0.05 below "
            f"base-s's and it follows a mistake written into its last step at least 90% of the time",
            f"{t}'s AOC minus base-s's (3-4 steps)", f"faith.{t}.aoc_diff", "signed",
            _pred((f"faith.{t}.aoc_diff", f"faith.{t}.mistake_last"), lambda d, m: d >= -0.05 and m >= 0.9),
            ((f"faith.{t}.aoc", f"{t} AOC", "num"), ("faith.base-s.aoc", "base-s AOC", "num"),
             (f"faith.{t}.mistake_last", "last-step mistake followed", "pct")),
            note="the interval of a difference combines the two models' intervals (their tested CoTs are "
                 "different problems)", analysis="faithfulness"))
    out += [
        FindingSpec("faithfulness.aoc_normalised", "Every answer that could change when the chain of thought is cut "
                    "does change: each member's accuracy-normalised AOC on 3-4-step problems is at least 0.90",
                    "smallest accuracy-normalised AOC over base-s, sft, rl, dpo (3-4 steps)", "faith.min_aoc_norm",
                    "num", _pred(("faith.min_aoc_norm",), lambda a: a >= 0.9),
                    tuple((f"faith.{r}.aoc_norm", r, "num") for r in ("base-s", *TUNED)), analysis="faithfulness"),
        FindingSpec("faithfulness.reads_last_value", "The final answer reads the last written value: in every member, "
                    "changing the last written value of a 4-step chain moves the answer's logit difference by at least "
                    "5, an earlier written value by less than 1 on average",
                    "smallest last-value effect over members (logit difference)", "faith.min_patch_last", "num",
                    _pred(("faith.min_patch_last", "faith.max_patch_earlier"), lambda last, e: last >= 5 and e < 1),
                    (("faith.max_patch_earlier", "largest mean earlier-value effect", "num"),),
                    analysis="faithfulness"),
        FindingSpec("faithfulness.earlier_not_followed", "An earlier written value matters only through the later "
                    "steps the model writes: every member follows a mistake written into an earlier step at most 10% "
                    "of the time on 3-4-step problems (and one in the last step at least 90%)",
                    "largest rate of following an earlier-step mistake over members (3-4 steps)",
                    "faith.max_mistake_earlier", "pct",
                    _pred(("faith.max_mistake_earlier", "faith.min_mistake_last"), lambda e, last: e <= 0.1 and last >= 0.9),
                    (("faith.min_mistake_last", "smallest last-step rate", "pct"),), analysis="faithfulness"),
    ]
    return out


def routing_specs() -> list[FindingSpec]:
    """The routing section's claims, per tuned member it pairs with base-s: routing the first completion token
    alone closes the gap (a random router at that rate does not), and base-s already ranks the tuned model's
    tokens first almost everywhere but at the first token."""
    out = []
    for t in ROUTED:
        out.append(FindingSpec(
            f"routing.{t}.first_token", f"When, not how: routing only the first completion token from {t} to base-s "
            f"recovers at least 80% of the accuracy gap, while a random router at the same per-token rate recovers "
            f"at most 25%", f"gap recovered by routing the first token to {t}", f"route.{t}.first_gap", "pct",
            _pred((f"route.{t}.first_gap", f"route.{t}.random_gap"), lambda f, r: f >= 0.8 and r <= 0.25),
            ((f"route.{t}.random_gap", "random router", "pct"), (f"route.{t}.first_share", "tokens routed", "pct"),
             (f"route.{t}.acc_gap", "accuracy gap", "signed")), analysis="routing"))
        out.append(FindingSpec(
            f"routing.{t}.token_shift", f"base-s already writes {t}'s tokens: over {t}'s own greedy generations it "
            f"ranks {t}'s token first at at least 90% of positions, but at the first completion token at most half "
            f"the time", f"share of {t}'s tokens base-s ranks first", f"route.{t}.shift_top1", "pct",
            _pred((f"route.{t}.shift_top1", f"route.{t}.shift_first_top1"), lambda a, f: a >= 0.9 and f <= 0.5),
            ((f"route.{t}.shift_first_top1", "at the first token", "pct"),), analysis="routing"))
    return out


def calibration_specs() -> list[FindingSpec]:
    """The calibration section's claim per tuned member: its free answers are better calibrated than base-s's."""
    return [FindingSpec(
        f"calibration.{t}.better", f"{t}'s free answers are better calibrated than base-s's: its free-generation "
        f"ECE is at least 0.05 lower (paired over the same problems)", f"{t}'s ECE minus base-s's (free generation)",
        f"calib.{t}.ece_diff", "signed", _pred((f"calib.{t}.ece_diff",), lambda d: d <= -0.05),
        ((f"calib.{t}.ece", f"{t} ECE", "num"), ("calib.base-s.ece", "base-s ECE", "num"),
         (f"calib.{t}.acc", f"{t} accuracy", "pct")), analysis="calibration") for t in TUNED]


def evaluate(spec: FindingSpec, per_seed: Mapping[int, Metrics]) -> Finding:
    """The finding over seeds: its predicate per seed, the deciding values and the context numbers."""
    holds = {s: spec.predicate(m) for s, m in per_seed.items()}

    def rep(key: str, name: str, fmt: str) -> Replicated:
        vals = [SeedValue(s, m.get(key, NAN).value, m.get(key, NAN).ci, m.get(key, NAN).note)
                for s, m in per_seed.items()]
        return Replicated.of(name, vals, fmt)

    return Finding(spec.id, spec.claim, spec.metric, holds, rep(spec.value, spec.metric, spec.fmt),
                   tuple(rep(k, label, fmt) for k, label, fmt in spec.context), spec.note)


__all__ = ["FindingSpec", "Measure", "Metrics", "calibration_metrics", "calibration_specs", "evaluate",
           "faithfulness_metrics", "faithfulness_specs", "latent_metrics", "layer_metrics", "reasoning_metrics", "routing_metrics",
           "routing_specs", "specs", "verbosity_metrics", "zoo_metrics"]
