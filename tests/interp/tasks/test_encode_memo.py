"""encode_text remembers each model's encodings, and forgets them when the tokenizer changes."""

from __future__ import annotations

import pytest

import interp
from interp.tasks import encode
from interp.tasks.encode import encode_text
from interp.tokens import TokenError


@pytest.fixture(scope="module")
def model():
    return interp.load("organism/base-s")


def test_a_remembered_encoding_equals_a_fresh_one(model):
    task = interp.task("organism")
    items = task.sample(5, seed=0)
    first = [encode_text(model, task.prompt(it), " so", chat=False) for it in items]
    again = [encode_text(model, task.prompt(it), " so", chat=False) for it in items]
    fresh = [encode._encode_text(model, task.prompt(it), " so", False) for it in items]
    assert first == again == fresh
    assert all(a is b for a, b in zip(first, again))  # served from the model's memo


def test_the_memo_keeps_at_most_its_size(model, monkeypatch):
    monkeypatch.setattr(encode, "ENCODINGS_KEPT", 3)
    model.encodings.clear()
    task = interp.task("organism")
    for it in task.sample(6, seed=1):
        encode_text(model, task.prompt(it))
    assert len(model.encodings) == 3


def test_a_token_added_after_encoding_is_seen(model):
    text = "a = 3 ; zebra"
    with pytest.raises(TokenError, match="zebra"):
        encode_text(model, text)
    model.tokenizer.add_tokens(["zebra"])
    try:
        enc = encode_text(model, text)
        assert enc.ids[-1] == model.tokenizer.convert_tokens_to_ids("zebra")
    finally:  # this model object is the module's own; nothing else sees the added token
        model.encodings.clear()
