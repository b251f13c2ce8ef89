"""`interp report`: run each analysis on the embedded default and write figures, `report.json`, one HTML
page and `RESULTS.md`.

Each analysis contributes a section (title, sentences with its numbers, figures). Results are cached by
model checksum and config, so a second report reuses them. `report.json` holds every section as written;
`report.html` and `RESULTS.md` are rendered from it (`render_only` re-renders them without recomputing),
so no number in RESULTS.md is copied by hand.
"""

from __future__ import annotations

import dataclasses
import html
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses.zoo_eval import ZooEvalResult
from interp.io import library_versions, read_json, write_json
from interp.plots import ensure_plotlyjs


@dataclass(frozen=True)
class Section:
    title: str
    sentences: tuple[str, ...]
    figures: tuple[str, ...]  # HTML file names relative to the report folder
    table_html: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Section":
        return cls(d["title"], tuple(d["sentences"]), tuple(d["figures"]), d.get("table_html", ""))


def zoo_section(out: Path, n_per_step: int, png: bool) -> Section:
    from analyses import zoo_eval

    cfg = zoo_eval.ZooEvalConfig()
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, n_per_step=n_per_step))
    result = zoo_eval.run(cfg)
    write_json(out / "zoo_eval.json", result.to_dict())
    paths = zoo_eval.figures(result, out, png=png)
    return Section("Scaling vs post-training on the zoo", tuple(zoo_eval.summary_sentences(result)),
                   tuple(p[0].name for p in paths.values()), zoo_table_html(result))


def zoo_table_html(result: ZooEvalResult) -> str:
    rows = []
    for m in result.models:
        for k in sorted(m.free.by_steps):
            f, c, d = m.free.by_steps[k], m.forced.by_steps[k], m.direct.by_steps[k]
            rows.append(f"<tr><td>{html.escape(m.name)}</td><td>{m.n_params:,}</td><td>{k}</td>"
                        f"<td>{f.accuracy:.2f} [{f.accuracy_ci[0]:.2f}, {f.accuracy_ci[1]:.2f}]</td>"
                        f"<td>{f.cot_rate:.2f}</td><td>{f.mean_tokens:.1f}</td><td>{c.accuracy:.2f}</td>"
                        f"<td>{d.accuracy:.2f}</td></tr>")
    head = ("<tr><th>model</th><th>params</th><th>steps</th><th>accuracy [95% CI]</th><th>CoT rate</th>"
            "<th>mean tokens</th><th>forced-CoT accuracy</th><th>forced-direct accuracy</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


SECTIONS = (zoo_section,)


MAX_FIGURE_WIDTH = 1140  # the page body; wider figures scroll inside their frame


def figure_size(path: Path, default: tuple[int, int] = (800, 480)) -> tuple[int, int]:
    """(width, height) a saved plotly figure asks for, read from its HTML, so its iframe fits it."""
    import re

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
                    libraries: dict[str, str] | None = None) -> str:
    """RESULTS.md: each section's sentences, its table (HTML, which GitHub renders) and its figures as PNGs
    linked relative to where RESULTS.md is written."""
    import os

    rel = Path(os.path.relpath(figures.resolve(), results.resolve().parent))
    lines = [f"# {TITLE}", "",
             f"Written by `interp report` from `{rel.as_posix()}/report.json` (do not edit by hand; rerun the report). "
             f"Every number below is computed by the analysis named in its section; interactive figures are in "
             f"`{rel.as_posix()}/report.html`.", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        lines += [f"- {t}" for t in s.sentences]
        lines.append("")
        if s.table_html:
            lines += [s.table_html, ""]
        for f in s.figures:
            png = Path(f).with_suffix(".png")
            lines += [f"![{png.stem}]({(rel / png).as_posix()})", ""]
    libs = ", ".join(f"{k} {v}" for k, v in (libraries or library_versions()).items())
    lines += ["---", f"<small>{libs}; built in {seconds:.0f} s</small>", ""]
    return "\n".join(lines)


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
    ensure_plotlyjs(out)  # the figures' pages share one plotly.min.js (not committed: 4.8 MB)
    _write(out / "report.html", render(sections, data["seconds"], out, data.get("libraries")))
    if results is not None:
        _write(Path(results), render_markdown(sections, data["seconds"], out, Path(results), data.get("libraries")))
    return out / "report.html"


def render(sections: Sequence[Section], seconds: float, out: Path | None = None,
           libraries: dict[str, str] | None = None) -> str:
    body = []
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        body += [f"<p>{html.escape(t)}</p>" for t in s.sentences]
        body.append(s.table_html)
        for f in s.figures:
            w, h = figure_size(out / f) if out is not None else (800, 480)
            body.append(f'<iframe src="{f}" width="{w}" height="{h}" frameborder="0"></iframe>')
    libs = ", ".join(f"{k} {v}" for k, v in (libraries or library_versions()).items())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>interp report</title><style>"
            "body{font-family:sans-serif;max-width:1140px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>"
            f"<h1>{TITLE}</h1>"
            + "".join(body) + f"<p><small>{html.escape(libs)}; built in {seconds:.0f} s</small></p></body></html>")


def section_name(make: Any) -> str:
    """`zoo_section` -> `zoo`: the name `interp report --sections` takes."""
    return make.__name__.removesuffix("_section")


def build_report(out: str | Path = "figures", n_per_step: int = 200, png: bool = True,
                 only: Sequence[str] | None = None, results: str | Path | None = "RESULTS.md") -> Path:
    """Run every section (or those named in `only`, in report order); write report.json, report.html and
    (unless `results` is None) RESULTS.md."""
    names = [section_name(m) for m in SECTIONS]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown report section(s) {unknown}; the sections are {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sections = [make(out, n_per_step, png) for make in SECTIONS if only is None or section_name(make) in only]
    write_json(out / "report.json", {"title": TITLE, "n_per_step": n_per_step, "seconds": time.time() - t0,
                                     "libraries": library_versions(), "sections": [x.to_dict() for x in sections]})
    return render_only(out, results)


__all__ = ["build_report", "render_markdown", "render_only", "Section", "SECTIONS", "section_name"]


def layers_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Where fine-tuning acts, for sft, rl and dpo against base-s (analyses.layer_changes)."""
    from analyses.layer_changes.section import section_parts

    return Section(*section_parts(out, n_per_step, png))


SECTIONS = (*SECTIONS, layers_section)


def latent_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Probes for the chain's values in each model's residual stream (2x the eval's problems per step)."""
    import dataclasses as dc

    from analyses import latent_reasoning as lr

    cfg = dc.replace(lr.LatentConfig(), n_per_step=2 * n_per_step)
    result = lr.run_cached(cfg)
    write_json(out / "latent_reasoning.json", result.to_dict())
    paths = lr.figures(result, out, png=png)
    return Section("Latent reasoning: what a linear probe reads in each model", tuple(lr.summary_sentences(result)),
                   tuple(p[0].name for p in paths.values()))


SECTIONS = (*SECTIONS, latent_section)


def faithfulness_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Is each post-trained model's CoT more or less causally used than base-s's (analyses.faithfulness)?"""
    from analyses.faithfulness.figures import section_parts

    title, sentences, figures, table = section_parts(out, min(n_per_step, 100), png)
    return Section(title, sentences, figures, table)


SECTIONS = (*SECTIONS, faithfulness_section)


def verbosity_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Activation-steered compression of sft's chains of thought (analyses.verbosity)."""
    from analyses.verbosity.figures import verbosity_section_parts

    return Section(*verbosity_section_parts(out, n_per_step, png))


def reasoning_direction_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Steering base-s with its CoT-mode - direct-mode direction (analyses.verbosity.reasoning)."""
    from analyses.verbosity.figures import reasoning_section_parts

    return Section(*reasoning_section_parts(out, n_per_step, png))


SECTIONS = (*SECTIONS, verbosity_section, reasoning_direction_section)


def sae_section(out: Path, n_per_step: int, png: bool) -> Section:
    """base-s's SAE: quality, reasoning features, transfer to sft/rl/dpo, feature steering (analyses.sae_reasoning)."""
    import dataclasses as dc

    from analyses import sae_reasoning as sr

    cfg = dc.replace(sr.SAEReasoningConfig(), n_test_per_step=n_per_step, n_val_per_step=min(100, n_per_step))
    result = sr.run_cached(cfg, dashboard_dir=out / "sae_dashboard")
    write_json(out / "sae_reasoning.json", result.to_dict())
    paths = sr.figures(result, out, png=png)
    return Section("Sparse autoencoder features: reasoning features, transfer, steering",
                   tuple(sr.summary_sentences(result)), tuple(p[0].name for p in paths.values()),
                   '<p><a href="sae_dashboard/index.html">feature dashboard (static HTML)</a></p>')


SECTIONS = (*SECTIONS, sae_section)


def routing_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Hybrid decoding of base-s with rl and sft: routers, random controls, token shift (analyses.routing)."""
    from analyses.routing.figures import section_parts

    return Section(*section_parts(out, n_per_step, png))


def compute_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Accuracy vs generated tokens and parameters for the zoo (analyses.compute)."""
    from analyses.compute.figures import section_parts

    return Section(*section_parts(out, n_per_step, png))


def calibration_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Answer-span confidence, ECE and reliability per zoo member and condition (analyses.calibration)."""
    from analyses.calibration.figures import section_parts

    return Section(*section_parts(out, n_per_step, png))


SECTIONS = (*SECTIONS, routing_section, compute_section, calibration_section)


def rlsf_section(out: Path, n_per_step: int, png: bool) -> Section:
    """rlsf (label-free, own-confidence preferences) against base-s, rl and dpo (analyses.calibration.rlsf)."""
    from analyses.calibration.figures import rlsf_section_parts

    return Section(*rlsf_section_parts(out, n_per_step, png))


SECTIONS = (*SECTIONS, rlsf_section)


def shift_section(out: Path, n_per_step: int, png: bool) -> Section:
    """The shift battery on the zoo, with the step-1 probe under shift (analyses.shift)."""
    from analyses.shift.figures import section_parts

    return Section(*section_parts(out, n_per_step, png))


def novelty_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Accuracy over instance novelty at fixed steps and over steps at fixed novelty (analyses.novelty)."""
    from analyses.novelty.figures import section_parts

    return Section(*section_parts(out, n_per_step, png))


def symbolic_section(out: Path, n_per_step: int, png: bool) -> Section:
    """Rules kept, familiar meaning stripped or contradicted (analyses.symbolic)."""
    from analyses.symbolic.figures import section_parts

    return Section(*section_parts(out, n_per_step, png))


SECTIONS = (*SECTIONS, shift_section, novelty_section, symbolic_section)


def dpo_teacher_section(out: Path, n_per_step: int, png: bool) -> Section:
    """dpo-teacher (base-s by DPO on base-l's right vs wrong samples) against base-s, rl and dpo."""
    from analyses.calibration.figures import rlsf_section_parts

    return Section(*rlsf_section_parts(out, n_per_step, png, teacher=True))


SECTIONS = (*SECTIONS, dpo_teacher_section)
