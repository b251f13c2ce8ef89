"""interp.patching: batched exact patching equals one-run-per-cell references and TransformerLens' patching module;
identity and full patches; attribution patching; labelled results; clear errors on bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformer_lens import patching as tl_patching

import interp
from interp.hooks import UnknownHookError
from interp.patching import (
    PatchResult,
    answer_prob,
    attribution_agreement,
    attribution_patch,
    exact_patch,
    kl_div,
    logit_diff,
    run_with_patch,
)
from interp.patching.engine import plan_groups, tl_hook_name

torch.set_num_threads(1)

CLEAN = "Q : a = 5 ; b = a + 4 ; c = b * 2 ; c ? A :"
CORRUPT = "Q : a = 3 ; b = a + 4 ; c = b * 2 ; c ? A :"
CHANGED = 5  # position of the start value (BOS counts)


@pytest.fixture(scope="module")
def llama() -> interp.Model:
    """The smallest zoo model (a trained Llama, 4 layers): patching effects are large, not init noise."""
    return interp.load("organism/base-s")


@pytest.fixture(scope="module")
def gpt2(tiny_checkpoint: Callable[..., Path]) -> interp.Model:
    """A random GPT-2 with large init, so cells have effects well above the 1e-4 tolerance."""
    return interp.load(tiny_checkpoint("gpt2", seed=4, n_layers=2, d_model=32, n_heads=4, initializer_range=0.3))


@pytest.fixture(scope="module")
def gpt2_small_init(tiny_checkpoint: Callable[..., Path]) -> interp.Model:
    """A random GPT-2 with the default small init: nearly linear in its residual stream."""
    return interp.load(tiny_checkpoint("gpt2", seed=4, n_layers=2, d_model=32, n_heads=4))


def metric_for(m: interp.Model):
    tok = m.tokenizer.convert_tokens_to_ids
    return logit_diff(tok("8"), tok("4"))


def slow_reference(m: interp.Model, kind: str, metric, layers, positions, heads=None) -> torch.Tensor:
    """One Bridge forward per cell through TransformerLens hooks (independent of the engine's HF hooks)."""
    src, tgt = m.to_tokens(CLEAN), m.to_tokens(CORRUPT)
    with torch.no_grad():
        _, cache = m.bridge.run_with_cache(src)
        out = torch.zeros(len(layers), len(positions), *([len(heads)] if heads else []))
        for i, layer in enumerate(layers):
            for j, p in enumerate(positions):
                for k, h in enumerate(heads or [None]):
                    if kind == "resid_mid":  # the residual stream itself: attn_out set so resid_pre + attn_out = source
                        seen = {}

                        def pre(act, hook, seen=seen):
                            seen["pre"] = act
                            return act

                        def attn(act, hook, layer=layer, p=p, seen=seen):
                            act = act.clone()
                            act[:, p] = cache[f"blocks.{layer}.hook_resid_mid"][:, p] - seen["pre"][:, p]
                            return act

                        hooks = [(f"blocks.{layer}.hook_resid_pre", pre), (f"blocks.{layer}.hook_attn_out", attn)]
                    else:
                        name = tl_hook_name(kind, layer)

                        def fn(act, hook, name=name, p=p, h=h):
                            act = act.clone()
                            if h is None:
                                act[:, p] = cache[name][:, p]
                            else:
                                act[:, p, h] = cache[name][:, p, h]
                            return act

                        hooks = [(name, fn)]
                    logits = m.bridge.run_with_hooks(tgt, fwd_hooks=hooks)
                    out[(i, j, k) if heads else (i, j)] = metric(logits[:, -1])[0]
    return out


@pytest.mark.parametrize("kind", ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"])
def test_exact_patching_equals_one_run_per_cell(llama: interp.Model, kind: str) -> None:
    metric = metric_for(llama)
    layers, positions = [0, 2], [0, 3, CHANGED, 9, 22]  # 22 is the readout position
    res = exact_patch(llama, CLEAN, CORRUPT, metric, hook=kind, layers=layers, positions=positions)
    ref = slow_reference(llama, kind, metric, layers, positions)
    assert res.values.shape == (2, 5)
    assert torch.allclose(res.values, ref, atol=1e-4), (res.values - ref).abs().max()
    assert res.effects.abs().max() > 0.1  # the grid has cells that matter


def test_per_head_z_patching_equals_one_run_per_cell(llama: interp.Model) -> None:
    metric = metric_for(llama)
    res = exact_patch(llama, CLEAN, CORRUPT, metric, hook="z", layers=[1], positions=[CHANGED, 22], heads=[0, 3])
    ref = slow_reference(llama, "z", metric, [1], [CHANGED, 22], heads=[0, 3])
    assert res.values.shape == (1, 2, 2) and res.axes == ("layer", "pos", "head")
    assert torch.allclose(res.values, ref, atol=1e-4)


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_full_resid_pre_grid_equals_transformer_lens(which: str, request: pytest.FixtureRequest) -> None:
    m = request.getfixturevalue(which)
    metric = metric_for(m)
    res = exact_patch(m, CLEAN, CORRUPT, metric, hook="resid_pre")
    with torch.no_grad():
        _, cache = m.bridge.run_with_cache(m.to_tokens(CLEAN))
        ref = tl_patching.get_act_patch_resid_pre(m.bridge, m.to_tokens(CORRUPT), cache,
                                                  lambda lg: metric(lg[:, -1])[0])
    assert res.values.shape == ref.shape == (m.n_layers, m.to_tokens(CORRUPT).shape[1])
    assert (res.values - ref.cpu()).abs().max() < 1e-4


def test_z_grid_equals_transformer_lens(gpt2: interp.Model) -> None:
    metric = metric_for(gpt2)
    res = exact_patch(gpt2, CLEAN, CORRUPT, metric, hook="z")
    with torch.no_grad():
        _, cache = gpt2.bridge.run_with_cache(gpt2.to_tokens(CLEAN))
        ref = tl_patching.get_act_patch_attn_head_out_by_pos(gpt2.bridge, gpt2.to_tokens(CORRUPT), cache,
                                                             lambda lg: metric(lg[:, -1])[0])
    assert (res.values - ref.cpu()).abs().max() < 1e-4


def test_source_equal_to_target_has_no_effect(llama: interp.Model) -> None:
    res = exact_patch(llama, CORRUPT, CORRUPT, metric_for(llama), hook="attn_out")
    assert res.clean == res.corrupt
    assert torch.equal(res.effects, torch.zeros_like(res.effects))
    attr = attribution_patch(llama, CORRUPT, CORRUPT, metric_for(llama), hook="attn_out")
    assert torch.equal(attr.effects, torch.zeros_like(attr.effects))


def test_patching_the_changed_token_at_layer_0_gives_the_clean_metric(llama: interp.Model) -> None:
    res = exact_patch(llama, CLEAN, CORRUPT, metric_for(llama), hook="resid_pre", layers=[0])
    assert res.values[0, CHANGED] == pytest.approx(res.clean, abs=1e-4)
    unchanged = [j for j in range(res.values.shape[1]) if j != CHANGED]
    assert torch.allclose(res.values[0, unchanged], torch.tensor(res.corrupt), atol=1e-5)
    assert abs(res.clean - res.corrupt) > 0.01


@pytest.mark.parametrize("kind,layer", [("resid_pre", 0), ("resid_post", -1), ("resid_mid", 1)])
def test_patching_every_position_reproduces_the_source_run(llama: interp.Model, kind: str, layer: int) -> None:
    layer = layer % llama.n_layers
    n = llama.to_tokens(CORRUPT).shape[1]
    logits = run_with_patch(llama, CLEAN, CORRUPT, kind, layer, range(n))
    with torch.no_grad():
        clean = llama.hf(llama.to_tokens(CLEAN)).logits[0]
        corrupt = llama.hf(llama.to_tokens(CORRUPT)).logits[0]
    assert (logits - clean).abs().max() < 1e-4
    assert (corrupt - clean).abs().max() > 0.01


def test_readout_before_the_end_and_positions_after_it(llama: interp.Model) -> None:
    metric = metric_for(llama)
    res = exact_patch(llama, CLEAN, CORRUPT, metric, layers=[1], positions=[CHANGED, 10, 12], readout=10)
    with torch.no_grad():
        corrupt = float(metric(llama.hf(llama.to_tokens(CORRUPT)).logits[:, 10])[0])
    assert res.corrupt == pytest.approx(corrupt, abs=1e-5)
    assert res.values[0, 2] == res.corrupt  # position 12 cannot reach a readout at 10
    assert res.values[0, 0] != res.corrupt


def test_batch_size_does_not_change_values(llama: interp.Model) -> None:
    metric = metric_for(llama)
    a = exact_patch(llama, CLEAN, CORRUPT, metric, hook="mlp_out")
    b = exact_patch(llama, CLEAN, CORRUPT, metric, hook="mlp_out", max_batch=3, overhead_tokens=0)
    assert torch.allclose(a.values, b.values, atol=1e-5)


def test_plan_groups_covers_every_position_once() -> None:
    ps = [0, 3, 4, 9, 12]
    for overhead in (0.0, 10.0, 1e6):
        groups = plan_groups(ps, {p: 2.0 for p in ps}, 14, 4, overhead)
        assert sorted(p for g in groups for p in g) == ps
    assert len(plan_groups(ps, {p: 2.0 for p in ps}, 14, 4, 1e6)) == 1
    assert len(plan_groups(ps, {p: 2.0 for p in ps}, 14, 4, 0.0)) >= 3  # no overhead: short suffixes pay


def test_attribution_patching_tracks_exact_on_a_near_linear_model(gpt2_small_init: interp.Model) -> None:
    """A small random-init GPT-2 is close to linear in its residual stream: attribution ~ exact."""
    gpt2 = gpt2_small_init
    metric = metric_for(gpt2)
    exact = exact_patch(gpt2, CLEAN, CORRUPT, metric, hook="resid_pre")
    attr = attribution_patch(gpt2, CLEAN, CORRUPT, metric, hook="resid_pre")
    agree = attribution_agreement(exact, attr)
    assert agree["spearman"] > 0.95
    # downstream of the changed token the patched differences are small, so first order is close to exact;
    # at the changed token itself the embedding changes wholesale and the estimate is only rough
    after = slice(CHANGED + 1, None)
    assert torch.allclose(attr.effects[:, after], exact.effects[:, after], rtol=0.1, atol=3e-6)
    assert attr.corrupt == pytest.approx(exact.corrupt, abs=1e-5) and attr.clean == pytest.approx(exact.clean, abs=1e-5)
    assert torch.all(attr.effects[:, :CHANGED] == 0)  # identical activations before the change: exactly zero


def test_attribution_is_exact_for_a_linear_metric_of_the_last_residual(llama: interp.Model) -> None:
    """With the metric linear in the final residual (no norm in between), gradient x difference is exact."""
    w = torch.randn(llama.d_model, generator=torch.Generator().manual_seed(0))
    norm = llama.hf.model.norm
    saved = norm.forward
    norm.forward = lambda x: x  # type: ignore[method-assign]  # make the head linear for this test
    try:
        head = llama.hf.lm_head
        old = head.weight.data.clone()
        head.weight.data[:] = 0
        head.weight.data[0] = w
        lin = lambda lg: lg[:, 0]
        last = llama.n_layers - 1
        exact = exact_patch(llama, CLEAN, CORRUPT, lin, hook="resid_post", layers=[last])
        attr = attribution_patch(llama, CLEAN, CORRUPT, lin, hook="resid_post", layers=[last])
    finally:
        norm.forward = saved  # type: ignore[method-assign]
        head.weight.data[:] = old
    assert torch.allclose(exact.values, attr.values, atol=1e-4)


def test_metrics(llama: interp.Model) -> None:
    with torch.no_grad():
        lg = llama.hf(llama.to_tokens([CLEAN, CORRUPT])).logits[:, -1]
    tok = llama.tokenizer.convert_tokens_to_ids
    p = answer_prob(tok("8"))(lg)
    assert p.shape == (2,) and torch.all((p > 0) & (p < 1))
    kl = kl_div(lg[0])(lg)
    assert kl[0].abs() < 1e-6 and kl[1] > 0
    d = logit_diff(tok("8"), tok("4"))(lg)
    assert torch.allclose(d, lg[:, tok("8")] - lg[:, tok("4")])


def test_result_round_trip_and_figure(llama: interp.Model, tmp_path: Path) -> None:
    res = exact_patch(llama, CLEAN, CORRUPT, metric_for(llama), hook="z", layers=[0], positions=[CHANGED, 22])
    path = res.save(tmp_path / "r")
    back = PatchResult.load(path)
    assert torch.equal(back.values, res.values) and back.heads == res.heads and back.checksum == llama.checksum
    assert back.position_labels == ("3", ":") and back.libraries["torch"]
    again = PatchResult.from_dict(res.to_dict())
    assert torch.allclose(again.values, res.values) and again.meta() == res.meta()
    assert torch.allclose(res.normalized() * (res.clean - res.corrupt), res.effects)
    files = res.save_figure(tmp_path / "fig", png=False)
    assert files[0].exists()


def test_bad_inputs_have_clear_messages(llama: interp.Model) -> None:
    metric = metric_for(llama)
    with pytest.raises(ValueError, match="unknown hook kind 'resid'.*resid_pre"):
        exact_patch(llama, CLEAN, CORRUPT, metric, hook="resid")
    with pytest.raises(UnknownHookError, match="layer 7 is out of range.*0-3"):
        exact_patch(llama, CLEAN, CORRUPT, metric, layers=[7])
    with pytest.raises(ValueError, match=r"position 40 is outside the corrupted prompt, which has 23 tokens"):
        exact_patch(llama, CLEAN, CORRUPT, metric, positions=[40])
    with pytest.raises(ValueError, match=r"position -24 is outside.*valid: -23..22"):
        exact_patch(llama, CLEAN, CORRUPT, metric, positions=[-24])
    with pytest.raises(ValueError, match="names layer 1 but layers=\\[0\\]"):
        exact_patch(llama, CLEAN, CORRUPT, metric, hook="blocks.1.hook_resid_pre", layers=[0])
    longer = "Q : a = 5 ; b = a + 4 ; c = b * 2 ; d = c + 1 ; d ? A :"
    with pytest.raises(ValueError, match="clean prompt has 29 tokens and the corrupted one 23.*align"):
        exact_patch(llama, longer, CORRUPT, metric)
    with pytest.raises(ValueError, match="align has 1 entries but there are 2"):
        exact_patch(llama, longer, CORRUPT, metric, positions=[1, 2], align=[1])
    with pytest.raises(ValueError, match="one scalar per row"):
        exact_patch(llama, CLEAN, CORRUPT, lambda lg: lg, positions=[1])
    with pytest.raises(ValueError, match=r"positions \[3\] are listed more than once"):
        exact_patch(llama, CLEAN, CORRUPT, metric, positions=[3, 4, 3])
    with pytest.raises(ValueError, match="heads only apply"):
        exact_patch(llama, CLEAN, CORRUPT, metric, hook="resid_pre", heads=[0])
    with pytest.raises(ValueError, match="heads \\[9\\] do not exist.*0..3"):
        exact_patch(llama, CLEAN, CORRUPT, metric, hook="z", heads=[9])


def test_tl_hook_names_and_negative_positions_address_the_same_cells(llama: interp.Model) -> None:
    """`blocks.*.hook_resid_pre` equals the kind form, `blocks.2.hook_z` one layer of it, and position -1 the
    last index: one vocabulary with harvest and steering."""
    metric = metric_for(llama)
    n = llama.to_tokens(CORRUPT).shape[1]
    kind = exact_patch(llama, CLEAN, CORRUPT, metric, hook="resid_pre", positions=[CHANGED, n - 1])
    named = exact_patch(llama, CLEAN, CORRUPT, metric, hook="blocks.*.hook_resid_pre", positions=[CHANGED, -1])
    torch.testing.assert_close(named.values, kind.values)
    assert named.positions == (CHANGED, n - 1)
    one = exact_patch(llama, CLEAN, CORRUPT, metric, hook="blocks.2.attn.hook_z", positions=[CHANGED])
    every = exact_patch(llama, CLEAN, CORRUPT, metric, hook="blocks.*.attn.hook_z", positions=[CHANGED])
    torch.testing.assert_close(one.values[0], every.values[2])
    assert (every.values[2] != every.values[0]).any()


def test_explicit_alignment_patches_unequal_prompts(llama: interp.Model) -> None:
    """A source with an extra clause: aligning the shared prefix reproduces the equal-length patch there."""
    metric = metric_for(llama)
    longer = "Q : a = 5 ; b = a + 4 ; c = b * 2 ; d = c + 1 ; c ? A :"
    res = exact_patch(llama, longer, CORRUPT, metric, layers=[0, 1], positions=[CHANGED, 6], align=[CHANGED, 6])
    same = exact_patch(llama, CLEAN, CORRUPT, metric, layers=[0, 1], positions=[CHANGED, 6])
    assert torch.allclose(res.values, same.values, atol=1e-5)  # the prefixes agree up to position 6
    assert res.clean != same.clean  # the source's own metric is read at its own last token


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_resid_pre_grid_equals_transformer_lens_on_a_hooked_transformer(which: str, request: pytest.FixtureRequest) -> None:
    """The issue's anchor: TransformerLens' patching on a HookedTransformer built from the same weights."""
    from interp.cli.bench.checkpoints import hooked_transformer

    m = request.getfixturevalue(which)
    metric = metric_for(m)
    ht = hooked_transformer(m)
    src, tgt = m.to_tokens(CLEAN), m.to_tokens(CORRUPT)
    res = exact_patch(m, src, tgt, metric, hook="resid_pre")
    with torch.no_grad():
        _, cache = ht.run_with_cache(src)
        ref = tl_patching.get_act_patch_resid_pre(ht, tgt, cache, lambda lg: metric(lg[:, -1])[0])
    assert (res.values - ref.cpu()).abs().max() < 1e-4


def test_cli_patch_writes_a_result_and_rejects_bad_hooks(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from interp.cli import app

    args = ["patch", "organism/base-s", "--clean", CLEAN, "--corrupt", CORRUPT, "--answer", "8", "--wrong", "4",
            "--layers", "0,1", "--out", str(tmp_path), "--no-png", "--attribution"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    back = PatchResult.load(tmp_path / "patch_resid_pre.safetensors")
    assert back.values.shape == (2, 23) and back.model == "organism/base-s"
    assert (tmp_path / "attribution_resid_pre.safetensors").exists() and (tmp_path / "patch_resid_pre.html").exists()
    r = CliRunner().invoke(app, [*args[:10], "--out", str(tmp_path / "one"), "--no-png", "--hook",
                                 "blocks.1.hook_resid_pre"])
    assert r.exit_code == 0, r.output
    one = PatchResult.load(tmp_path / "one" / "patch_resid_pre.safetensors")
    torch.testing.assert_close(one.values[0], back.values[1])
    r = CliRunner().invoke(app, [*args[:10], "--hook", "blocks.0.hook_resid"])
    assert r.exit_code == 2 and "patching supports" in r.output + getattr(r, "stderr", "")


@pytest.mark.parametrize("arch", ["qwen2", "gpt_neox"])
@pytest.mark.parametrize("kind", ["resid_pre", "attn_out", "z"])
def test_other_architectures_equal_transformer_lens(tiny_checkpoint: Callable[..., Path], arch: str, kind: str) -> None:
    """Grouped-query attention (qwen2) and parallel attention/MLP with fused QKV (gpt_neox)."""
    m = interp.load(tiny_checkpoint(arch, seed=1, n_layers=2, d_model=32, n_heads=4, initializer_range=0.3))
    metric = metric_for(m)
    anchor = {"resid_pre": tl_patching.get_act_patch_resid_pre, "attn_out": tl_patching.get_act_patch_attn_out,
              "z": tl_patching.get_act_patch_attn_head_out_by_pos}[kind]
    res = exact_patch(m, CLEAN, CORRUPT, metric, hook=kind)
    with torch.no_grad():
        _, cache = m.bridge.run_with_cache(m.to_tokens(CLEAN))
        ref = anchor(m.bridge, m.to_tokens(CORRUPT), cache, lambda lg: metric(lg[:, -1])[0])
    assert (res.values - ref.cpu()).abs().max() < 1e-4
    assert res.effects.abs().max() > 0.01


def test_parallel_blocks_have_no_resid_mid(tiny_checkpoint: Callable[..., Path]) -> None:
    m = interp.load(tiny_checkpoint("gpt_neox", seed=1, n_layers=2, d_model=32, n_heads=4, initializer_range=0.3))
    with pytest.raises(UnknownHookError, match="hook_resid_mid"):
        exact_patch(m, CLEAN, CORRUPT, metric_for(m), hook="resid_mid")
