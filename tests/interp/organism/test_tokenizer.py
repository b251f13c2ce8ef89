"""Behaviour of the organism tokenizer: one token per task word, BOS, left padding, HF save/load."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from interp.organism.task import FORMATS, RENAMED_VARIABLES, TaskConfig, sample_problems, vocabulary
from interp.organism.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS, UNK, build_tokenizer
from interp.tokens import check_known_tokens


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _texts() -> list[str]:
    cfgs = [TaskConfig(max_steps=7), TaskConfig(separator=",", n_distractors=5),
            TaskConfig(variables=RENAMED_VARIABLES, shuffle_variables=True)]
    return [p.text(f) for i, c in enumerate(cfgs) for p in sample_problems(i, 30, c) for f in FORMATS]


def test_every_task_word_is_a_single_known_token(tok):
    vocab = tok.get_vocab()
    unk = tok.convert_tokens_to_ids(UNK)
    for w in vocabulary():
        assert w in vocab
        ids = tok(w, add_special_tokens=False)["input_ids"]
        assert ids == [vocab[w]] and ids != [unk]


def test_vocabulary_ids_are_special_tokens_then_words(tok):
    assert len(tok) == len(SPECIAL_TOKENS) + len(vocabulary())
    assert tok.convert_ids_to_tokens(list(range(len(tok)))) == [*SPECIAL_TOKENS, *vocabulary()]
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == (PAD, BOS, EOS, UNK)


def test_builds_are_identical():
    assert build_tokenizer().get_vocab() == build_tokenizer().get_vocab()


def test_rendered_problems_round_trip_word_for_word(tok):
    unk = tok.unk_token_id
    for text in _texts():
        ids = tok(text)["input_ids"]
        words = text.split()
        assert len(ids) == len(words) + 1
        assert unk not in ids
        assert tok.convert_ids_to_tokens(ids[1:]) == words
        assert tok.decode(ids[1:]) == text
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_bos_is_prepended(tok):
    ids = tok("Q : a = 3 ; a ? A :")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1
    assert tok("Q", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("Q")]


def test_eos_is_not_appended(tok):
    assert tok.eos_token_id not in tok("a = 3")["input_ids"]


def test_extra_whitespace_does_not_change_ids(tok):
    assert tok("a  =\t3 \n;")["input_ids"] == tok("a = 3 ;")["input_ids"]


def test_check_known_tokens_accepts_task_text(tok):
    for text in _texts()[:20]:
        check_known_tokens(tok, text)


@pytest.mark.parametrize("text, word", [("Q : a = 12 ;", "12"), ("a = 3 / 4", "/"), ("hello", "hello"),
                                        ("a=3", "a=3")])
def test_unknown_word_raises_value_error_naming_it(tok, text, word):
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary") as err:
        check_known_tokens(tok, text)
    assert repr(word) in str(err.value)
    assert "known words:" in str(err.value) and " so" in str(err.value)


def test_unknown_words_are_all_listed(tok):
    with pytest.raises(ValueError) as err:
        check_known_tokens(tok, "a = 12 ; / b")
    assert "['12', '/']" in str(err.value)


def test_check_known_tokens_ignores_subword_tokenizers():
    class NotWordLevel:
        backend_tokenizer = None

    check_known_tokens(NotWordLevel(), "anything at all 12 /")  # type: ignore[arg-type]


def test_padding_is_on_the_left(tok):
    assert tok.padding_side == "left"
    batch = tok(["a = 3", "Q : a = 3 ; a ? A :"], padding=True)
    short, long = batch["input_ids"]
    assert len(short) == len(long)
    n_pad = len(long) - 4
    assert short[:n_pad] == [tok.pad_token_id] * n_pad
    assert short[n_pad:] == tok("a = 3")["input_ids"]
    assert batch["attention_mask"][0] == [0] * n_pad + [1] * 4
    assert batch["attention_mask"][1] == [1] * len(long)


def test_save_and_load_with_auto_tokenizer_gives_identical_ids(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.padding_side == "left"
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id, loaded.unk_token_id) == (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id)
    assert loaded.model_max_length == tok.model_max_length
    texts = _texts()[:40]
    for text in texts:
        assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded(texts[:5], padding=True)["input_ids"] == tok(texts[:5], padding=True)["input_ids"]
    with pytest.raises(ValueError, match="'12'"):
        check_known_tokens(loaded, "a = 12")


def test_model_max_length_is_configurable():
    assert build_tokenizer(64).model_max_length == 64
