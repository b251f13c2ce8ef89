"""Behaviour of batched generation: equals an uncached greedy loop, padding-invariant, seeded sampling, checks."""

from __future__ import annotations

import pytest
import torch

from interp import generate as generate_module
from interp.generate import context_length, current_rows, encode_prompts, generate, generate_ids, left_pad, row_aware
from interp.organism.arch import ArchConfig, init_model
from interp.organism.task import TaskConfig, sample_problems
from interp.organism.tokenizer import build_tokenizer

torch.set_num_threads(1)

MAX_NEW = 12
EOS_BIAS = 0.25  # added to the EOS logit of the random tiny model: some rows stop early, some do not


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return init_model(ArchConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64), tok, seed=0)


@pytest.fixture(scope="module")
def prompts(tok):
    """Prompt ids of very different lengths (1-6 steps, with and without distractors)."""
    ps = sample_problems(0, 12, TaskConfig(max_steps=6)) + sample_problems(1, 12, TaskConfig(max_steps=6,
                                                                                           n_distractors=3))
    ids = [[tok.bos_token_id, *tok.convert_tokens_to_ids(p.prompt_tokens())] for p in ps]
    assert len({len(i) for i in ids}) >= 8
    return ids


@pytest.fixture
def eos_bias(model, tok):
    bias = torch.zeros(len(tok))
    bias[tok.eos_token_id] = EOS_BIAS
    handle = model.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)
    yield
    handle.remove()


@torch.no_grad()
def uncached_greedy(model, ids: list[int], max_new: int, eos: int) -> list[int]:
    """Reference: full forward over the whole sequence each step, argmax, stop at EOS."""
    seq = list(ids)
    out: list[int] = []
    for _ in range(min(max_new, context_length(model) - len(ids))):
        nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
        if nxt == eos:
            break
        out.append(nxt)
        seq.append(nxt)
    return out


def test_greedy_generation_equals_uncached_greedy_loop(model, tok, prompts):
    got = generate_ids(model, tok, prompts, max_new_tokens=MAX_NEW)
    want = [uncached_greedy(model, p, MAX_NEW, tok.eos_token_id) for p in prompts]
    assert got == want
    assert all(len(g) == MAX_NEW for g in got)


def test_greedy_generation_stops_at_eos_like_uncached_loop(model, tok, prompts, eos_bias):
    got = generate_ids(model, tok, prompts, max_new_tokens=MAX_NEW)
    want = [uncached_greedy(model, p, MAX_NEW, tok.eos_token_id) for p in prompts]
    assert got == want
    lengths = [len(g) for g in got]
    assert min(lengths) < MAX_NEW and max(lengths) == MAX_NEW  # both kinds of rows are in the batch
    assert all(tok.eos_token_id not in g for g in got)


@pytest.fixture
def row_aware_eos_bias(model, tok):
    """The EOS bias as a hook marked row-aware (it treats every row alike), so greedy decoding may drop rows."""
    bias = torch.zeros(len(tok))
    bias[tok.eos_token_id] = EOS_BIAS
    handle = model.lm_head.register_forward_hook(row_aware(lambda mod, inp, out: out + bias))
    yield
    handle.remove()


def forward_rows(model):
    """A row-aware pre-hook that records, for each forward, its batch size and the prompts it holds."""
    seen: list[tuple[int, list[int] | None]] = []

    @row_aware
    def pre(mod, args, kwargs):
        rows = current_rows()
        seen.append((int(kwargs["input_ids"].shape[0]), None if rows is None else rows.of_forward().tolist()))

    return seen, model.register_forward_pre_hook(pre, with_kwargs=True)


def hf_generate(model, tok, prompts, max_new, **kw):
    """Reference: HF `generate` on the same left-padded batch, completions cut at EOS."""
    ids, mask = left_pad(prompts, tok.pad_token_id)
    seqs = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, **kw)
    rows = seqs[:, ids.shape[1]:].tolist()
    return [r[: r.index(tok.eos_token_id)] if tok.eos_token_id in r else r for r in rows]


@pytest.mark.parametrize("compact_every", [generate_module.COMPACT_EVERY, 10**9])
def test_greedy_drops_finished_rows_and_equals_hf_generate_and_uncached_loop(model, tok, prompts, row_aware_eos_bias,
                                                                            monkeypatch, compact_every):
    monkeypatch.setattr(generate_module, "COMPACT_EVERY", compact_every)  # 10**9: drop each row as it finishes
    seen, handle = forward_rows(model)
    try:
        got = generate_ids(model, tok, prompts, max_new_tokens=MAX_NEW)
    finally:
        handle.remove()
    assert got == hf_generate(model, tok, prompts, MAX_NEW, do_sample=False)
    assert got == [uncached_greedy(model, p, MAX_NEW, tok.eos_token_id) for p in prompts]
    sizes = [n for n, _ in seen]
    assert sizes[0] == len(prompts) and sizes[-1] < sizes[0] and sizes == sorted(sizes, reverse=True)
    for step, (n, held) in enumerate(seen):  # decoding step k holds the prompts still writing after k tokens
        writing = [i for i, g in enumerate(got) if step == 0 or len(g) >= step]
        assert n == len(held) and set(writing) <= set(held) and held == sorted(held)
        if compact_every == 10**9:
            assert held == writing


def test_a_hook_not_marked_row_aware_keeps_every_row_with_the_same_tokens(model, tok, prompts, eos_bias):
    seen, handle = forward_rows(model)
    try:
        got = generate_ids(model, tok, prompts, max_new_tokens=MAX_NEW)
    finally:
        handle.remove()
    assert {n for n, _ in seen} == {len(prompts)}
    assert min(len(g) for g in got) < MAX_NEW
    assert got == hf_generate(model, tok, prompts, MAX_NEW, do_sample=False)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", ["eos_bias", "row_aware_eos_bias"])  # rows kept to the end, or dropped
def test_sampling_draws_what_hf_generate_draws(model, tok, prompts, request, bias, temperature):
    request.getfixturevalue(bias)
    seen, handle = forward_rows(model)
    try:
        got = generate_ids(model, tok, prompts, max_new_tokens=MAX_NEW, temperature=temperature, seed=4)
    finally:
        handle.remove()
    assert (seen[-1][0] < len(prompts)) == (bias == "row_aware_eos_bias")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        want = hf_generate(model, tok, prompts, MAX_NEW, do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    assert got == want
    assert min(len(g) for g in got) < MAX_NEW  # rows that stopped early were in the batch


def test_current_rows_is_none_outside_generation(model, tok, prompts):
    seen, handle = forward_rows(model)
    try:
        ids, mask = left_pad(prompts[:3], tok.pad_token_id)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    assert seen == [(3, None)]


def test_left_padding_does_not_change_greedy_results(model, tok, prompts, eos_bias):
    batched = generate_ids(model, tok, prompts, max_new_tokens=MAX_NEW)
    alone = [generate_ids(model, tok, [p], max_new_tokens=MAX_NEW)[0] for p in prompts]
    chunked = generate_ids(model, tok, prompts, max_new_tokens=MAX_NEW, batch_size=5)
    reversed_ = generate_ids(model, tok, prompts[::-1], max_new_tokens=MAX_NEW)[::-1]
    assert batched == alone == chunked == reversed_


def test_generate_decodes_completions_of_text_prompts(model, tok):
    texts = [p.prompt() for p in sample_problems(3, 4, TaskConfig(max_steps=5))]
    out = generate(model, tok, texts, max_new_tokens=6)
    ids = generate_ids(model, tok, [tok(t)["input_ids"] for t in texts], max_new_tokens=6)
    assert out == [tok.decode(i) for i in ids]
    assert all(len(o.split()) == 6 for o in out)


def test_sampling_with_same_seed_is_identical_and_different_seeds_differ(model, tok, prompts):
    a = generate_ids(model, tok, prompts, max_new_tokens=MAX_NEW, temperature=1.0, seed=0)
    b = generate_ids(model, tok, prompts, max_new_tokens=MAX_NEW, temperature=1.0, seed=0)
    c = generate_ids(model, tok, prompts, max_new_tokens=MAX_NEW, temperature=1.0, seed=1)
    greedy = generate_ids(model, tok, prompts, max_new_tokens=MAX_NEW)
    assert a == b
    assert a != c
    assert a != greedy


def test_sampling_does_not_touch_the_global_torch_rng(model, tok, prompts):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate_ids(model, tok, prompts[:3], max_new_tokens=4, temperature=1.0, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_generation_restores_training_mode(model, tok, prompts):
    model.train()
    try:
        generate_ids(model, tok, prompts[:2], max_new_tokens=2)
        assert model.training
    finally:
        model.eval()
    generate_ids(model, tok, prompts[:2], max_new_tokens=2)
    assert not model.training


def test_forward_hook_interventions_stay_active_during_generation(model, tok, prompts):
    so = tok.convert_tokens_to_ids("so")
    bias = torch.zeros(len(tok))
    bias[so] = 100.0
    handle = model.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)
    try:
        out = generate_ids(model, tok, prompts[:4], max_new_tokens=5)
    finally:
        handle.remove()
    assert out == [[so] * 5] * 4


def test_prompt_longer_than_context_raises_clear_error(model, tok):
    long_prompt = "Q : " + "a = 3 ; " * 40 + "a ? A :"
    with pytest.raises(ValueError, match=r"prompt 1 has 167 tokens, but the model's context is 128 tokens"):
        generate(model, tok, ["Q : a = 3 ; a ? A :", long_prompt])


def test_prompt_filling_the_whole_context_raises_but_one_less_fits(model, tok):
    ctx = context_length(model)
    fits = " ".join(["a"] * (ctx - 2))  # + BOS = ctx - 1 tokens
    assert len(encode_prompts(tok, [fits], ctx)[0]) == ctx - 1
    assert len(generate(model, tok, [fits], max_new_tokens=5)[0].split()) == 1
    with pytest.raises(ValueError, match="at least one free position"):
        encode_prompts(tok, [fits + " a"], ctx)


def test_unknown_word_raises_clear_error_naming_it(model, tok):
    with pytest.raises(ValueError, match=r"\['12'\] are not in the tokenizer's vocabulary"):
        generate(model, tok, ["Q : a = 12 ; a ? A :"])


def test_left_pad_pads_on_the_left_with_mask():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_context_length_reads_max_position_embeddings(model):
    assert context_length(model) == 128


def test_batching_with_a_near_context_prompt_does_not_shorten_other_rows(model, tok, prompts):
    ctx = context_length(model)
    near = [tok.bos_token_id] + [tok.convert_tokens_to_ids("a")] * (ctx - 5)  # room for 4 new tokens
    alone = generate_ids(model, tok, [prompts[0]], max_new_tokens=MAX_NEW)
    batched = generate_ids(model, tok, [prompts[0], near], max_new_tokens=MAX_NEW)
    assert batched[0] == alone[0]
