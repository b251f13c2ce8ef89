"""interp.hooks: canonical TL hook names, validation with suggestions, and agreement of Bridge, nnsight and HF."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from interp import hooks
from interp.hooks import UnknownHookError, layer_of, validate_hook_names
from interp.models import Model, load

PROMPTS = ["Q : a = 3 ; b = a + 4 ; b ? A :", "Q : a = 1 ; a ? A :"]


@pytest.fixture(scope="module")
def llama(tiny_checkpoint: Callable[..., Path]) -> Model:
    """A 3-layer Llama, so two layers can be compared with HF hidden states (the last is normed)."""
    return load(tiny_checkpoint("llama", n_layers=3))


def test_helpers_spell_transformerlens_names() -> None:
    assert hooks.resid_pre(0) == "blocks.0.hook_resid_pre"
    assert hooks.resid_mid(1) == "blocks.1.hook_resid_mid"
    assert hooks.resid_post(2) == "blocks.2.hook_resid_post"
    assert hooks.attn_out(3) == "blocks.3.hook_attn_out"
    assert hooks.mlp_out(4) == "blocks.4.hook_mlp_out"
    assert hooks.attn_z(5) == "blocks.5.attn.hook_z"
    assert hooks.attn_pattern(6) == "blocks.6.attn.hook_pattern"


def test_layer_of_reads_block_index() -> None:
    assert layer_of("blocks.12.attn.hook_z") == 12
    assert layer_of("blocks.0.hook_resid_post") == 0
    assert layer_of("hook_embed") is None
    assert layer_of("ln_final.hook_normalized") is None


def test_llama_bridge_exposes_every_canonical_hook(llama: Model) -> None:
    names = set(llama.hook_names)
    for layer in range(llama.n_layers):
        for make in hooks.CANONICAL_HOOKS:
            assert make(layer) in names
    assert {"hook_embed", "ln_final.hook_normalized", "blocks.0.mlp.hook_post"} <= names
    validate_hook_names([make(2) for make in hooks.CANONICAL_HOOKS], llama.hook_names)


def test_parallel_block_architecture_has_no_resid_mid(tiny_checkpoint: Callable[..., Path]) -> None:
    """GPT-NeoX runs attention and MLP in parallel: there is no residual stream between them."""
    names = load(tiny_checkpoint("gpt_neox")).hook_names
    assert hooks.resid_post(0) in names and hooks.resid_mid(0) not in names


def test_validate_suggests_nearest_names_for_a_typo(llama: Model) -> None:
    with pytest.raises(UnknownHookError) as e:
        llama.check_hooks(["blocks.1.hook_resid_post", "blocks.1.hook_resid_pots"])
    msg = str(e.value)
    assert e.value.unknown == ["blocks.1.hook_resid_pots"]
    assert "did you mean blocks.1.hook_resid_post" in msg


def test_validate_suggests_the_same_hook_point_in_its_submodule_first(llama: Model) -> None:
    with pytest.raises(UnknownHookError, match=r"did you mean blocks\.0\.attn\.hook_pattern,"):
        llama.check_hooks("blocks.0.hook_pattern")


def test_validate_names_the_layer_range_for_an_out_of_range_layer(llama: Model) -> None:
    with pytest.raises(UnknownHookError, match=r"layer 7 is out of range, this model has layers 0-2") as e:
        validate_hook_names("blocks.7.attn.hook_z", llama.hook_names)
    assert "blocks.2.attn.hook_z" in str(e.value)


def test_validate_lists_every_unknown_name(llama: Model) -> None:
    bad = ["blocks.0.hook_resid_pre", "resid_post", "blocks.9.hook_mlp_out", "blocks.0.attn.hook_zz"]
    with pytest.raises(UnknownHookError) as e:
        llama.check_hooks(bad)
    assert e.value.unknown == bad[1:]
    assert len(str(e.value).splitlines()) == 3
    assert isinstance(e.value, ValueError)


def test_resid_post_agrees_across_bridge_nnsight_and_hf(llama: Model) -> None:
    """Bridge `blocks.L.hook_resid_post` == nnsight `model.layers[L].output` == HF hidden_states[L+1]."""
    tokens, mask = llama.encode(PROMPTS)
    names = [hooks.resid_post(L) for L in range(llama.n_layers)]
    with torch.no_grad():
        _, cache = llama.bridge.run_with_cache(tokens, attention_mask=mask, names_filter=names)
        hidden = llama.hf(tokens, attention_mask=mask, output_hidden_states=True).hidden_states
        saved: list = []  # nnsight 0.8 does not export names first bound inside a trace by a comprehension
        with llama.nn.trace(tokens, attention_mask=mask):
            for L in range(llama.n_layers):
                saved.append(llama.nn.model.layers[L].output.save())
    real = mask.bool()  # padding positions are not compared
    for L in range(llama.n_layers):
        out = saved[L][0] if isinstance(saved[L], tuple) else saved[L]
        torch.testing.assert_close(cache[names[L]][real], out[real], atol=1e-6, rtol=0)
        if L < llama.n_layers - 1:  # HF's last hidden state has the final norm applied
            torch.testing.assert_close(cache[names[L]][real], hidden[L + 1][real], atol=1e-6, rtol=0)
    torch.testing.assert_close(hidden[0][real], cache_embed(llama, tokens, mask)[real], atol=1e-6, rtol=0)


def cache_embed(model: Model, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """blocks.0.hook_resid_pre: the embeddings, equal to HF hidden_states[0] for a rotary model."""
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(tokens, attention_mask=mask, names_filter=[hooks.resid_pre(0)])
    return cache[hooks.resid_pre(0)]


def test_attention_hooks_have_tl_shapes(llama: Model) -> None:
    tokens = llama.to_tokens(PROMPTS[0])
    pos = tokens.shape[1]
    with torch.no_grad():
        _, cache = llama.bridge.run_with_cache(tokens, names_filter=[hooks.attn_pattern(0), hooks.attn_z(0)])
    pattern, z = cache[hooks.attn_pattern(0)], cache[hooks.attn_z(0)]
    assert pattern.shape == (1, llama.n_heads, pos, pos)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(1, llama.n_heads, pos))
    assert torch.all(pattern.triu(1) == 0)  # causal
    assert z.shape == (1, pos, llama.n_heads, llama.d_model // llama.n_heads)


def test_bridge_hooks_act_in_bridge_calls_and_leave_hf_generation_untouched(llama: Model) -> None:
    """The Bridge runs its own module tree over the shared weights: its hooks change Bridge outputs only,
    so HF's cached generation on `hf` stays exact while a Bridge intervention is active."""
    tokens = llama.to_tokens(PROMPTS[0])
    last = hooks.resid_post(llama.n_layers - 1)
    with torch.no_grad():
        clean = llama.hf(tokens).logits.clone()
        clean_bridge = llama.bridge(tokens).clone()
        clean_text = llama.generate(PROMPTS[0], max_new_tokens=4)
        llama.bridge.add_hook(last, lambda x, hook: x * 0.0)
        try:
            hooked_hf = llama.hf(tokens).logits.clone()
            hooked_text = llama.generate(PROMPTS[0], max_new_tokens=4)
            hooked_bridge = llama.bridge(tokens)
        finally:
            llama.bridge.reset_hooks()
        restored = llama.bridge(tokens)
    torch.testing.assert_close(clean_bridge, clean, atol=1e-5, rtol=0)
    assert not torch.allclose(hooked_bridge, clean_bridge)
    torch.testing.assert_close(hooked_hf, clean)
    assert hooked_text == clean_text
    torch.testing.assert_close(restored, clean_bridge)


def test_hook_patterns_expand_in_layer_order_and_unknown_patterns_are_named(tiny_checkpoint) -> None:
    import interp
    from interp.hooks import UnknownHookError

    m = interp.load(tiny_checkpoint("llama", n_layers=3))
    assert m.hooks("blocks.*.hook_resid_post") == [f"blocks.{i}.hook_resid_post" for i in range(3)]
    assert m.hooks(["blocks.*.attn.hook_z", "blocks.0.hook_resid_pre"]) == \
        [f"blocks.{i}.attn.hook_z" for i in range(3)] + ["blocks.0.hook_resid_pre"]
    with pytest.raises(UnknownHookError, match="matches no hook"):
        m.hooks("blocks.*.hook_z")  # z lives under attn: `*` is one dotted part
    with pytest.raises(UnknownHookError, match="layer 7 is out of range"):
        m.hooks(["blocks.*.hook_resid_post", "blocks.7.hook_resid_post"])
