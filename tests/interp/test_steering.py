"""Steering engine: HF hooks equal the Bridge's hook points, interventions do exactly what they say, only where
they are told, the same in a left-padded batch and in cached generation; vectors round-trip; bad input is named."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import interp
from interp.generate import context_length, generate
from interp.hooks import UnknownHookError
from interp.steering import (
    Add,
    Clamp,
    Positions,
    ProjectOut,
    SteeringError,
    SteeringVector,
    Subtract,
    generate_steered,
    hook_site,
    steer,
)
from interp.steering.directions import (
    directions_from_activations,
    first_pc_of_differences,
    mean_difference,
    projection_auroc,
)

torch.set_num_threads(1)

PROMPTS = ["Q : a = 3 ; b = a + 4 ; b ? A :", "Q : a = 1 ; b = a * 2 ; c = b - 5 ; d = c + 1 ; d ? A :",
           "Q : a = 7 ; a ? A :"]
KINDS = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")


@pytest.fixture(scope="module")
def llama(tiny_checkpoint: Callable[..., Path]) -> interp.Model:
    return interp.load(tiny_checkpoint("llama", n_layers=3, max_len=64))


@pytest.fixture(scope="module")
def gpt2(tiny_checkpoint: Callable[..., Path]) -> interp.Model:
    return interp.load(tiny_checkpoint("gpt2", n_layers=2))


def vec(m: interp.Model, hook: str, seed: int = 0, scale: float = 1.0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(torch.randn(m.d_model, generator=g) * scale, hook, m.name, m.checksum, "test")


def capture(m: interp.Model, hook: str) -> tuple[dict[str, torch.Tensor], Callable[[], None]]:
    """Record what the HF module behind `hook` passes on (after any steering hook registered before it)."""
    mod, side = hook_site(m, hook)
    got: dict[str, torch.Tensor] = {}
    if side == "pre":
        h = mod.register_forward_pre_hook(lambda mo, a, k: got.__setitem__("x", (a[0] if a else k["hidden_states"])
                                                                            .detach().clone()), with_kwargs=True)
    else:
        h = mod.register_forward_hook(lambda mo, a, o: got.__setitem__("x", (o[0] if isinstance(o, tuple) else o)
                                                                       .detach().clone()))
    return got, h.remove


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "gpt_neox"])
def test_hook_mapping_equals_bridge_hook_values(arch: str, tiny_checkpoint: Callable[..., Path]) -> None:
    m = interp.load(tiny_checkpoint(arch, n_layers=2))
    ids = m.to_tokens(PROMPTS[1])
    layer = m.n_layers - 1
    names = [f"blocks.{layer}.{k}" for k in KINDS]
    _, cache = m.bridge.run_with_cache(ids, names_filter=names)
    for name in names:
        got, remove = capture(m, name)
        with torch.no_grad():
            m.hf(ids)
        remove()
        torch.testing.assert_close(got["x"], cache[name], atol=1e-5, rtol=1e-5, msg=name)
        # and an edit through our hook is the Bridge's edit at that hook
        v = vec(m, name, seed=1)
        with steer(m, [Add(v, scale=2.0, where="all")]), torch.no_grad():
            ours = m.hf(ids).logits
        theirs = m.bridge.run_with_hooks(ids, fwd_hooks=[(name, lambda act, hook, v=v: act + 2.0 * v.vector)])
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4, msg=name)


def test_add_with_scale_zero_is_exactly_a_no_op(llama: interp.Model) -> None:
    ids = llama.to_tokens(PROMPTS[0])
    with torch.no_grad():
        ref = llama.hf(ids).logits
        for kind in KINDS:
            with steer(llama, [Add(vec(llama, f"blocks.1.{kind}"), scale=0.0, where="all")]):
                assert torch.equal(llama.hf(ids).logits, ref), kind
    with steer(llama, [Add(vec(llama, "blocks.1.hook_resid_post", scale=0.0), where="generated")]):
        assert llama.generate(PROMPTS, max_new_tokens=8) == llama.generate(PROMPTS, max_new_tokens=8)
    assert generate_steered(llama, PROMPTS, [Subtract(vec(llama, "blocks.0.hook_resid_post"), scale=0.0)],
                            max_new_tokens=8) == llama.generate(PROMPTS, max_new_tokens=8)


def test_project_out_and_clamp_set_the_component(llama: interp.Model) -> None:
    hook = "blocks.1.hook_resid_post"
    v = vec(llama, hook, seed=3)
    u = v.unit()
    ids = llama.to_tokens(PROMPTS[1])
    with torch.no_grad():
        got, remove = capture(llama, hook)
        llama.hf(ids)
        before = got["x"].clone()
        remove()
        for name, iv in (("after", ProjectOut(v, where="all")), ("clamped", Clamp(v, value=5.0, where=Positions((2, -1))))):
            with steer(llama, [iv]):
                got, remove = capture(llama, hook)  # registered after the steering hook: sees its output
                llama.hf(ids)
                remove()
            got[name] = got.pop("x")
            if name == "after":
                after = got[name]
            else:
                clamped = got[name]
    assert (before @ u).abs().max() > 1e-2
    assert (after @ u).abs().max() < 1e-6
    # the rest of the vector is untouched
    torch.testing.assert_close(after - (after @ u)[..., None] * u, before - (before @ u)[..., None] * u, atol=1e-6,
                               rtol=0)
    proj = clamped[0] @ u
    n = ids.shape[1]
    torch.testing.assert_close(proj[[2, n - 1]], torch.tensor([5.0, 5.0]), atol=1e-5, rtol=0)
    others = [i for i in range(n) if i not in (2, n - 1)]
    assert torch.equal(clamped[0, others], before[0, others])


def test_steering_acts_only_at_the_chosen_positions(llama: interp.Model) -> None:
    ids = llama.to_tokens(PROMPTS[1])
    n = ids.shape[1]
    v = vec(llama, "blocks.1.hook_resid_post", scale=3.0)
    with torch.no_grad():
        ref = llama.hf(ids).logits
        with steer(llama, [Add(v, where=Positions((4,)))]):
            out = llama.hf(ids).logits
        assert torch.equal(out[0, :4], ref[0, :4])  # causal: nothing before the steered position moves
        assert (out[0, 4:] - ref[0, 4:]).abs().amax(-1).min() > 1e-4
        with steer(llama, [Add(v, where="generated")]):  # a plain forward is all prompt: nothing is generated
            assert torch.equal(llama.hf(ids).logits, ref)
        mask = torch.zeros(1, n, dtype=torch.bool)
        mask[0, 6] = True
        with steer(llama, [Add(v, where=mask)]):
            out = llama.hf(ids).logits
        assert torch.equal(out[0, :6], ref[0, :6]) and not torch.equal(out[0, 6:], ref[0, 6:])


@torch.no_grad()
def uncached_steered_greedy(m: interp.Model, prompt: str, v: SteeringVector, scale: float, n_new: int) -> list[int]:
    """Reference: full forward each step, steering every position after the prompt via a token mask."""
    seq = m.to_tokens(prompt)[0].tolist()
    p = len(seq)
    out = []
    for _ in range(min(n_new, context_length(m.hf) - p)):
        mask = torch.zeros(1, len(seq), dtype=torch.bool)
        mask[0, p:] = True
        with steer(m, [Add(v, scale=scale, where=mask)]):
            nxt = int(m.hf(torch.tensor([seq])).logits[0, -1].argmax())
        if nxt == m.tokenizer.eos_token_id:
            break
        out.append(nxt)
        seq.append(nxt)
    return out


def test_cached_generation_steers_every_generated_token_like_an_uncached_loop(llama: interp.Model) -> None:
    v = vec(llama, "blocks.1.hook_resid_post", seed=5, scale=2.0)
    with steer(llama, [Add(v, scale=1.0, where="generated")]):
        got = llama.generate(PROMPTS, max_new_tokens=10)
    assert got != llama.generate(PROMPTS, max_new_tokens=10)
    for prompt, text in zip(PROMPTS, got):
        ref = uncached_steered_greedy(llama, prompt, v, 1.0, 10)
        assert text.split() == llama.tokenizer.convert_ids_to_tokens(ref)


@pytest.mark.parametrize("where", ["all", "prompt", "generated", Positions((-1,)), Positions((1, -2))])
def test_left_padded_batch_equals_single_prompts(llama: interp.Model, where: object) -> None:
    v = vec(llama, "blocks.0.hook_resid_post", seed=7, scale=2.0)
    with steer(llama, [Add(v, where=where)]):
        batch = llama.generate(PROMPTS, max_new_tokens=10)
        alone = [llama.generate([p], max_new_tokens=10)[0] for p in PROMPTS]
        plain = generate(llama.hf, llama.tokenizer, PROMPTS, max_new_tokens=10)  # interp.generate inside the block
    assert batch == alone == plain
    assert batch != llama.generate(PROMPTS, max_new_tokens=10)


def test_vector_save_load_round_trip(llama: interp.Model, tmp_path: Path) -> None:
    v = SteeringVector(torch.randn(llama.d_model), "blocks.1.hook_resid_post", llama.name, llama.checksum,
                       "mean_difference", {"pairs": 50})
    path = v.save(tmp_path / "verbosity")
    assert path.suffix == ".json" and (tmp_path / "verbosity.safetensors").is_file()
    w = SteeringVector.load(tmp_path / "verbosity.safetensors")
    assert torch.equal(w.vector, v.vector) and (w.hook, w.model_checksum, w.method, w.provenance, w.layer) == \
        (v.hook, v.model_checksum, v.method, {"pairs": 50}, 1)
    SteeringVector(torch.zeros(llama.d_model), v.hook).save(tmp_path / "other")
    (tmp_path / "other.safetensors").replace(tmp_path / "verbosity.safetensors")
    with pytest.raises(ValueError, match="sha256"):
        SteeringVector.load(tmp_path / "verbosity")
    with pytest.raises(FileNotFoundError, match="missing"):
        SteeringVector.load(tmp_path / "nothing")


def test_bad_inputs_have_clear_messages(llama: interp.Model, gpt2: interp.Model) -> None:
    ids = llama.to_tokens(PROMPTS[0])
    with pytest.raises(UnknownHookError, match="did you mean blocks.1.hook_resid_post"), steer(llama, [Add(vec(llama, "blocks.1.hook_resid_pots"))]):
        pass
    with pytest.raises(UnknownHookError, match="out of range"), steer(llama, [Add(vec(llama, "blocks.9.hook_resid_post"))]):
        pass
    wide = SteeringVector(torch.ones(llama.d_model + 16), "blocks.0.hook_resid_post")
    with pytest.raises(SteeringError, match=f"width {llama.d_model + 16}"), steer(llama, [Add(wide)]):
        pass
    foreign = vec(gpt2, "blocks.0.hook_resid_post")
    if gpt2.d_model == llama.d_model:
        with pytest.raises(SteeringError, match="allow_other_model"), steer(llama, [Add(foreign)]):
            pass
        with steer(llama, [Add(foreign)], allow_other_model=True):
            pass
    with pytest.raises(SteeringError, match="position 40 is outside row 0's prompt"), steer(llama, [Add(vec(llama, "blocks.0.hook_resid_post"), where=Positions((40,)))]), torch.no_grad():
        llama.hf(ids)
    with pytest.raises(SteeringError, match="steering acts on"), steer(llama, [Add(vec(llama, "blocks.0.attn.hook_z"))]):
        pass
    with pytest.raises(ValueError, match="where='everywhere'"):
        Add(vec(llama, "blocks.0.hook_resid_post"), where="everywhere")
    with pytest.raises(FloatingPointError, match="NaN/inf"), \
            steer(llama, [Add(vec(llama, "blocks.0.hook_resid_post"), scale=float("inf"), where="all")]), \
            torch.no_grad():
        llama.hf(ids)
    with pytest.raises(ValueError, match="NaN or inf"):
        SteeringVector(torch.full((4,), float("nan")), "blocks.0.hook_resid_post")


def test_right_padded_batch_is_steered_at_each_rows_own_positions(llama: interp.Model) -> None:
    """`Model.encode` pads on the right: Positions((-1,)) hits each row's last real token, as for the row alone."""
    v = vec(llama, "blocks.1.hook_resid_post", scale=5.0)
    iv = Add(v, where=Positions((-1,)))
    ids, mask = llama.encode(PROMPTS)
    with steer(llama, [iv]), torch.no_grad():
        batched = llama.hf(input_ids=ids, attention_mask=mask).logits
        for i, p in enumerate(PROMPTS):
            alone = llama.hf(input_ids=llama.to_tokens(p)).logits[0]
            n = int(mask[i].sum())
            torch.testing.assert_close(batched[i, :n], alone, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        plain = llama.hf(input_ids=ids, attention_mask=mask).logits
    assert (batched - plain).abs().amax() > 1e-2  # and the steering did act


def test_default_where_steers_a_plain_forward_and_only_new_tokens_in_generation(llama: interp.Model) -> None:
    """The default `where` follows the call: a forward outside generation is steered at every token (it was
    silently unsteered when the default was 'generated'); generation steers the generated tokens only."""
    v = vec(llama, "blocks.1.hook_resid_post", scale=5.0)
    ids = llama.to_tokens(PROMPTS[0])
    with torch.no_grad():
        plain = llama.hf(ids).logits
        with steer(llama, [Add(v)]):
            auto = llama.hf(ids).logits
        with steer(llama, [Add(v, where="all")]):
            every = llama.hf(ids).logits
    torch.testing.assert_close(auto, every)
    assert (auto - plain).abs().amax() > 1e-2
    with steer(llama, [Add(v)]):
        auto_gen = llama.generate(PROMPTS, max_new_tokens=6)
    with steer(llama, [Add(v, where="generated")]):
        gen = llama.generate(PROMPTS, max_new_tokens=6)
    assert auto_gen == gen


def test_bridge_calls_and_bridge_hooks_are_steered_like_hf(llama: interp.Model) -> None:
    """`model.bridge(ids)` inside `steer` is steered exactly like `model.hf(ids)` (it ran unsteered before),
    and so is a harvest that needs a Bridge-only hook next to an HF-mapped one."""
    from interp.activations import AllTokens, PromptDataset, harvest

    hook = "blocks.0.hook_resid_post"
    v = vec(llama, hook, scale=5.0)
    ids = llama.to_tokens(PROMPTS[1])
    with torch.no_grad(), steer(llama, [Add(v, where="all")]):
        hf = llama.hf(ids).logits
        br = llama.bridge(ids)
    torch.testing.assert_close(br, hf, atol=1e-4, rtol=1e-4)
    ds = PromptDataset.from_texts(llama.tokenizer, PROMPTS)
    hooks = ["blocks.1.hook_resid_post", "blocks.1.mlp.hook_post"] if "blocks.1.mlp.hook_post" in llama.hook_names \
        else ["blocks.1.hook_resid_post", "blocks.1.hook_resid_mid"]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        plain = harvest(llama, ds, hooks, AllTokens(), f"{d}/plain")
        with steer(llama, [Add(v, where="all")]):
            steered = harvest(llama, ds, hooks, AllTokens(), f"{d}/steered")
        for h in hooks:
            shift = (steered.get(h) - plain.get(h)).abs().amax()
            assert shift > 1e-2, (h, float(shift))


def test_directions_recover_a_planted_offset() -> None:
    g = torch.Generator().manual_seed(0)
    d, n = 32, 60
    offset = torch.zeros(d)
    offset[3], offset[7] = 2.0, -1.0
    base = torch.randn(n, d, generator=g) * 3.0
    pos = base + offset + 0.3 * torch.randn(n, d, generator=g)
    neg = base + 0.3 * torch.randn(n, d, generator=g)
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    assert cos(mean_difference(pos, neg), offset) > 0.97
    assert cos(first_pc_of_differences(pos - neg), offset) > 0.97
    ds = directions_from_activations({"blocks.0.hook_resid_post": (pos, neg)}, paired=True, test_fraction=0.3, seed=1)
    h = ds.get("blocks.0.hook_resid_post")
    assert h.auroc_mean_diff > 0.6 and abs(h.auroc_random - 0.5) < 0.1
    assert h.mean_diff.method == "mean_difference" and h.pca is not None and h.cosine_mean_pca > 0.95
    # paired differences remove the shared per-pair noise: the offset alone separates perfectly
    assert projection_auroc(pos, neg, offset) > 0.6 and np.isclose(projection_auroc(neg + offset * 10, neg, offset), 1.0)
    with pytest.raises(ValueError, match="as many positive as negative"):
        directions_from_activations({"h": (pos, neg[:-1])}, paired=True)
    with pytest.raises(ValueError, match="at least 2"):
        directions_from_activations({"h": (pos[:1], neg[:1])}, paired=True)


def test_cli_direction_generate_and_bench(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from interp.cli import app

    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    probs = [("3", "+", "4", "7"), ("2", "*", "4", "8"), ("1", "-", "4", "7"), ("5", "+", "1", "6")]
    pos.write_text("".join(f"Q : a = {a} ; b = a {o} {x} ; b ? A : b = a {o} {x} = {a} {o} {x} = {v} ; so b = {v}\n"
                           for a, o, x, v in probs))
    neg.write_text("".join(f"Q : a = {a} ; b = a {o} {x} ; b ? A : b = {v} ; so {v}\n" for a, o, x, v in probs))
    runner = CliRunner()
    res = runner.invoke(app, ["steer", "direction", "organism/sft", "--positive", str(pos), "--negative", str(neg),
                              "--out", str(tmp_path / "vec"), "--hooks", "blocks.3.hook_resid_post",
                              "--test-fraction", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["paired"] and summary["hooks"][0]["hook"] == "blocks.3.hook_resid_post"
    stem = tmp_path / "vec" / "blocks.3.hook_resid_post.mean_difference"
    assert SteeringVector.load(stem).method == "mean_difference"
    res = runner.invoke(app, ["steer", "generate", "organism/sft", "--vector", str(stem), "--prompt",
                              "Q : a = 3 ; b = a + 4 ; c = b * 2 ; c ? A :", "--op", "subtract", "--scale", "0",
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])["completions"][0]
    assert out["steered"] == out["unsteered"]
    res = runner.invoke(app, ["steer", "generate", "organism/base-s", "--vector", str(stem), "--prompt", "Q : a ? A :"])
    assert res.exit_code == 2 and "allow_other_model" in res.output.replace("\n", "")
    res = runner.invoke(app, ["bench", "steer", "--n", "4", "--new-tokens", "3", "--repeats", "1"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"steered_tokens_per_s_ratio", "unsteered_tokens_per_s", "meets_target"} <= set(figures)


def test_rows_steer_each_condition_on_its_own_rows_like_one_condition_at_a_time(llama: interp.Model) -> None:
    """Three conditions (add, project out at another hook, none) on replicated prompts in one batched generation
    give each row what its condition gives alone; rows outside the batch are named."""
    conds = [[Add(vec(llama, "blocks.0.hook_resid_post", seed=7, scale=2.0), where="generated")],
             [ProjectOut(vec(llama, "blocks.1.hook_mlp_out", seed=3), where="all")], []]
    n = len(PROMPTS)
    alone = []
    for ivs in conds:
        with steer(llama, ivs):
            alone += llama.generate(PROMPTS, max_new_tokens=10)
    rows = [range(n), slice(n, 2 * n)]
    per_row = [dataclasses.replace(iv, rows=r) for ivs, r in zip(conds, rows) for iv in ivs]
    with steer(llama, per_row):
        batched = llama.generate(PROMPTS * len(conds), max_new_tokens=10)
    assert batched == alone
    assert alone[:n] != alone[2 * n:]  # the conditions differ, so the rows really were steered apart
    with steer(llama, [dataclasses.replace(conds[0][0], rows=tuple(range(n)))]):  # a tuple of indices as well
        assert llama.generate(PROMPTS + PROMPTS[:1], max_new_tokens=10)[:n] == alone[:n]
    with pytest.raises(SteeringError, match=r"rows \[3\] fall outside a batch of 3 rows"), \
            steer(llama, [dataclasses.replace(conds[0][0], rows=(0, 3))]):
        llama.generate(PROMPTS, max_new_tokens=2)
    with pytest.raises(SteeringError, match="fall outside a batch of 3"), \
            steer(llama, [dataclasses.replace(conds[0][0], rows=slice(2, 5))]):
        llama.hf(llama.to_tokens(PROMPTS[:1] * 3))  # a plain forward is checked too
    with pytest.raises(ValueError, match="no negative"):
        Add(conds[0][0].vector, rows=(-1,))
    assert Add(conds[0][0].vector, rows=slice(0, 2)).describe()["rows"] == [0, 2, None]
