"""Does the answer still follow the written chain under shift? On chains a member writes itself (greedy), in
distribution and under shifts that keep the organism's problem structure (more steps, another separator, renamed
variables), the last step's written value is changed (to a digit that is neither it nor the chain's answer) and the
answer is read right after the changed chain (its own closing, `so` / `so <query> =`): does it follow the chain
(the changed value) or the member's own computation? The chain as written is the control (how often the forced
answer equals the chain's own answer). The first step's value is also changed (to one whose implied answer differs)
and the member continues writing: does its answer follow the changed value through the problem's later steps, or
keep its own answer (recomputed from the prompt)? Beside it, the activation version: the value token's resid_pre at each
layer patched from the run with the changed value (`interp.patching.exact_patch`; logit difference of the changed
value vs the own answer, as the faithfulness analysis' step patching reads it).

Chains are parsed with the shift grader (`analyses.shift.grading`), by position, since under shift members write
the trained variable names and separator, which the organism's own grader (and so the faithfulness analysis'
`OrganismChains`) rejects; chain generation and forced answers are the faithfulness analysis' functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from analyses.faithfulness.analysis import FaithfulnessConfig, forced_answers, generate_cots
from analyses.shift.analysis import Score
from analyses.shift.grading import clean, grade_chain
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.organism.reasoning_task import OrganismTask, item_problem
from interp.organism.task import MOD, RENAMED_VARIABLES, SEPARATORS, TaskConfig
from interp.plots import color_for, save_figure, short_name, style
from interp.tasks.base import Item

RESULT_VERSION = 2


@dataclass(frozen=True)
class PatchCondition:
    """One condition: a task config (the zoo's, or a shifted one) and the step count of its chains."""

    name: str
    n_steps: int
    knobs: tuple[tuple[str, Any], ...] = ()  # TaskConfig changes

    def task(self) -> OrganismTask:
        return OrganismTask(TaskConfig().shifted(**dict(self.knobs)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n_steps": self.n_steps, "knobs": [list(k) for k in self.knobs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatchCondition:
        return cls(d["name"], int(d["n_steps"]), tuple((str(k), v) for k, v in d["knobs"]))


IN_DISTRIBUTION = PatchCondition("in-distribution", 4)
DEFAULT_CONDITIONS = (
    IN_DISTRIBUTION,
    PatchCondition("longer (5 steps)", 5),
    PatchCondition("separator ,", 4, (("separator", ","),)),
    PatchCondition("renamed variables", 4, (("variables", RENAMED_VARIABLES),)),
)


@dataclass(frozen=True)
class ChainPatchConfig:
    models: tuple[str, ...] = ("organism/sft", "organism/rl")
    conditions: tuple[PatchCondition, ...] = DEFAULT_CONDITIONS
    n_problems: int = 200  # per condition
    n_patch: int = 24  # chains per condition for activation patching
    seed: int = 1_515_000
    n_boot: int = 1000
    max_new_tokens: int = 96
    cache_dir: str = field(default_factory=lambda: str(cache_dir("shift", "chain_patch")))

    def __post_init__(self) -> None:
        if not self.conditions or self.conditions[0].knobs or self.conditions[0].n_steps > 4:
            raise ValueError("the first condition must be in distribution (no knobs, at most 4 steps)")
        if self.n_problems < 2:
            raise ValueError(f"n_problems must be >= 2 for an interval, got {self.n_problems}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["conditions"] = [c.to_dict() for c in self.conditions]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChainPatchConfig:
        d = dict(d)
        d["models"] = tuple(d["models"])
        d["conditions"] = tuple(PatchCondition.from_dict(c) for c in d["conditions"])
        return cls(**d)

    def key(self, checksum: str) -> str:
        d = {k: v for k, v in self.to_dict().items() if k not in ("models", "cache_dir")}
        blob = json.dumps({"checksum": checksum, "version": RESULT_VERSION, **d}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class ConditionPatch:
    """One member under one condition. Per chain with the condition's step count: whether the forced answer after
    the chain as written equals the member's own answer (`consistent`), and after the last value changed whether
    it equals the changed value (`follows`) or stays the own answer (`kept`); `chain_correct` marks chains whose
    answer and every step were right. `effects` [chain][layer]: the activation patch on the first `n_patch` chains
    (logit difference change when the value token's resid_pre comes from the changed run); `totals`: the change
    when the whole text has the changed value."""

    condition: str
    n_problems: int
    n_cot: int  # chains of thought written (any step count)
    consistent: tuple[int, ...]
    follows: tuple[int, ...]
    kept: tuple[int, ...]
    chain_correct: tuple[int, ...]
    early_follows: tuple[int, ...] = ()  # first value changed, the model continues: answer follows it
    early_kept: tuple[int, ...] = ()  # ... or stays the chain's own answer
    written: tuple[int, ...] = ()  # steps each chain wrote (a one-step chain has no earlier value to change)
    effects: tuple[tuple[float, ...], ...] = ()
    totals: tuple[float, ...] = ()

    def arr(self, name: str) -> np.ndarray:
        return np.asarray(getattr(self, name), dtype=float)

    def scores(self, n_boot: int) -> dict[str, Score]:
        right = self.arr("chain_correct") == 1
        return {"consistent": Score.mean(self.arr("consistent"), n_boot, 0),
                "follows": Score.mean(self.arr("follows"), n_boot, 1),
                "kept": Score.mean(self.arr("kept"), n_boot, 2),
                "follows_right_chains": Score.mean(self.arr("follows")[right], n_boot, 3),
                "follows_wrong_chains": Score.mean(self.arr("follows")[~right], n_boot, 4),
                "early_follows": Score.mean(self.arr("early_follows"), n_boot, 7),
                "early_kept": Score.mean(self.arr("early_kept"), n_boot, 8),
                "cot_rate": Score(self.n_cot / max(self.n_problems, 1), (float("nan"), float("nan")), self.n_problems)}

    def patch_profile(self, n_boot: int) -> tuple[list[Score], Score]:
        """Per layer, the share of the whole-text effect (logit difference, changed value vs own answer) that
        patching only the value token's resid_pre at that layer carries, and the whole-text effect itself: where
        the share falls, later layers no longer read the value at its own position (it has been moved on)."""
        e, t = np.asarray(self.effects, dtype=float), np.asarray(self.totals, dtype=float)
        if len(e) == 0:
            return [], Score(float("nan"), (float("nan"), float("nan")), 0)
        share = e / np.where(np.abs(t) > 1e-6, t, np.nan)[:, None]
        share = share[np.isfinite(share).all(1)]
        return [Score.mean(share[:, la], n_boot, 10 + la) for la in range(e.shape[1])], Score.mean(t, n_boot, 6)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConditionPatch:
        return cls(d["condition"], d["n_problems"], d["n_cot"], tuple(d["consistent"]), tuple(d["follows"]),
                   tuple(d["kept"]), tuple(d["chain_correct"]), tuple(d["early_follows"]), tuple(d["early_kept"]),
                   tuple(d["written"]), tuple(tuple(x) for x in d["effects"]),
                   tuple(d["totals"]))


@dataclass(frozen=True)
class ModelChainPatch:
    name: str
    checksum: str
    conditions: tuple[ConditionPatch, ...]

    def get(self, condition: str) -> ConditionPatch:
        for c in self.conditions:
            if c.condition == condition:
                return c
        raise KeyError(f"{self.name} has no condition {condition!r}; it has {[c.condition for c in self.conditions]}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "conditions": [c.to_dict() for c in self.conditions]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelChainPatch:
        return cls(d["name"], d["checksum"], tuple(ConditionPatch.from_dict(c) for c in d["conditions"]))


@dataclass(frozen=True)
class ChainPatchResult:
    config: ChainPatchConfig
    models: tuple[ModelChainPatch, ...]
    libraries: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "models": [m.to_dict() for m in self.models],
                "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChainPatchResult:
        return cls(ChainPatchConfig.from_dict(d["config"]), tuple(ModelChainPatch.from_dict(m) for m in d["models"]),
                   d["libraries"])


def follow_columns(own: Sequence[str], implied: Sequence[str], asis: Sequence[str | None],
                   patched: Sequence[str | None]) -> dict[str, tuple[int, ...]]:
    """Per chain: `consistent` (the answer forced after the chain as written is the chain's own answer),
    `follows` (after the changed chain it is the answer the change implies), `kept` (it stays the own answer)."""
    if not len(own) == len(implied) == len(asis) == len(patched):
        raise ValueError("own, implied, as-is and patched answers must have one entry per chain")
    return {"consistent": tuple(int(a == o) for a, o in zip(asis, own)),
            "follows": tuple(int(p == i) for p, i in zip(patched, implied)),
            "kept": tuple(int(p == o) for p, o in zip(patched, own))}


@dataclass(frozen=True)
class ChainEdit:
    """A written chain with step `step`'s value changed. Last step: `as_written` and `changed` are the chain cut
    right before its answer digit (the answer is predicted next); earlier step: both end with that step's clause
    and its separator (the model continues). `implied`: the answer the changed value implies; `at`: index of the
    changed value word; `own`: the chain's answer."""

    step: int
    as_written: tuple[str, ...]
    changed: tuple[str, ...]
    at: int
    own: str
    value: int
    implied: str


def clause_values(tokens: Sequence[str]) -> list[int]:
    """Index of each step clause's value word (its last word) in a cleaned chain, up to `so`."""
    cut = tokens.index("so") if "so" in tokens else len(tokens)
    out, last = [], None
    for i in range(cut):
        if tokens[i] in SEPARATORS:
            if last is not None:
                out.append(last)
            last = None
        else:
            last = i
    return out + ([last] if last is not None else [])


def change_value(words: Sequence[str], step: int | None, offset: int,
                 implied_of: Callable[[int], int] | None = None) -> ChainEdit | None:
    """Change step `step`'s written value (1-based; None: the last step) of a chain of thought, parsed by position
    as the shift grader reads it (any variable names and separator), to another digit whose implied answer is not
    the chain's answer: the written value plus `offset`, `offset + 1`, ... (mod 10). The implied answer is the value
    itself for the last step, `implied_of(value)` for an earlier one (e.g. the problem's later steps applied to it).
    None when the words are not such a chain, have no step `step`, or no value changes the answer. The chain's own
    closing (`so` / `so <query> =`) is kept for the last step."""
    toks = clean(words)
    if "so" not in toks or len(toks[-1]) != 1 or not toks[-1].isdigit():
        return None
    vals = clause_values(toks)
    k = len(vals) if step is None else step
    if not 1 <= k <= len(vals) or not (len(toks[vals[k - 1]]) == 1 and toks[vals[k - 1]].isdigit()):
        return None
    at, written, own = vals[k - 1], int(toks[vals[k - 1]]), toks[-1]
    last = k == len(vals)
    if not last and implied_of is None:
        raise ValueError("an earlier step's change needs implied_of (the answer a value implies)")
    implied = (lambda x: x) if last else implied_of
    v = next(((written + offset + d) % MOD for d in range(MOD) if (written + offset + d) % MOD != written
              and str(implied((written + offset + d) % MOD)) != own), None)  # type: ignore[misc]
    if v is None:
        return None
    cut = len(toks) - 1 if last else at + 2  # before the answer digit, or after the clause's separator
    if not last and (cut > len(toks) or toks[at + 1] not in SEPARATORS):
        return None
    changed = list(toks[:cut])
    changed[at] = str(v)
    return ChainEdit(k, tuple(toks[:cut]), tuple(changed), at, own, v, str(implied(v)))


def _text(words: Sequence[str]) -> str:
    return "".join(" " + w for w in words)


def measure_condition(model: Any, cond: PatchCondition, cfg: ChainPatchConfig) -> ConditionPatch:
    """Generate chains on the condition's problems; change each chain's last value and read the forced answers;
    change its first value and let the model continue; patch the last value token's residual stream on the first
    `n_patch` chains."""
    from analyses.faithfulness.interventions import propagate
    from interp.generate import generate_ids
    from interp.patching import exact_patch, logit_diff

    tok = model.tokenizer
    task = cond.task()
    items = task.sample(cfg.n_problems, cfg.seed + cond.n_steps, n_steps=cond.n_steps)
    cots = generate_cots(model, task, items, forced=False, cfg=FaithfulnessConfig(max_new_tokens=cfg.max_new_tokens))
    rng = np.random.default_rng([cfg.seed, cond.n_steps])
    rows: list[tuple[Item, ChainEdit, ChainEdit | None, bool]] = []
    n_cot = 0
    for it, c in zip(items, cots):
        p = item_problem(it)
        g = grade_chain([(s.target, s.value) for s in p.steps], p.answer, c.split())
        if not g.cot:
            continue
        n_cot += 1
        e = change_value(c.split(), None, int(rng.integers(1, MOD)))
        if e is not None:
            first = change_value(c.split(), 1, int(rng.integers(1, MOD)), lambda v, p=p: propagate(p, 1, v))
            rows.append((it, e, first if first is not None and first.step < e.step else None,
                         g.chain_correct and g.correct))
    its = [it for it, _, _, _ in rows]
    asis = forced_answers(model, task, its, [_text(e.as_written) for _, e, _, _ in rows])
    patched = forced_answers(model, task, its, [_text(e.changed) for _, e, _, _ in rows])
    cols = follow_columns([e.own for _, e, _, _ in rows], [e.implied for _, e, _, _ in rows], asis, patched)
    # an earlier value changed, the model continues: does its answer follow the changed value through the problem's
    # later steps, or keep its own answer?
    early = [(it, m) for it, _, m, _ in rows if m is not None]
    prompts = [[tok.bos_token_id, *tok.convert_tokens_to_ids([*task.prompt(it).split(), *m.changed])]
               for it, m in early]
    conts = generate_ids(model.hf, tok, prompts, cfg.max_new_tokens) if prompts else []
    e_follows, e_kept = [], []
    for (it, m), cont in zip(early, conts):
        p = item_problem(it)
        words = [*m.changed, *tok.convert_ids_to_tokens(cont)]
        g = grade_chain([(s.target, s.value) for s in p.steps], p.answer, words)
        ans = None if g.answer is None else str(g.answer)
        e_follows.append(int(ans == m.implied))
        e_kept.append(int(ans == m.own))
    digit = {d: int(tok.convert_tokens_to_ids(d)) for d in map(str, range(MOD))}
    effects, totals = [], []
    for it, e, _, _ in rows[:cfg.n_patch]:
        prompt = [tok.bos_token_id, *tok.convert_tokens_to_ids(task.prompt(it).split())]
        src = prompt + tok.convert_tokens_to_ids(list(e.changed))
        tgt = prompt + tok.convert_tokens_to_ids(list(e.as_written))
        r = exact_patch(model, src, tgt, logit_diff(digit[e.implied], digit[e.own]),
                        hook="blocks.*.hook_resid_pre", positions=[len(prompt) + e.at])
        effects.append(r.effects[:, 0].tolist())
        totals.append(r.clean - r.corrupt)
    return ConditionPatch(cond.name, len(items), n_cot, cols["consistent"], cols["follows"], cols["kept"],
                          tuple(int(ok) for _, _, _, ok in rows), tuple(e_follows), tuple(e_kept),
                          tuple(e.step for _, e, _, _ in rows),
                          tuple(tuple(map(float, x)) for x in effects), tuple(map(float, totals)))


def run(config: ChainPatchConfig = ChainPatchConfig()) -> ChainPatchResult:
    """Every member under every condition, cached per member by its checksum and the config."""
    from interp.models import load

    torch.manual_seed(config.seed)
    out = []
    for name in config.models:
        model = load(name)
        path = Path(config.cache_dir) / f"{config.key(model.checksum)}-{name.replace('/', '_')}.json"
        if path.exists():
            out.append(ModelChainPatch.from_dict(read_json(path)))
            continue
        res = ModelChainPatch(model.name, model.checksum,
                              tuple(measure_condition(model, c, config) for c in config.conditions))
        write_json(path, res.to_dict(), indent=None)
        out.append(res)
    return ChainPatchResult(config, tuple(out), library_versions())


def difference(a: Score, b: Score) -> Score:
    """b - a for two independent samples, with a normal-approximation 95% interval from their bootstrap ones."""
    se = np.hypot((a.ci[1] - a.ci[0]) / 3.92, (b.ci[1] - b.ci[0]) / 3.92)
    d = b.value - a.value
    return Score(d, (d - 1.96 * se, d + 1.96 * se), min(a.n, b.n))


def _err(scores: Sequence[Score]) -> dict[str, Any]:
    return {"type": "data", "symmetric": False,
            "array": [max(0.0, s.ci[1] - s.value) if s.n else 0 for s in scores],
            "arrayminus": [max(0.0, s.value - s.ci[0]) if s.n else 0 for s in scores]}


def figure(result: ChainPatchResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Left: how often the answer follows a changed last value, and after a changed first value the model continues
    from, how often it follows it or keeps its own answer, per condition and member (the chain as written, the
    control, is in the sentences). Right: the share of the whole-text effect carried by patching the last value
    token's resid_pre, per layer."""
    nb = result.config.n_boot
    names = [c.name for c in result.config.conditions]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                        subplot_titles=["answer follows the changed chain (text)",
                                        "patching the last value token: share of the text effect"])
    dashes = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
    for m in result.models:
        sc = [m.get(n).scores(nb) for n in names]
        col = color_for(m.name)
        for key, label, pattern in (("follows", "last value changed: answer follows", ""),
                                    ("early_follows", "first value changed, continues: follows", "/"),
                                    ("early_kept", "first value changed, continues: own answer kept", ".")):
            v = [s[key] for s in sc]
            fig.add_trace(go.Bar(x=names, y=[x.value if x.n else 0 for x in v], error_y=_err(v), marker_color=col,
                                 marker_pattern_shape=pattern, name=f"{short_name(m.name)}: {label}"), row=1, col=1)
        for i, n in enumerate(names):
            prof, _ = m.get(n).patch_profile(nb)
            fig.add_trace(go.Scatter(x=list(range(len(prof))), y=[x.value for x in prof], error_y=_err(prof),
                                     mode="lines+markers", line={"color": col, "dash": dashes[i % len(dashes)]},
                                     name=f"{short_name(m.name)} {n}"), row=1, col=2)
    style(fig, "Under shift, does the answer still follow the written chain? (95% bootstrap CIs)", "", "")
    fig.update_layout(barmode="group", width=1300, height=520)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_xaxes(title_text="layer (resid_pre)", dtick=1, row=1, col=2)
    return {"shift_chain_patch": save_figure(fig, Path(out_dir) / "shift_chain_patch", png=png)}


def _profile(c: ConditionPatch, n_boot: int) -> str:
    prof, total = c.patch_profile(n_boot)
    return (f"share of the text effect ({total.fmt(pct=False)} logits, n={total.n}) carried by the value token by "
            f"layer " + ", ".join(f"L{la} {x.fmt()}" for la, x in enumerate(prof)))


def _written(c: ConditionPatch, n_steps: int) -> str:
    w = np.asarray(c.written)
    if len(w) == 0:
        return "no chains"
    return f"chains write {w.mean():.1f} of {n_steps} steps, {100 * np.mean(w == 1):.0f}% a single step"


def sentences(result: ChainPatchResult) -> list[str]:
    nb = result.config.n_boot
    conds = result.config.conditions
    lines = [(f"Chain patching under shift: each member's own greedy chains ({result.config.n_problems} problems per "
              f"condition: {', '.join(c.name if 'step' in c.name else f'{c.name} ({c.n_steps} steps)' for c in conds)}), parsed by position. The last "
              f"written value is changed (to a digit that is neither it nor the chain's answer) and the answer is read "
              f"right after the chain: 'follows' = the answer is the changed value; control = the answer after the chain "
              f"as written is the chain's own. The first value is changed and the member continues: 'follows' = its "
              f"answer is what the problem's later steps give from the changed value, 'kept' = its own answer. "
              f"Activation version: the last value token's resid_pre patched from the changed run, on up to "
              f"{result.config.n_patch} chains.")]
    for m in result.models:
        ref = m.get(conds[0].name).scores(nb)
        parts = []
        for c in conds[1:]:
            sc = m.get(c.name).scores(nb)
            d = difference(ref["follows"], sc["follows"])
            de = difference(ref["early_follows"], sc["early_follows"])
            parts.append(f"{c.name} ({sc['follows'].n} chains; the member writes a gradable chain on "
                         f"{100 * sc['cot_rate'].value:.0f}% of problems): last value followed {sc['follows'].fmt()} "
                         f"({100 * d.value:+.0f} points vs in distribution [{100 * d.ci[0]:+.0f}, {100 * d.ci[1]:+.0f}]), "
                         f"control {sc['consistent'].fmt()}; first value changed: follows {sc['early_follows'].fmt()} "
                         f"({100 * de.value:+.0f} points [{100 * de.ci[0]:+.0f}, {100 * de.ci[1]:+.0f}]), keeps its own "
                         f"answer {sc['early_kept'].fmt()} (n={sc['early_follows'].n}; {_written(m.get(c.name), c.n_steps)}); "
                         f"{_profile(m.get(c.name), nb)}")
        lines.append(f"{short_name(m.name)}: in distribution ({ref['follows'].n} chains) the answer follows a changed "
                     f"last value {ref['follows'].fmt()} (control {ref['consistent'].fmt()}); a changed first value "
                     f"{ref['early_follows'].fmt()}, own answer kept {ref['early_kept'].fmt()} "
                     f"(n={ref['early_follows'].n}; {_written(m.get(conds[0].name), conds[0].n_steps)}); "
                     f"{_profile(m.get(conds[0].name), nb)}. Under shift: "
                     + "; ".join(parts) + ".")
    return lines


__all__ = [
    "DEFAULT_CONDITIONS",
    "ChainEdit",
    "ChainPatchConfig",
    "ChainPatchResult",
    "ConditionPatch",
    "ModelChainPatch",
    "PatchCondition",
    "change_value",
    "clause_values",
    "difference",
    "figure",
    "follow_columns",
    "measure_condition",
    "run",
    "sentences",
]
