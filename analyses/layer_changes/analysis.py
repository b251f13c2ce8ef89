"""Where fine-tuning acts, for one base/tuned pair: weight change, representation change, logit lens,
grafting, ablation and emulated fine-tuning, in one `run(config) -> LayerChangesResult`, cached by the
models' checksums and the config. Behaviour is measured on a task (the organism by default) through its
prompts, chain-of-thought prefix and grader; any pair runs on given texts instead (KL only)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from analyses.layer_changes.ablation import (
    AblationCell,
    ablation_sweep,
    mean_block_deltas,
)
from analyses.layer_changes.anatomy import check_block, point_labels
from analyses.layer_changes.behaviour import (
    KL,
    Behaviour,
    check_task_model,
    grade_behaviour,
    items_of,
    kl_to_tuned,
    measure,
    model_generator,
    prompt_ids,
    reference,
)
from analyses.layer_changes.eft import EFTResult, check_shared_tokenizer, mixed_generate
from analyses.layer_changes.grafting import GraftCell, all_blocks, graft_sweep
from analyses.layer_changes.logit_lens import LogitLens, candidate_ids, logit_lens
from analyses.layer_changes.representations import RepChange, representation_change
from analyses.layer_changes.weights import WeightChange, weight_change
from interp.generate import context_length, encode_prompts, generate_ids
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.organism.evaluate import EvalConfig

if TYPE_CHECKING:
    from interp.models import Model
    from interp.tasks import Item, Task

RESULT_VERSION = 4  # part of the cache key: bump when a result gains or changes fields
PARTS = ("weights", "representations", "logit_lens", "grafting", "ablation", "eft")
BEHAVIOUR_PARTS = ("logit_lens", "grafting", "ablation", "eft")
BLOCK_SETS = ("all", "single")
TASK_ONLY_PARTS = ("logit_lens", "ablation", "eft")  # need a task's answers; the rest also run on texts


@dataclass(frozen=True)
class LayerChangesConfig:
    """Which pair, which parts, how many problems. `large` is the base whose scale EFT borrows (up-scaling);
    `tuned_large`, when given, is a post-trained large model for down-scaling. With `texts` (any pair, any
    tokenizer) representations and grafting run on those prompts and the tuned model's continuations of
    them, grafting measuring KL only; without, everything runs on `task`'s items (a name for `interp.task`;
    "organism" uses `eval.task`'s knobs), drawn per step count as `eval` says."""

    base: str = "organism/base-s"
    tuned: str = "organism/sft"
    large: str | None = "organism/base-l"
    tuned_large: str | None = None
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(n_per_step=40, n_boot=1000))
    blocks: tuple[tuple[int, int], ...] | str | None = None  # None or "all": every contiguous block;
    # "single": each layer alone (for deep models, where every block means n(n+1)/2 grafts per direction)
    parts: tuple[str, ...] = PARTS
    cache_dir: str = field(default_factory=lambda: str(cache_dir("layers")))
    texts: tuple[str, ...] | None = None
    task: str = "organism"

    def __post_init__(self) -> None:
        bad = [p for p in self.parts if p not in PARTS]
        if bad:
            raise ValueError(f"unknown parts {bad}; valid parts: {', '.join(PARTS)}")
        if self.texts is not None:
            if not self.texts or not all(t.strip() for t in self.texts):
                raise ValueError("texts must be non-empty prompts (one per problem)")
            task_only = [p for p in self.parts if p in TASK_ONLY_PARTS]
            if task_only:
                raise ValueError(f"parts {task_only} need a task's answers and cannot run on free texts; "
                                 f"with texts, run {', '.join(p for p in PARTS if p not in TASK_ONLY_PARTS)}")
        if isinstance(self.blocks, str) and self.blocks not in BLOCK_SETS:
            raise ValueError(f"unknown block set {self.blocks!r}; valid: {', '.join(BLOCK_SETS)} or explicit "
                             f"(start, end) pairs")
        if self.tuned_large is not None and self.large is None:
            raise ValueError("down-scaling EFT needs both `large` (the large base) and `tuned_large`")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["blocks"] = self.blocks if self.blocks is None or isinstance(self.blocks, str) else [list(b) for b in self.blocks]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerChangesConfig:
        d = dict(d)
        d["eval"] = EvalConfig.from_dict(d["eval"])
        b = d.get("blocks")
        d["blocks"] = b if b is None or isinstance(b, str) else tuple(tuple(x) for x in b)
        d["parts"] = tuple(d.get("parts", PARTS))
        d["texts"] = None if d.get("texts") is None else tuple(d["texts"])
        return cls(**d)


@dataclass(frozen=True)
class LayerChangesResult:
    """Everything measured for one pair, with checksums, config and library versions."""

    config: LayerChangesConfig
    checksums: dict[str, str]  # model name -> sha256 of its weights
    n_layers: int
    points: tuple[str, ...]
    weights: WeightChange | None
    representations: dict[str, RepChange]  # "prompt", "generation"
    lens: dict[str, LogitLens]  # "base", "tuned"
    baselines: dict[str, Behaviour]  # "base", "tuned", "base_forced_cot", "tuned_forced_cot"
    kl_base: KL | None  # KL(tuned || base) along the tuned model's completions: what grafting closes
    grafts: tuple[GraftCell, ...]
    ablations: tuple[AblationCell, ...]
    eft: tuple[EFTResult, ...]
    libraries: dict[str, str]
    seconds: float
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # part -> why the task cannot run it

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "checksums": self.checksums, "n_layers": self.n_layers,
                "points": list(self.points), "weights": self.weights.to_dict() if self.weights else None,
                "representations": {k: v.to_dict() for k, v in self.representations.items()},
                "lens": {k: v.to_dict() for k, v in self.lens.items()},
                "baselines": {k: v.to_dict() for k, v in self.baselines.items()},
                "kl_base": self.kl_base.to_dict() if self.kl_base else None,
                "grafts": [g.to_dict() for g in self.grafts], "ablations": [a.to_dict() for a in self.ablations],
                "eft": [e.to_dict() for e in self.eft], "libraries": self.libraries, "seconds": self.seconds,
                "skipped": dict(self.skipped)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerChangesResult:
        return cls(LayerChangesConfig.from_dict(d["config"]), d["checksums"], d["n_layers"], tuple(d["points"]),
                   WeightChange.from_dict(d["weights"]) if d.get("weights") else None,
                   {k: RepChange.from_dict(v) for k, v in d["representations"].items()},
                   {k: LogitLens.from_dict(v) for k, v in d["lens"].items()},
                   {k: Behaviour.from_dict(v) for k, v in d["baselines"].items()},
                   KL.from_dict(d["kl_base"]) if d.get("kl_base") else None,
                   tuple(GraftCell.from_dict(g) for g in d["grafts"]),
                   tuple(AblationCell.from_dict(a) for a in d["ablations"]),
                   tuple(EFTResult.from_dict(e) for e in d["eft"]), d["libraries"], d["seconds"],
                   dict(d.get("skipped", {})))

    def graft(self, direction: str, block: tuple[int, int] | str) -> GraftCell:
        for g in self.grafts:
            if g.direction == direction and g.block == block:
                return g
        raise KeyError(f"no graft {direction} {block}")


def cache_key(checksums: dict[str, str], config: LayerChangesConfig) -> str:
    d = config.to_dict()
    d.pop("cache_dir")
    if d["task"] == "organism":  # results cached before tasks were a field stay valid
        d.pop("task")
    blob = json.dumps({"checksums": checksums, "config": d, "version": RESULT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def run(config: LayerChangesConfig = LayerChangesConfig(), progress: bool = True, use_cache: bool = True,
        pair: tuple[Model, Model] | None = None, task: Task | None = None) -> LayerChangesResult:
    """Load the pair (clear error if incompatible; or take a loaded `pair`), then measure each requested part on
    the same items of `task` (or `config.task`)."""
    from analyses.zoo_eval import resolve_task
    from interp.models import load, load_pair

    t0 = time.perf_counter()
    if pair is not None:
        config = dataclasses.replace(config, base=pair[0].name, tuned=pair[1].name)
    if task is not None and task.name != config.task:
        config = dataclasses.replace(config, task=task.name)
    loaded = load_pair(*(pair if pair is not None else (config.base, config.tuned)))
    base, tuned = loaded.base, loaded.tuned
    extra = {}
    if "eft" in config.parts and config.large is not None:
        extra["large"] = load(config.large)
        if config.tuned_large is not None:
            extra["tuned_large"] = load(config.tuned_large)
        check_shared_tokenizer({config.base: base, config.tuned: tuned, **{getattr(config, k): m for k, m in extra.items()}})
    needs_prompts = any(p in config.parts for p in ("representations", *BEHAVIOUR_PARTS))
    cfg = config.eval
    items: list[Item] = []
    skipped: dict[str, str] = {}
    if config.texts is None:
        task = task if task is not None else resolve_task(config.task, cfg)
        items = items_of(task, cfg)
        if needs_prompts:
            check_task_model(base, task, items)
        skipped = cannot_run(base, task, items, config.parts)
    n_layers = base.n_layers
    if config.blocks is None or config.blocks == "all":
        blocks = all_blocks(n_layers)
    elif config.blocks == "single":
        blocks = [(i, i + 1) for i in range(n_layers)]
    else:
        blocks = [check_block(b, n_layers) for b in config.blocks]
    checksums = {config.base: base.checksum, config.tuned: tuned.checksum,
                 **{getattr(config, k): m.checksum for k, m in extra.items()}}
    path = Path(config.cache_dir) / f"{cache_key(checksums, config)}.json"
    if use_cache and path.exists():
        return LayerChangesResult.from_dict(read_json(path))

    tok = base.tokenizer
    points = point_labels(n_layers)
    weights = weight_change(base.path, tuned.path) if "weights" in config.parts else None
    if config.texts is not None:
        prompts = encode_prompts(tok, list(config.texts), context_length(tuned.hf))
    else:
        assert task is not None
        prompts = prompt_ids(base, task, items)
    ref = reference(tuned, prompts, cfg) if needs_prompts else None
    reps: dict[str, RepChange] = {}
    if "representations" in config.parts:
        assert ref is not None
        first = 1 if base.prepend_bos else 0  # BOS carries nothing about the prompt
        reps["prompt"] = representation_change(base, tuned, prompts, [range(first, len(p)) for p in prompts], points,
                                               "prompt", cfg.n_boot)
        reps["generation"] = representation_change(base, tuned, ref.seqs,
                                                   [range(pl, len(s)) for s, pl in zip(ref.seqs, ref.prompt_lens)],
                                                   points, "generation", cfg.n_boot)
    baselines: dict[str, Behaviour] = {}
    lens: dict[str, LogitLens] = {}
    kl_base = None
    grafts: tuple[GraftCell, ...] = ()
    ablations: tuple[AblationCell, ...] = ()
    efts: list[EFTResult] = []
    if config.texts is not None and "grafting" in config.parts:
        assert ref is not None
        kl_base = kl_to_tuned(base, ref, cfg.n_boot)
        grafts = graft_sweep(base, tuned, blocks, lambda m: (None, kl_to_tuned(m, ref, cfg.n_boot)), progress)
    elif any(p in config.parts for p in BEHAVIOUR_PARTS):
        assert ref is not None and task is not None
        comps = {"base": generate_ids(base.hf, tok, prompts, cfg.max_new_tokens, cfg.temperature, cfg.seed, cfg.batch_size),
                 "tuned": [list(s[pl:]) for s, pl in zip(ref.seqs, ref.prompt_lens)]}
        if cfg.temperature > 0:
            comps["tuned"] = generate_ids(tuned.hf, tok, prompts, cfg.max_new_tokens, cfg.temperature, cfg.seed, cfg.batch_size)
        models = {"base": base, "tuned": tuned}
        for role, m in models.items():
            baselines[role] = grade_behaviour(m, task, items, comps[role], cfg.n_boot)
            if "forced_cot" not in skipped:
                baselines[f"{role}_forced_cot"] = measure(model_generator(m, cfg), m, task, items, cfg, force_cot=True)
        kl_base = kl_to_tuned(base, ref, cfg.n_boot)
        if "logit_lens" in config.parts and "logit_lens" not in skipped:
            greedy = dict(comps) if cfg.temperature == 0 else {
                r: generate_ids(m.hf, tok, prompts, cfg.max_new_tokens, 0.0, cfg.seed, cfg.batch_size)
                for r, m in models.items()}
            lens = {r: logit_lens(m, task, items, prompts, greedy[r], points, cfg.n_boot) for r, m in models.items()}
        if "grafting" in config.parts:
            grafts = graft_sweep(base, tuned, blocks,
                                 lambda m: (measure(model_generator(m, cfg), base, task, items, cfg),
                                            kl_to_tuned(m, ref, cfg.n_boot)), progress)
        if "ablation" in config.parts and "ablation" not in skipped:
            own = {r: [p + c for p, c in zip(prompts, comps[r])] for r in models}
            means = {r: mean_block_deltas(m, own[r]) for r, m in models.items()}
            ablations = ablation_sweep(models, means, task, items, cfg, encoder=base, progress=progress)
        if "eft" in config.parts and "large" in extra:
            efts = _eft(config, base, tuned, extra, task, items, baselines, progress)
    for m in (base, tuned, *extra.values()):  # every intervention restores the weights: prove it
        if m.checksum != checksums[m.name]:
            raise RuntimeError(f"{m.name}'s weights changed during the analysis (checksum differs): a bug")
    result = LayerChangesResult(config, checksums, n_layers, points, weights, reps, lens, baselines, kl_base, grafts,
                                ablations, tuple(efts), library_versions(), time.perf_counter() - t0, skipped)
    if use_cache:
        write_json(path, result.to_dict())
    return result


def cannot_run(model: Model, task: Task, items: Sequence[Item], parts: Sequence[str]) -> dict[str, str]:
    """What the task cannot provide for the requested parts on this model's tokenizer, and why (the rest of the
    analysis still runs): answer candidates with distinct first tokens for the logit lens, a chain-of-thought
    prefix for forced-CoT baselines and ablation."""
    out = {}
    if "logit_lens" in parts:
        try:
            candidate_ids(model, task, items[0])
        except ValueError as e:
            out["logit_lens"] = str(e)
    if not all(task.cot_prefix(it) for it in items):
        why = f"the task {task.name!r} has no chain-of-thought prefix to force a chain with"
        out["forced_cot"] = why
        if "ablation" in parts:
            out["ablation"] = f"it measures forced-CoT accuracy, but {why}"
    return out


def _eft(config: LayerChangesConfig, base: Model, tuned: Model, extra: dict[str, Model], task: Task,
         items: list[Item], baselines: dict[str, Behaviour], progress: bool) -> list[EFTResult]:
    cfg = config.eval
    large = extra["large"]
    refs = {config.base: baselines["base"], config.tuned: baselines["tuned"],
            config.large: measure(model_generator(large, cfg), base, task, items, cfg)}
    jobs = [("up", {"scale": large, "tuned": tuned, "base": base})]
    if "tuned_large" in extra:
        tl = extra["tuned_large"]
        refs[config.tuned_large] = measure(model_generator(tl, cfg), base, task, items, cfg)
        jobs.append(("down", {"scale": base, "tuned": tl, "base": large}))
    out = []
    for direction, roles in tqdm(jobs, desc="emulated fine-tuning", disable=not progress):
        gen = lambda p, r=roles: mixed_generate([r["scale"], r["tuned"], r["base"]], [1.0, 1.0, -1.0], p,
                                                cfg.max_new_tokens, cfg.temperature, cfg.seed, cfg.batch_size)
        eft = measure(gen, base, task, items, cfg)
        names = {k: m.name for k, m in roles.items()}
        out.append(EFTResult(direction, names, eft, {m.name: refs[m.name] for m in roles.values()}))
    return out


__all__ = ["PARTS", "LayerChangesConfig", "LayerChangesResult", "cache_key", "cannot_run", "run"]
