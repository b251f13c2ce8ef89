"""Fixtures for the SAE tests: base-s, a small store of its activations, one tiny trained SAE."""

from __future__ import annotations

from typing import Any

import pytest
import torch

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def base_s() -> Any:
    import interp

    return interp.load("organism/base-s")


@pytest.fixture(scope="session")
def small_store(base_s: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from interp.activations import AllTokens, harvest
    from interp.organism.dataset import problem_dataset
    from interp.organism.task import TaskConfig, sample_problems

    problems = sample_problems(5, 60, TaskConfig(min_steps=2, max_steps=4))
    ds = problem_dataset(problems, base_s, "verbose")
    return harvest(base_s, ds, [HOOK], AllTokens(), tmp_path_factory.mktemp("store") / "acts")


def tiny_config(**kw: Any) -> Any:
    from saes import SAETrainConfig

    base = {"hook": HOOK, "expansion": 4, "k": 8, "total_samples": 12_288, "batch_size": 256, "buffer_size": 2048,
            "chunk_rows": 512, "n_checkpoints": 3, "lr_warm_up_steps": 2}
    return SAETrainConfig(**(base | kw))


@pytest.fixture(scope="session")
def tiny_sae(small_store: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from saes import train_sae

    return train_sae(small_store, tiny_config(), tmp_path_factory.mktemp("sae") / "sae")


# ------------------------------------------------------------------ a GPT-2-style model without a BOS token

BPE_CORPUS = [f"the {a} {v} the {b} and {c} more" for a in ("cat", "dog", "bird", "fish") for v in ("saw", "ran to", "ate")
              for b in ("mat", "tree", "pond") for c in ("then", "so", "but")]


def make_bpe_checkpoint(path: Any, seed: int = 0) -> Any:
    """A random-init GPT-2 with a byte-level BPE tokenizer built here, GPT-2 style: `<|endoftext|>` is its BOS,
    EOS and pad token, and no post-processor prepends it (a text token sits at position 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, GPT2Config, PreTrainedTokenizerFast

    eot = "<|endoftext|>"
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(BPE_CORPUS, trainers.BpeTrainer(
        vocab_size=320, special_tokens=[eot], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=eot, eos_token=eot, pad_token=eot, unk_token=eot,
                                  model_max_length=64)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                     initializer_range=0.3)  # far from uniform predictions, so splicing moves the loss
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg).float().eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bpe_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import interp

    return interp.load(make_bpe_checkpoint(tmp_path_factory.mktemp("gpt2-bpe")))
