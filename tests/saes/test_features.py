"""Feature statistics, reasoning ranking, dashboards, transfer and steering on constructed and tiny cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from interp.activations import Example, PromptDataset
from saes import SAEError
from saes.features import (
    FeatureTable,
    auroc,
    eta_squared,
    feature_table,
    rank_reasoning_features,
    reason_score,
    top_contexts,
)
from tests.saes.conftest import HOOK
from tests.saes.test_metrics import identity_sae


def test_auroc_of_separating_reversed_and_constant_scores() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1], bool)
    scores = np.stack([labels * 2.0, 1 - labels, np.zeros(6)], 1)
    assert auroc(scores, labels).tolist() == pytest.approx([1.0, 0.0, 0.5])
    with pytest.raises(SAEError, match="both classes"):
        auroc(scores, np.ones(6, bool))


def test_eta_squared_is_one_for_a_function_of_the_value_and_small_for_noise() -> None:
    rng = np.random.default_rng(0)
    v = rng.integers(0, 10, 2000)
    scores = np.stack([v * 1.5 + 2, rng.normal(size=2000)], 1)
    eta = eta_squared(scores, v)
    assert eta[0] == pytest.approx(1.0) and eta[1] < 0.02


def test_reason_score_prefers_features_spread_over_the_reasoning_tokens() -> None:
    tokens = np.array([1, 2, 3, 1, 2, 3, 9, 9, 9, 9])
    reasoning = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
    acts = np.zeros((10, 3))
    acts[reasoning, 0] = 1.0  # fires on every reasoning token type
    acts[tokens == 1, 1] = 2.5  # same total mass, concentrated on one reasoning token type
    acts[tokens == 2, 1] = 0.5
    acts[~reasoning, 2] = 1.0  # fires off the chain
    t = FeatureTable(torch.tensor(acts, dtype=torch.float32), np.arange(10), np.arange(10), tokens)
    s = reason_score(t, reasoning)
    assert s[0] > s[1] > 0 >= s[2]  # a feature silent on the chain has no spread over it: score 0


def _mode_dataset(n: int) -> tuple[FeatureTable, PromptDataset]:
    """n one-token 'problems' at position 1 = answer; feature 0 fires iff will_cot, feature 1 never differs."""
    rng = np.random.default_rng(1)
    cot = rng.random(n) < 0.3
    exs = tuple(Example((0, 5, 6), {"answer": 1}, {"will_cot": bool(c), "format": "direct", "problem": str(i),
                                                   "n_steps": 1 + i % 2}) for i, c in enumerate(cot))
    acts = np.stack([cot * 2.0 + 0.1, np.full(n, 0.5)], 1)
    return FeatureTable(torch.tensor(acts, dtype=torch.float32), np.arange(n), np.ones(n, int), np.full(n, 5)), \
        PromptDataset(exs)


def test_within_step_auroc_discounts_a_feature_that_only_tracks_difficulty() -> None:
    n = 400
    steps = np.arange(n) % 2 + 1  # harder problems (2 steps) choose a CoT far more often
    rng = np.random.default_rng(0)
    cot = rng.random(n) < np.where(steps == 2, 0.6, 0.1)
    exs = tuple(Example((0, 5, 6), {"answer": 1}, {"will_cot": bool(c), "format": "direct", "n_steps": int(k)})
                for c, k in zip(cot, steps))
    acts = np.stack([steps * 1.0, cot * 1.0 + 0.1], 1)  # feature 0 = difficulty, feature 1 = the choice itself
    t = FeatureTable(torch.tensor(acts, dtype=torch.float32), np.arange(n), np.ones(n, int), np.full(n, 5))
    by = {f.feature: f for f in rank_reasoning_features(t, PromptDataset(exs), n_boot=20).features}
    assert by[0].mode_auroc > 0.7 and by[0].mode_auroc_within == pytest.approx(0.5)
    assert by[1].mode_auroc_within == pytest.approx(1.0)


def test_ranking_finds_the_cot_feature_and_its_null_is_near_half() -> None:
    table, ds = _mode_dataset(300)
    r = rank_reasoning_features(table, ds, n_boot=50)
    assert r.features[0].feature == 0 and r.features[0].mode_auroc == pytest.approx(1.0)
    assert r.features[0].mode_auroc_ci[0] > 0.99 and r.features[0].mode_auroc_within == pytest.approx(1.0)
    assert r.null_mode_auroc < 0.65
    assert r.n_cot + r.n_direct == 300


def test_top_contexts_skip_repeated_prefixes_and_refuse_bad_features(tiny_sae: Any, small_store: Any,
                                                                     base_s: Any) -> None:
    sae = tiny_sae.load()
    table = feature_table(sae, small_store, HOOK)
    f = int(table.firing_rate().argmax())
    ctx = top_contexts(table, small_store.dataset(), base_s.tokenizer, f, k=5)
    assert ctx and ctx[0].activation >= ctx[-1].activation > 0
    prefixes = {c.tokens[:c.position + 1] for c in ctx}
    assert len(prefixes) == len(ctx)
    assert ctx[0].acts[ctx[0].position] == pytest.approx(ctx[0].activation)
    with pytest.raises(SAEError, match="out of range.*256 features"):
        top_contexts(table, small_store.dataset(), base_s.tokenizer, 256)


def test_dashboard_writes_offline_pages(tiny_sae: Any, small_store: Any, base_s: Any, tmp_path: Path) -> None:
    from saes.dashboard import write_dashboard

    sae = tiny_sae.load()
    table = feature_table(sae, small_store, HOOK)
    feats = [int(i) for i in torch.argsort(table.firing_rate(), descending=True)[:2]]
    index = write_dashboard(sae, base_s, table, small_store.dataset(), feats, tmp_path / "dash", "test",
                            {feats[0]: {"CoT-mode AUROC": 0.7}})
    page = (tmp_path / "dash" / f"feature-{feats[0]}.html").read_text()
    assert index.is_file() and f"feature-{feats[1]}.html" in index.read_text()
    assert "rgba(255,140,0," in page and "<svg" in page and "promotes" in page and "CoT-mode AUROC" in page
    assert "<script" not in page and "http" not in page
    with pytest.raises(SAEError, match="out of range"):
        write_dashboard(sae, base_s, table, small_store.dataset(), [999], tmp_path / "bad")


def test_base_sae_explains_all_of_the_change_when_it_reconstructs_exactly() -> None:
    from saes.transfer import delta_explained, feature_shift

    xb, xt = torch.randn(200, 8), torch.randn(200, 8)
    val, ci = delta_explained(identity_sae(8), xb, xt, np.arange(200) // 4, n_boot=50)
    assert val == pytest.approx(1.0, abs=1e-6) and ci[0] == pytest.approx(1.0, abs=1e-6)
    sh = feature_shift(identity_sae(8), xb, xb)
    assert np.allclose(sh.log_ratio(), 0) and sh.rate_base == sh.rate_tuned


def test_transfer_refuses_stores_of_different_texts(small_store: Any, base_s: Any, tmp_path: Path) -> None:
    from interp.activations import AllTokens, harvest
    from interp.organism.dataset import problem_dataset
    from interp.organism.task import sample_problems
    from saes.transfer import aligned_rows

    other = harvest(base_s, problem_dataset(sample_problems(99, 5), base_s), [HOOK], AllTokens(),
                    tmp_path / "other")
    with pytest.raises(SAEError, match="different datasets"):
        aligned_rows(small_store, other, HOOK)


def test_feature_steering_vectors_clamp_and_controls(tiny_sae: Any, base_s: Any) -> None:
    from interp.steering import Add, Positions, steer
    from saes.steering import (
        FeatureClamp,
        feature_clamp,
        feature_vector,
        random_feature_vectors,
    )

    sae = tiny_sae.load()
    v = feature_vector(sae, [3, 5], base_s, HOOK)
    assert torch.allclose(v.vector, sae.W_dec[3] + sae.W_dec[5])
    ctrl = random_feature_vectors(sae, v, [3, 5], range(256), 4, 2, seed=0)
    assert all(abs(c.norm - v.norm) < 1e-4 and not set(c.provenance["features"]) & {3, 5} for c in ctrl)
    with pytest.raises(SAEError, match="out of range"):
        feature_vector(sae, 300, base_s, HOOK)
    ident = identity_sae(64)
    clamp = FeatureClamp(feature_vector(ident, 2, base_s, HOOK), "all", None, ident, 2, 7.0)
    h = torch.randn(2, 3, 64).abs()  # feature 2 (+e_2) is the only one on that axis where h_2 > 0
    assert torch.allclose(ident.encode(h + clamp.delta(h))[..., 2], torch.full((2, 3), 7.0), atol=1e-5)
    prompts = ["Q : a = 3 ; b = a + 4 ; c = b * 2 ; c ? A :"]
    plain = base_s.generate(prompts)
    with steer(base_s, [Add(v, where=Positions((-1,)), scale=0.0)]):
        assert base_s.generate(prompts) == plain
    with steer(base_s, [feature_clamp(sae, 3, 0.0, base_s, HOOK)]):
        base_s.generate(prompts)  # runs inside cached generation


def test_dashboard_renders_in_headless_chromium(tiny_sae: Any, small_store: Any, base_s: Any, tmp_path: Path) -> None:
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser is not None, "chromium is part of the setup (scripts/setup.sh installs it for PNG export)"
    from saes.dashboard import write_dashboard

    sae = tiny_sae.load()
    table = feature_table(sae, small_store, HOOK)
    f = int(table.firing_rate().argmax())
    write_dashboard(sae, base_s, table, small_store.dataset(), [f], tmp_path / "dash")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=900,900", (tmp_path / "dash" / f"feature-{f}.html").as_uri()],
                   capture_output=True, timeout=60, check=False)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (900, 900)
    assert len(data) > 20_000  # a blank page compresses to a few kB; text, shading and the histogram do not
