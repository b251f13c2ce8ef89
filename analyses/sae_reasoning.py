"""SAE features of base-s: quality, reasoning features, transfer to sft/rl/dpo, and steering with them.

1. base-s's residual stream at one hook over 1-4-step problems written in the three formats (each problem in
   one format; its metadata says whether base-s itself would start a chain of thought there) is harvested,
   and a BatchTopK SAE is trained on it with sae-lens' SAETrainer (cached by store hash + config).
2. Its quality (explained variance, L0, dead/dense, CE recovered against zero-ablation) and a ranking of
   reasoning features (`saes.features`), with a dashboard of the top ones.
3. The same SAE on sft/rl/dpo's activations of the same texts, against an SAE trained on each tuned model.
4. Steering base-s by adding its top CoT-mode features at the answer position: scale chosen on validation
   problems, then CoT rate and accuracy on held-out 3-4-step problems against random live features of equal
   norm (same scale) and against sft; gap recovered = (steered - base) / (sft - base) with a paired bootstrap.

A base that never (or too rarely: fewer than `min_per_mode` problems of either kind) chooses a chain of thought
gives no "starts a CoT vs answers directly" contrast at the answer position. Features are then ranked on a forced
contrast (`contrast="forced"`, or `"auto"` falling back): the same harvested texts, labelled by the format they
are written in (a chain-of-thought format, i.e. thinking forced, vs the direct answer), at the same position in
each: the first completion token, where the formats first differ (`<think>` vs the answer's first word). The
steering step is unchanged (the top features added at the prompt's last token); the result says which contrast
was used.
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

from interp.activations import ActivationStore, AllTokens, PromptDataset, harvest
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.plots import color_for, save_figure, style
from interp.steering import Add, Positions
from interp.tasks.base import Item, Task
from interp.tasks.encode import task_dataset
from saes import Quality, SAETrainConfig, quality, train_sae
from saes.dashboard import write_dashboard
from saes.features import ReasoningRanking, feature_table, rank_reasoning_features
from saes.steering import feature_vector, random_feature_vectors
from saes.transfer import FeatureShift, aligned_rows, delta_explained, feature_shift

if TYPE_CHECKING:
    from interp.models import Model

RESULT_VERSION = 5
WILL_COT = "will_cot"
MODE = "mode"  # the first completion token: where a forced contrast reads the CoT-vs-direct choice
CONTRASTS = ("auto", "natural", "forced")


@dataclass(frozen=True)
class SAEReasoningConfig:
    base: str = "organism/base-s"
    tuned: tuple[str, ...] = ("organism/sft", "organism/rl", "organism/dpo")
    reference: str = "organism/sft"  # the accuracy the steering gap is measured to
    hook: str = "blocks.1.hook_resid_post"
    n_problems: int = 2400
    problem_seed: int = 4_000_003
    sae: SAETrainConfig = field(default_factory=lambda: SAETrainConfig(hook="blocks.1.hook_resid_post"))
    n_steer_features: int = 3
    scales: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0)
    steer_steps: tuple[int, ...] = (3, 4)
    n_val_per_step: int = 100
    n_test_per_step: int = 200
    val_seed: int = 5_000_011
    test_seed: int = 6_000_017
    n_random: int = 10
    n_dashboard: int = 12
    n_boot: int = 300
    task: str = "organism"
    cache_dir: str = field(default_factory=lambda: str(cache_dir("sae_reasoning")))
    contrast: str = "auto"  # natural (the model's own choice), forced (the text's format), auto: natural unless rare
    min_per_mode: int = 10  # auto: fewer problems than this where the base starts a CoT (or answers) -> forced
    max_new_tokens: int = 72  # greedy generation: the base's own CoT choice and the steering evaluation

    def __post_init__(self) -> None:
        if self.contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}")
        if self.min_per_mode < 2:
            raise ValueError(f"min_per_mode must be at least 2, got {self.min_per_mode}")
        if self.sae.hook != self.hook:
            raise ValueError(f"the SAE config's hook {self.sae.hook} is not the analysis hook {self.hook}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sae"] = self.sae.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SAEReasoningConfig:
        d = dict(d)
        d["sae"] = SAETrainConfig.from_dict(d["sae"])
        for k in ("tuned", "scales", "steer_steps"):
            d[k] = tuple(d[k])
        return cls(**d)

    def key(self) -> dict[str, Any]:
        d = {k: v for k, v in self.to_dict().items() if k != "cache_dir"}
        if d["task"] == "organism":  # the zoo's defaults keep their cached results
            del d["task"]
        for k, default in (("contrast", "auto"), ("min_per_mode", 10), ("max_new_tokens", 72)):  # (added later)
            if d[k] == default:
                del d[k]
        return d


@dataclass(frozen=True)
class TransferRow:
    """The base SAE on one tuned model (and that model's own SAE as the reference)."""

    model: str
    base_sae: Quality
    own_sae: Quality
    delta_explained: float
    delta_explained_ci: tuple[float, float]
    delta_explained_own: float
    shift: FeatureShift
    amplified: tuple[int, ...]
    suppressed: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "base_sae": self.base_sae.to_dict(), "own_sae": self.own_sae.to_dict(),
                "delta_explained": self.delta_explained, "delta_explained_ci": list(self.delta_explained_ci),
                "delta_explained_own": self.delta_explained_own, "shift": self.shift.to_dict(),
                "amplified": list(self.amplified), "suppressed": list(self.suppressed)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransferRow:
        return cls(d["model"], Quality.from_dict(d["base_sae"]), Quality.from_dict(d["own_sae"]), d["delta_explained"],
                   tuple(d["delta_explained_ci"]), d["delta_explained_own"], FeatureShift.from_dict(d["shift"]),
                   tuple(d["amplified"]), tuple(d["suppressed"]))


@dataclass(frozen=True)
class SteerCell:
    """One condition on the test problems: accuracy and CoT rate with 95% bootstrap intervals."""

    name: str
    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    cot_rate: float
    cot_rate_ci: tuple[float, float]
    scale: float = 0.0
    features: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SteerCell:
        d = dict(d)
        d["accuracy_ci"], d["cot_rate_ci"], d["features"] = tuple(d["accuracy_ci"]), tuple(d["cot_rate_ci"]), \
            tuple(d["features"])
        return cls(**d)


@dataclass(frozen=True)
class SteeringResult:
    features: tuple[int, ...]
    scale: float
    validation: tuple[SteerCell, ...]  # the scale sweep
    none: SteerCell
    steered: SteerCell
    random: SteerCell  # all random draws pooled
    reference: SteerCell
    gap_recovered: float
    gap_recovered_ci: tuple[float, float]
    random_gap_recovered: float
    random_gap_recovered_ci: tuple[float, float]
    random_draws: tuple[SteerCell, ...] = ()  # each random draw alone
    clamped: SteerCell | None = None  # the same features clamped to their largest activation on the store
    validation_random: tuple[SteerCell, ...] = ()  # every random draw at every scale of the sweep (validation)

    def validation_share_beaten(self) -> dict[float, float]:
        """Per scale: share of random draws whose validation accuracy is below the steered one."""
        out = {}
        for c in self.validation:
            draws = [r.accuracy for r in self.validation_random if r.scale == c.scale]
            out[c.scale] = float(np.mean([a < c.accuracy for a in draws])) if draws else float("nan")
        return out

    def random_at_least(self, key: str) -> float:
        """Share of random draws whose `key` (accuracy, cot_rate) reaches the steered value."""
        v = getattr(self.steered, key)
        return float(np.mean([getattr(c, key) >= v for c in self.random_draws])) if self.random_draws else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("scale", "gap_recovered", "random_gap_recovered")}
        return {**d, "features": list(self.features), "validation": [c.to_dict() for c in self.validation],
                "random_draws": [c.to_dict() for c in self.random_draws],
                "clamped": self.clamped.to_dict() if self.clamped else None,
                "validation_random": [c.to_dict() for c in self.validation_random],
                "none": self.none.to_dict(), "steered": self.steered.to_dict(), "random": self.random.to_dict(),
                "reference": self.reference.to_dict(), "gap_recovered_ci": list(self.gap_recovered_ci),
                "random_gap_recovered_ci": list(self.random_gap_recovered_ci)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SteeringResult:
        c = SteerCell.from_dict
        return cls(tuple(d["features"]), d["scale"], tuple(c(x) for x in d["validation"]), c(d["none"]),
                   c(d["steered"]), c(d["random"]), c(d["reference"]), d["gap_recovered"],
                   tuple(d["gap_recovered_ci"]), d["random_gap_recovered"], tuple(d["random_gap_recovered_ci"]),
                   tuple(c(x) for x in d.get("random_draws", ())), c(d["clamped"]) if d.get("clamped") else None,
                   tuple(c(x) for x in d.get("validation_random", ())))


@dataclass(frozen=True)
class SAEReasoningResult:
    config: SAEReasoningConfig
    base_checksum: str
    sae_path: str
    quality: Quality
    ranking: ReasoningRanking
    transfer: tuple[TransferRow, ...]
    steering: SteeringResult
    seconds: float
    libraries: Mapping[str, str]
    contrast: str = "natural"  # the CoT-vs-direct contrast the features were ranked on: natural or forced
    free_cot_rate: float | None = None  # how often the base chose a CoT on the bare prompts (None: not recorded)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "base_checksum": self.base_checksum, "sae_path": self.sae_path,
                "contrast": self.contrast, "free_cot_rate": self.free_cot_rate,
                "quality": self.quality.to_dict(), "ranking": self.ranking.to_dict(),
                "transfer": [t.to_dict() for t in self.transfer], "steering": self.steering.to_dict(),
                "seconds": self.seconds, "libraries": dict(self.libraries)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SAEReasoningResult:
        return cls(SAEReasoningConfig.from_dict(d["config"]), d["base_checksum"], d["sae_path"],
                   Quality.from_dict(d["quality"]), ReasoningRanking.from_dict(d["ranking"]),
                   tuple(TransferRow.from_dict(t) for t in d["transfer"]), SteeringResult.from_dict(d["steering"]),
                   d["seconds"], d["libraries"], d.get("contrast", "natural"), d.get("free_cot_rate"))


# ------------------------------------------------------------------------------------------ steps

def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _chat(task: Task) -> bool:
    return bool(getattr(task, "chat", False))


@torch.no_grad()
def cot_mode_labels(model: Model, task: Task, items: Sequence[Item], batch_size: int = 200,
                    max_new_tokens: int = 72) -> list[bool]:
    """Per item: does the model, left free, start a chain of thought? On a task that lists its direct answers
    (`answer_candidates`, single tokens: the organism's digits) one forward pass decides: the greedy first token is
    none of them. Otherwise the task grades the model's greedy completion (`Grade.cot`)."""
    cands = getattr(task, "answer_candidates", None)
    firsts = None
    if cands is not None:
        ids = [[int(t) for t in model.tokenizer(c, add_special_tokens=False)["input_ids"]] for c in cands(items[0])]
        if all(len(t) == 1 for t in ids):
            firsts = {t[0] for t in ids}
    if firsts is None:
        from interp.evaluation import GenerationConfig, generate_completions

        texts, _ = generate_completions(model, task, items, GenerationConfig(max_new_tokens=max_new_tokens,
                                                                             batch_size=batch_size, chat=_chat(task)))
        return [bool(task.grade(it, t).cot) for it, t in zip(items, texts)]
    from analyses.latent_reasoning import will_write_cot

    prompts = [list(e.ids) for e in task_dataset(model, task, items, chat=_chat(task)).examples]
    return will_write_cot(model, prompts, batch_size, answer_ids=sorted(firsts))


def dataset_items(cfg: SAEReasoningConfig, task: Task) -> list[Item]:
    """The problems harvested (the organism: 1-4 steps, its default mix)."""
    return task.sample(cfg.n_problems, cfg.problem_seed)


def uses_forced(cfg: SAEReasoningConfig, cot: Sequence[bool]) -> bool:
    """Whether the features are ranked on the forced contrast: asked for, or (auto) the base's own choice gives
    fewer than `min_per_mode` problems of one kind."""
    return cfg.contrast == "forced" or (cfg.contrast == "auto" and min(sum(cot), len(cot) - sum(cot)) < cfg.min_per_mode)


def build_dataset(model: Model, cfg: SAEReasoningConfig, task: Task | None = None) -> PromptDataset:
    """Each item once, written in one of the task's formats drawn uniformly (its reference completion), with the
    model's own CoT choice on the bare prompt (`cot_mode_labels`) as `will_cot` metadata; on the forced contrast
    (`uses_forced`) `will_cot` is instead whether the text is written in a chain-of-thought format, its own choice
    is kept as `free_cot`, and the first completion token is named `mode`."""
    import interp

    task = task if task is not None else interp.task(cfg.task)
    items = dataset_items(cfg, task)
    rng = np.random.default_rng(cfg.problem_seed)
    fmts = [task.formats[int(i)] for i in rng.integers(0, len(task.formats), len(items))]
    cot = cot_mode_labels(model, task, items, max_new_tokens=cfg.max_new_tokens)
    forced = uses_forced(cfg, cot)
    if forced and not (set(fmts) & set(task.cot_formats) and set(fmts) - set(task.cot_formats)):
        raise ValueError(f"task {task.name!r} writes no chain-of-thought format beside a direct one "
                         f"(formats {task.formats}, CoT formats {task.cot_formats}): no forced contrast either")
    examples = []
    for it, f, c in zip(items, fmts, cot):
        meta = {WILL_COT: f in task.cot_formats, "free_cot": bool(c)} if forced else {WILL_COT: bool(c)}
        (ex,) = task_dataset(model, task, [it], fmt=f, chat=_chat(task), extra_meta=[meta]).examples
        if forced:
            n_prompt = len(task_dataset(model, task, [it], chat=_chat(task)).examples[0].ids)
            ex = dataclasses.replace(ex, positions={**ex.positions, MODE: n_prompt})
        examples.append(ex)
    return PromptDataset(tuple(examples))


def dataset_contrast(dataset: PromptDataset) -> tuple[str, float]:
    """Which contrast a `build_dataset` dataset carries (`forced` when it names the `mode` position) and how
    often the base chose a chain of thought on the bare prompts."""
    forced = any(MODE in e.positions for e in dataset.examples)
    key = "free_cot" if forced else WILL_COT
    return ("forced" if forced else "natural"), float(np.mean([bool(e.meta[key]) for e in dataset.examples]))


def store_for(model: Model, dataset: PromptDataset, cfg: SAEReasoningConfig) -> ActivationStore:
    tag = f"{model.checksum[:16]}-{dataset.hash()[:16]}-{cfg.hook}"
    return harvest(model, dataset, [cfg.hook], AllTokens(), Path(cfg.cache_dir) / "stores" / tag,
                   seed=cfg.problem_seed)


def sae_for(store: ActivationStore, model: Model, sae_cfg: SAETrainConfig, cache: Path) -> tuple[Any, Quality, Path]:
    """The SAE of this store and config (trained once, cached by store hash + config) with its quality in the card."""
    from saes import load_sae, read_card

    key = _digest({"dataset": store.manifest["dataset_hash"], "model": store.model_checksum, "config": sae_cfg.to_dict()})
    path = cache / "saes" / f"{store.model_name.replace('/', '_')}-{key}"
    card = read_card(path) if (path / "cfg.json").is_file() else {}
    if not card.get("metrics", {}).get("ce_recovered"):
        card = train_sae(store, sae_cfg, path, model=model, device=str(model.device)).card  # where the model runs
    sae, _ = load_sae(path, model=model, hook=sae_cfg.hook)
    return sae, Quality.from_dict(card["metrics"]), path


def _cell(name: str, run: Any, n_boot: int, scale: float = 0.0, features: Sequence[int] = ()) -> SteerCell:
    from analyses.verbosity.common import arrays
    from interp.stats import bootstrap_ci

    a = arrays(run)
    return SteerCell(name, len(a["correct"]), float(a["correct"].mean()), bootstrap_ci(a["correct"], n_boot),
                     float(a["cot"].mean()), bootstrap_ci(a["cot"], n_boot), scale, tuple(int(f) for f in features))


def steering_experiment(model: Model, reference: Model, sae: Any, ranking: ReasoningRanking, cfg: SAEReasoningConfig,
                        progress: bool = True, max_acts: Mapping[int, float] | None = None,
                        task: Task | None = None) -> SteeringResult:
    """Add the top CoT-mode features at the answer position (the prompt's last token; scale chosen on validation
    problems), graded by the task; also clamp them to their largest activation on the store (`max_acts`)."""
    import interp
    from analyses.verbosity.common import (
        arrays,
        generate_graded,
        items_per_step,
        paired_bootstrap,
    )

    task = task if task is not None else interp.task(cfg.task)
    gen = lambda m, items, ivs=(): generate_graded(m, task, items, list(ivs), max_new_tokens=cfg.max_new_tokens)

    cot_feats = [f.feature for f in ranking.top(cfg.n_steer_features, "mode_auroc") if f.mode_auroc > 0.5]
    if not cot_feats:
        raise ValueError("no feature fires more before a chain of thought than before a direct answer")
    vec = feature_vector(sae, cot_feats, model, cfg.hook)
    where = Positions((-1,))
    val = items_per_step(task, cfg.val_seed, cfg.n_val_per_step, cfg.steer_steps)
    test = items_per_step(task, cfg.test_seed, cfg.n_test_per_step, cfg.steer_steps)
    live = [f.feature for f in ranking.features if f.firing_rate > 0]
    controls = random_feature_vectors(sae, vec, cot_feats, live, cfg.n_random, len(cot_feats), seed=cfg.test_seed)
    sweep, sweep_random = [], []
    for s in tqdm(cfg.scales, desc="steering scale sweep", disable=not progress, leave=False):
        sweep.append(_cell(f"val x{s:g}", gen(model, val, [Add(vec, where=where, scale=s)]), cfg.n_boot,
                           s, cot_feats))
        sweep_random += [_cell(f"val random {j} x{s:g}", gen(model, val, [Add(v, where=where, scale=s)]),
                               cfg.n_boot, s, v.provenance["features"]) for j, v in enumerate(controls)]
    best = max(sweep, key=lambda c: (c.accuracy, c.cot_rate))
    runs = {"none": gen(model, test),
            "steered": gen(model, test, [Add(vec, where=where, scale=best.scale)]),
            "reference": gen(reference, test)}
    rand = [gen(model, test, [Add(v, where=where, scale=best.scale)]) for v in controls]
    clamped = None
    if max_acts:
        from saes.steering import feature_clamp

        ivs = [feature_clamp(sae, f, float(max_acts[f]), model, cfg.hook, where=where) for f in cot_feats]
        clamped = _cell(f"{_short(model.name)}, CoT features clamped to their max", gen(model, test, ivs),
                        cfg.n_boot, 0.0, cot_feats)
    a = {k: arrays(r) for k, r in runs.items()}
    ra = [arrays(r) for r in rand]
    rand_correct = np.mean([x["correct"] for x in ra], 0)
    n = len(test)

    def gap(x: np.ndarray) -> Any:
        def fn(i: np.ndarray) -> float:
            base, ref = a["none"]["correct"][i].mean(), a["reference"]["correct"][i].mean()
            return float((x[i].mean() - base) / (ref - base)) if ref != base else float("nan")
        return fn

    from analyses.verbosity.common import Run

    pooled = Run(tuple(g for r in rand for g in r.grades), tuple(c for r in rand for c in r.completions),
                 sum(r.seconds for r in rand))
    return SteeringResult(
        tuple(cot_feats), best.scale, tuple(sweep), _cell(_short(model.name), runs["none"], cfg.n_boot),
        _cell(f"{_short(model.name)} + CoT features", runs["steered"], cfg.n_boot, best.scale, cot_feats),
        _cell(f"{_short(model.name)} + random features ({cfg.n_random} draws)", pooled, cfg.n_boot, best.scale),
        _cell(reference.name.removeprefix("organism/"), runs["reference"], cfg.n_boot),
        gap(a["steered"]["correct"])(np.arange(n)), paired_bootstrap(gap(a["steered"]["correct"]), n, cfg.n_boot),
        gap(rand_correct)(np.arange(n)), paired_bootstrap(gap(rand_correct), n, cfg.n_boot),
        tuple(_cell(f"random {j}", r, cfg.n_boot, best.scale, v.provenance["features"])
              for j, (r, v) in enumerate(zip(rand, controls))), clamped, tuple(sweep_random))


def _dashboard(sae: Any, base: Model, table: Any, dataset: PromptDataset, ranking: ReasoningRanking,
               config: SAEReasoningConfig, sae_path: Path, out: str | Path) -> Path:
    """Pages for the top CoT-mode, direct-mode and ReasonScore features."""
    shown = list(dict.fromkeys([f.feature for f in ranking.top(config.n_dashboard // 2, "mode_auroc")]
                               + [f.feature for f in ranking.top(config.n_dashboard // 4, "mode_auroc", -1)]
                               + [f.feature for f in ranking.top(config.n_dashboard // 4, "reason_score")]))
    scores = {f.feature: {"CoT-mode AUROC": f.mode_auroc, "CoT-token AUROC": f.token_auroc,
                          "value eta^2": f.value_eta2, "ReasonScore": f.reason_score}
              for f in ranking.features if f.feature in shown}
    return write_dashboard(sae, base, table, dataset, shown, out, f"{config.base} {config.hook} SAE ({sae_path.name})",
                           scores)


def dashboard_from_result(result: SAEReasoningResult, out: str | Path, base: Model | None = None,
                          task: Task | None = None) -> Path:
    """Rewrite the dashboard of a (cached) result from its cached SAE and store, without rerunning the analysis."""
    import interp
    from saes import load_sae

    cfg = result.config
    base = base if base is not None else interp.load(cfg.base)
    dataset = build_dataset(base, cfg, task)
    store = store_for(base, dataset, cfg)
    sae, _ = load_sae(result.sae_path, model=base, hook=cfg.hook)
    return _dashboard(sae, base, feature_table(sae, store, cfg.hook), dataset, result.ranking, cfg,
                      Path(result.sae_path), out)


def value_positions(dataset: PromptDataset) -> list[tuple[str, str]]:
    """(position, metadata key) pairs where a chain's values are computed or written: the organism's
    `step{i}.before_value` and `prompt.step{i}.end`, or any task's `step{i}.end` (free-text steps), for each
    `value.step{i}` the items carry."""
    keys = sorted({k for e in dataset.examples for k in e.meta if k.startswith("value.step")},
                  key=lambda k: int(k.removeprefix("value.step")))
    names = {n for e in dataset.examples for n in e.positions}
    out = []
    for pattern in ("step{}.before_value", "prompt.step{}.end", "step{}.end"):
        for k in keys:
            n = pattern.format(k.removeprefix("value.step"))
            if n in names:
                out.append((n, k))
    return out


def _resolve(config: SAEReasoningConfig, base: Model | None, tuned: Sequence[Model] | None
             ) -> tuple[SAEReasoningConfig, Model, list[Model], Model]:
    """The models (given, else loaded by the config's names), the reference among them, and the config naming them."""
    import interp

    base = base if base is not None else interp.load(config.base)
    models = list(tuned) if tuned is not None else [interp.load(n) for n in config.tuned]
    reference = next((m for m in models if m.name == config.reference), None)
    if reference is None:
        reference = models[0] if tuned is not None and models else interp.load(config.reference)
    cfg = dataclasses.replace(config, base=base.name, tuned=tuple(m.name for m in models), reference=reference.name)
    return cfg, base, models, reference


def run(config: SAEReasoningConfig = SAEReasoningConfig(), progress: bool = True,
        dashboard_dir: str | Path | None = None, base: Model | None = None, tuned: Sequence[Model] | None = None,
        task: Task | None = None) -> SAEReasoningResult:
    """Every step of the module docstring; trained SAEs and stores are cached. The models default to the
    config's names (the reference: the tuned model named `config.reference`, else the first given), the task to
    `interp.task(config.task)`."""
    import interp

    torch.set_num_threads(1)
    t0 = time.time()
    task = task if task is not None else interp.task(config.task)
    config, base, models, reference = _resolve(config, base, tuned)
    cache = Path(config.cache_dir)
    dataset = build_dataset(base, config, task)
    bstore = store_for(base, dataset, config)
    sae, q, path = sae_for(bstore, base, config.sae, cache)
    table = feature_table(sae, bstore, config.hook)
    contrast, free_rate = dataset_contrast(dataset)
    ranking = rank_reasoning_features(table, dataset, answer=MODE if contrast == "forced" else "answer",
                                      value_positions=value_positions(dataset), n_boot=config.n_boot,
                                      cot_formats=task.cot_formats)
    if dashboard_dir is not None:
        _dashboard(sae, base, table, dataset, ranking, config, path, dashboard_dir)
    rows = []
    for tm in tqdm(models, desc="transfer", disable=not progress, leave=False):
        tstore = store_for(tm, dataset, config)
        own, own_q, _ = sae_for(tstore, tm, config.sae, cache)
        bq, _ = quality(sae, tstore, config.hook, model=tm, allow_other_model=True, n_boot=config.n_boot)
        xb, xt, ex = aligned_rows(bstore, tstore, config.hook)
        de, de_ci = delta_explained(sae, xb, xt, ex, config.n_boot)
        de_own, _ = delta_explained(own, xb, xt, ex, n_boot=2)
        sh = feature_shift(sae, xb, xt)
        rows.append(TransferRow(tm.name, bq, own_q, de, de_ci, de_own, sh, tuple(sh.amplified()),
                                tuple(sh.suppressed())))
    max_acts = {int(i): float(v) for i, v in enumerate(table.acts.max(0).values.tolist())}
    steering = steering_experiment(base, reference, sae, ranking, config, progress, max_acts, task)
    return SAEReasoningResult(config, base.checksum, str(path), q, ranking, tuple(rows), steering,
                              round(time.time() - t0, 1), library_versions(), contrast, free_rate)


def run_cached(config: SAEReasoningConfig = SAEReasoningConfig(), progress: bool = True,
               dashboard_dir: str | Path | None = None, base: Model | None = None,
               tuned: Sequence[Model] | None = None, task: Task | None = None) -> SAEReasoningResult:
    """`run`, reusing the saved result when the config, the task and every model's checksum are unchanged (the
    dashboard is rewritten from the cached SAE when asked for)."""
    config, base, models, reference = _resolve(config, base, tuned)
    ms = list({m.name: m for m in [base, *models, reference]}.values())
    key: dict[str, Any] = {"config": config.key(), "models": [m.checksum for m in ms], "version": RESULT_VERSION}
    if task is not None and task.name != "organism":
        key["task"] = task.describe()
    path = Path(config.cache_dir) / f"result-{_digest(key)}.json"
    if path.is_file() and Path(SAEReasoningResult.from_dict(read_json(path)).sae_path).is_dir():
        result = SAEReasoningResult.from_dict(read_json(path))
        if dashboard_dir is not None and not (Path(dashboard_dir) / "index.html").is_file():
            dashboard_from_result(result, dashboard_dir, base, task)
        return result
    result = run(config, progress, dashboard_dir, base, models, task)
    write_json(path, result.to_dict())
    return result


# ------------------------------------------------------------------------------------------ figures

def _short(name: str) -> str:
    return name.removeprefix("organism/")


def _err(v: float, ci: Sequence[float]) -> dict[str, Any]:
    return {"type": "data", "symmetric": False, "array": [ci[1] - v], "arrayminus": [v - ci[0]]}


def figures(result: SAEReasoningResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Quality and transfer bars, firing-rate shifts, reasoning-feature AUROCs, steering bars."""
    out_dir = Path(out_dir)
    figs: dict[str, go.Figure] = {}
    base = _short(result.config.base)
    # quality / transfer
    fig = make_subplots(rows=1, cols=3, subplot_titles=("explained variance", "CE loss recovered",
                                                        "tuned - base change explained"))
    names = [base] + [_short(t.model) for t in result.transfer]
    for col, key in ((1, "explained_variance"), (2, "ce_recovered")):
        ci_key = f"{key}_ci"
        b = [getattr(result.quality, key)] + [getattr(t.base_sae, key) for t in result.transfer]
        bci = [getattr(result.quality, ci_key)] + [getattr(t.base_sae, ci_key) for t in result.transfer]
        o = [getattr(result.quality, key)] + [getattr(t.own_sae, key) for t in result.transfer]
        fig.add_trace(go.Bar(x=names, y=b, name=f"{base}'s SAE", marker_color="#4C78A8", showlegend=col == 1,
                             error_y={"type": "data", "symmetric": False, "array": [c[1] - v for c, v in zip(bci, b)],
                                          "arrayminus": [v - c[0] for c, v in zip(bci, b)]}), row=1, col=col)
        fig.add_trace(go.Bar(x=names, y=o, name="the model's own SAE", marker_color="#bbb", showlegend=col == 1),
                      row=1, col=col)
    t_names = [_short(t.model) for t in result.transfer]
    fig.add_trace(go.Bar(x=t_names, y=[t.delta_explained for t in result.transfer], marker_color="#4C78A8",
                         showlegend=False, error_y={"type": "data", "symmetric": False,
                                                        "array": [t.delta_explained_ci[1] - t.delta_explained for t in result.transfer],
                                                        "arrayminus": [t.delta_explained - t.delta_explained_ci[0] for t in result.transfer]}),
                  row=1, col=3)
    fig.add_trace(go.Bar(x=t_names, y=[t.delta_explained_own for t in result.transfer], marker_color="#bbb",
                         showlegend=False), row=1, col=3)
    fig.update_layout(template="plotly_white", barmode="group", width=1100, height=430,
                      title=f"{base}'s SAE at {result.config.hook} on the post-trained models' activations (same texts)")
    figs["sae_transfer_quality"] = fig
    # firing-rate shifts
    fig = make_subplots(rows=1, cols=len(result.transfer), subplot_titles=t_names, shared_yaxes=True)
    cot = {f.feature: f.mode_auroc for f in result.ranking.features}
    steer = set(result.steering.features)
    for i, t in enumerate(result.transfer, 1):
        rb, rt = np.array(t.shift.rate_base), np.array(t.shift.rate_tuned)
        live = (rb > 0) | (rt > 0)
        idx = np.nonzero(live)[0]
        eps = 1e-4
        fig.add_trace(go.Scatter(x=rb[idx] + eps, y=rt[idx] + eps, mode="markers", showlegend=False, name="feature",
                                 marker={"size": 6, "color": [cot.get(int(j), 0.5) for j in idx], "colorscale": "RdBu_r",
                                             "cmin": 0.2, "cmax": 0.8, "showscale": i == 1,
                                             "colorbar": {"title": "CoT-mode AUROC"}},
                                 text=[f"feature {j}" + (" (steering)" if j in steer else "") for j in idx],
                                 hovertemplate="%{text}<br>base %{x:.4f}<br>tuned %{y:.4f}<extra></extra>"), row=1, col=i)
        fig.add_trace(go.Scatter(x=[eps, 1], y=[eps, 1], mode="lines", line={"color": "#999", "dash": "dot"},
                                 showlegend=False), row=1, col=i)
        for j in list(t.amplified[:3]) + list(t.suppressed[:3]):
            fig.add_annotation(x=np.log10(rb[j] + eps), y=np.log10(rt[j] + eps), text=str(j), showarrow=False,
                               yshift=9, font={"size": 9}, row=1, col=i)
    fig.update_xaxes(type="log", title_text=f"firing rate on {base}")
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="firing rate on the tuned model", row=1, col=1)
    fig.update_layout(template="plotly_white", width=1150, height=430,
                      title=f"Which {base} features post-training amplifies (above the diagonal) or suppresses (same tokens)")
    figs["sae_feature_shift"] = fig
    # reasoning features
    r = result.ranking
    top = r.top(8, "mode_auroc") + r.top(4, "mode_auroc", -1)[::-1]
    fig = go.Figure(go.Bar(x=[f"f{f.feature}" for f in top], y=[f.mode_auroc for f in top],
                           marker_color=["#E45756" if f.mode_auroc > 0.5 else "#4C78A8" for f in top],
                           error_y={"type": "data", "symmetric": False, "array": [f.mode_auroc_ci[1] - f.mode_auroc for f in top],
                                        "arrayminus": [f.mode_auroc - f.mode_auroc_ci[0] for f in top]}))
    for y in (r.null_mode_auroc, 1 - r.null_mode_auroc):
        fig.add_hline(y=y, line_dash="dot", line_color="#999")
    style(fig, f"{base} SAE features at the answer position: AUROC for 'about to write a CoT' "
               f"(dotted: best feature with shuffled labels)", "feature", "AUROC (CoT vs direct)")
    figs["sae_reasoning_features"] = fig
    # steering
    s = result.steering
    cells = [s.none, s.random, s.steered] + ([s.clamped] if s.clamped else []) + [s.reference]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "CoT rate"))
    for col, key in ((1, "accuracy"), (2, "cot_rate")):
        for c in cells:
            v, ci = getattr(c, key), getattr(c, f"{key}_ci")
            fig.add_trace(go.Bar(x=[c.name], y=[v], error_y=_err(v, ci), showlegend=False,
                                 marker_color=color_for(c.name) or ("#54A24B" if "CoT" in c.name else "#bbb")),
                          row=1, col=col)
        if s.random_draws:
            fig.add_trace(go.Scatter(x=[s.random.name] * len(s.random_draws), y=[getattr(c, key) for c in s.random_draws],
                                     mode="markers", marker={"color": "#333", "size": 6, "symbol": "circle-open"},
                                     name="one random draw", showlegend=col == 1), row=1, col=col)
    fig.update_layout(template="plotly_white", width=1000, height=470,
                      title=f"Adding {base}'s top CoT-mode features {list(s.features)} (x{s.scale:g}) at the answer "
                            f"position, {'-'.join(map(str, result.config.steer_steps))}-step problems")
    figs["sae_steering"] = fig
    return {name: save_figure(f, out_dir / name, png=png) for name, f in figs.items()}


def summary_sentences(result: SAEReasoningResult) -> list[str]:
    """The numbers behind the figures, one sentence each."""
    q, r, s = result.quality, result.ranking, result.steering
    base = _short(result.config.base)
    ci = lambda c: f"[{c[0]:.3f}, {c[1]:.3f}]"
    lines = [
        (f"{base}'s {result.config.sae.architecture} SAE at {result.config.hook} ({q.n_features} features, k = "
        f"{result.config.sae.k:g}, trained on {result.config.sae.total_samples:,} activations of {q.n_rows:,} tokens): "
        f"explained variance {q.explained_variance:.3f} {ci(q.explained_variance_ci)}, L0 {q.l0:.1f}, "
        f"{q.dead_features} dead and {q.dense_features} dense features (firing on >10% of tokens); next-token loss "
        f"on the answer tokens {q.ce_clean:.3f} clean, {q.ce_sae:.3f} with the SAE spliced in, {q.ce_zero:.3f} "
        f"zero-ablated: CE recovered {q.ce_recovered:.3f} {ci(q.ce_recovered_ci)}."),
    ]
    up = r.top(3, "mode_auroc")
    down = r.top(2, "mode_auroc", -1)
    if result.contrast == "forced":
        free = f"CoT rate {result.free_cot_rate:.2f} on the bare prompts; " if result.free_cot_rate is not None else ""
        where = (f"Forced contrast, not {base}'s own choice: {base} too rarely starts a CoT by itself ({free}fewer "
                 f"than {result.config.min_per_mode} problems of one kind), so the features are ranked at the first "
                 f"completion token of the texts written with thinking ({r.n_cot}) vs answered directly "
                 f"({r.n_direct}), where the formats first differ; the features that fire more with thinking are ")
    else:
        where = (f"Natural contrast ({base}'s own choice): at the answer position ({r.n_cot} problems where {base} "
                 f"starts a CoT, {r.n_direct} where it answers directly), the features that fire more before a CoT are ")
    lines.append(
        where
        + ", ".join(f"{f.feature} (AUROC {f.mode_auroc:.2f} {ci(f.mode_auroc_ci)}, {f.mode_auroc_within:.2f} within "
                    f"the same number of steps)" for f in up)
        + "; before a direct answer " + ", ".join(f"{f.feature} ({f.mode_auroc:.2f})" for f in down)
        + f"; with the labels shuffled the best feature reaches only {r.null_mode_auroc:.2f}.")
    tv = r.top(1, "token_auroc")[0]
    rs = r.top(1, "reason_score")[0]
    ev = r.top(1, "value_eta2")[0]
    lines.append(f"Over all tokens, the feature that best separates written-CoT tokens from the rest is {tv.feature} "
                 f"(AUROC {tv.token_auroc:.2f}); the top ReasonScore-style feature is {rs.feature} (score "
                 f"{rs.reason_score:.3f}, CoT-mode AUROC {rs.mode_auroc:.2f}); the feature most tied to the chain's "
                 f"values is {ev.feature} (eta^2 {ev.value_eta2:.2f} against {r.null_value_eta2:.2f} for the best "
                 f"feature with shuffled values).")
    for t in result.transfer:
        lines.append(
            f"On {_short(t.model)}'s activations of the same texts, {base}'s SAE explains "
            f"{t.base_sae.explained_variance:.3f} of the variance (its own SAE {t.own_sae.explained_variance:.3f}) and "
            f"recovers {t.base_sae.ce_recovered:.3f} {ci(t.base_sae.ce_recovered_ci)} of the loss (own SAE "
            f"{t.own_sae.ce_recovered:.3f}); it explains {t.delta_explained:.3f} {ci(t.delta_explained_ci)} of the "
            f"change {_short(t.model)} - {base} per token (the tuned model's own SAE {t.delta_explained_own:.3f}); "
            f"post-training amplifies features {list(t.amplified[:3])} and suppresses {list(t.suppressed[:3])} most.")
    lines.append(
        f"Steering {base} by adding features {list(s.features)} (x{s.scale:g}, chosen on validation problems) at "
        f"the answer position: on {s.none.n} held-out {'-'.join(map(str, result.config.steer_steps))}-step problems "
        f"the CoT rate goes {s.none.cot_rate:.2f} -> {s.steered.cot_rate:.2f} {ci(s.steered.cot_rate_ci)} and "
        f"accuracy {s.none.accuracy:.2f} -> {s.steered.accuracy:.2f} {ci(s.steered.accuracy_ci)}; {len(s.random_draws)} "
        f"draws of random live features of equal norm give {s.random.cot_rate:.2f} and {s.random.accuracy:.2f} pooled "
        f"(per draw CoT rate {min(c.cot_rate for c in s.random_draws):.2f}-{max(c.cot_rate for c in s.random_draws):.2f}, "
        f"accuracy {min(c.accuracy for c in s.random_draws):.2f}-{max(c.accuracy for c in s.random_draws):.2f}; "
        f"{s.random_at_least('accuracy'):.0%} of draws reach the steered accuracy); {s.reference.name} is "
        f"{s.reference.accuracy:.2f} accurate, so the features recover {s.gap_recovered:.2f} "
        f"{ci(s.gap_recovered_ci)} of the accuracy gap ({s.random_gap_recovered:.2f} "
        f"{ci(s.random_gap_recovered_ci)} for the random control).")
    if s.validation_random:
        beaten = s.validation_share_beaten()
        lines.append("On the validation problems, the steered accuracy by scale (random draws of equal norm: mean, "
                     "and the share of draws it beats): " + "; ".join(
                         f"x{c.scale:g} {c.accuracy:.2f} (random "
                         f"{np.mean([r.accuracy for r in s.validation_random if r.scale == c.scale]):.2f}, beats "
                         f"{beaten[c.scale]:.0%})" for c in s.validation) + ".")
    if s.clamped is not None:
        lines.append(f"Clamping the same features to their largest activation on the store at the answer position "
                     f"instead: CoT rate {s.clamped.cot_rate:.2f} {ci(s.clamped.cot_rate_ci)}, accuracy "
                     f"{s.clamped.accuracy:.2f} {ci(s.clamped.accuracy_ci)}.")
    return lines


__all__ = [
    "SAEReasoningConfig",
    "SAEReasoningResult",
    "SteerCell",
    "SteeringResult",
    "TransferRow",
    "build_dataset",
    "cot_mode_labels",
    "dashboard_from_result",
    "dataset_contrast",
    "dataset_items",
    "figures",
    "run",
    "run_cached",
    "sae_for",
    "steering_experiment",
    "store_for",
    "summary_sentences",
    "uses_forced",
    "value_positions",
]
