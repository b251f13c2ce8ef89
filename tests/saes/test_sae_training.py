"""SAE training: sae-lens format, cards, exact resume after a kill, architectures, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from saes import SAEError, SAETrainConfig, load_sae, train_sae
from tests.saes.conftest import HOOK, tiny_config


def test_trained_sae_loads_with_sae_lens_and_has_a_card(tiny_sae: Any, small_store: Any, base_s: Any) -> None:
    from sae_lens import SAE

    sae = SAE.load_from_disk(tiny_sae.path)
    assert sae.cfg.d_in == 64 and sae.cfg.d_sae == 256
    card = json.loads((tiny_sae.path / "card.json").read_text())
    assert card["hook"] == HOOK and card["model_checksum"] == base_s.checksum
    assert card["store_dataset_hash"] == small_store.manifest["dataset_hash"]
    assert card["config"]["architecture"] == "batchtopk" and card["libraries"]["sae-lens"]
    assert card["training"]["samples"] >= 12_288
    x = small_store.get(HOOK)[:50]
    loaded, _ = load_sae(tiny_sae.path, model=base_s, hook=HOOK)
    assert torch.equal(loaded.encode(x), sae.encode(x))


def test_killed_training_resumes_to_identical_weights(small_store: Any, tmp_path: Path) -> None:
    cfg = tiny_config(seed=3)
    whole = train_sae(small_store, cfg, tmp_path / "whole")

    class Killed(Exception):
        pass

    def kill(samples: int) -> None:
        raise Killed(samples)

    with pytest.raises(Killed):
        train_sae(small_store, cfg, tmp_path / "resumed", on_checkpoint=kill)
    assert (tmp_path / "resumed.checkpoint" / "state.json").is_file()
    assert not (tmp_path / "resumed").exists()
    resumed = train_sae(small_store, cfg, tmp_path / "resumed")
    assert resumed.card["training"]["resumed_from_samples"] > 0
    a = load_file(whole.path / "sae_weights.safetensors")
    b = load_file(resumed.path / "sae_weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not (tmp_path / "resumed.checkpoint").exists()


def test_same_seed_same_sae_other_seed_other_sae(small_store: Any, tmp_path: Path) -> None:
    cfg = tiny_config(total_samples=2048, n_checkpoints=0)
    a = load_file(train_sae(small_store, cfg, tmp_path / "a").path / "sae_weights.safetensors")
    b = load_file(train_sae(small_store, cfg, tmp_path / "b").path / "sae_weights.safetensors")
    c = load_file(train_sae(small_store, tiny_config(total_samples=2048, n_checkpoints=0, seed=1),
                            tmp_path / "c").path / "sae_weights.safetensors")
    assert torch.equal(a["W_dec"], b["W_dec"]) and not torch.equal(a["W_dec"], c["W_dec"])


@pytest.mark.parametrize("arch", ["topk", "standard", "jumprelu"])
def test_other_architectures_train_and_load(arch: str, small_store: Any, tmp_path: Path) -> None:
    from sae_lens import SAE

    out = train_sae(small_store, tiny_config(architecture=arch, total_samples=2048, n_checkpoints=0), tmp_path / arch)
    sae = SAE.load_from_disk(out.path)
    f = sae.encode(small_store.get(HOOK)[:100])
    assert f.shape == (100, 256) and torch.isfinite(f).all()


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(SAEError, match="batchtopk, topk, standard, jumprelu"):
        tiny_config(architecture="gated")


def test_empty_store_is_a_clear_error(base_s: Any, tmp_path: Path) -> None:
    from interp.activations import Named, harvest
    from interp.organism.dataset import problem_dataset
    from interp.organism.task import TaskConfig, sample_problems

    ds = problem_dataset(sample_problems(0, 4, TaskConfig(min_steps=1, max_steps=1)), base_s)
    store = harvest(base_s, ds, [HOOK], Named(("answer", "step3.value"), missing="skip"), tmp_path / "acts")
    with pytest.raises(SAEError, match="holds no rows with position label 'step3.value'"):
        train_sae(store, tiny_config(label="step3.value"), tmp_path / "sae")


def test_hook_not_in_store_names_the_stored_hooks(small_store: Any, tmp_path: Path) -> None:
    with pytest.raises(SAEError, match="blocks.1.hook_resid_post"):
        train_sae(small_store, tiny_config(hook="blocks.0.hook_resid_post"), tmp_path / "sae")


def test_sae_of_another_width_or_model_is_refused(tiny_sae: Any, tiny_checkpoint: Any, base_s: Any) -> None:
    import interp

    other = interp.load(tiny_checkpoint("llama"))  # d_model 32
    with pytest.raises(SAEError, match="width 64.*d_model 32"):
        load_sae(tiny_sae.path, model=other, hook="blocks.1.hook_resid_post")
    from interp.organism.zoo_paths import organism_path  # noqa: F401

    sft = interp.load("organism/sft")
    with pytest.raises(SAEError, match="allow_other_model"):
        load_sae(tiny_sae.path, model=sft, hook=HOOK)
    sae, _ = load_sae(tiny_sae.path, model=sft, hook=HOOK, allow_other_model=True)
    assert sae.cfg.d_in == 64


def test_pretrained_release_missing_from_cache_is_a_clear_error(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SAEError, match="not in the local Hugging Face cache"):
        load_sae("gpt2-small-res-jb", "blocks.8.hook_resid_pre")


def test_local_folder_without_sae_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SAEError, match="not a saved SAE"):
        load_sae(tmp_path)


def test_sigkilled_training_process_resumes_to_identical_weights(small_store: Any, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import textwrap

    cfg = tiny_config(seed=5)
    script = textwrap.dedent(f"""
        import os, signal, torch
        torch.set_num_threads(1)
        from interp.activations import ActivationStore
        from saes import SAETrainConfig, train_sae
        cfg = SAETrainConfig.from_dict({cfg.to_dict()!r})
        def die(samples):
            os.kill(os.getpid(), signal.SIGKILL)
        train_sae(ActivationStore.open({str(small_store.root)!r}), cfg, {str(tmp_path / "killed")!r}, on_checkpoint=die)
    """)
    p = subprocess.run([sys.executable, "-c", script], check=False, cwd=Path(__file__).parents[2], capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert p.returncode == -9, p.stderr.decode()[-2000:]
    assert (tmp_path / "killed.checkpoint" / "state.json").is_file()
    resumed = train_sae(small_store, cfg, tmp_path / "killed")
    whole = train_sae(small_store, cfg, tmp_path / "whole")
    assert resumed.card["training"]["resumed_from_samples"] > 0
    a = load_file(whole.path / "sae_weights.safetensors")
    b = load_file(resumed.path / "sae_weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("warm_up", [8, 20])
def test_a_warm_up_as_long_as_the_run_is_refused_when_the_config_is_made(warm_up: int) -> None:
    # 2048 // 256 = 8 steps; sae-lens' cosine schedule runs for steps - warm-up (8 - 8 = 0: ZeroDivisionError)
    msg = rf"training has 8 steps but lr_warm_up_steps={warm_up}; lower the warm-up to < 8 or train for more samples"
    with pytest.raises(SAEError, match=msg):
        tiny_config(total_samples=2048, lr_warm_up_steps=warm_up)
    with pytest.raises(SAEError, match=msg):  # a card's config is checked too
        SAETrainConfig.from_dict({**tiny_config(total_samples=2048).to_dict(), "lr_warm_up_steps": warm_up})


def test_a_warm_up_one_step_shorter_than_the_run_trains(small_store: Any, tmp_path: Path) -> None:
    out = train_sae(small_store, tiny_config(total_samples=2048, lr_warm_up_steps=7, n_checkpoints=0), tmp_path / "sae",
                    metrics=False)
    assert out.card["training"]["steps"] == 8


def test_a_stale_checkpoint_names_exactly_the_fields_that_differ(small_store: Any, tmp_path: Path) -> None:
    cfg = tiny_config(seed=3)

    class Killed(Exception):
        pass

    def kill(samples: int) -> None:
        raise Killed(samples)

    with pytest.raises(Killed):
        train_sae(small_store, cfg, tmp_path / "sae", on_checkpoint=kill)
    other = tiny_config(seed=4, lr=1e-3)
    with pytest.raises(SAEError, match="another configuration") as e:
        train_sae(small_store, other, tmp_path / "sae")
    differences = str(e.value).split("(", 1)[1].split(")", 1)[0].split("; ")
    assert differences == ["lr: 0.005 -> 0.001", "seed: 3 -> 4"]
    fresh = train_sae(small_store, other, tmp_path / "sae", resume=False, metrics=False)
    assert fresh.card["training"]["resumed_from_samples"] == 0


def test_a_checkpoint_write_that_fails_leaves_no_checkpoint(small_store: Any, tmp_path: Path, monkeypatch: Any) -> None:
    from saes import training

    real = training.write_json

    def broken(path: Any, obj: Any) -> None:
        if Path(path).name == "state.json":
            raise OSError("disk full")
        real(path, obj)

    monkeypatch.setattr(training, "write_json", broken)
    with pytest.raises(OSError, match="disk full"):
        train_sae(small_store, tiny_config(), tmp_path / "sae")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no checkpoint, no temporary folder, no SAE
    monkeypatch.setattr(training, "write_json", real)
    assert train_sae(small_store, tiny_config(), tmp_path / "sae", metrics=False).card["training"][
        "resumed_from_samples"] == 0


def test_a_checkpoint_of_a_store_since_reharvested_is_refused(base_s: Any, tmp_path: Path) -> None:
    from interp.activations import AllTokens, harvest
    from interp.organism.dataset import problem_dataset
    from interp.organism.task import TaskConfig, sample_problems

    def store(seed: int) -> Any:
        ds = problem_dataset(sample_problems(seed, 30, TaskConfig(min_steps=2, max_steps=3)), base_s)
        return harvest(base_s, ds, [HOOK], AllTokens(), tmp_path / "acts", overwrite=True)

    class Killed(Exception):
        pass

    def kill(samples: int) -> None:
        raise Killed(samples)

    cfg = tiny_config(total_samples=4096)
    with pytest.raises(Killed):
        train_sae(store(0), cfg, tmp_path / "sae", on_checkpoint=kill)
    with pytest.raises(SAEError, match="store dataset_hash: .* -> .*; store shards: other contents"):
        train_sae(store(1), cfg, tmp_path / "sae")
