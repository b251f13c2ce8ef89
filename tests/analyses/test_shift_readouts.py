"""analyses.shift.readouts: the captured residual is the model's own (matches HF hidden states), and a tiny
readout run on base-s gives probe scores per shift split by answer, with a chance-level control."""

from __future__ import annotations

import dataclasses

import torch

from analyses.shift.analysis import ShiftConfig, ShiftResult, member_shift
from analyses.shift.readouts import (
    ReadoutConfig,
    ReadoutResult,
    last_token_resid,
    readout_model,
)
from analyses.shift.transforms import DEFAULT_SHIFTS, IN_DISTRIBUTION, as_shown
from interp.organism.task import sample_problems

torch.set_num_threads(1)


def test_last_token_resid_is_the_hidden_state_of_the_last_prompt_token() -> None:
    import interp

    model = interp.load("organism/base-s")
    probs = [as_shown(p) for p in sample_problems(2, 5)]
    acts = last_token_resid(model, probs)
    assert acts.shape == (model.n_layers, 5, model.d_model)
    tok = model.tokenizer
    for i, p in enumerate(probs):
        ids = torch.tensor([[tok.bos_token_id, *tok.convert_tokens_to_ids(list(p.prompt))]])
        hs = model.hf(input_ids=ids, output_hidden_states=True).hidden_states
        torch.testing.assert_close(acts[0, i], hs[1][0, -1], atol=1e-5, rtol=1e-5)  # layer 0's output


def test_readout_on_base_s_scores_every_shift_by_answer() -> None:
    import interp

    model = interp.load("organism/base-s")
    sep = next(s for s in DEFAULT_SHIFTS if s.name == "separator ,")
    bcfg = ShiftConfig(models=("organism/base-s",), shifts=(IN_DISTRIBUTION, dataclasses.replace(sep, steps=(2, 3))),
                       n_per_step=8, n_boot=50)
    bcfg = dataclasses.replace(bcfg, shifts=(dataclasses.replace(IN_DISTRIBUTION, steps=(2, 3)), bcfg.shifts[1]))
    ms = member_shift(model, bcfg)
    battery = ShiftResult(bcfg, (ms,), (), {}, bcfg.seed)
    cfg = ReadoutConfig(models=("organism/base-s",), shifts=("separator ,",), n_train=300, n_val=100, n_boot=50)
    r = readout_model(model, battery, cfg)
    assert 0 <= r.layer < model.n_layers and len(r.val_by_layer) == model.n_layers
    right, wrong = r.by_shift["separator ,"]["right"], r.by_shift["separator ,"]["wrong"]
    assert right.n + wrong.n == 16 and r.in_distribution.n == 16
    assert r.control.value < max(r.val_by_layer)  # shuffled labels read less than the real ones
    res = ReadoutResult(cfg, bcfg, (r,), {})
    assert ReadoutResult.from_dict(res.to_dict()).models[0].by_shift == r.by_shift


def test_read_position_finds_the_end_of_step_one() -> None:
    from analyses.shift.readouts import read_position

    p = as_shown(sample_problems(0, 1, n_steps=2)[0])
    assert p.prompt[read_position(p, "step1_end")] == ";" and p.prompt[read_position(p, "step1_end") - 1].isdigit()
    assert read_position(p, "step1_end") == 11 and read_position(p, "last") == len(p.prompt) - 1
