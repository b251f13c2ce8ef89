"""RLSF-like label-free fine-tuning (arXiv 2507.21931): DPO on pairs ranked by the model's own answer-span
confidence, no labels and no verifier.

From the initial model (also the DPO reference), K samples per problem; each sample's confidence is the
probability of its final answer span (`answer_confidence`; the task's parser only locates the answer, its
correctness is never read). Chosen = the most confident sample, rejected = the least confident, when they
differ. DPO hyperparameters mirror the zoo's `dpo` member (beta 0.5, lr 2e-4, batch 64, 200 steps), so
the two differ only in how pairs are chosen. Each step's batch comes from a generator seeded by (seed,
step), and checkpoints (weights, optimizer, step) are written atomically, so a run killed at any point
resumes to exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from analyses.calibration.analysis import answer_confidence
from analyses.routing.common import digest, prompt_ids, sample_items
from interp.io import (
    atomic_dir,
    cache_dir,
    library_versions,
    read_json,
    read_training_state,
    restore_training_state,
    save_training_state,
    write_json,
)


@dataclass(frozen=True)
class RLSFConfig:
    init: str = "organism/base-s"
    task: str = "organism"
    steps_range: tuple[int, ...] = (1, 2, 3, 4)
    pool_per_step: int = 512  # problems per step count in the preference pool
    pool_seed: int = 14_500_017
    samples_per_problem: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 72
    beta: float = 0.5
    lr: float = 2e-4
    warmup: int = 10
    min_lr_ratio: float = 0.1
    steps: int = 200
    batch_size: int = 64
    grad_clip: float = 1.0
    seed: int = 0
    ckpt_every: int = 50
    run_dir: str = field(default_factory=lambda: str(cache_dir("rlsf")))
    source: str | None = None  # the model that writes the pool's samples (None: `init`, as RLSF does)
    rank: str = "confidence"  # "confidence" (the source's own answer-span confidence, no labels) or "correct"

    def __post_init__(self) -> None:
        if self.rank not in ("confidence", "correct"):
            raise ValueError(f"rank must be 'confidence' or 'correct', got {self.rank!r}")
        if self.samples_per_problem < 2:
            raise ValueError(f"ranking needs at least 2 samples per problem, got {self.samples_per_problem}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps}, {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RLSFConfig:
        d = dict(d)
        d["steps_range"] = tuple(d["steps_range"])
        return cls(**d)

    def key(self) -> dict[str, Any]:
        d = {k: v for k, v in self.to_dict().items() if k not in ("run_dir", "ckpt_every")}
        if self.source is None and self.rank == "confidence":  # RLSF runs keep the folders they had
            d.pop("source")
            d.pop("rank")
        return d

    def folder(self) -> Path:
        """This config's own run folder (so runs with other settings never share checkpoints)."""
        return Path(self.run_dir) / f"run-{digest(self.key())}"


def lr_at(cfg: RLSFConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def sequence_logprobs(model: Any, prompts: list[list[int]], comps: list[list[int]], pad_id: int) -> torch.Tensor:
    """Differentiable sum of log p(completion token) per row (right-padded batch)."""
    rows = [p + c for p, c in zip(prompts, comps)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
    tok = logp.gather(-1, ids[:, 1:, None])[..., 0]
    keep = torch.zeros_like(tok)
    for i, (p, c) in enumerate(zip(prompts, comps)):
        keep[i, len(p) - 1:len(p) + len(c) - 1] = 1
    return (tok * keep).sum(-1)


def preference_pool(cfg: RLSFConfig) -> list[dict[str, Any]]:
    """(prompt, chosen, rejected) ids from the source's samples, with the reference (= init) log-probabilities.
    RLSF (`rank="confidence"`): most vs least confident by the source's own answer-span confidence, and
    correctness is recorded only. DPO-teacher (`rank="correct"`, a stronger source): a right vs a wrong
    sample, the first of each."""
    import interp
    from interp.generate import generate_ids

    model = interp.load(cfg.source or cfg.init)
    task = interp.task(cfg.task)
    items = sample_items(task, cfg.steps_range, cfg.pool_per_step, cfg.pool_seed)
    prompts = prompt_ids(model, task, items)
    k, eos = cfg.samples_per_problem, model.tokenizer.eos_token_id
    rep = [p for p in prompts for _ in range(k)]
    outs = generate_ids(model.hf, model.tokenizer, rep, cfg.max_new_tokens, cfg.temperature, cfg.seed, 512)
    texts = [model.tokenizer.decode(o, skip_special_tokens=False) for o in outs]
    conf, correct, _ = answer_confidence(model, task, [it for it in items for _ in range(k)], texts)
    pairs = []
    for i in range(len(items)):
        c = conf[i * k:(i + 1) * k]
        if cfg.rank == "confidence":
            w, lo = int(np.argmax(c)), int(np.argmin(c))
            if c[w] <= c[lo]:
                continue
        else:
            right = [j for j in range(k) if correct[i * k + j]]
            wrong = [j for j in range(k) if not correct[i * k + j]]
            if not right or not wrong:
                continue
            w, lo = right[0], wrong[0]
        comp = [list(outs[i * k + j]) + ([eos] if len(outs[i * k + j]) < cfg.max_new_tokens else []) for j in (w, lo)]
        pairs.append({"prompt": prompts[i], "chosen": comp[0], "rejected": comp[1],
                      "confidence": [float(c[w]), float(c[lo])],
                      "correct": [bool(correct[i * k + w]), bool(correct[i * k + lo])]})
    if not pairs:
        raise ValueError(f"no pair: {cfg.source or cfg.init}'s samples are all alike on every problem (equally "
                         f"confident, or all right or all wrong)")
    if cfg.source is not None and cfg.source != cfg.init:
        model = interp.load(cfg.init)  # the DPO reference
    with torch.no_grad():
        for s in range(0, len(pairs), 256):
            part = pairs[s:s + 256]
            lp = sequence_logprobs(model.hf, [p["prompt"] for p in part for _ in range(2)],
                                   [p[x] for p in part for x in ("chosen", "rejected")], model.pad_token_id)
            for i, p in enumerate(part):
                p["ref"] = [float(lp[2 * i]), float(lp[2 * i + 1])]
    return pairs


def _save(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: RLSFConfig, step: int,
          log: list[dict[str, float]]) -> None:
    save_training_state(folder, model, opt, {"step": step, "config": cfg.key(), "log": log})


def _load(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: RLSFConfig
          ) -> tuple[int, list[dict[str, float]]]:
    meta = read_training_state(folder)
    if meta is None:
        return 0, []
    if meta["config"] != json_normal(cfg.key()):
        raise ValueError(f"{folder} holds a run with another config: use another run_dir")
    restore_training_state(folder, model, opt, meta)
    return int(meta["step"]), list(meta["log"])


def json_normal(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj))


@dataclass(frozen=True)
class RLSFRun:
    """Where the trained checkpoint is (loadable with `interp.load(path)`) and how training went."""

    config: RLSFConfig
    path: str
    steps_done: int
    n_pairs: int
    pair_stats: dict[str, float]  # chosen/rejected correctness in the pool (never used in training)
    log: tuple[dict[str, float], ...]
    seconds: float
    libraries: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RLSFRun:
        d = dict(d)
        d["config"] = RLSFConfig.from_dict(d["config"])
        d["log"] = tuple(d["log"])
        return cls(**d)


def train_rlsf(cfg: RLSFConfig = RLSFConfig(), stop_after: int | None = None, progress: bool = True) -> RLSFRun:
    """Build (or reuse) the pool, train (or resume) to `cfg.steps`; `stop_after` ends this call early, as a kill
    would. The finished model is saved with `save_pretrained` (weights and tokenizer) in `<folder>/model`."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interp.models import resolve_path

    folder = cfg.folder()
    folder.mkdir(parents=True, exist_ok=True)
    pool_path = folder / "pairs.json"
    saved = read_json(pool_path) if pool_path.is_file() else None
    if saved is not None and saved["config"] == json_normal(cfg.key()):
        pairs = saved["pairs"]
    else:
        pairs = preference_pool(cfg)
        write_json(pool_path, {"config": cfg.key(), "pairs": pairs}, indent=None)
    init = resolve_path(cfg.init)
    model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(init, local_files_only=True)
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    start, log = _load(folder, model, opt, cfg)
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    t0 = time.time()
    model.train()
    for step in tqdm(range(start, end), initial=start, total=cfg.steps, desc="rlsf", disable=not progress,
                     leave=False):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        rng = np.random.default_rng([cfg.seed, step])
        batch = [pairs[int(i)] for i in rng.integers(0, len(pairs), size=cfg.batch_size)]
        pol = sequence_logprobs(model, [p["prompt"] for p in batch for _ in range(2)],
                                [p[x] for p in batch for x in ("chosen", "rejected")], pad).view(-1, 2)
        ref = torch.tensor([p["ref"] for p in batch])
        margin = cfg.beta * ((pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1]))
        loss = -F.logsigmoid(margin).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if step % 25 == 0 or step == cfg.steps - 1:
            log.append({"step": step, "lr": lr_at(cfg, step), "loss": loss.item(),
                        "pref_acc": float((margin > 0).float().mean())})
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == end:
            _save(folder, model, opt, cfg, step + 1, log)
    model.eval()
    out = folder / "model"
    if end == cfg.steps and not (out / "config.json").is_file():
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    chosen_right = float(np.mean([p["correct"][0] for p in pairs]))
    rejected_right = float(np.mean([p["correct"][1] for p in pairs]))
    return RLSFRun(cfg, str(out), end, len(pairs), {"chosen_correct": chosen_right, "rejected_correct": rejected_right},
                   tuple(log), time.time() - t0, library_versions())


__all__ = ["RLSFConfig", "RLSFRun", "lr_at", "preference_pool", "sequence_logprobs", "train_rlsf"]


# ------------------------------------------------------------------------------------------ comparison

COMPARED = ("organism/base-s", "organism/rl", "organism/dpo")


@dataclass(frozen=True)
class RLSFComparison:
    """rlsf against its initial model and the labelled post-training members on the same problems."""

    run: RLSFRun
    rlsf_checksum: str
    behaviour: dict[str, dict[str, Any]]  # model -> free-generation accuracy, CoT rate, invalid rate (with CIs)
    calibration: dict[str, Any]  # CalibrationResult.to_dict() over the compared models and rlsf
    ece_vs_init: dict[str, dict[str, Any]]  # condition -> ECE(rlsf) - ECE(init) with a paired CI

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run.to_dict(), "rlsf_checksum": self.rlsf_checksum, "behaviour": self.behaviour,
                "calibration": self.calibration, "ece_vs_init": self.ece_vs_init}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RLSFComparison:
        return cls(RLSFRun.from_dict(d["run"]), d["rlsf_checksum"], d["behaviour"], d["calibration"],
                   d["ece_vs_init"])


def label(cfg: RLSFConfig) -> str:
    """`rlsf` for own-confidence pairs, `dpo-teacher` for a source model's right-vs-wrong pairs."""
    return "rlsf" if cfg.rank == "confidence" and cfg.source in (None, cfg.init) else "dpo-teacher"


def compare(run: RLSFRun, compared: tuple[str, ...] = COMPARED, n_per_step: int = 100) -> RLSFComparison:
    """Free-generation behaviour and calibration (direct, forced CoT, free) of the trained model (named by
    `label`) and the compared models (the pool's source too, when it is another model)."""
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
    name_ = label(run.config)
    if run.config.source is not None and run.config.source not in compared:
        compared = (*compared, run.config.source)
    rlsf = interp.load(run.path)
    models = [(n, interp.load(n)) for n in compared] + [(name_, rlsf)]
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
    init = result.model(run.config.init)
    diffs = {}
    for cond in cfg.conditions:
        d, ci = ece_difference(result.model(name_).get(cond), init.get(cond), cfg.n_bins, cfg.n_boot, cfg.seed)
        diffs[cond] = {"diff": d, "diff_ci": ci}
    return RLSFComparison(run, rlsf.checksum, behaviour, result.to_dict(), diffs)


def run_cached(cfg: RLSFConfig = RLSFConfig(), n_per_step: int = 100) -> RLSFComparison:
    """Train (or reuse) rlsf and compare it, reusing a stored comparison for the same config and checkpoints."""
    import interp
    from analyses.routing.common import cached

    run = train_rlsf(cfg, progress=False)
    key = {"rlsf": cfg.key(), "checksums": [interp.load(n).checksum for n in (*COMPARED, run.path)],  # rlsf's key
           **({"source": interp.load(cfg.source).checksum} if cfg.source else {}),
           "n_per_step": n_per_step, "version": 1}
    return cached(Path(cfg.run_dir) / "comparisons", key, lambda: compare(run, n_per_step=n_per_step),
                  RLSFComparison.to_dict, RLSFComparison.from_dict)


TEACHER = RLSFConfig(source="organism/base-l", rank="correct", pool_per_step=256)
"""DPO-teacher (Manduzio et al. 2024, arXiv 2410.18890): base-s trained by DPO on the larger base-l's right vs
wrong samples (labels used), with the same DPO settings as rlsf and the zoo's dpo."""

__all__ += ["COMPARED", "TEACHER", "RLSFComparison", "compare", "label", "run_cached"]
