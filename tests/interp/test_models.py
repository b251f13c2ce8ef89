"""interp.models: one set of weights seen through HF, the TransformerBridge and nnsight; clear load errors."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import interp
from interp.models import (
    IncompatiblePairError,
    Model,
    ModelNotFoundError,
    compare,
    load,
    load_pair,
    resolve_path,
    weights_checksum,
)
from interp.organism import zoo_paths
from interp.organism.task import vocabulary

ARCHS = ("gpt2", "llama", "qwen2", "gpt_neox")
PROMPT = "Q : a = 3 ; b = a + 4 ; b ? A :"
CheckpointFactory = Callable[..., Path]


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint: CheckpointFactory) -> Callable[[str], Model]:
    """Load each architecture once per module (for read-only tests)."""
    cache: dict[str, Model] = {}

    def get(arch: str) -> Model:
        if arch not in cache:
            cache[arch] = load(tiny_checkpoint(arch))
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", ARCHS)
def test_load_reads_dimensions_of_each_architecture(loaded: Callable[[str], Model], arch: str) -> None:
    """The Bridge's config agrees with the checkpoint: layers, width, vocabulary, context."""
    m = loaded(arch)
    assert (m.n_layers, m.d_model, m.n_heads, m.d_mlp, m.n_ctx) == (2, 32, 4, 64, 64)
    assert m.d_vocab == len(m.tokenizer)
    assert not m.hf.training and not m.bridge.training
    assert m.device == torch.device("cpu")


@pytest.mark.parametrize("arch", ARCHS)
def test_bridge_logits_match_hf_logits(loaded: Callable[[str], Model], arch: str) -> None:
    """The Bridge computes the same function as the HF model (eval mode, so no dropout)."""
    m = loaded(arch)
    tokens = m.to_tokens([PROMPT, "Q : a = 1 ; a ? A :"])
    with torch.no_grad():
        bridge_logits = m.bridge(tokens)
        hf_logits = m.hf(tokens).logits
    torch.testing.assert_close(bridge_logits, hf_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_hook_names_include_canonical_residual_hooks(loaded: Callable[[str], Model], arch: str) -> None:
    """Every architecture exposes TL residual, attention and MLP hook names for every layer."""
    names = set(loaded(arch).hook_names)
    for layer in range(2):
        for hook in ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
                     "attn.hook_z", "attn.hook_pattern"):
            assert f"blocks.{layer}.{hook}" in names


@pytest.mark.parametrize("arch", ARCHS)
def test_bridge_wraps_the_same_parameter_tensors(tiny_checkpoint: CheckpointFactory, arch: str) -> None:
    """Bridge, HF and nnsight share the checkpoint's tensors: an in-place edit is seen by all three."""
    m = load(tiny_checkpoint(arch))
    bridge_ids = {id(p) for p in m.bridge.parameters()}
    checkpoint_params = [t for t in m.weights.values() if isinstance(t, torch.nn.Parameter)]
    assert checkpoint_params and all(id(p) in bridge_ids for p in checkpoint_params)
    assert {p.data_ptr() for p in checkpoint_params} <= {p.data_ptr() for p in m.hf.parameters()}
    assert m.nn._module is m.hf  # nnsight wraps the plain HF model, over the same tensors
    # whatever else the Bridge holds either views checkpoint storage (GPT-2's split q/k/v) or is listed
    listed = {id(p) for p in m.bridge_params.values()}
    assert all(id(p) in listed for p in m.bridge.parameters() if id(p) not in {id(q) for q in checkpoint_params}
               and p.untyped_storage().data_ptr() not in {q.untyped_storage().data_ptr() for q in checkpoint_params})

    tokens = m.to_tokens(PROMPT)
    with torch.no_grad():
        before = m.bridge(tokens).clone()
        next(t for n, t in m.weights.items() if "embed" in n or "wte" in n).mul_(3.0)
        after_bridge, after_hf = m.bridge(tokens), m.hf(tokens).logits
        with m.nn.trace(tokens):
            after_nn = m.nn.output.save()
    assert not torch.allclose(before, after_bridge)
    torch.testing.assert_close(after_bridge, after_hf, atol=1e-5, rtol=0)
    torch.testing.assert_close(after_nn.logits, after_hf, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_bridge_adds_only_zero_parameters_to_unfused_models(loaded: Callable[[str], Model], arch: str) -> None:
    """Apart from views of the checkpoint, the Bridge only adds zeros (an unembedding bias)."""
    assert all(not p.any() for p in loaded(arch).bridge_params.values())


def test_bridge_splits_neox_fused_qkv_into_copies(tiny_checkpoint: CheckpointFactory) -> None:
    """Bridge quirk: GPT-NeoX's fused query_key_value is copied into q/k/v, which the forward then uses.

    Editing the checkpoint's fused tensor changes nothing; editing the copy changes both Bridge and
    HF outputs and the checksum. If a TransformerLens upgrade makes these views, this test says so.
    """
    m = load(tiny_checkpoint("gpt_neox"))
    copies = [n for n, p in m.bridge_params.items() if p.any()]
    assert any(n.endswith("attention.q._original_component.weight") for n in copies)
    tokens = m.to_tokens(PROMPT)
    original = m.checksum
    with torch.no_grad():
        before = m.bridge(tokens).clone()
        m.weights["gpt_neox.layers.0.attention.query_key_value.weight"].mul_(5.0)
        torch.testing.assert_close(m.bridge(tokens), before)  # the fused tensor is dead after boot
        checksum_after_dead_edit = m.checksum
        m.bridge_params[copies[0]].mul_(5.0)
        after = m.bridge(tokens)
    assert not torch.allclose(before, after)
    assert len({original, checksum_after_dead_edit, m.checksum}) == 3


def test_checksum_is_stable_across_loads_and_changes_with_weights(tiny_checkpoint: CheckpointFactory) -> None:
    """Same file -> same checksum (equal to a plain HF load's); any in-place weight edit changes it."""
    path = tiny_checkpoint("llama")
    a, b = load(path), load(path)
    assert a.checksum == b.checksum
    plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    assert a.checksum == weights_checksum(plain)  # the Bridge's rewiring of hf does not leak into it
    assert a.n_params == sum(p.numel() for p in plain.parameters())

    original = a.checksum
    w = a.weights["model.layers.1.mlp.up_proj.weight"]
    with torch.no_grad():
        w[0, 0] += 1e-3
    assert a.checksum != original
    with torch.no_grad():
        w.copy_(b.weights["model.layers.1.mlp.up_proj.weight"])
    assert a.checksum == original


def test_checksum_differs_between_seeds(tiny_checkpoint: CheckpointFactory) -> None:
    """Different weights give different checksums."""
    assert load(tiny_checkpoint("llama", seed=0)).checksum != load(tiny_checkpoint("llama", seed=1)).checksum


def test_repr_is_short(loaded: Callable[[str], Model]) -> None:
    """repr names the model, its class and size on one line."""
    r = repr(loaded("llama"))
    assert "LlamaForCausalLM" in r and "n_layers=2" in r and "\n" not in r and len(r) < 200


def test_interp_package_reexports_load() -> None:
    assert interp.load is load and interp.Model is Model


# ------------------------------------------------------------------------------------- tokens

def test_to_tokens_prepends_bos_like_the_bridge(loaded: Callable[[str], Model]) -> None:
    """Model.to_tokens, the Bridge and the tokenizer agree on the ids of one prompt."""
    m = loaded("llama")
    tokens = m.to_tokens(PROMPT)
    assert tokens.shape == (1, len(PROMPT.split()) + 1)
    assert tokens[0, 0].item() == m.tokenizer.bos_token_id
    assert torch.equal(tokens, m.bridge.to_tokens(PROMPT))


def test_to_tokens_pads_a_batch_on_the_right_with_a_mask(loaded: Callable[[str], Model]) -> None:
    """Rows of different length are right-padded whatever the tokenizer's padding side (the one convention of
    forward passes); the mask marks the padding and each row's logits equal its unpadded forward."""
    m = loaded("llama")
    assert m.tokenizer.padding_side == "left"  # the organism tokenizer pads left for HF generate
    ids, mask = m.encode(["Q : a = 3 ; a ? A :", "a ? A :"])
    assert ids.shape == mask.shape == (2, 11)
    assert mask[1].tolist() == [1] * 5 + [0] * 6
    assert (ids[1, 5:] == m.tokenizer.pad_token_id).all()
    with torch.no_grad():
        batched = m.hf(input_ids=ids, attention_mask=mask).logits[1, :5]
        alone = m.hf(input_ids=m.to_tokens("a ? A :")).logits[0]
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_to_tokens_rejects_unknown_word(loaded: Callable[[str], Model]) -> None:
    """A word outside a word-level vocabulary is named instead of silently becoming <unk>."""
    with pytest.raises(ValueError, match="banana"):
        loaded("llama").to_tokens(["Q : a = 3", "Q : banana = 3"])


def test_to_tokens_rejects_text_longer_than_context(loaded: Callable[[str], Model]) -> None:
    """The error names the text's length and the model's context length."""
    m = loaded("llama")
    text = " ".join(["a"] * 70)
    with pytest.raises(ValueError, match=r"71 tokens.*context length of 64"):
        m.to_tokens(text)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_generate_matches_plain_hugging_face_greedy_decoding(loaded: Callable[[str], Model], arch: str) -> None:
    """generate on a loaded Model (Bridge booted) gives exactly the tokens of a plain HF model's greedy
    loop without cache: booting the Bridge must not disturb HF's cached generation."""
    from transformers import AutoModelForCausalLM

    m = loaded(arch)
    prompts = [PROMPT, "Q : a = 1 ; a ? A :"]
    out = m.generate(prompts, max_new_tokens=6)
    assert len(out) == 2 and out == m.generate(prompts, max_new_tokens=6)
    assert m.generate(PROMPT, max_new_tokens=6) == out[:1]
    plain = AutoModelForCausalLM.from_pretrained(m.path).eval()
    for prompt, got in zip(prompts, out):
        ids = m.tokenizer(prompt, return_tensors="pt")["input_ids"]
        new: list[int] = []
        with torch.no_grad():
            for _ in range(6):
                nxt = int(plain(ids).logits[0, -1].argmax())
                if nxt == m.tokenizer.eos_token_id:
                    break
                new.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        assert got == m.tokenizer.decode(new, skip_special_tokens=False)


# ------------------------------------------------------------------------------------ resolving

def test_load_rejects_unknown_organism_with_valid_names() -> None:
    with pytest.raises(ValueError, match="organism/base-s") as e:
        load("organism/not-a-member")
    assert all(f"organism/{n}" in str(e.value) for n in zoo_paths.ZOO_NAMES)


def test_load_reports_untrained_organism(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo_paths, "ZOO_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="not trained yet"):
        resolve_path("organism/sft")


def test_load_resolves_organism_name_to_zoo_folder(tiny_checkpoint: CheckpointFactory, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(tiny_checkpoint("llama"), tmp_path / "base-s")
    monkeypatch.setattr(zoo_paths, "ZOO_DIR", tmp_path)
    m = load("organism/base-s")
    assert m.path == tmp_path / "base-s" and m.name == "organism/base-s"


@pytest.mark.parametrize("given", ["./no-such-checkpoint", "/no/such/checkpoint", "~/no-such-checkpoint-xyz",
                                   "a/b/no-such-checkpoint"])
def test_load_rejects_missing_directory(given: str) -> None:
    """Something that looks like a path is reported missing, not looked up on the hub."""
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        load(given)


def test_load_rejects_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load(tmp_path)
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load(str(tmp_path))


def test_load_rejects_hub_id_not_in_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An uncached hub id fails without network, naming the id and how to get it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    repo = "nonexistent-org/nonexistent-model-xyz"
    with pytest.raises(ModelNotFoundError) as e:
        load(repo)
    msg = str(e.value)
    assert repo in msg and "local Hugging Face cache" in msg and "organism" in msg and "HF_HOME" in msg


def test_load_finds_hub_id_in_local_cache(tiny_checkpoint: CheckpointFactory, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id already in the cache (HF_HOME/hub layout) loads offline."""
    repo_dir = tmp_path / "hub" / "models--tiny-org--tiny-llama"
    commit = "0" * 40
    shutil.copytree(tiny_checkpoint("llama"), repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    m = load("tiny-org/tiny-llama")
    assert m.path == repo_dir / "snapshots" / commit
    assert m.checksum == load(tiny_checkpoint("llama")).checksum


# ------------------------------------------------------------------------------------------ pairs

def test_load_pair_accepts_compatible_pair(tiny_checkpoint: CheckpointFactory) -> None:
    """Two seeds of one architecture are comparable; their weights differ."""
    pair = load_pair(tiny_checkpoint("llama", seed=0), tiny_checkpoint("llama", seed=1))
    assert pair.differences == ()
    assert pair.base.checksum != pair.tuned.checksum


def test_load_pair_lists_every_difference(tiny_checkpoint: CheckpointFactory) -> None:
    """Layers, width, vocabulary size, token ids and parameter shapes are each reported."""
    words = [w if w != "so" else "foo" for w in vocabulary()] + ["bar"]
    base = tiny_checkpoint("llama")
    tuned = tiny_checkpoint("llama", n_layers=3, d_model=48, words=words)
    with pytest.raises(IncompatiblePairError) as e:
        load_pair(base, tuned)
    diffs, msg = e.value.differences, str(e.value)
    so_id = 4 + vocabulary().index("so")
    expected = [
        "n_layers: base 2, tuned 3",
        "d_model: base 32, tuned 48",
        "d_vocab: base 46, tuned 47",
        (f"vocabulary: 3 tokens differ, e.g. 'so' (id {so_id} in base, absent in tuned), "
         f"'foo' (absent in base, id {so_id} in tuned), 'bar' (absent in base, id 46 in tuned)"),
        "parameter model.embed_tokens.weight: base (46, 32), tuned (47, 48)",
        "parameter model.layers.0.mlp.up_proj.weight: base (64, 32), tuned (64, 48)",
        "parameter model.layers.2.mlp.up_proj.weight: absent in base, tuned (64, 48)",
    ]
    for line in expected:
        assert line in diffs
    for line in expected[:5]:
        assert line in msg
    assert "architecture" not in msg  # same class: not reported
    assert diffs == compare(load(base), load(tuned))


def test_load_pair_reports_architecture_mismatch(tiny_checkpoint: CheckpointFactory) -> None:
    with pytest.raises(IncompatiblePairError, match="architecture: base LlamaForCausalLM, tuned Qwen2ForCausalLM"):
        load_pair(tiny_checkpoint("llama"), tiny_checkpoint("qwen2"))


def test_load_pair_without_check_returns_the_differences(tiny_checkpoint: CheckpointFactory) -> None:
    pair = load_pair(tiny_checkpoint("llama"), tiny_checkpoint("llama", n_layers=3), check=False)
    assert "n_layers: base 2, tuned 3" in pair.differences


def test_load_takes_dtype_names_and_a_device_map(tiny_checkpoint: Callable[..., Path]) -> None:
    """`dtype="bfloat16"` (by name) and `device_map="cpu"` (accelerate's placement) give the same model as the
    defaults, up to the dtype; an unknown dtype name is an error that lists the valid ones."""
    path = tiny_checkpoint("llama")
    ref = load(path)
    bf = load(path, dtype="bfloat16")
    assert next(bf.hf.parameters()).dtype == torch.bfloat16
    mapped = load(path, device_map="cpu")
    assert mapped.checksum == ref.checksum and mapped.device.type == "cpu"
    ids = ref.to_tokens("Q : a = 3 ; a ? A :")
    with torch.no_grad():
        torch.testing.assert_close(mapped.hf(ids).logits, ref.hf(ids).logits)
        torch.testing.assert_close(bf.hf(ids).logits.float(), ref.hf(ids).logits, atol=0.1, rtol=0.1)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'.*bfloat16"):
        load(path, dtype="fp8")
