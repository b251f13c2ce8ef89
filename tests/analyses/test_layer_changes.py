"""Layer-change metrics on constructed cases: identical models, one perturbed layer, full grafts, EFT identities,
ablation and logit-lens identities, and the errors bad input must give."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from analyses.layer_changes import weights as weights_mod
from analyses.layer_changes.ablation import ablated, ablated_completions, conditions_of, mean_block_deltas
from analyses.layer_changes.anatomy import (
    check_block,
    kind_of_param,
    layer_of_param,
    lens_logits,
    residual_streams,
)
from analyses.layer_changes.behaviour import (
    items_of,
    measure,
    model_generator,
    prompt_ids,
)
from analyses.layer_changes.eft import check_shared_tokenizer, mixed_generate
from analyses.layer_changes.grafting import ENDS, all_blocks, grafted
from analyses.layer_changes.logit_lens import first_decodable
from analyses.layer_changes.representations import linear_cka, representation_change
from analyses.layer_changes.weights import weight_change
from interp.cli.bench.checkpoints import perturb_checkpoint
from interp.generate import generate_ids
from interp.models import IncompatiblePairError, load, weights_checksum
from interp.organism.evaluate import EvalConfig, evaluate
from interp.organism.reasoning_task import OrganismTask

torch.set_num_threads(1)
SHAPE = {"n_layers": 3, "d_model": 32, "n_heads": 4, "d_mlp": 64}


@pytest.fixture(scope="module")
def base_ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint("llama", seed=0, **SHAPE)


@pytest.fixture(scope="module")
def tuned_ckpt(base_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturb_checkpoint(base_ckpt, tmp_path_factory.mktemp("tuned-l1"), layer=1)


def test_parameter_names_map_to_layers_and_matrix_kinds():
    assert layer_of_param("model.layers.3.mlp.up_proj.weight") == 3
    assert layer_of_param("transformer.h.11.attn.c_attn.bias") == 11
    assert layer_of_param("model.embed_tokens.weight") is None
    assert [kind_of_param(n) for n in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight",
                                       "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.down_proj.weight",
                                       "model.layers.0.input_layernorm.weight", "model.norm.weight", "lm_head.weight",
                                       "transformer.h.0.attn.c_proj.weight", "transformer.h.0.mlp.c_proj.weight",
                                       "gpt_neox.layers.0.attention.query_key_value.weight")] == \
        ["q", "o", "mlp_gate", "mlp_out", "norm_attn", "final_norm", "unembed", "o", "mlp_out", "qkv"]


def test_identical_models_give_zero_weight_change(base_ckpt: Path):
    wc = weight_change(base_ckpt, base_ckpt)
    assert wc.per_layer == (0.0, 0.0, 0.0)
    assert set(wc.per_tensor.values()) == {0.0}
    assert set(wc.outside) >= {"embed", "final_norm", "unembed"} and set(wc.outside.values()) == {0.0}


def test_one_perturbed_layer_shows_only_at_that_layer(base_ckpt: Path, tuned_ckpt: Path):
    wc = weight_change(base_ckpt, tuned_ckpt)
    assert wc.per_layer[1] > 0.01 and wc.per_layer[0] == 0.0 and wc.per_layer[2] == 0.0
    assert set(wc.outside.values()) == {0.0}
    assert wc.top_layer() == 1
    # the relative change of one matrix matches a direct computation
    b = AutoModelForCausalLM.from_pretrained(base_ckpt).state_dict()
    t = AutoModelForCausalLM.from_pretrained(tuned_ckpt).state_dict()
    name = "model.layers.1.mlp.up_proj.weight"
    direct = float((t[name] - b[name]).norm() / ((t[name].norm() + b[name].norm()) / 2))
    assert wc.per_tensor[name] == pytest.approx(direct, rel=1e-5)
    assert wc.per_layer_kind["1"]["mlp_in"] == pytest.approx(direct, rel=1e-5)


def test_one_perturbed_matrix_shows_only_in_that_cell(base_ckpt: Path, tmp_path: Path):
    tuned = perturb_checkpoint(base_ckpt, tmp_path / "t", layer=2, only="v_proj")
    wc = weight_change(base_ckpt, tuned)
    cells = {(layer, k): v for layer, kinds in wc.per_layer_kind.items() for k, v in kinds.items() if v > 0}
    assert list(cells) == [("2", "v")]


def test_streaming_in_small_chunks_over_shards_matches_whole_tensors(base_ckpt: Path, tuned_ckpt: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    whole = weight_change(base_ckpt, tuned_ckpt)
    sharded = []
    for src, name in ((base_ckpt, "b"), (tuned_ckpt, "t")):
        m = AutoModelForCausalLM.from_pretrained(src)
        m.save_pretrained(tmp_path / name, max_shard_size="20KB")
        AutoTokenizer.from_pretrained(src).save_pretrained(tmp_path / name)
        sharded.append(tmp_path / name)
    assert len(list((tmp_path / "b").glob("*.safetensors"))) > 2
    monkeypatch.setattr(weights_mod, "CHUNK_ELEMENTS", 97)
    chunked = weight_change(*sharded)
    assert chunked.per_tensor.keys() == whole.per_tensor.keys()
    for k, v in whole.per_tensor.items():
        assert chunked.per_tensor[k] == pytest.approx(v, rel=1e-9, abs=1e-12)


def test_weight_change_refuses_pairs_with_different_shapes(tiny_checkpoint, base_ckpt: Path):
    other = tiny_checkpoint("llama", seed=0, n_layers=3, d_model=32, n_heads=4, d_mlp=96)
    with pytest.raises(IncompatiblePairError, match="mlp.up_proj.weight: base \\(64, 32\\), tuned \\(96, 32\\)"):
        weight_change(base_ckpt, other)


def test_weight_change_needs_safetensors(base_ckpt: Path, tmp_path: Path):
    (tmp_path / "config.json").write_text((base_ckpt / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no .safetensors weights .*pytorch_model.bin"):
        weight_change(tmp_path, base_ckpt)


def test_cka_is_one_for_identical_and_invariant_to_rotation_and_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, torch.randn(200, 16, generator=g)) < 0.3


def _seqs(ckpt: Path, n: int = 12) -> tuple[list[list[int]], int]:
    tok = AutoTokenizer.from_pretrained(ckpt)
    cfg = EvalConfig(steps=(1, 2), n_per_step=n // 2)
    problems = [p for k in cfg.steps for p in cfg.problems(k)]
    return [[tok.bos_token_id, *tok.convert_tokens_to_ids(p.prompt_tokens())] for p in problems], tok.pad_token_id


def test_identical_models_have_cka_and_cosine_one(base_ckpt: Path):
    m = load(base_ckpt)
    seqs, _ = _seqs(base_ckpt)
    r = representation_change(m, m, seqs, [range(1, len(s)) for s in seqs], ["p"] * 4, "prompt", n_boot=50)
    assert r.cka == pytest.approx((1.0,) * 4, abs=1e-9)
    assert r.cosine == pytest.approx((1.0,) * 4, abs=1e-6)
    assert all(lo == pytest.approx(1.0, abs=1e-9) for lo, _ in r.cka_ci)
    assert max(r.cka_shuffled) < 0.9  # the control breaks the token correspondence


def test_perturbed_layer_changes_representations_from_that_layer_on(base_ckpt: Path, tuned_ckpt: Path):
    b, t = load(base_ckpt), load(tuned_ckpt)
    seqs, _ = _seqs(base_ckpt)
    r = representation_change(b, t, seqs, [range(1, len(s)) for s in seqs], ["embed", "L0", "L1", "L2"], "prompt",
                              n_boot=50)
    assert r.cka[:2] == pytest.approx((1.0, 1.0), abs=1e-9)  # before the perturbed layer: identical streams
    assert r.cka[2] < 1 - 1e-4 and r.cosine[2] < 1 - 1e-4


def test_grafting_all_layers_reproduces_tuned_exactly_and_restores_base(base_ckpt: Path, tuned_ckpt: Path):
    b, t = load(base_ckpt), load(tuned_ckpt)
    ids = torch.tensor([_seqs(base_ckpt)[0][0]])
    before = weights_checksum(b.hf)
    with torch.no_grad():
        plain = b.hf(ids).logits
    with grafted(b, t, (0, 3)) as hybrid:
        assert torch.equal(hybrid.hf(ids).logits, t.hf(ids).logits)
        assert torch.allclose(hybrid.bridge(ids), t.bridge(ids), atol=1e-5)  # every view runs grafted
    assert weights_checksum(b.hf) == before
    with grafted(b, t, (1, 2)) as hybrid:  # the only changed layer
        assert torch.equal(hybrid.hf(ids).logits, t.hf(ids).logits)
    with grafted(b, t, (0, 1)) as hybrid:
        assert torch.equal(hybrid.hf(ids).logits, plain)


def test_grafting_all_layers_and_the_ends_reproduces_a_zoo_model_exactly():
    base, sft = load("organism/base-s"), load("organism/sft")
    ids = base.to_tokens("Q : a = 3 ; b = a + 4 ; c = b * 2 ; c ? A :")
    before = base.checksum
    with grafted(base, sft, (0, base.n_layers)), grafted(base, sft, ENDS):
        assert torch.equal(base.hf(ids).logits, sft.hf(ids).logits)
    with grafted(base, sft, (0, base.n_layers)):  # the ends differ too, so the layers alone are not enough
        assert not torch.equal(base.hf(ids).logits, sft.hf(ids).logits)
    assert base.checksum == before


def test_grafting_blocks_out_of_bounds_are_refused(base_ckpt: Path):
    b = load(base_ckpt)
    for block in ((0, 4), (-1, 2), (2, 2), (3, 1)):
        with pytest.raises(ValueError, match=r"out of range: the model has layers 0-2, so a block needs 0 <= start < end <= 3"), \
                grafted(b, b, block):
            pass
    with pytest.raises(ValueError, match="a layer block is \\(start, end\\)"):
        check_block((1,), 3)
    assert all_blocks(3) == [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (0, 3)]


def test_zero_ablation_skips_the_block_and_mean_ablation_adds_the_mean(base_ckpt: Path):
    m = load(base_ckpt)
    seqs, _ = _seqs(base_ckpt)
    ids, mask = torch.tensor(seqs[:1]), torch.ones(1, len(seqs[0]), dtype=torch.long)
    with ablated(m, 1, "zero"):
        streams, _ = residual_streams(m.hf, ids, mask)
    assert torch.equal(streams[2], streams[1])  # leaving block 1 = entering it
    means = mean_block_deltas(m, seqs)
    with ablated(m, 1, "mean", means[1]):
        streams, _ = residual_streams(m.hf, ids, mask)
    assert torch.allclose(streams[2], streams[1] + means[1], atol=1e-6)
    with pytest.raises(ValueError, match="layer 3 is out of range: the model has layers 0-2"), ablated(m, 3, "zero"):
        pass
    with pytest.raises(ValueError, match="unknown ablation mode 'half'"), ablated(m, 0, "half"):
        pass


def test_ablation_acts_inside_generation_and_is_removed_after():
    m = load("organism/base-s")
    cfg = EvalConfig(steps=(1,), n_per_step=20, n_boot=50)
    task = OrganismTask()
    items = items_of(task, cfg)
    gen = model_generator(m, cfg)
    clean = measure(gen, m, task, items, cfg)
    with ablated(m, 0, "zero"):
        broken = measure(gen, m, task, items, cfg)
    assert clean.accuracy == 1.0 and broken.accuracy < 0.5
    assert measure(gen, m, task, items, cfg) == clean


def test_pooled_behaviour_matches_evaluate():
    m = load("organism/base-s")
    cfg = EvalConfig(steps=(2, 4), n_per_step=15, n_boot=50)
    task = OrganismTask()
    items = items_of(task, cfg)
    assert [it.id for it in items] == [p.prompt() for k in cfg.steps for p in cfg.problems(k)]
    ours = measure(model_generator(m, cfg), m, task, items, cfg)
    ref = evaluate(m, cfg)
    assert ours.accuracy == pytest.approx(ref.mean_over((2, 4), "accuracy"))
    assert ours.cot_rate == pytest.approx(ref.mean_over((2, 4), "cot_rate"))
    assert ours.subset((4,), "correct") == pytest.approx(ref.by_steps[4].accuracy)


def test_eft_with_tuned_small_equal_to_base_small_reproduces_base_large():
    small, large = load("organism/base-s"), load("organism/base-l")
    task = OrganismTask()
    prompts = prompt_ids(small, task, items_of(task, EvalConfig(steps=(2, 4), n_per_step=10)))
    want = generate_ids(large.hf, large.tokenizer, prompts, 60)
    got = mixed_generate([large, small, small], [1.0, 1.0, -1.0], prompts, 60)
    assert got == want
    assert mixed_generate([small], [1.0], prompts, 60) == generate_ids(small.hf, small.tokenizer, prompts, 60)
    a = mixed_generate([large, small], [1.0, 0.5], prompts, 30, temperature=1.0, seed=3)
    assert a == mixed_generate([large, small], [1.0, 0.5], prompts, 30, temperature=1.0, seed=3)


def test_eft_refuses_mismatched_tokenizers(tiny_checkpoint):
    a = load(tiny_checkpoint("llama", seed=0, **SHAPE))
    b = load(tiny_checkpoint("llama", seed=0, words=["x", "y", "zz"], **SHAPE))
    check_shared_tokenizer({"a": a, "a2": a})
    with pytest.raises(ValueError, match="one shared tokenizer, but a and b differ: vocabulary: .* differ"):
        check_shared_tokenizer({"a": a, "b": b})
    with pytest.raises(ValueError, match="output vocabularies differ in size"):
        mixed_generate([a, b], [1.0, 1.0], [[a.bos_token_id]], 3)
    with pytest.raises(ValueError, match="one coefficient per model"):
        mixed_generate([a], [1.0, -1.0], [[a.bos_token_id]], 3)


def test_logit_lens_at_the_last_layer_is_the_model_output(base_ckpt: Path):
    m = AutoModelForCausalLM.from_pretrained(base_ckpt).eval()
    seqs, _ = _seqs(base_ckpt)
    ids, mask = torch.tensor(seqs[:1]), torch.ones(1, len(seqs[0]), dtype=torch.long)
    streams, logits = residual_streams(m, ids, mask)
    assert streams.shape[0] == 4
    assert torch.allclose(lens_logits(m, streams[-1]), logits, atol=1e-5)


def test_first_decodable_point():
    top = np.array([[1, 5, 5], [2, 5, 4], [3, 5, 4], [3, 5, 4]])  # [point, problem]
    assert first_decodable(top, top[-1]).tolist() == [2, 0, 1]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "gpt_neox"])
def test_every_intervention_works_on_other_architectures(arch: str, tiny_checkpoint, tmp_path: Path):
    base = tiny_checkpoint(arch, seed=0, **SHAPE)
    tuned = perturb_checkpoint(base, tmp_path / "t", layer=1)
    wc = weight_change(base, tuned)
    assert wc.per_layer[1] > 0 and wc.per_layer[0] == 0 == wc.per_layer[2]
    b, t = load(base), load(tuned)
    prompts, _ = _seqs(base, n=4)
    ids, mask = torch.tensor(prompts[:1]), torch.ones(1, len(prompts[0]), dtype=torch.long)
    with grafted(b, t, (0, 3)) as hybrid:
        assert torch.equal(hybrid.hf(ids).logits, t.hf(ids).logits)
    streams, logits = residual_streams(b.hf, ids, mask)
    assert torch.allclose(lens_logits(b.hf, streams[-1]), logits, atol=1e-5)
    with ablated(b, 2, "zero"):
        streams, _ = residual_streams(b.hf, ids, mask)
    assert torch.equal(streams[3], streams[2])
    assert mixed_generate([b, t, t], [1.0, 1.0, -1.0], prompts, 8) == generate_ids(b.hf, b.tokenizer, prompts, 8)


@pytest.mark.parametrize("method", ["features", "gram"])
def test_bootstrap_cka_equals_cka_of_the_resampled_data(method: str):
    from analyses.layer_changes.representations import bootstrap_cka

    g = torch.Generator().manual_seed(0)
    sizes = [3, 5, 2, 7, 4]
    xs = [torch.randn(n, 6, generator=g, dtype=torch.float64) for n in sizes]
    ys = [x @ torch.randn(6, 5, generator=g, dtype=torch.float64) + 0.5 * torch.randn(x.shape[0], 5, generator=g,
                                                                                    dtype=torch.float64) for x in xs]
    boot = torch.tensor([[1, 1, 1, 1, 1], [2, 0, 1, 0, 2], [0, 3, 0, 1, 1]], dtype=torch.float64)
    got = bootstrap_cka(xs, ys, boot, method=method)
    for row, value in zip(boot.long().tolist(), got.tolist()):
        X = torch.cat([x for x, c in zip(xs, row) for _ in range(c)])
        Y = torch.cat([y for y, c in zip(ys, row) for _ in range(c)])
        assert value == pytest.approx(linear_cka(X, Y), rel=1e-9)
    with pytest.raises(ValueError, match="unknown CKA bootstrap method"):
        bootstrap_cka(xs, ys, boot, method="kernel")


@pytest.mark.parametrize("method", ["features", "gram"])
def test_bootstrap_cka_is_nan_where_a_resample_has_no_variance(method: str):
    from analyses.layer_changes.representations import bootstrap_cka

    same = torch.ones(4, 8, dtype=torch.float64) * torch.arange(8, dtype=torch.float64)  # one repeated vector
    other = torch.randn(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    boot = torch.tensor([[1, 0], [1, 1]], dtype=torch.float64)
    got = bootstrap_cka([same, other], [same, other], boot, method=method)
    assert math.isnan(got[0]) and got[1] == pytest.approx(1.0, abs=1e-9)
    assert math.isnan(linear_cka(same, same))


@pytest.mark.parametrize("batch_size", [7, 400])
def test_batched_ablation_generates_what_one_condition_at_a_time_does(batch_size: int):
    m = load("organism/base-s")
    cfg = EvalConfig(steps=(1, 3), n_per_step=5, n_boot=50, batch_size=batch_size)
    task = OrganismTask()
    items = items_of(task, cfg)
    prompts = prompt_ids(m, task, items, force_cot=True)[:-1] + prompt_ids(m, task, items[-1:])  # mixed lengths
    clean = generate_ids(m.hf, m.tokenizer, prompts, cfg.max_new_tokens)
    means = mean_block_deltas(m, prompts)
    conditions = conditions_of(m)
    batched = ablated_completions(m, conditions, means, prompts, cfg)  # batches cross prompts and conditions
    for (layer, mode), got in zip(conditions, batched, strict=True):
        with ablated(m, layer, mode, means[layer]):
            alone = generate_ids(m.hf, m.tokenizer, prompts, cfg.max_new_tokens, 0.0, cfg.seed, batch_size)
        assert got == alone, (layer, mode)
    assert len({tuple(map(tuple, b)) for b in batched}) > 1  # the conditions differ: rows were ablated as their own
    assert generate_ids(m.hf, m.tokenizer, prompts, cfg.max_new_tokens) == clean  # the hooks are gone
