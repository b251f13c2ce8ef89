"""`interp report`: run each analysis on a base/tuned pair (or several tuned models) and a task, and write
figures, `report.json`, one HTML page and `RESULTS.md`.

A `ReportConfig` names the models, the task and the sections; its default is the first zoo (organism/base-s
against sft, rl and dpo, with base-m and base-l as the scale axis, on the organism task), whose sections and
cache keys are those the report has always used. Each analysis contributes a section (title, sentences with
its numbers, figures); a section that cannot run on the pair or the task is written as a skipped section whose
sentences say why, and the rest of the report still runs (as it does past a section that fails on a pair: the
error goes into the report and `build_report` raises `SectionsFailed` at the end). Results are cached by model
checksum and config, so a second report reuses them. `report.json` holds the config and every section as written; `report.html` and
`RESULTS.md` are rendered from it (`render_only` re-renders them without recomputing), so no number in
RESULTS.md is copied by hand.

A section is `name_section(config: ReportConfig, out: Path) -> Section`, appended to `SECTIONS` (raise
`SectionSkipped(title, reason)` when the pair or task cannot support it). A section written as
`name_section(out, n_per_step, png)` measures the first zoo only: it runs in the zoo's report and is written as
skipped in any other.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import json
import re
import time
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.replication.section import RECHECKED
from analyses.zoo_eval import ZooEvalResult
from interp.io import library_versions, read_json, write_json
from interp.plots import ensure_plotlyjs

if TYPE_CHECKING:
    from analyses.latent_reasoning import LatentConfig
    from analyses.sae_reasoning import SAEReasoningConfig
    from analyses.zoo_eval import ZooEvalConfig
    from interp.models import Model
    from interp.tasks import Task

ZOO_BASE = "organism/base-s"
ZOO_TUNED = ("organism/sft", "organism/rl", "organism/dpo")
ZOO_SCALE = ("organism/base-m", "organism/base-l")
ZOO_TASK = "organism"


@dataclass(frozen=True)
class ReportConfig:
    """Which models and task a report runs on, how many problems per step count, and which sections.

    `tuned` holds one or several post-trained variants of `base`; `scale` holds larger bases (the parameter
    axis of the evaluation and the large model of emulated fine-tuning). `sections` None runs every section;
    `max_new_tokens` None keeps each analysis' own generation length (tasks with long thinking need more)."""

    base: str = ZOO_BASE
    tuned: tuple[str, ...] = ZOO_TUNED
    task: str = ZOO_TASK
    scale: tuple[str, ...] = ZOO_SCALE
    n_per_step: int = 200
    png: bool = True
    sections: tuple[str, ...] | None = None
    max_new_tokens: int | None = None
    device: str = "cpu"  # where pair models are loaded (e.g. "cuda"); the zoo's own sections stay on the CPU
    dtype: str = "float32"  # "bfloat16" for real pairs on a GPU
    seeds: tuple[int, ...] = ()  # the zoo's seeds to recheck every finding on ("What holds across seeds")

    def __post_init__(self) -> None:
        if isinstance(self.tuned, str) or isinstance(self.scale, str):
            raise TypeError("tuned and scale are tuples of model names, e.g. ('organism/sft',)")
        if not self.tuned:
            raise ValueError("a report needs at least one tuned model")
        names = [self.base, *self.tuned, *self.scale]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"models {repeated} are named twice among base, tuned and scale")
        if self.n_per_step < 1:
            raise ValueError(f"n_per_step must be at least 1, got {self.n_per_step}")
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be distinct integers >= 0 (e.g. 0, 1, 2), got {self.seeds}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1 (or None), got {self.max_new_tokens}")

    @classmethod
    def pair(cls, base: str, tuned: str | Sequence[str], task: str | None = None, scale: Sequence[str] = (),
             **kw: Any) -> ReportConfig:
        """A report on any pair; the task defaults to the one the base's name prefix is registered with."""
        from interp.registry import default_task

        task = task or default_task(base)
        if not task:
            raise ValueError(f"no task given and {base!r} is registered with none: name one (e.g. --task "
                             f"jsonl:problems.jsonl, --task organism-nl)")
        return cls(base, (tuned,) if isinstance(tuned, str) else tuple(tuned), task, tuple(scale), **kw)

    @property
    def is_zoo(self) -> bool:
        """True for the first zoo's report (its models and task, default generation length): the sections then
        run exactly as they always have, organism-only sections included."""
        return ((self.base, self.tuned, self.task, self.scale, self.max_new_tokens)
                == (ZOO_BASE, ZOO_TUNED, ZOO_TASK, ZOO_SCALE, None))

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the report evaluates: the base, the scale bases, then the tuned models (the zoo's order)."""
        return (self.base, *self.scale, *self.tuned)

    def title(self) -> str:
        if self.is_zoo:
            return TITLE
        return f"What reasoning post-training changes: {', '.join(self.tuned)} vs {self.base} on {self.task}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportConfig:
        d = dict(d)
        d["tuned"], d["scale"] = tuple(d["tuned"]), tuple(d.get("scale", ()))
        d["sections"] = None if d.get("sections") is None else tuple(d["sections"])
        d["seeds"] = tuple(d.get("seeds", ()))
        return cls(**d)


@dataclass(frozen=True)
class Section:
    """One part of the report; `skipped` is why it could not run, `error` the traceback of a section that failed
    on a pair (their sentences then say so too)."""

    title: str
    sentences: tuple[str, ...]
    figures: tuple[str, ...]  # HTML file names relative to the report folder
    table_html: str = ""
    skipped: str = ""
    seconds: float = 0.0  # wall-clock time the section took (0 for sections read from an older report.json)
    peak_rss_bytes: int = 0  # the peak resident memory of the process that ran it (0: not measured)
    peak_gpu_bytes: int = 0  # the most memory torch allocated on the report's GPU while it ran (0: no GPU)
    error: str = ""  # the traceback of a section that failed on a pair (the other sections still ran)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Section:
        return cls(d["title"], tuple(d["sentences"]), tuple(d["figures"]), d.get("table_html", ""),
                   d.get("skipped", ""), d.get("seconds", 0.0), d.get("peak_rss_bytes", 0), d.get("peak_gpu_bytes", 0),
                   d.get("error", ""))


COST_FIELDS = ("seconds", "peak_rss_bytes", "peak_gpu_bytes")
"""Fields of a section that say what running it cost, not what it found (they differ from run to run)."""


class SectionsFailed(RuntimeError):
    """Raised by `build_report` after a pair's report is written when some of its sections failed: each failed
    section is in the report with its error, and the others ran."""


class SectionSkipped(Exception):
    """Raised by a section that cannot run on the report's pair or task; `reason` goes into the report."""

    def __init__(self, title: str, reason: str) -> None:
        super().__init__(reason)
        self.title, self.reason = title, reason


def skipped_section(title: str, reason: str) -> Section:
    """The section a report writes in place of one that could not run: its title, and one sentence saying why."""
    return Section(f"{title} (not run)", (f"Not run: {reason.rstrip('.')}.",), (), "", reason)


def failed_section(title: str, error: BaseException) -> Section:
    """The section a pair's report writes in place of one whose analysis raised: the error in one sentence,
    the traceback in `error`."""
    import traceback

    said = f"{type(error).__name__}: {error}".strip().splitlines()[0][:300]
    return Section(f"{title} (failed)", (f"Failed: {said.rstrip('.')}. The traceback is in report.json.",), (),
                   error="".join(traceback.format_exception(error))[-4000:])


# ------------------------------------------------------------------------------ models and task of a report

_LOADED: dict[tuple[str, str, str], Model] = {}  # (name, device, dtype): models loaded once per report
_LOAD_ARGS: dict[str, Any] = {}  # the report's device and dtype, set by build_report


def loaded(name: str) -> Model:
    """The model named `name`, loaded once for the whole report (on the report's device, in its dtype)."""
    from interp.models import load

    key = (name, str(_LOAD_ARGS.get("device", "cpu")), str(_LOAD_ARGS.get("dtype", "float32")))
    if key not in _LOADED:
        _LOADED[key] = load(name, **_LOAD_ARGS)
    return _LOADED[key]


def unload_models() -> None:
    """Free the models the report loaded (`build_report` does unless asked to keep them)."""
    _LOADED.clear()


def _generation_length(cfg: Any, config: ReportConfig) -> Any:
    """An analysis config with the report's generation length, when the report sets one."""
    if config.max_new_tokens is None:
        return cfg
    return dataclasses.replace(cfg, max_new_tokens=config.max_new_tokens)


def _models(names: Sequence[str]) -> dict[str, Model]:
    """The report's loaded models by name (on its device, in its dtype)."""
    return {n: loaded(n) for n in dict.fromkeys(names)}


def report_task(config: ReportConfig) -> Task:
    from interp.registry import task

    return task(config.task)


def intermediate_keys(task: Task, n: int = 8) -> list[str]:
    """The intermediate values (probe targets) the task's items carry, from a few sampled items."""
    return list(dict.fromkeys(k for it in task.sample(n, 0) for k in task.intermediate_keys(it)))


def _eval_config(base: Any, config: ReportConfig, n_per_step: int) -> Any:
    """An analysis' EvalConfig with the report's problem count and (when set) generation length."""
    kw: dict[str, Any] = {"n_per_step": n_per_step}
    if config.max_new_tokens is not None:
        kw["max_new_tokens"] = config.max_new_tokens
    return dataclasses.replace(base, **kw)


# ------------------------------------------------------------------------------------------ sections

SEEDS_TITLE = "What holds across seeds"


def seeds_section(config: ReportConfig, out: Path) -> Section:
    """Every headline finding rechecked on the zoo's seed replicas, with its verdict (analyses.replication)."""
    from analyses.replication.section import replication_section

    if not config.is_zoo:
        raise SectionSkipped(SEEDS_TITLE, "seed replicas exist only for the first zoo (organism/<member>-seed<k>)")
    if not config.seeds:
        raise SectionSkipped(SEEDS_TITLE, "no seeds were given: `interp report --seeds 0,1,2` reruns the analyses "
                                          "behind each finding on every seed's replica of the zoo and gives each "
                                          "headline sentence its verdict")
    return replication_section(config, out, seeds=config.seeds)


ONE_RUN_START = "Across seeds: not rechecked"
ONE_RUN = (f"{ONE_RUN_START}; the findings of this section come from one training run per member "
           f"(the seed replicas recheck {RECHECKED}).")


def with_seed_verdicts(sections: Sequence[tuple[str, Section]], out: Path) -> list[tuple[str, Section]]:
    """The sections with each headline sentence's seed verdict appended, when the seeds section ran (from
    `<out>/replication.json`), and a first sentence saying so in a section none of whose findings was
    rechecked; a verdict from an earlier run is replaced, never repeated."""
    from analyses.replication.section import annotate, try_load

    ran = any(n == "seeds" and not s.skipped for n, s in sections)
    result = try_load(out) if ran else None
    out_sections = []
    for n, s in sections:
        if n != "seeds":
            plain = [re.sub(r" Across seeds: .*$", "", t) for t in s.sentences if not t.startswith(ONE_RUN_START)]
            said = annotate(plain, result) if result is not None else plain
            if result is not None and not s.skipped and said == plain:
                said = [ONE_RUN, *said]
            s = dataclasses.replace(s, sentences=tuple(said))
        out_sections.append((n, s))
    return out_sections


def zoo_eval_config(config: ReportConfig) -> ZooEvalConfig:
    """The evaluation of every model of the report (the zoo's: `ZooEvalConfig()` with the report's n)."""
    from analyses import zoo_eval

    cfg = zoo_eval.ZooEvalConfig()
    if not config.is_zoo:
        cfg = dataclasses.replace(cfg, models=config.models, task=config.task)
    return dataclasses.replace(cfg, eval=_eval_config(cfg.eval, config, config.n_per_step))


def zoo_section(config: ReportConfig, out: Path) -> Section:
    """Scaling vs post-training: every model evaluated free, forced into a chain of thought and forced direct."""
    from analyses import zoo_eval

    cfg = zoo_eval_config(config)
    models = None if config.is_zoo else [loaded(n) for n in cfg.models]
    result = zoo_eval.run(cfg, models=models, task=None if config.is_zoo else report_task(config))
    write_json(out / "zoo_eval.json", result.to_dict())
    paths = zoo_eval.figures(result, out, png=config.png)
    if config.is_zoo:
        return Section("Scaling vs post-training on the zoo", tuple(zoo_eval.summary_sentences(result)),
                       tuple(p[0].name for p in paths.values()), zoo_table_html(result))
    return Section("Scaling vs post-training: every model of the report evaluated greedily",
                   (*model_sentences(result), *zoo_eval.summary_sentences(result)),
                   tuple(p[0].name for p in paths.values()), zoo_table_html(result))


def model_sentences(result: ZooEvalResult) -> list[str]:
    """One sentence per model: free accuracy and CoT rate on its hardest group of problems, with 95% bootstrap
    intervals, and forced-CoT accuracy when the task can force a chain (the zoo's own sentences name zoo models)."""
    out = []
    for m in result.models:
        k = max(m.free.by_steps)
        f = m.free.by_steps[k]
        group = f"{k}-step problems" if k else "all problems"
        forced = (f"; forced into a chain of thought {m.forced.by_steps[k].accuracy:.2f} "
                  f"[{m.forced.by_steps[k].accuracy_ci[0]:.2f}, {m.forced.by_steps[k].accuracy_ci[1]:.2f}]"
                  if m.forced is not None else "")
        out.append(f"{m.name} on {group} (n={f.n}): accuracy {f.accuracy:.2f} [{f.accuracy_ci[0]:.2f}, "
                   f"{f.accuracy_ci[1]:.2f}], CoT rate {f.cot_rate:.2f} [{f.cot_rate_ci[0]:.2f}, "
                   f"{f.cot_rate_ci[1]:.2f}], {f.mean_tokens:.1f} tokens on average{forced}.")
    return out


def zoo_table_html(result: ZooEvalResult) -> str:
    rows = []
    for m in result.models:
        for k in sorted(m.free.by_steps):
            f = m.free.by_steps[k]
            c = f"{m.forced.by_steps[k].accuracy:.2f}" if m.forced is not None else "–"
            d = f"{m.direct.by_steps[k].accuracy:.2f}" if m.direct is not None else "–"
            rows.append(f"<tr><td>{html.escape(m.name)}</td><td>{m.n_params:,}</td><td>{k}</td>"
                        f"<td>{f.accuracy:.2f} [{f.accuracy_ci[0]:.2f}, {f.accuracy_ci[1]:.2f}]</td>"
                        f"<td>{f.cot_rate:.2f}</td><td>{f.mean_tokens:.1f}</td><td>{c}</td>"
                        f"<td>{d}</td></tr>")
    head = ("<tr><th>model</th><th>params</th><th>steps</th><th>accuracy [95% CI]</th><th>CoT rate</th>"
            "<th>mean tokens</th><th>forced-CoT accuracy</th><th>forced-direct accuracy</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


LAYERS_TITLE = "Where fine-tuning acts: layers, grafting, ablation, emulated fine-tuning"
MAX_GRAFT_ALL_LAYERS = 8  # deeper models graft each layer alone (every block would be n(n+1)/2 grafts)


def layers_section(config: ReportConfig, out: Path) -> Section:
    """Where fine-tuning acts: weights, CKA, logit lens, grafting, ablation, EFT per tuned model (analyses.layer_changes)."""
    if config.is_zoo:
        from analyses.layer_changes.section import section_parts

        return Section(*section_parts(out, config.n_per_step, config.png))
    from analyses.layer_changes.analysis import PARTS, LayerChangesConfig, run
    from analyses.layer_changes.figures import figures, pair_table_html, short, summary_sentences
    from analyses.layer_changes.section import MAX_PER_STEP

    task, base = report_task(config), loaded(config.base)
    lens_problem = logit_lens_problem(base, task)
    parts = tuple(p for p in PARTS if p != "logit_lens" or lens_problem is None)
    results, sentences, names = [], [], []
    for tuned in config.tuned:
        cfg = LayerChangesConfig(base=config.base, tuned=tuned, large=config.scale[-1] if config.scale else None,
                                 task=config.task, parts=parts,
                                 blocks="single" if base.n_layers > MAX_GRAFT_ALL_LAYERS else None)
        cfg = dataclasses.replace(cfg, eval=_eval_config(cfg.eval, config, min(config.n_per_step, MAX_PER_STEP)))
        result = run(cfg, pair=(base, loaded(tuned)), task=task)
        write_json(out / f"layers_{short(tuned)}.json", result.to_dict())
        names += [p[0].name for p in figures(result, out, png=config.png).values()]
        sentences += summary_sentences(result)
        if lens_problem is not None:
            sentences.append(f"{short(tuned)} vs {short(config.base)}, logit lens: not measured ({lens_problem}).")
        results.append(result)
    ev = results[0].config.eval
    eft = (f"; EFT decodes from log p_{short(config.scale[-1])} + (log p_tuned - log p_{short(config.base)})"
           if config.scale else "; no larger base was given (--scale), so emulated fine-tuning is not run")
    intro = (f"Each tuned model against {config.base} on {config.task}, on the same {ev.n_per_step} problems "
             f"per step count ({', '.join(map(str, ev.steps))}), greedy; intervals are 95% bootstrap intervals over "
             f"problems. Grafting copies {'each decoder layer' if results[0].config.blocks == 'single' else 'a block of decoder layers'} "
             f"of the tuned model into the base (and back){eft}.")
    return Section(LAYERS_TITLE, (intro, *sentences), tuple(names), pair_table_html(results))


def logit_lens_problem(model: Model, task: Task) -> str | None:
    """Why the logit lens cannot read this task's answers on this model (None when it can): it reads the one
    token that tells the task's answer candidates apart after their shared prefix, so the task must list
    candidates with such a token."""
    from analyses.layer_changes.logit_lens import candidate_ids

    try:
        candidate_ids(model, task, task.sample(1, 0)[0])
    except ValueError as e:
        return str(e)
    return None


def latent_config(config: ReportConfig) -> LatentConfig:
    """Probes on 2x the evaluation's problems per step count (the zoo's: `LatentConfig()` with that n)."""
    from analyses import latent_reasoning as lr

    cfg = dataclasses.replace(lr.LatentConfig(), n_per_step=2 * config.n_per_step)
    if not config.is_zoo:
        cfg = _generation_length(dataclasses.replace(cfg, base=config.base, models=config.models, task=config.task),
                                 config)
    return cfg


LATENT_TITLE = "Latent reasoning: what a linear probe reads in each model"


def latent_section(config: ReportConfig, out: Path) -> Section:
    """Probes for the chain's intermediate values in each model's residual stream (analyses.latent_reasoning)."""
    from analyses import latent_reasoning as lr

    cfg = latent_config(config)
    if config.is_zoo:
        result = lr.run_cached(cfg)
    else:
        task = report_task(config)
        if not intermediate_keys(task):
            raise SectionSkipped(LATENT_TITLE, f"the task {config.task!r} has no intermediate values (its items "
                                               f"carry no 'intermediate.*' values for a probe to read)")
        result = lr.run(cfg, models=[loaded(n) for n in cfg.models], task=task)
    write_json(out / "latent_reasoning.json", result.to_dict())
    paths = lr.figures(result, out, png=config.png)
    return Section(LATENT_TITLE, tuple(lr.summary_sentences(result)), tuple(p[0].name for p in paths.values()))


def faithfulness_section(config: ReportConfig, out: Path) -> Section:
    """Is each tuned model's chain of thought more or less causally used than the base's (analyses.faithfulness)?"""
    from analyses.faithfulness.figures import section_parts

    n = min(config.n_per_step, 100)
    if config.is_zoo:
        return Section(*section_parts(out, n, config.png))
    return Section(*section_parts(out, n, config.png, models=[loaded(m) for m in (config.base, *config.tuned)],
                                  task=report_task(config), max_new_tokens=config.max_new_tokens))


def _first_tuned_note(config: ReportConfig) -> tuple[str, ...]:
    if len(config.tuned) == 1:
        return ()
    note = (f"Run on the first tuned model, {config.tuned[0]} (the others, {', '.join(config.tuned[1:])}, "
            f"are not steered here).")
    return (note,)


def verbosity_section(config: ReportConfig, out: Path) -> Section:
    """Activation-steered compression of the (first) tuned model's chains of thought (analyses.verbosity)."""
    from analyses.verbosity.figures import verbosity_section_parts

    if config.is_zoo:
        return Section(*verbosity_section_parts(out, config.n_per_step, config.png))
    title, sentences, figs = verbosity_section_parts(out, config.n_per_step, config.png, base=loaded(config.base),
                                                     tuned=loaded(config.tuned[0]), task=report_task(config),
                                                     max_new_tokens=config.max_new_tokens)
    return Section(title, (*_first_tuned_note(config), *sentences), figs)


def reasoning_direction_section(config: ReportConfig, out: Path) -> Section:
    """Steering the base with its reasoning-mode direction (analyses.verbosity.reasoning)."""
    from analyses.verbosity.figures import reasoning_section_parts

    if config.is_zoo:
        return Section(*reasoning_section_parts(out, config.n_per_step, config.png))
    title, sentences, figs = reasoning_section_parts(out, config.n_per_step, config.png, base=loaded(config.base),
                                                     tuned=loaded(config.tuned[0]), task=report_task(config),
                                                     max_new_tokens=config.max_new_tokens)
    return Section(title, (*_first_tuned_note(config), *sentences), figs)


def sae_config(config: ReportConfig, n_layers: int | None = None, task_items: int | None = None
               ) -> SAEReasoningConfig:
    """The SAE analysis' config (the zoo's: `SAEReasoningConfig()` with the report's n); off the zoo the SAE
    reads the residual stream at the middle of the base (`n_layers // 2 - 1`, block 1 of a 4-layer model), on at
    most the `task_items` a task read from a file holds, generating up to the report's `max_new_tokens`."""
    from analyses import sae_reasoning as sr

    cfg = dataclasses.replace(sr.SAEReasoningConfig(), n_test_per_step=config.n_per_step,
                              n_val_per_step=min(100, config.n_per_step))
    if not config.is_zoo:
        hook = f"blocks.{max(0, (n_layers or 4) // 2 - 1)}.hook_resid_post"
        cfg = dataclasses.replace(cfg, base=config.base, tuned=config.tuned, reference=config.tuned[0],
                                  task=config.task, hook=hook, sae=dataclasses.replace(cfg.sae, hook=hook),
                                  n_problems=min(cfg.n_problems, task_items or cfg.n_problems))
        cfg = _generation_length(cfg, config)
    return cfg


def sae_section(config: ReportConfig, out: Path) -> Section:
    """The base's SAE: quality, reasoning features, transfer to the tuned models, feature steering (analyses.sae_reasoning)."""
    from analyses import sae_reasoning as sr

    if config.is_zoo:
        result = sr.run_cached(sae_config(config), dashboard_dir=out / "sae_dashboard")
    else:
        base, task = loaded(config.base), report_task(config)
        size = len(task) if isinstance(task, Sized) else None  # a task read from a file holds so many items
        result = sr.run_cached(sae_config(config, base.n_layers, size), dashboard_dir=out / "sae_dashboard",
                               base=base, tuned=[loaded(n) for n in config.tuned], task=task)
    write_json(out / "sae_reasoning.json", result.to_dict())
    paths = sr.figures(result, out, png=config.png)
    return Section("Sparse autoencoder features: reasoning features, transfer, steering",
                   tuple(sr.summary_sentences(result)), tuple(p[0].name for p in paths.values()),
                   '<p><a href="sae_dashboard/index.html">feature dashboard (static HTML)</a></p>')


def routing_section(config: ReportConfig, out: Path) -> Section:
    """Hybrid decoding of the base with each tuned model: routers, random controls, token shift (analyses.routing)."""
    from analyses.routing.analysis import RoutingConfig
    from analyses.routing.figures import section_parts

    if config.is_zoo:
        return Section(*section_parts(out, config.n_per_step, config.png))
    n = min(config.n_per_step, 100)
    cfg = _generation_length(RoutingConfig(base=config.base, tuned=config.tuned, task=config.task, n_per_step=n,
                                           train_per_step=max(2, n)), config)
    return Section(*section_parts(out, n, config.png, cfg, report_task(config), _models((cfg.base, *cfg.tuned))))


def compute_section(config: ReportConfig, out: Path) -> Section:
    """Accuracy vs generated tokens and parameters: sampling, budget forcing and scale (analyses.compute)."""
    from analyses.compute.analysis import ComputeConfig
    from analyses.compute.figures import section_parts

    if config.is_zoo:
        return Section(*section_parts(out, config.n_per_step, config.png))
    n, cfg = min(config.n_per_step, 50), ComputeConfig()
    if config.max_new_tokens is not None:  # the zoo's budgets, as shares of its generation length
        cfg = ComputeConfig(budgets=tuple(sorted({max(1, round(b * config.max_new_tokens / cfg.max_new_tokens))
                                                  for b in cfg.budgets})), max_new_tokens=config.max_new_tokens)
    task = report_task(config)
    cfg = dataclasses.replace(cfg, models=config.models, bases=(config.base, *config.scale),
                              reference=config.tuned[0], task=config.task, n_per_step=n,
                              forcing_models=None if task.chain_end else ())
    title, sentences, figs, table = section_parts(out, n, config.png, cfg, task, _models(cfg.models))
    if not task.chain_end:
        sentences = (*sentences, (f"Budget forcing: not run (the task {config.task!r} names no text that closes a "
                                  f"chain of thought, such as '</think>', to cut a chain at or extend it past)."))
    return Section(title, sentences, figs, table)


def calibration_section(config: ReportConfig, out: Path) -> Section:
    """Answer-span confidence, ECE and reliability per model and condition (analyses.calibration)."""
    from analyses.calibration.analysis import CONDITIONS, CalibrationConfig
    from analyses.calibration.figures import section_parts

    if config.is_zoo:
        return Section(*section_parts(out, config.n_per_step, config.png))
    n, task = min(config.n_per_step, 100), report_task(config)
    item = task.sample(1, 0)[0]
    why_not = {"direct": None if getattr(task, "answer_candidates", None) else "lists no answer candidates",
               "cot": None if task.cot_prefix(item) else "has no prefix that starts a chain of thought"}
    conditions = tuple(c for c in CONDITIONS if why_not.get(c) is None)
    cfg = _generation_length(CalibrationConfig(models=config.models, task=config.task, conditions=conditions,
                                               n_per_step=n), config)
    title, sentences, figs, table = section_parts(out, n, config.png, cfg, task, _models(cfg.models))
    forced = {"direct": "forced direct", "cot": "forced chain of thought"}
    dropped = [f"{forced[c]} (the task {why})" for c, why in why_not.items() if why is not None]
    if dropped:
        sentences = (*sentences, f"Not measured: {'; '.join(dropped)}.")
    return Section(title, sentences, figs, table)


def rlsf_section(out: Path, n_per_step: int, png: bool) -> Section:
    """rlsf (label-free, own-confidence preferences) against base-s, rl and dpo (analyses.calibration.rlsf)."""
    from analyses.calibration.figures import rlsf_section_parts

    return Section(*rlsf_section_parts(out, n_per_step, png))




def shift_section(config: ReportConfig, out: Path) -> Section:
    """Distribution shift: the zoo's shift battery, or on a pair each model under every shift the task offers
    (analyses.shift)."""
    if config.is_zoo:
        from analyses.shift.figures import section_parts

        return Section(*section_parts(out, config.n_per_step, config.png))
    from analyses.shift import pair

    cfg = _generation_length(pair.PairShiftConfig(models=(config.base, *config.tuned), task=config.task,
                                                  n=min(4 * config.n_per_step, 400)), config)
    result = pair.run_cached(cfg, report_task(config), _models(cfg.models))
    write_json(out / "shift_pair.json", result.to_dict())
    paths = pair.figures(result, out, png=config.png)
    return Section("Distribution shift: each model in distribution and under the task's shifts",
                   tuple(pair.summary_sentences(result)), tuple(p[0].name for p in paths.values()))


def shift_recovery_section(out: Path, n_per_step: int, png: bool) -> Section:
    """How much shifted data in SFT restores sft's accuracy under shift (analyses.shift.recovery)."""
    from analyses.shift.recovery import section_parts

    return Section(*section_parts(out, n_per_step, png))


def novelty_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Accuracy over instance novelty at fixed steps and over steps at fixed novelty (analyses.novelty)."""
    from analyses.novelty.figures import section_parts

    return Section(*section_parts(out, n_per_step, png))


def symbolic_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Rules kept, familiar meaning stripped or contradicted (analyses.symbolic)."""
    from analyses.symbolic.figures import section_parts

    return Section(*section_parts(out, n_per_step, png))




def dpo_teacher_section(out: Path, n_per_step: int, png: bool) -> Section:
    """dpo-teacher (base-s by DPO on base-l's right vs wrong samples) against base-s, rl and dpo."""
    from analyses.calibration.figures import rlsf_section_parts

    return Section(*rlsf_section_parts(out, n_per_step, png, teacher=True))


ZOO_ONLY: dict[str, str] = {
    "rlsf": "it compares members the project trained by preference optimisation on its own samples",
    "dpo_teacher": "it compares members the project trained by DPO on base-l's samples",
    "shift_recovery": "it fine-tunes the zoo's sft on shifted data",
    "novelty": "it replays each member's training sampler to tell seen problems from unseen ones",
    "symbolic": ("it uses members trained with definitions; on a pair, the shift section measures semantics vs "
                 "symbols where the task offers such shifts (the natural-language organism: defined symbols, "
                 "plus and minus swapped)"),
}
"""Why each section written for the first zoo cannot run on another pair (said in the report)."""


SECTIONS: tuple[Callable[..., Section], ...] = (
    seeds_section, zoo_section, layers_section, latent_section, faithfulness_section, verbosity_section,
    reasoning_direction_section, sae_section, routing_section, compute_section, calibration_section, rlsf_section,
    shift_section, shift_recovery_section, novelty_section, symbolic_section, dpo_teacher_section)
"""Every section, in report order (a section written as `(out, n_per_step, png)` runs on the first zoo only)."""


# ------------------------------------------------------------------------------------------ rendering

MAX_FIGURE_WIDTH = 1140  # the page body; wider figures scroll inside their frame


def figure_size(path: Path, default: tuple[int, int] = (800, 480)) -> tuple[int, int]:
    """(width, height) a saved plotly figure asks for, read from its HTML, so its iframe fits it."""
    try:
        text = path.read_text()
    except OSError:
        return default
    # the layout's size is the largest "width"/"height" in the page (line and marker widths are a few px)
    ws = [int(x) for x in re.findall(r'"width":\s*(\d+)', text)]
    hs = [int(x) for x in re.findall(r'"height":\s*(\d+)', text)]
    w, h = max(ws, default=0), max(hs, default=0)
    return (min(w + 20, MAX_FIGURE_WIDTH) if w >= 200 else default[0], h + 20 if h >= 200 else default[1])


TITLE = "What reasoning post-training changes, and how that differs from scale"


def render_markdown(sections: Sequence[Section], seconds: float, figures: Path, results: Path,
                    libraries: dict[str, str] | None = None, title: str = TITLE) -> str:
    """RESULTS.md: each section's sentences, its table (HTML, which GitHub renders) and its figures as PNGs
    linked relative to where RESULTS.md is written."""
    import os

    rel = Path(os.path.relpath(figures.resolve(), results.resolve().parent))
    intro = (f"Written by `interp report` from `{rel.as_posix()}/report.json` (do not edit by hand; rerun the "
             f"report). Every number below is computed by the analysis named in its section; interactive figures "
             f"are in `{rel.as_posix()}/report.html`.")
    lines = [f"# {title}", "", intro, ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.seconds:
            lines += [f"*{section_time(s)}*", ""]
        lines += [f"- {t}" for t in s.sentences]
        lines.append("")
        if s.table_html:
            lines += [s.table_html, ""]
        for f in s.figures:
            png = Path(f).with_suffix(".png")
            lines += [f"![{png.stem}]({(rel / png).as_posix()})", ""]
    libs = ", ".join(f"{k} {v}" for k, v in (libraries or library_versions()).items())
    lines += ["---", f"<small>{libs}; built in {seconds:.0f} s{section_times(sections)}</small>", ""]
    return "\n".join(lines)


def section_times(sections: Sequence[Section]) -> str:
    """'; per section: A 12 s, B 3 s' (what each section cost this time; '' for a report.json written before
    sections were timed)."""
    if not any(s.seconds for s in sections):
        return ""
    return "; per section: " + ", ".join(f"{s.title.removesuffix(' (not run)')} {s.seconds:.0f} s" for s in sections)


def section_time(section: Section) -> str:
    """'This section took 3 min 12 s; peak memory 1.8 GB resident, 12.3 GB on the GPU.' (what it cost when
    this report ran it; memory where it was measured)."""
    m, s = divmod(round(section.seconds), 60)
    took = f"{m} min {s} s" if m else f"{s} s" if s >= 10 else f"{section.seconds:.1f} s"
    peaks = [f"{b / 1e9:.1f} GB {where}" for b, where in ((section.peak_rss_bytes, "resident"),
                                                         (section.peak_gpu_bytes, "on the GPU")) if b]
    return f"This section took {took}" + (f"; peak memory {', '.join(peaks)}." if peaks else ".")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def render_only(out: str | Path = "figures", results: str | Path | None = "RESULTS.md") -> Path:
    """Re-render report.html and RESULTS.md from `<out>/report.json` without running any analysis."""
    out = Path(out)
    path = out / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `interp report` once to write it")
    data = read_json(path)
    sections = [Section.from_dict(d) for d in data["sections"]]
    title = data.get("title", TITLE)
    ensure_plotlyjs(out)  # the figures' pages share one plotly.min.js (not committed: 4.8 MB)
    _write(out / "report.html", render(sections, data["seconds"], out, data.get("libraries"), title))
    if results is not None:
        _write(Path(results), render_markdown(sections, data["seconds"], out, Path(results), data.get("libraries"),
                                              title))
    return out / "report.html"


def render(sections: Sequence[Section], seconds: float, out: Path | None = None,
           libraries: dict[str, str] | None = None, title: str = TITLE) -> str:
    body = []
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.seconds:
            body.append(f"<p class='time'>{html.escape(section_time(s))}</p>")
        body += [f"<p>{html.escape(t)}</p>" for t in s.sentences]
        body.append(s.table_html)
        for f in s.figures:
            w, h = figure_size(out / f) if out is not None else (800, 480)
            body.append(f'<iframe src="{f}" width="{w}" height="{h}" frameborder="0"></iframe>')
    libs = ", ".join(f"{k} {v}" for k, v in (libraries or library_versions()).items())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>interp report</title><style>"
            "body{font-family:sans-serif;max-width:1140px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}.time{color:#777;font-size:small}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>"
            + "".join(body) + f"<p><small>{html.escape(libs)}; built in {seconds:.0f} s"
            f"{html.escape(section_times(sections))}</small></p></body></html>")


# ------------------------------------------------------------------------------------------ building

def section_name(make: Any) -> str:
    """`zoo_section` -> `zoo`: the name `interp report --sections` takes."""
    return make.__name__.removesuffix("_section")


def takes_config(make: Callable[..., Section]) -> bool:
    """True for a section written as `(config, out)`; False for one written as `(out, n_per_step, png)`,
    which runs on the first zoo only."""
    params = list(inspect.signature(make).parameters)
    return len(params) == 2 or (bool(params) and params[0] == "config")


def section_title(make: Callable[..., Section]) -> str:
    """A title for a section that did not run: its docstring's first sentence, without the module named in
    parentheses."""
    doc = (inspect.getdoc(make) or section_name(make)).split("\n\n")[0].replace("\n", " ")
    return re.sub(r"\s*\((analyses|interp)\.[\w.]+\)\.?$", "", doc).rstrip(".")


def run_section(make: Callable[..., Section], config: ReportConfig, out: Path) -> Section:
    """One section, timed, with its peak memory. Off the zoo, a section written for the zoo only, one that
    raises `SectionSkipped`, and one whose analysis refuses the pair or the task (a ValueError, whose message
    says why) come back as skipped sections, and any other error as a failed section (`build_report` raises
    `SectionsFailed` once the rest has run); on the zoo every error propagates, as it always has."""
    from interp.benchmark import PeakMemory

    t0, peak = time.time(), PeakMemory(config.device)
    with peak:
        try:
            if not takes_config(make):
                if not config.is_zoo:
                    why = ZOO_ONLY.get(section_name(make), "it takes no pair or task")
                    raise SectionSkipped(section_title(make), "this section is written for the first zoo only (organism "
                                                              f"models and task): {why}")
                section = make(out, config.n_per_step, config.png)
            else:
                section = make(config, out)
        except SectionSkipped as e:
            section = skipped_section(e.title, e.reason)
        except (ValueError, NotImplementedError) as e:
            if config.is_zoo:
                raise
            section = skipped_section(section_title(make), f"the analysis cannot run on this pair or task: {e}")
        except Exception as e:  # on a pair, one broken section must not cost the others' hours of work
            if config.is_zoo:
                raise
            section = failed_section(section_title(make), e)
    return dataclasses.replace(section, seconds=round(time.time() - t0, 1), peak_rss_bytes=peak.rss_bytes,
                               peak_gpu_bytes=peak.gpu_bytes)


def check_pairs(config: ReportConfig) -> None:
    """Load every (base, tuned) pair once, refusing incomparable ones with the list of differences."""
    from interp.models import load_pair

    for tuned in config.tuned:
        load_pair(loaded(config.base), loaded(tuned))


def _kept_sections(out: Path, config: ReportConfig) -> dict[str, Section]:
    """Sections of `<out>/report.json` by name, if it was written for the same report (config equal apart from
    the sections run): `--sections` then updates those sections instead of dropping the others."""
    path = out / "report.json"
    if config.sections is None or not path.is_file():
        return {}
    old = read_json(path)
    names = old.get("section_names")
    if not names or len(names) != len(old.get("sections", ())):
        return {}
    # which sections run, whether PNGs are written and which seeds are rechecked do not change the other numbers
    loose = ("sections", "png", "seeds")
    as_disk = lambda c: {k: v for k, v in json.loads(json.dumps(c.to_dict())).items() if k not in loose}
    theirs = old.get("config")
    if theirs is None:  # written before configs were recorded: the first zoo's report
        same = config.is_zoo and old.get("n_per_step") == config.n_per_step
    else:  # fields added since that report was written take their defaults
        try:
            same = as_disk(ReportConfig.from_dict(theirs)) == as_disk(config)
        except (TypeError, ValueError):
            same = False
    if not same:
        import sys

        print(f"report: {path} was written for another configuration; it is replaced by the sections run now",
              file=sys.stderr)
        return {}
    return {n: Section.from_dict(d) for n, d in zip(names, old["sections"])}


def build_report(out: str | Path = "figures", n_per_step: int = 200, png: bool = True,
                 only: Sequence[str] | None = None, results: str | Path | None = "RESULTS.md",
                 config: ReportConfig | None = None, jobs: int = 1, ray: str | bool | None = None,
                 keep_models: bool = False) -> Path:
    """Run every section of `config` (default: the first zoo with `n_per_step`, `png` and `only`); write
    report.json (after each section, so a stopped report keeps what it measured), report.html and (unless
    `results` is None) RESULTS.md. `jobs` > 1 runs sections in that many processes and `ray` as Ray tasks
    (`True` for a local instance, `"auto"` or an address for a cluster); the report is the same either way.
    `keep_models` leaves the models loaded for the next call (sections run one call at a time, as
    scripts/gpu_check.py does; `unload_models` frees them)."""
    from analyses.report_jobs import expected_seconds, run_sections

    if config is None:
        config = ReportConfig(n_per_step=n_per_step, png=png, sections=None if only is None else tuple(only))
    names = [section_name(m) for m in SECTIONS]
    unknown = sorted(set(config.sections or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown report section(s) {unknown}; the sections are {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    kept = _kept_sections(out, config)
    chosen = [(n, m) for n, m in zip(names, SECTIONS) if config.sections is None or n in config.sections]
    if not chosen:
        raise ValueError("no section ran: --sections named none of this report's sections")
    _LOAD_ARGS.update(device=config.device, dtype=config.dtype)
    done: dict[str, Section] = {}

    def write(name: str, section: Section) -> None:
        done[name] = section
        # sections of an earlier run of the same report that this run did not redo stay, in report order
        merged = sorted([(n, kept[n]) for n in names if n in kept and n not in done] + list(done.items()),
                        key=lambda ns: names.index(ns[0]))
        if len(done) == len(chosen):  # the last section: every headline sentence gets its seed verdict
            merged = with_seed_verdicts(merged, out)
        write_json(out / "report.json", {
            "title": config.title(), "config": config.to_dict(), "n_per_step": config.n_per_step,
            "seconds": time.time() - t0, "jobs": "ray" if ray else jobs, "libraries": library_versions(),
            "section_names": [n for n, _ in merged], "sections": [x.to_dict() for _, x in merged],
            "skipped": {x.title: x.skipped for _, x in merged if x.skipped},
            "failed": {x.title: x.sentences[0] for _, x in merged if x.error}})

    try:
        if not config.is_zoo:
            check_pairs(config)
        run_sections([m for _, m in chosen], [n for n, _ in chosen], config, out, write, jobs=jobs, ray=ray,
                     expected=expected_seconds([n for n, _ in chosen], _previous_seconds(out)))
    finally:
        if not keep_models:
            unload_models()
        _LOAD_ARGS.clear()
    page = render_only(out, results)
    failed = [f"{n} ({s.sentences[0].removeprefix('Failed: ')})" for n, s in done.items() if s.error]
    if failed:
        raise SectionsFailed(f"{len(failed)} of {len(done)} sections failed; the report is written with the others "
                             f"({page}) and each error's traceback is in {out / 'report.json'}: {'; '.join(failed)}")
    return page


def _previous_seconds(out: Path) -> dict[str, float]:
    """Each section's seconds in `<out>/report.json`, if one is there (the estimate of a report's time left)."""
    try:
        old = read_json(out / "report.json")
        return {n: float(d.get("seconds", 0.0)) for n, d in zip(old["section_names"], old["sections"])}
    except (OSError, KeyError, TypeError, ValueError):
        return {}


__all__ = ["COST_FIELDS", "SECTIONS", "ReportConfig", "Section", "SectionSkipped", "SectionsFailed", "build_report", "render_markdown", "render_only",
           "run_section", "section_name", "unload_models"]
