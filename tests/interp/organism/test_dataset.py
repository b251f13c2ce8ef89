"""problem_dataset is the core's task_dataset on the organism: the same ids, named positions and metadata as
the organism's own word-level encoding, for every format and for shifted prompts."""

from __future__ import annotations

import pytest

from interp.models import load
from interp.organism.dataset import problem_dataset
from interp.organism.task import TaskConfig, sample_problems


@pytest.fixture(scope="module")
def model(random_model, tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-dataset")
    random_model.save_pretrained(path)
    tok.save_pretrained(path)
    return load(path)


@pytest.mark.parametrize("fmt", [None, "direct", "concise", "verbose"])
def test_model_path_equals_the_word_level_encoding(model, tok, fmt):
    problems = sample_problems(5, 60, TaskConfig(min_steps=1, max_steps=4, shuffle_variables=True, n_distractors=1))
    extra = [{"i": i} for i in range(len(problems))]
    core = problem_dataset(problems, model, fmt, extra_meta=extra)
    with pytest.deprecated_call():
        words = problem_dataset(problems, tok, fmt, extra_meta=extra)
    assert core == words and core.hash() == words.hash()
    ex = core.examples[0]
    assert ex.ids[0] == tok.bos_token_id and ex.meta["format"] == (fmt or "prompt") and ex.meta["i"] == 0
    assert tok.convert_ids_to_tokens([ex.ids[ex.positions["answer"]]]) == [":"]


def test_extra_metadata_must_match_the_problems(model):
    with pytest.raises(ValueError, match="2 problems but 1 extra metadata entries"):
        problem_dataset(sample_problems(0, 2), model, extra_meta=[{}])
