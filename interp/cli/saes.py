"""`interp sae train|eval|features|dashboard|steer`, `interp analyze sae-reasoning`, `interp bench sae`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from interp.cli.common import (
    RayCpus,
    RayGpus,
    RayOption,
    analyze_app,
    app,
    console,
    fail,
    parse_steps,
    ray_spec,
    table_console,
)

sae_app = typer.Typer(help="Sparse autoencoders on harvested activations (sae-lens format).", no_args_is_help=True)
app.add_typer(sae_app, name="sae")

SAE_ERRORS = (ValueError, FileNotFoundError, OSError, FloatingPointError)


def _model(name: str | None, card: dict[str, Any], store: Any = None) -> Any:
    """The model named, else the one the card or store was made from (if it loads here)."""
    from interp.models import load

    name = name or card.get("model_name") or (store.model_name if store is not None else None)
    if not name:
        raise ValueError("no model given and the SAE's card names none: pass --model")
    return load(name)


def _quality_table(title: str, q: Any) -> Table:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    ci = lambda c: f" [{c[0]:.3f}, {c[1]:.3f}]" if c else ""
    rows = [("explained variance", f"{q.explained_variance:.4f}{ci(q.explained_variance_ci)}"), ("L0", f"{q.l0:.2f}"),
            ("dead features", f"{q.dead_features} of {q.n_features}"), ("dense features (>10%)", str(q.dense_features)),
            ("rows", f"{q.n_rows:,}")]
    if q.ce_recovered is not None:
        rows += [("CE clean / SAE / zero-ablated", f"{q.ce_clean:.4f} / {q.ce_sae:.4f} / {q.ce_zero:.4f}"),
                 ("CE recovered", f"{q.ce_recovered:.4f}{ci(q.ce_recovered_ci)}"),
                 ("tokens (CE)", f"{q.n_tokens_ce:,}" + (f" ({q.ce_tokens})" if q.ce_tokens else ""))]
    for r in rows:
        t.add_row(*r)
    return t


def _load(sae: str, release: str | None) -> tuple[Any, dict[str, Any]]:
    from saes import load_sae

    return load_sae(release, sae) if release else load_sae(sae)


@sae_app.command("train")
def sae_train(
    store: Annotated[Path, typer.Argument(help="activation store (interp harvest)")],
    hook: Annotated[str, typer.Option(help="hook whose rows to train on, e.g. blocks.1.hook_resid_post")],
    out: Annotated[Path, typer.Option(help="folder for the SAE (sae-lens format + card.json)")],
    label: Annotated[str | None, typer.Option(help="only rows of this position label")] = None,
    architecture: Annotated[str, typer.Option(help="batchtopk | topk | standard (ReLU/L1) | jumprelu")] = "batchtopk",
    expansion: int = 8,
    k: Annotated[float, typer.Option(help="active features per row ((batch)topk)")] = 8.0,
    l1_coefficient: float = 2.0,
    l0_coefficient: float = 0.05,
    total_samples: int = 300_000,
    batch_size: int = 1024,
    lr: float = 5e-3,
    lr_warm_up_steps: Annotated[int, typer.Option(help="warm-up steps (fewer than total_samples // batch_size)")] = 20,
    seed: int = 0,
    model: Annotated[str | None, typer.Option(help="model for the CE metrics (default: the store's)")] = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="discard a checkpoint left by a killed run")] = False,
    device: Annotated[str, typer.Option(help="where the SAE trains: cpu, cuda, cuda:1, ...")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="print the card as JSON")] = False,
) -> None:
    """Train an SAE with sae-lens' SAETrainer on stored activations (resumes a killed run), then measure it."""
    from interp.activations import ActivationStore
    from saes import Quality, SAETrainConfig, train_sae

    try:
        st = ActivationStore.open(store)
        cfg = SAETrainConfig(hook=hook, label=label, architecture=architecture, expansion=expansion, k=k,
                             l1_coefficient=l1_coefficient, l0_coefficient=l0_coefficient, total_samples=total_samples,
                             batch_size=batch_size, lr=lr, lr_warm_up_steps=lr_warm_up_steps, seed=seed)
        m = _model(model, {}, st)
        with console.status(f"training on {st.n_rows:,} stored rows"):
            trained = train_sae(st, cfg, out, resume=not no_resume, model=m, device=device)
        card = trained.card
        q = Quality.from_dict(card["metrics"])
    except SAE_ERRORS as e:
        fail(e)
    if as_json:
        print(json.dumps(card))
        return
    tr = card["training"]
    table_console().print(_quality_table(f"{out}: {architecture} SAE, {card['d_sae']} features on {hook} "
                                         f"({tr['samples']:,} activations in {tr['seconds']:.1f} s)", q))


@sae_app.command("train-hooks")
def sae_train_hooks(
    store: Annotated[Path, typer.Argument(help="activation store (interp harvest)")],
    hooks: Annotated[str, typer.Option(help="comma-separated hooks of the store; * patterns allowed, e.g. "
                                            "'blocks.*.hook_resid_post'")],
    out: Annotated[Path, typer.Option(help="folder: one SAE per hook in OUT/<hook>")],
    label: Annotated[str | None, typer.Option(help="only rows of this position label")] = None,
    architecture: Annotated[str, typer.Option(help="batchtopk | topk | standard (ReLU/L1) | jumprelu")] = "batchtopk",
    expansion: int = 8,
    k: Annotated[float, typer.Option(help="active features per row ((batch)topk)")] = 8.0,
    total_samples: int = 300_000,
    batch_size: int = 1024,
    lr: float = 5e-3,
    lr_warm_up_steps: Annotated[int, typer.Option(help="warm-up steps (fewer than total_samples // batch_size)")] = 20,
    seed: int = 0,
    ray: RayOption = None,
    ray_cpus: RayCpus = 1,
    ray_gpus: RayGpus = 0,
) -> None:
    """Train one SAE per hook of a store (--ray: one Ray task per hook, the same weights; the store is read at its
    path on the workers), each with its store quality metrics."""
    from interp.activations import ActivationStore
    from interp.cli.activations import expand_hooks
    from saes import SAETrainConfig
    from saes.sweep_ray import train_hooks

    try:
        st = ActivationStore.open(store)
        hook_list = expand_hooks(hooks, st.hooks)
        cfg = SAETrainConfig(hook=hook_list[0] if hook_list else "", label=label, architecture=architecture,
                             expansion=expansion, k=k, total_samples=total_samples, batch_size=batch_size, lr=lr,
                             lr_warm_up_steps=lr_warm_up_steps, seed=seed)
        with console.status(f"training {len(hook_list)} SAE(s) on {st.n_rows:,} stored rows"):
            trained = train_hooks(st.root, cfg, hook_list, out, ray=ray_spec(ray), num_cpus=ray_cpus,
                                  num_gpus=ray_gpus)
    except SAE_ERRORS as e:
        fail(e)
    table = Table(title=f"{len(trained)} {architecture} SAE(s) in {out}")
    for col in ("hook", "features", "activations", "seconds", "L0", "explained variance"):
        table.add_column(col, justify="right")
    for t in trained:
        c, m = t.card, t.card.get("metrics", {})
        table.add_row(c["hook"], str(c["d_sae"]), f"{c['training']['samples']:,}", f"{c['training']['seconds']:.1f}",
                      f"{m.get('l0', float('nan')):.1f}", f"{m.get('explained_variance', float('nan')):.3f}")
    table_console().print(table)


@sae_app.command("eval")
def sae_eval(
    sae: Annotated[str, typer.Argument(help="SAE folder, or a sae-lens id with --release")],
    store: Annotated[Path, typer.Argument(help="activation store holding the SAE's hook")],
    hook: Annotated[str | None, typer.Option(help="hook (default: the card's)")] = None,
    release: Annotated[str | None, typer.Option(help="sae-lens pretrained release (local cache only)")] = None,
    model: Annotated[str | None, typer.Option(help="model for CE recovered (default: the store's)")] = None,
    no_ce: Annotated[bool, typer.Option("--no-ce", help="reconstruction metrics only (no model forward)")] = False,
    allow_other_model: Annotated[bool, typer.Option(help="evaluate on another model's activations (transfer)")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Explained variance, L0, dead/dense features and CE recovered of an SAE on a store."""
    from interp.activations import ActivationStore
    from saes import quality
    from saes.training import check_fits

    try:
        s, card = _load(sae, release)
        st = ActivationStore.open(store)
        h = hook or card.get("hook") or s.cfg.metadata.hook_name
        if not h:
            raise ValueError("the SAE names no hook: pass --hook")
        m = None if no_ce else _model(model, {}, st)
        if m is not None:
            check_fits(s, card, m, h, allow_other_model)
        elif card.get("model_checksum") and card["model_checksum"] != st.model_checksum and not allow_other_model:
            raise ValueError(f"the SAE was trained on {card.get('model_name')}, the store comes from {st.model_name}; "
                             f"pass --allow-other-model to transfer it on purpose")
        q, _ = quality(s, st, h, model=m, allow_other_model=allow_other_model)
    except SAE_ERRORS as e:
        fail(e)
    if as_json:
        print(json.dumps(q.to_dict()))
        return
    table_console().print(_quality_table(f"{sae} on {store} ({h})", q))


@sae_app.command("features")
def sae_features(
    sae: Annotated[Path, typer.Argument(help="SAE folder")],
    store: Annotated[Path, typer.Argument(help="store of the SAE's hook over organism problems (meta will_cot, format)")],
    top: Annotated[int, typer.Option(help="features to list")] = 10,
    feature: Annotated[int | None, typer.Option(help="show this feature's top contexts instead")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Reasoning features ranked by CoT-mode AUROC (with the shuffled-label null), or one feature's contexts."""
    from interp.activations import ActivationStore
    from saes.features import feature_table, rank_reasoning_features, top_contexts

    try:
        s, card = _load(str(sae), None)
        st = ActivationStore.open(store)
        h = card.get("hook") or s.cfg.metadata.hook_name
        table = feature_table(s, st, h)
        ds = st.dataset()
        if feature is not None:
            if not 0 <= feature < table.n_features:
                raise ValueError(f"feature {feature} is out of range: this SAE has {table.n_features} features "
                                 f"(0..{table.n_features - 1})")
            m = _model(None, card, st)
            ctx = top_contexts(table, ds, m.tokenizer, feature)
            if as_json:
                print(json.dumps([c.to_dict() for c in ctx]))
                return
            for c in ctx:
                toks = [f"[{t}]" if i == c.position else t for i, t in enumerate(c.tokens)]
                console.print(f"#{c.example} ({c.activation:.2f}): " + " ".join(toks), markup=False, highlight=False)
            return
        vp = [(f"step{i}.before_value", f"value.step{i}") for i in range(1, 9)]
        r = rank_reasoning_features(table, ds, value_positions=vp)
    except SAE_ERRORS as e:
        fail(e)
    if as_json:
        print(json.dumps(r.to_dict()))
        return
    t = Table(title=f"reasoning features ({r.n_cot} CoT / {r.n_direct} direct answer positions; shuffled-label "
                    f"null {r.null_mode_auroc:.3f})")
    for c in ("feature", "firing rate", "CoT-mode AUROC [95% CI]", "same steps", "CoT-token AUROC", "value eta^2",
              "ReasonScore"):
        t.add_column(c, justify="right")
    for f in r.features[:top]:
        t.add_row(str(f.feature), f"{f.firing_rate:.3f}",
                  f"{f.mode_auroc:.3f} [{f.mode_auroc_ci[0]:.3f}, {f.mode_auroc_ci[1]:.3f}]",
                  f"{f.mode_auroc_within:.3f}", f"{f.token_auroc:.3f}",
                  f"{f.value_eta2:.3f}", f"{f.reason_score:.4f}")
    table_console().print(t)


@sae_app.command("dashboard")
def sae_dashboard(
    sae: Annotated[Path, typer.Argument(help="SAE folder")],
    store: Annotated[Path, typer.Argument(help="store of the SAE's hook (all tokens, for shaded contexts)")],
    features: Annotated[str, typer.Option(help="comma-separated feature indices")],
    out: Annotated[Path, typer.Option(help="folder for index.html and feature-<i>.html")],
    model: Annotated[str | None, typer.Option(help="model for tokens and logit effects (default: the card's)")] = None,
) -> None:
    """Static offline HTML pages: top contexts shaded by activation, histogram, top logit effects."""
    from interp.activations import ActivationStore
    from saes.dashboard import write_dashboard
    from saes.features import feature_table

    try:
        feats = [int(x) for x in features.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--features takes integers like 3,17; got {features!r}") from None
    try:
        s, card = _load(str(sae), None)
        st = ActivationStore.open(store)
        m = _model(model, card, st)
        h = card.get("hook") or s.cfg.metadata.hook_name
        index = write_dashboard(s, m, feature_table(s, st, h), st.dataset(), feats, out, f"{sae} ({h})")
    except SAE_ERRORS as e:
        fail(e)
    console.print(f"dashboard written: {index}")


@sae_app.command("steer")
def sae_steer(
    sae: Annotated[Path, typer.Argument(help="SAE folder")],
    features: Annotated[str, typer.Option(help="comma-separated features to add (or the one to clamp)")],
    model: Annotated[str | None, typer.Option(help="model to steer (default: the card's)")] = None,
    prompt: Annotated[list[str] | None, typer.Option(help="a prompt; repeatable")] = None,
    scale: Annotated[float, typer.Option(help="added activation per feature")] = 20.0,
    clamp: Annotated[float | None, typer.Option(help="clamp the (single) feature to this activation instead")] = None,
    where: Annotated[str, typer.Option(help="generated | prompt | all | last | positions:I,J")] = "last",
    steps: Annotated[str | None, typer.Option(help="also measure CoT rate and accuracy on N-step problems, e.g. 3,4")] = None,
    n_per_step: int = 100,
    n_random: Annotated[int, typer.Option(help="random-feature controls of equal norm (with --steps)")] = 3,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Generate with SAE features added (or clamped) at the SAE's hook, next to the unsteered model."""
    from interp.cli.steering import parse_where
    from interp.organism.evaluate import EvalConfig, evaluate
    from interp.steering import Add, steer
    from saes.features import check_feature
    from saes.steering import feature_clamp, feature_vector, random_feature_vectors

    try:
        feats = [int(x) for x in features.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--features takes integers like 3,17; got {features!r}") from None
    out: dict[str, Any] = {}
    try:
        s, card = _load(str(sae), None)
        m = _model(model, card)
        h = card.get("hook") or s.cfg.metadata.hook_name
        from saes.training import check_fits

        check_fits(s, card, m, h)
        for f in feats:
            check_feature(s, f)
        w = parse_where(where)
        if clamp is not None:
            if len(feats) != 1:
                raise ValueError("--clamp takes exactly one feature")
            ivs = [feature_clamp(s, feats[0], clamp, m, h, where=w)]
        else:
            vec = feature_vector(s, feats, m, h)
            ivs = [Add(vec, where=w, scale=scale)]
        if prompt:
            plain = m.generate(prompt)
            with steer(m, ivs):
                steered = m.generate(prompt)
            out["completions"] = [{"prompt": p, "unsteered": a, "steered": b} for p, a, b in zip(prompt, plain, steered)]
        if steps:
            cfg = EvalConfig(steps=parse_steps(steps), n_per_step=n_per_step)
            conds: dict[str, list[Any]] = {"none": [], "steered": ivs}
            if clamp is None:
                pool = list(range(int(s.cfg.d_sae)))  # no store here to tell live features apart
                for j, v in enumerate(random_feature_vectors(s, vec, feats, pool, n_random, len(feats))):
                    conds[f"random {j}"] = [Add(v, where=w, scale=scale)]
            res = {}
            for name, iv in conds.items():
                with steer(m, iv):
                    r = evaluate(m, cfg)
                res[name] = {"accuracy": r.mean_over(cfg.steps, "accuracy"), "cot_rate": r.mean_over(cfg.steps, "cot_rate")}
            out["evaluation"] = res
    except SAE_ERRORS as e:
        fail(e)
    if as_json:
        print(json.dumps(out))
        return
    if "completions" in out:
        t = Table(title=f"{m.name}: features {feats} at {h}")
        for c in ("prompt", "unsteered", "steered"):
            t.add_column(c)
        for c in out["completions"]:
            t.add_row(c["prompt"], c["unsteered"], c["steered"])
        table_console().print(t)
    if "evaluation" in out:
        t = Table(title=f"{steps}-step problems, {n_per_step} per step (greedy)")
        for c in ("condition", "accuracy", "CoT rate"):
            t.add_column(c, justify="right")
        for name, v in out["evaluation"].items():
            t.add_row(name, f"{v['accuracy']:.3f}", f"{v['cot_rate']:.3f}")
        table_console().print(t)


@analyze_app.command("sae-reasoning")
def analyze_sae_reasoning(
    out: Annotated[Path, typer.Option(help="folder for figures, sae_reasoning.json and the dashboard")] = Path("figures"),
    hook: str = "blocks.1.hook_resid_post",
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
) -> None:
    """base-s's SAE: quality, reasoning features, transfer to sft/rl/dpo, steering vs random features."""
    import dataclasses

    from analyses import sae_reasoning as sr
    from interp.io import write_json

    try:
        cfg = sr.SAEReasoningConfig(hook=hook, sae=dataclasses.replace(sr.SAEReasoningConfig().sae, hook=hook))
        result = sr.run_cached(cfg, dashboard_dir=out / "sae_dashboard")
        write_json(out / "sae_reasoning.json", result.to_dict())
        sr.figures(result, out, png=png)
    except SAE_ERRORS as e:
        fail(e)
    for line in sr.summary_sentences(result):
        console.print(f"- {line}", markup=False, highlight=False)
