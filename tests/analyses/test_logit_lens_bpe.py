"""The logit lens on answers of several BPE tokens (the natural-language organism's byte-level tokenizer, which
writes ` 12` as `Ġ 1 2`): it reads the token that tells the candidates apart, with their shared prefix
teacher-forced, and refuses candidates that have no single such token."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import interp
from analyses.layer_changes.anatomy import lens_logits, residual_streams
from analyses.layer_changes.logit_lens import candidate_split, logit_lens
from analyses.verbosity.common import prompt_ids
from interp.tasks import Grade, Item, Task

torch.set_num_threads(1)


class Numbers(Task):
    """A question whose candidate answers are given numbers in a sentence (` The answer is 12.`)."""

    name = "numbers"

    def __init__(self, numbers: tuple[int, ...], sentence: bool = True) -> None:
        self.numbers, self.sentence = numbers, sentence

    def text(self, n: int) -> str:
        return f" The answer is {n}." if self.sentence else f" {n}"

    def sample(self, n: int, seed: int, **knobs: Any) -> list[Item]:
        g = torch.Generator().manual_seed(seed)
        out = []
        for i in range(n):
            a, b = (int(x) for x in torch.randint(0, 10, (2,), generator=g))
            ans = self.numbers[(a + b) % len(self.numbers)]
            out.append(Item(f"q{i}", f"Let a be {a}. Let b be a plus {b}. What is b?", str(ans)))
        return out

    def completion(self, item: Item, fmt: str) -> str:
        return self.text(int(item.answer))

    def grade(self, item: Item, completion: str) -> Grade:
        nums = [w.strip(".") for w in completion.split() if w.strip(".").isdigit()]
        ans = nums[-1] if nums else None
        return Grade(ans is not None, "direct", False, ans, ans == item.answer)

    def answer_candidates(self, item: Item) -> list[str]:
        return [self.text(n) for n in self.numbers]


@pytest.fixture(scope="module")
def nl_base() -> interp.Model:
    return interp.load("organism-nl/base")


def test_candidates_sharing_first_tokens_are_read_on_the_distinguishing_token(nl_base):
    tok = nl_base.tokenizer
    task = Numbers((12, 15, 17))
    item = task.sample(1, 0)[0]
    c = candidate_split(nl_base, task, item)
    # ` The answer is 1` is shared; the second digit tells them apart
    assert tok.convert_ids_to_tokens(list(c.prefix))[-1] == "1" and len(c.prefix) == 5
    assert tok.convert_ids_to_tokens(list(c.ids)) == ["2", "5", "7"]
    assert task.answer_candidates(item)[c.right].strip(" .").endswith(item.answer)
    # the answer column is where the distinguishing token is predicted in a completion that ends with one
    seq = [7, 8] + list(c.full[1])
    assert c.answer_column(seq, 2) == 2 + len(c.prefix) - 1 and seq[c.answer_column(seq, 2) + 1] == c.ids[1]
    assert c.answer_column([7, 8] + list(c.full[1][:-1]), 2) is None


def test_candidates_without_a_single_distinguishing_token_are_refused(nl_base):
    item = Numbers((1, 12)).sample(1, 0)[0]
    with pytest.raises(ValueError, match="prefix of another"):
        candidate_split(nl_base, Numbers((1, 12), sentence=False), item)
    with pytest.raises(ValueError, match="branch at more than one token"):
        candidate_split(nl_base, Numbers((12, 15, 3), sentence=False), item)


def test_lens_last_layer_is_the_models_choice_after_the_teacher_forced_prefix(nl_base):
    task = Numbers((12, 15, 17, 13))
    items = task.sample(12, 1)
    prompts = prompt_ids(nl_base, task, items)
    cands = [candidate_split(nl_base, task, it) for it in items]
    # completions: half end with a whole candidate (the `answer` read), half stop before the prefix is written
    comps = [list(c.full[i % 4]) if i % 2 == 0 else [] for i, c in enumerate(cands)]
    points = [str(i) for i in range(nl_base.n_layers + 1)]
    lens = logit_lens(nl_base, task, items, prompts, comps, points, n_boot=50)
    want_end, want_ans = [], []
    with torch.no_grad():
        for i, (p, c, k) in enumerate(zip(prompts, comps, cands)):
            logits = nl_base.hf(input_ids=torch.tensor([p + list(k.prefix)])).logits[0, -1, list(k.ids)]
            want_end.append(int(logits.argmax()) == k.right)
            if c:
                seq = torch.tensor([p + c])
                streams, out = residual_streams(nl_base.hf, seq, torch.ones_like(seq))
                col = k.answer_column(p + c, len(p))
                assert torch.allclose(lens_logits(nl_base.hf, streams[-1, 0, col]), out[0, col], atol=1e-4)
                want_ans.append(int(out[0, col, list(k.ids)].argmax()) == k.right)
    assert lens.at["prompt_end"].n == 12 and lens.at["answer"].n == 6
    assert lens.at["prompt_end"].accuracy[-1] == pytest.approx(sum(want_end) / 12)
    assert lens.at["answer"].accuracy[-1] == pytest.approx(sum(want_ans) / 6)
    assert len(lens.at["answer"].accuracy) == nl_base.n_layers + 1
