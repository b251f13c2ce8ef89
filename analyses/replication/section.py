"""The report's "What holds across seeds" section, its figure, and the hooks that give every headline sentence
of the zoo report its seed verdict (`HEADLINES`, `verdict_suffix`, `annotate`).

The section runs `analyses.replication.run` (cached per seed and analysis), writes `replication.json`, a figure
(per finding: each seed's value as a dot with its bootstrap interval, the mean and sd over seeds) and one
sentence per finding with its verdict, all generated from the JSON.

Wiring it into the report (analyses/report.py, owned by the lead)::

    from analyses.replication.section import annotate, replication_section, try_load
    # first section of the zoo's report (ReportConfig gains `seeds`; `interp report --seeds 0,1,2`):
    section = replication_section(config, out)            # or replication_section(config, out, seeds=(0, 1, 2))
    # every headline sentence of the other sections gets its seed verdict:
    rep = try_load(out)                                   # figures/replication.json, None before the first run
    if rep is not None:
        sections = [dataclasses.replace(s, sentences=tuple(annotate(s.sentences, rep))) for s in sections]

`annotate` appends " Across seeds: <claim>: k of n seeds (verdict)." to each sentence `HEADLINES` maps to a
finding (pass `unreplicated=" (one training run)"` to mark the others); `verdict_suffix(ids, rep)` gives the
suffix for chosen finding ids."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.replication.aggregate import VERDICTS, Finding, counts_text, finding_sentence, format_value
from analyses.replication.analysis import MEMBERS, ReplicationConfig, ReplicationResult, run
from interp.io import read_json, write_json

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from analyses.report import ReportConfig, Section

TITLE = "What holds across seeds"
JSON_NAME = "replication.json"
FIGURE = "replication_findings"

# Headline sentences of the zoo report (matched at their start) -> the findings that check them.
HEADLINES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"base-s on 3-4-step problems:", ("zoo.base_unused", "zoo.base_rarely_cot")),
    (r"sft on 3-4-step problems:", ("zoo.sft.chooses_cot",)),
    (r"rl on 3-4-step problems:", ("zoo.rl.chooses_cot",)),
    (r"dpo on 3-4-step problems:", ("zoo.dpo.chooses_cot",)),
    (r"Scaling the base on the same data", ("zoo.scale_latent_gap",)),
    (r"Forced to answer directly", ("zoo.scale_latent_gap",)),
    (r"Answer for sft vs base-s:", ("layers.sft.weights_every_layer", "layers.sft.every_layer", "layers.sft.criticality")),
    (r"Answer for rl vs base-s:", ("layers.rl.weights_every_layer", "layers.rl.top_layer", "layers.rl.criticality")),
    (r"Answer for dpo vs base-s:", ("layers.dpo.weights_every_layer", "layers.dpo.top_layer", "layers.dpo.criticality")),
    (r"(sft|rl|dpo) vs base-s, weights:", ("layers.{0}.weights_every_layer",)),
    (r"sft vs base-s, grafting", ("layers.sft.every_layer",)),
    (r"sft vs base-s: (?:the smallest block|no block)", ("layers.sft.every_layer",)),
    (r"(rl|dpo) vs base-s, grafting", ("layers.{0}.top_layer",)),
    (r"(rl|dpo) vs base-s: (?:the smallest block|no block)", ("layers.{0}.top_layer",)),
    (r"(sft|rl|dpo) vs base-s, mean ablation of one layer, drop in forced-CoT", ("layers.{0}.criticality",)),
    (r"base-s, step [123] @ answer:", ("latent.no_silent_chain",)),
    (r"(base-s|rl|dpo): whether it will write a CoT", ("latent.{0}.cot_decision",)),
    (r"Chosen point", ("verbosity.compresses", "verbosity.pre_exists")),
    (r"Cosine between the directions", ("verbosity.pre_exists",)),
    (r"(sft|rl|dpo) against base-s:", ("faithfulness.{0}.not_less_causal",)),
    (r"Accuracy of the answer with none of the CoT", ("faithfulness.aoc_normalised",)),
    (r"Step-level patching on", ("faithfulness.reads_last_value", "faithfulness.earlier_not_followed")),
    (r"Routing only the first completion token to (rl|sft) ", ("routing.{0}.first_token",)),
    (r"Token shift over (rl|sft)'s own generations", ("routing.{0}.token_shift",)),
    (r"Free-generation ECE of (sft|rl|dpo) minus base-s", ("calibration.{0}.better",)),
    (r"Fraction of the base-s -> sft accuracy gap recovered", ("reasoning.recovers_gap",)),
)

# The report's sections (analyses/report.py's section names) whose headline sentences `HEADLINES` maps to
# findings, and the analyses of the replication that recheck them: a section listed here is not "one training
# run" once the replication has measured its findings (`annotate` appends their verdicts).
RECHECKED_SECTIONS: dict[str, tuple[str, ...]] = {
    "zoo": ("zoo",), "layers": ("layers",), "latent": ("latent",), "faithfulness": ("faithfulness",),
    "verbosity": ("verbosity",), "reasoning_direction": ("reasoning",), "routing": ("routing",),
    "calibration": ("calibration",)}
# For the report's sentence on sections no finding rechecks: what the replicas do recheck.
RECHECKED = "the zoo, layer, probe, faithfulness, verbosity, reasoning-direction, routing and calibration findings"


def load_result(out: str | Path = "figures") -> ReplicationResult:
    """The replication written by the section (`<out>/replication.json`)."""
    path = Path(out) / JSON_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `interp analyze replication` or the report's "
                                f"replication section first")
    return ReplicationResult.from_dict(read_json(path))


def try_load(out: str | Path = "figures") -> ReplicationResult | None:
    """`load_result`, or None when the replication has not been written to `out` yet."""
    try:
        return load_result(out)
    except FileNotFoundError:
        return None


def findings_for(sentence: str) -> tuple[str, ...]:
    """The ids of the findings that check a headline sentence (() when none does)."""
    ids: list[str] = []
    for pattern, targets in HEADLINES:
        m = re.match(pattern, sentence)
        if m:
            sub = m.group(1) if m.groups() else ""
            ids += [t.format(sub) for t in targets]
    return tuple(dict.fromkeys(ids))


def verdict_suffix(finding_ids: str | Sequence[str], result: ReplicationResult) -> str:
    """` Across seeds: <claim>: 3 of 3 seeds (every seed).` for the findings given (one id or several); '' when
    none was measured in any seed."""
    ids = (finding_ids,) if isinstance(finding_ids, str) else tuple(finding_ids)
    parts = []
    for i in ids:
        try:
            f = result.finding(i)
        except KeyError:
            continue
        if f.n == 0:  # no seed could decide it (its analysis did not run): nothing to say
            continue
        parts.append(f"{short_claim(f)}: {counts_text(f)}")
    return f" Across seeds: {'; '.join(parts)}." if parts else ""


def short_claim(f: Finding) -> str:
    """The claim up to its first colon or parenthesis (the threshold stays in the section)."""
    return re.split(r"[:(]", f.claim, maxsplit=1)[0].strip()


def annotate(sentences: Iterable[str], result: ReplicationResult, unreplicated: str = "") -> list[str]:
    """Each sentence with its seed verdict appended (the sentence's findings per `HEADLINES`); sentences no
    finding checks get `unreplicated` appended (e.g. ' (one training run; not replicated across seeds)')."""
    out = []
    for s in sentences:
        suffix = verdict_suffix(findings_for(s), result)
        out.append(s + (suffix or unreplicated))
    return out


# ------------------------------------------------------------------------------------------ figure and text

def figure(result: ReplicationResult) -> go.Figure:
    """One row per finding: each seed's value (dot, with its bootstrap interval), the mean over seeds (diamond)
    with +-1 sd; a dot is filled where the claim holds in that seed, open where it fails."""
    import plotly.graph_objects as go

    from interp.plots import QUALITATIVE, style

    fig = go.Figure()
    labels = [f"{f.id} ({f.k}/{f.n})" for f in result.findings]
    seeds = result.seeds
    offset = lambda j: 0.18 * (j - (len(seeds) - 1) / 2)  # seeds side by side within a finding's row
    for j, seed in enumerate(seeds):
        xs, ys, lo, hi, symbols = [], [], [], [], []
        for i, f in enumerate(result.findings):
            v = next((v for v in f.value.values if v.seed == seed), None)
            if v is None or not v.measured:
                continue
            xs.append(v.value)
            ys.append(i + offset(j))
            lo.append(v.value - v.ci[0] if v.ci else 0.0)
            hi.append(v.ci[1] - v.value if v.ci else 0.0)
            symbols.append("circle" if f.holds.get(seed) else "circle-open")
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=f"seed {seed}",
                                 marker={"size": 9, "color": QUALITATIVE[j % len(QUALITATIVE)], "symbol": symbols},
                                 error_x={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo,
                                          "thickness": 1}))
    ok = [(i, f) for i, f in enumerate(result.findings) if not math.isnan(f.value.mean)]
    fig.add_trace(go.Scatter(x=[f.value.mean for _, f in ok], y=[i for i, _ in ok], mode="markers",
                             name="mean +- sd over seeds", marker={"size": 12, "symbol": "diamond-open", "color": "#333"},
                             error_x={"type": "data", "array": [f.value.sd for _, f in ok], "thickness": 2}))
    style(fig, "What holds across seeds: the number behind each finding, per seed (open: the claim fails there)",
          "value (shares as fractions)", "")
    fig.update_layout(height=max(460, 30 * len(labels) + 120), width=1000, margin={"l": 300})
    fig.update_yaxes(autorange="reversed", tickvals=list(range(len(labels))), ticktext=labels, showgrid=False)
    return fig


def intro_sentences(result: ReplicationResult) -> list[str]:
    """What was run: seeds and members, problem counts, seeds left out, and what it cost."""
    c = result.config
    seeds = ", ".join(str(s) for s in result.seeds) or "none"
    out = [(f"Each headline finding rechecked on every seed's replica of the zoo (seeds {seeds}; seed 0 is the "
           f"shipped zoo, seed k retrains {', '.join(MEMBERS)} with seed k, each post-trained member from its own "
           f"seed's base). Per seed: zoo evaluation on {c.n_eval} problems per step count, grafting and ablation on "
           f"{c.n_layers}, probes on {c.n_latent} per step count (2-4 steps), verbosity steering on {c.n_verbosity} "
           f"validation and test problems per step count, faithfulness tests on {c.n_faithfulness} of each member's "
           f"own chains per step count (3-4 steps; step patching on {c.n_patch}), free-generation calibration on "
           f"{c.n_calibration} problems per step count, routing (base-s with rl and with sft, no steering variant) on "
           f"{c.n_routing} evaluation and {c.n_routing} classifier-training problems per step count, the reasoning-mode "
           f"direction on {c.n_reasoning} validation and test problems per step count (3-4 steps, a coarser sweep); "
           f"fewer problems than the sections below, so these numbers differ from theirs within their intervals. "
           f"Each number is given per seed with its 95% bootstrap interval over problems (the uncertainty about one "
           f"checkpoint), then mean and sd over seeds (how much the recipe's outcome moves with the seed). Verdicts: every seed, most seeds (more than half), some seeds, "
           f"one seed, no seed.")]
    for seed, why in sorted(result.missing.items()):
        out.append(f"Seed {seed}: {why}.")
    if result.cpu_seconds:
        tot = lambda d: sum(x for x in d.values() if not math.isnan(x))
        per = ", ".join(f"seed {k} {tot(v):.0f} s CPU ({tot(result.seconds[k]):.0f} s wall)"
                        for k, v in sorted(result.cpu_seconds.items()))
        unknown = [f"seed {k} {a}" for k, v in sorted(result.cpu_seconds.items()) for a, x in v.items() if math.isnan(x)]
        out.append(f"Cost of computing it (process CPU and wall-clock seconds, one torch thread, shared cores; "
                   f"analyses' own caches reused where a result was cached already): {per}; in all "
                   f"{sum(tot(v) for v in result.cpu_seconds.values()):.0f} s CPU"
                   + (f" (CPU time not recorded for {', '.join(unknown)})" if unknown else "") + ".")
    held = {v: sum(f.verdict == v for f in result.findings) for v in VERDICTS}
    out.append(f"Of {len(result.findings)} findings, " + ", ".join(f"{n} in {v}" if v != "not measured" else
                                                                    f"{n} not measured" for v, n in held.items() if n)
               + " (the number of findings whose claim holds in every seed, in most, ...).")
    return out


def table_html(result: ReplicationResult) -> str:
    """One row per finding: verdict, k of n, each seed's value with its interval, mean and sd."""
    head = ("<tr><th>finding</th><th>verdict</th><th>seeds holding</th>"
            + "".join(f"<th>seed {s}</th>" for s in result.seeds) + "<th>mean (sd)</th></tr>")
    rows = []
    for f in result.findings:
        cells = []
        for s in result.seeds:
            v = next((v for v in f.value.values if v.seed == s), None)
            if v is None or not v.measured:
                cells.append("n/a")
                continue
            ci = f" [{format_value(v.ci[0], f.fmt)}, {format_value(v.ci[1], f.fmt)}]" if v.ci else ""
            cells.append(f"{format_value(v.value, f.fmt)}{ci}{'' if f.holds.get(s) else ' ✗'}")
        sd = format_value(f.value.sd, "pct" if f.fmt == "pct" else "num")
        rows.append(f"<tr><td>{html.escape(f.claim)}</td><td>{f.verdict}</td><td>{f.k} of {f.n}</td>"
                    + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                    + f"<td>{format_value(f.value.mean, f.fmt)} ({sd})</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def write(result: ReplicationResult, out: Path, png: bool = True) -> tuple[list[str], list[str], str]:
    """Write replication.json and the figure; return (sentences, figure file names, table HTML), all generated
    from the JSON just written."""
    from interp.plots import save_figure

    out = Path(out)
    write_json(out / JSON_NAME, result.to_dict())
    result = ReplicationResult.from_dict(read_json(out / JSON_NAME))
    paths = save_figure(figure(result), out / FIGURE, png=png)
    sentences = [*intro_sentences(result), *(finding_sentence(f) for f in result.findings)]
    return sentences, [paths[0].name], table_html(result)


def replication_section(config: ReportConfig, out: Path, seeds: Sequence[int] | None = None,
                        replication: ReplicationConfig | None = None, progress: bool = True) -> Section:
    """The report's "What holds across seeds" section (zoo only: the replicas are the zoo's). `seeds` default:
    the report config's `seeds` when it has one, else 0, 1, 2; seeds not yet trained are left out and named."""
    import dataclasses

    from analyses.report import Section, SectionSkipped

    if not config.is_zoo:
        raise SectionSkipped(TITLE, "seed replicas exist only for the zoo (organism/<member>-seed<k>)")
    seeds = tuple(seeds if seeds is not None else (getattr(config, "seeds", None) or (0, 1, 2)))
    cfg = dataclasses.replace(replication or ReplicationConfig(), seeds=seeds)
    result = run(cfg, progress=progress)
    sentences, figs, table = write(result, out, png=config.png)
    return Section(TITLE, tuple(sentences), tuple(figs), table)


def findings_by_id(result: ReplicationResult) -> Mapping[str, Any]:
    """finding id -> its JSON (what `replication.json` holds), for scripts."""
    return {f.id: f.to_dict() for f in result.findings}


__all__ = ["HEADLINES", "JSON_NAME", "RECHECKED", "RECHECKED_SECTIONS", "TITLE", "annotate", "figure", "findings_by_id",
           "findings_for", "intro_sentences", "load_result", "replication_section", "table_html", "try_load", "verdict_suffix",
           "write"]
