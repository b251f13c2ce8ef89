"""Every core path on three tokenizers: the organism's word-level one (BOS), a GPT-2-style byte-level BPE
(`Ġ` words, no BOS of its own; the Bridge prepends `<|endoftext|>`) and a Qwen-style byte-level BPE (digits
split, ChatML chat template, `<think>` tokens, no BOS), each on a random-init checkpoint of its family.
The organism task is rendered as text, so named positions go through character spans on all three."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import interp
from interp.activations import AllTokens, Named, harvest
from interp.organism.reasoning_task import OrganismTask
from interp.organism.task import sample_problems
from interp.patching import attribution_patch, exact_patch, logit_diff
from interp.positions import Indices
from interp.steering import Add, SteeringVector, steer
from interp.tasks import encode_item, task_dataset
from tests.bpe import gpt2_style, qwen_style, save_checkpoint

torch.set_num_threads(1)
KINDS = ("wordlevel", "gpt2-bpe", "qwen-bpe-chat")
TASK = OrganismTask()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint) -> dict[str, interp.Model]:  # type: ignore[no-untyped-def]
    texts = [p.text("verbose") for p in sample_problems(0, 400)] + [p.text("concise") for p in sample_problems(1, 200)]
    root = tmp_path_factory.mktemp("matrix")
    return {
        "wordlevel": interp.load(tiny_checkpoint("llama", n_layers=2, max_len=128)),
        "gpt2-bpe": interp.load(save_checkpoint(root / "gpt2", gpt2_style(texts, 400), "gpt2", n_layers=2)),
        "qwen-bpe-chat": interp.load(save_checkpoint(root / "qwen", qwen_style(texts, 400), "qwen2", n_layers=2)),
    }


@pytest.fixture(params=KINDS)
def m(request: pytest.FixtureRequest, models: dict[str, interp.Model]) -> interp.Model:
    return models[request.param]


def test_the_three_tokenizers_are_what_they_claim(models: dict[str, interp.Model]) -> None:
    w, g, q = (models[k] for k in KINDS)
    assert type(w.tokenizer.backend_tokenizer.model).__name__ == "WordLevel" and w.prepend_bos
    assert g.tokenizer.convert_ids_to_tokens(g.tokenizer(" 7", add_special_tokens=False)["input_ids"]) == ["Ġ7"]
    assert g.prepend_bos and g.bos_token_id == g.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert q.tokenizer.chat_template and not q.prepend_bos
    assert len(q.tokenizer(" 42", add_special_tokens=False)["input_ids"]) == 3  # 'Ġ', '4', '2'


def test_encode_agrees_with_the_bridge_and_generation_with_an_uncached_loop(m: interp.Model) -> None:
    prompts = [p.prompt() for p in sample_problems(5, 3)]
    for p in prompts:
        assert m.to_tokens(p).tolist() == m.bridge.to_tokens(p).tolist()
    out = m.generate(prompts, max_new_tokens=5)
    for p, text in zip(prompts, out):
        ids = m.to_tokens(p)
        with torch.no_grad():
            for _ in range(5):
                nxt = m.hf(ids).logits[0, -1].argmax()
                if int(nxt) == m.tokenizer.eos_token_id:
                    break
                ids = torch.cat([ids, nxt.view(1, 1)], 1)
        assert text == m.tokenizer.decode(ids[0, m.to_tokens(p).shape[1]:])


@pytest.mark.parametrize("chat", [False, True])
def test_named_positions_land_on_the_tokens_they_name(m: interp.Model, chat: bool) -> None:
    items = TASK.sample(20, seed=3)
    if chat and not m.tokenizer.chat_template:  # asking for a template the tokenizer lacks is a clear error
        with pytest.raises(ValueError, match="has no chat template: pass chat=False"):
            encode_item(m, TASK, items[0], chat=True)
        return
    for it in items:
        comp = TASK.completion(it, "verbose")
        ex = encode_item(m, TASK, it, comp, chat=chat)
        toks = m.tokenizer.convert_ids_to_tokens(list(ex.ids))
        prompt_ids = m.token_ids(it.prompt) if not chat else None
        if prompt_ids is not None:
            assert list(ex.ids[:len(prompt_ids)]) == prompt_ids
            assert ex.positions["answer"] == len(prompt_ids) - 1
        for i in range(1, it.meta["n_steps"] + 1):
            value = str(it.meta[f"value.step{i}"])
            assert toks[ex.positions[f"step{i}.value"]].endswith(value), (toks, ex.positions)
        assert toks[ex.positions["prompt.start_value"]].endswith(str(it.meta["value.start"]))
        assert toks[ex.positions["answer"]].endswith(":")


def test_harvest_at_named_positions_equals_the_bridge_cache(m: interp.Model, tmp_path: Path) -> None:
    items = TASK.sample(12, seed=4)
    ds = task_dataset(m, TASK, items, fmt="concise")
    hook = "blocks.1.hook_resid_post"
    store = harvest(m, ds, [hook], Named(("answer", "step1.value")), tmp_path / "s")
    for label in ("answer", "step1.value"):
        rows = store.get(hook, label)
        ex = store.index(label)["example"]
        for r, e in enumerate(ex[:4]):
            e = int(e)
            ids = torch.tensor([ds[e].ids])
            _, cache = m.bridge.run_with_cache(ids, names_filter=hook)
            torch.testing.assert_close(rows[r], cache[hook][0, ds[e].positions[label]], atol=1e-4, rtol=1e-4)


def _answers(m: interp.Model, prompt: str, a: str, b: str) -> tuple[str, int, int]:
    """A prompt and the first tokens of two answers that differ there (on Qwen-style digit splitting ' 7' and
    ' 4' share their first token 'Ġ', so the prompt takes the space and the answers are bare digits)."""
    ia, ib = m.answer_ids(prompt, " " + a), m.answer_ids(prompt, " " + b)
    if ia[0] != ib[0]:
        return prompt, ia[0], ib[0]
    assert ia[0] == ib[0] and m.tokenizer.convert_ids_to_tokens(ia[:1]) == ["Ġ"]
    return prompt + " ", m.answer_ids(prompt + " ", a)[0], m.answer_ids(prompt + " ", b)[0]


def test_exact_patching_equals_transformer_lens_and_attribution_is_exact_where_nothing_differs(m: interp.Model) -> None:
    from transformer_lens import patching

    clean_p = "Q : a = 3 ; b = a + 4 ; b ? A :"
    corrupt_p = "Q : a = 5 ; b = a + 4 ; b ? A :"
    clean_p, ia, ib = _answers(m, clean_p, "7", "9")
    corrupt_p = corrupt_p + (" " if clean_p.endswith(" ") else "")
    metric = logit_diff(ia, ib)
    res = exact_patch(m, clean_p, corrupt_p, metric, hook="blocks.*.hook_resid_pre")
    clean_ids, corrupt_ids = m.to_tokens(clean_p), m.to_tokens(corrupt_p)
    _, cache = m.bridge.run_with_cache(clean_ids)
    ref = patching.get_act_patch_resid_pre(m.bridge, corrupt_ids, cache,
                                           lambda logits: logits[0, -1, ia] - logits[0, -1, ib])
    torch.testing.assert_close(res.values, ref.float().cpu(), atol=2e-4, rtol=2e-4)
    attr = attribution_patch(m, clean_p, corrupt_p, metric, hook="blocks.*.hook_resid_pre")
    same = (clean_ids == corrupt_ids)[0]
    assert not bool(same.all())
    # where clean and corrupted share every token up to a position, the activation there is the same
    first = int((~same).nonzero()[0, 0])
    torch.testing.assert_close(attr.values[:, :first], torch.full_like(attr.values[:, :first], attr.corrupt))


def test_steering_a_right_padded_batch_and_the_bridge(m: interp.Model) -> None:
    hook = "blocks.0.hook_resid_post"
    g = torch.Generator().manual_seed(0)
    v = SteeringVector(torch.randn(m.d_model, generator=g) * 4, hook, m.name, m.checksum)
    prompts = [p.prompt() for p in sample_problems(6, 3)]
    ids, mask = m.encode(prompts)
    with torch.no_grad(), steer(m, [Add(v, where=Indices((-1,)))]):
        batched = m.hf(input_ids=ids, attention_mask=mask).logits
        for i, p in enumerate(prompts):
            n = int(mask[i].sum())
            torch.testing.assert_close(batched[i, :n], m.hf(m.to_tokens(p)).logits[0], atol=1e-4, rtol=1e-4)
        one = m.to_tokens(prompts[0])
        torch.testing.assert_close(m.bridge(one), m.hf(one).logits, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert (m.hf(input_ids=ids, attention_mask=mask).logits - batched).abs().amax() > 1e-3


def test_a_probe_reads_the_start_value_token_above_its_control(m: interp.Model, tmp_path: Path) -> None:
    """On a random-init model the residual stream at a token still carries that token's identity: a probe at
    `prompt.start_value` decodes the value well above the control task and the majority class."""
    from probes import control_labels, fit, score, split_by_group

    items = TASK.sample(240, seed=8)
    ds = task_dataset(m, TASK, items)
    hook = "blocks.0.hook_resid_post"
    store = harvest(m, ds, [hook], Named(("prompt.start_value",)), tmp_path / "p")
    x = store.get(hook, "prompt.start_value")
    y = [ds[int(e)].meta["value.start"] for e in store.index("prompt.start_value")["example"]]
    groups = ds.groups()
    train, test = split_by_group(groups, 0.3, 0)
    ctrl = control_labels(y, groups, 0)
    pick = lambda v, mask: [a for a, t in zip(v, mask) if t]
    probe = fit(x[torch.from_numpy(train)], pick(y, train))
    control = fit(x[torch.from_numpy(train)], pick(ctrl, train))
    s, _ = score(probe, x[torch.from_numpy(test)], pick(y, test), pick(groups, test), n_boot=200)
    c, _ = score(control, x[torch.from_numpy(test)], pick(ctrl, test), pick(groups, test), n_boot=200)
    majority = max(np.bincount(pick(y, test))) / int(test.sum())
    assert s.value > 0.9 and s.value > c.value + 0.4 and s.value > majority + 0.5, (s, c, majority)


def test_harvest_of_every_token_keeps_bos_only_where_the_model_prepends_one(m: interp.Model, tmp_path: Path) -> None:
    items = TASK.sample(6, seed=9)
    ds = task_dataset(m, TASK, items)
    store = harvest(m, ds, ["blocks.0.hook_resid_post"], AllTokens(), tmp_path / "a")
    first_ids = {ex.ids[0] for ex in ds}
    assert (first_ids == {m.bos_token_id}) == m.prepend_bos
    assert store.get("blocks.0.hook_resid_post", "all").shape[0] == sum(len(ex.ids) for ex in ds)


def test_token_match_finds_the_same_symbols_on_every_tokenizer(m: interp.Model) -> None:
    """`tokens:=` selects every `=` of the prompt, whether the vocabulary spells it `=` or `Ġ=`."""
    from interp.positions import TokenMatch

    items = TASK.sample(5, seed=10)
    ds = task_dataset(m, TASK, items)
    for i, (it, ex) in enumerate(zip(items, ds)):
        got = TokenMatch(("=", ";")).select(ex, i, m.tokenizer)
        assert [lab for lab, _ in got if lab == "="].__len__() == it.prompt.split().count("=")
        assert len([lab for lab, _ in got if lab == ";"]) == it.prompt.split().count(";")
        assert all(m.tokenizer.decode([ex.ids[j]]).strip() == lab for lab, j in got)


def test_sae_trains_and_measures_on_every_tokenizer(m: interp.Model, tmp_path: Path) -> None:
    """sae-lens training on harvested rows, the quality metrics with the model spliced, and BOS rows left out by
    id: as many rows as BOS tokens are dropped (none where the model prepends none)."""
    from saes import SAETrainConfig, quality, train_sae

    items = TASK.sample(60, seed=11)
    ds = task_dataset(m, TASK, items, fmt="concise")
    hook = "blocks.1.hook_resid_post"
    store = harvest(m, ds, [hook], AllTokens(), tmp_path / "acts")
    cfg = SAETrainConfig(hook=hook, d_sae=4 * m.d_model, k=8, total_samples=60_000, batch_size=256, buffer_size=2048,
                         lr_warm_up_steps=4, n_checkpoints=0, seed=0)
    trained = train_sae(store, cfg, tmp_path / "sae", model=m)
    sae = trained.load()
    q, _ = quality(sae, store, hook, model=m, n_boot=50)
    n_bos = sum(ex.ids.count(m.bos_token_id) for ex in ds) if m.bos_token_id is not None else 0
    assert q.n_rows == sum(len(ex.ids) for ex in ds) - n_bos
    assert (n_bos > 0) == m.prepend_bos
    assert 0.5 < q.explained_variance <= 1.0, q
    assert q.ce_clean is not None and q.ce_sae is not None and q.n_tokens_ce > 0


def test_a_word_level_tokenizer_on_a_qwen2_checkpoint_keeps_its_offsets(tiny_checkpoint) -> None:  # type: ignore[no-untyped-def]
    """transformers 5's AutoTokenizer reads the organism tokenizer of a Qwen2 checkpoint as Qwen2Tokenizer (same
    ids, wrong character offsets); `interp.load` loads the saved tokenizer class, so named positions still map."""
    m = interp.load(tiny_checkpoint("qwen2", n_layers=2, max_len=128))
    assert type(m.tokenizer).__name__ in ("TokenizersBackend", "PreTrainedTokenizerFast")  # not Qwen2Tokenizer
    it = TASK.sample(1, seed=12)[0]
    ex = encode_item(m, TASK, it, TASK.completion(it, "verbose"))
    toks = m.tokenizer.convert_ids_to_tokens(list(ex.ids))
    assert toks[ex.positions["prompt.start.end"]] == ";" and toks[ex.positions["step1.value"]] == str(it.meta["value.step1"])


def test_harvest_takes_hook_patterns_and_position_names_and_records_the_bos(m: interp.Model, tmp_path: Path) -> None:
    items = TASK.sample(4, seed=13)
    ds = task_dataset(m, TASK, items)
    store = interp.harvest(m, ds, "blocks.*.hook_resid_post", "answer", tmp_path / "p")
    assert sorted(store.manifest["hooks"]) == [f"blocks.{i}.hook_resid_post" for i in range(m.n_layers)]
    assert store.get("blocks.1.hook_resid_post", "answer").shape == (4, m.d_model)
    assert store.manifest["bos_token_id"] == (m.bos_token_id if m.prepend_bos else None)
    last = interp.harvest(m, ds, ["blocks.1.hook_resid_post"], -1, tmp_path / "q")
    torch.testing.assert_close(last.get("blocks.1.hook_resid_post", "-1"), store.get("blocks.1.hook_resid_post", "answer"))


def test_a_completion_without_its_leading_space_maps_to_the_same_tokens(m: interp.Model) -> None:
    """A word-level decoder drops the space before a generated completion; the organism's spans follow the text
    as written, so the named positions land on the same tokens either way."""
    it = TASK.sample(1, seed=14)[0]
    comp = TASK.completion(it, "concise")
    spaced = encode_item(m, TASK, it, comp)
    bare = encode_item(m, TASK, it, comp.lstrip())
    if spaced.ids != bare.ids:  # byte-level BPE spells ' b' and 'b' differently: only the positions must agree
        assert len(spaced.ids) == len(bare.ids)
    assert dict(spaced.positions) == dict(bare.positions)
