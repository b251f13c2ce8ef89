"""Named positions point at the tokens they name, in every format and under the shift knobs."""

from __future__ import annotations

import pytest

from interp.organism.positions import ANSWER, positions
from interp.organism.task import FORMATS, TaskConfig, sample_problems

CONFIGS = [TaskConfig(), TaskConfig(n_distractors=3, variables="abcdefgh"),
           TaskConfig(separator=",", shuffle_variables=True), TaskConfig(min_steps=5, max_steps=6)]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_positions_name_the_right_tokens(cfg, fmt):
    for p in sample_problems(7, 50, cfg):
        toks = ["<bos>", *p.text(fmt).split()]
        pos = positions(p, fmt)
        assert toks[pos[ANSWER]] == ":" and pos[ANSWER] == len(p.prompt_tokens())
        assert toks[pos["prompt.start_value"]] == str(p.start_value)
        assert toks[pos["prompt.query"]] == p.query_var
        assert toks[pos["final.value"]] == str(p.answer)
        for i, s in enumerate(p.steps, 1):
            assert toks[pos[f"prompt.step{i}.op"]] == s.op
            assert toks[pos[f"prompt.step{i}.operand"]] == str(s.operand)
            assert toks[pos[f"prompt.step{i}.end"]] == p.separator
            assert toks[pos[f"prompt.step{i}.end"] - 5] == s.target
            if fmt != "direct":
                assert toks[pos[f"step{i}.value"]] == str(s.value)
                assert toks[pos[f"step{i}.before_value"]] == "="
        if fmt == "direct":
            assert not any(k.startswith("step") for k in pos)


def test_prompt_only_positions_stop_at_the_answer_position():
    p = sample_problems(0, 1)[0]
    assert max(positions(p).values()) == positions(p)[ANSWER]


def test_unknown_format_is_a_clear_error():
    with pytest.raises(ValueError, match="valid formats"):
        positions(sample_problems(0, 1)[0], "terse")  # type: ignore[arg-type]
