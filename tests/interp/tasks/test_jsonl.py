"""JsonlTask: reading GSM8K and generic files, sampling, reference completions that must grade correct,
malformed files and outputs, spans on byte-level BPE tokenizers (plain and chat template), and
`interp.evaluate` end to end on a tiny random-init GPT-2."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import interp
from interp.tasks import encode_text
from interp.tasks.jsonl import (
    DATA_DIR,
    STEP_BY_STEP,
    JsonlConfig,
    JsonlError,
    JsonlTask,
)
from interp.tasks.plugin import jsonl_task, register
from interp.tasks.text import final_number, split_thinking
from tests.bpe import gpt2_style, qwen_style, save_checkpoint

torch.set_num_threads(1)

SHIPPED = DATA_DIR / "gsm_synth.jsonl"
ROOT = Path(__file__).resolve().parents[3]
ev = importlib.import_module("interp.evaluation")

GENERIC = [
    {"prompt": "What is 12 times 3?\n", "answer": 36, "id": "mul", "meta": {"n_steps": 1, "topic": "times"},
     "chain": "12 times 3 is 36."},
    {"prompt": "Add 1,200 and 34. A:", "answer": "1,234", "chain": "1,200 + 34 = 1,234."},
    {"prompt": "Halve 7. A:", "answer": 3.5},
]


@pytest.fixture(scope="module")
def gsm() -> JsonlTask:
    return JsonlTask(SHIPPED)


@pytest.fixture
def generic_file(tmp_path: Path) -> Path:
    p = tmp_path / "generic.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in GENERIC) + "\n\n", encoding="utf-8")
    return p


def _texts(task: JsonlTask) -> list[str]:
    """What the test tokenizers are trained on: the shipped file's prompts and reference completions."""
    out = []
    for think in (False, True):
        t = JsonlTask(SHIPPED, think=think)
        out += [t.prompt(it) + t.completion(it, f) for it in t.sample(len(t), 0) for f in t.formats]
    return out


@pytest.fixture(scope="module")
def gpt2_model(gsm, tmp_path_factory):
    tok = gpt2_style(_texts(gsm), model_max_length=512)
    path = save_checkpoint(tmp_path_factory.mktemp("gpt2-bpe"), tok, "gpt2", seed=0, max_len=512)
    return interp.load(path)


@pytest.fixture(scope="module")
def qwen_model(gsm, tmp_path_factory):
    tok = qwen_style(_texts(gsm), model_max_length=512)
    path = save_checkpoint(tmp_path_factory.mktemp("qwen-bpe"), tok, "qwen2", seed=0, max_len=512)
    return interp.load(path)


# ------------------------------------------------------------------ the shipped file and reading


def test_shipped_file_is_small_gsm8k_format_with_2_to_4_steps(gsm):
    assert SHIPPED.stat().st_size < 100_000
    assert gsm.file_format == "gsm8k" and len(gsm) == 200
    items = gsm.sample(200, seed=0)
    assert {it.meta["n_steps"] for it in items} == {2, 3, 4}
    for it in items:
        n = it.meta["n_steps"]
        assert [k for k in it.meta if k.startswith("value.step")] == [f"value.step{i}" for i in range(1, n + 1)]
        assert gsm.intermediate_keys(it) == [f"intermediate.step{i}" for i in range(1, n)]
        assert it.meta[f"value.step{n}"] == it.meta["answer"] == int(it.answer)
        assert "<<" not in it.data["chain"] and len(it.data["chain"].splitlines()) == n
        assert it.prompt == f"Question: {it.data['question']}\nAnswer:"
    assert max(int(it.answer) for it in items) >= 100  # multi-digit numbers


def test_shipped_file_is_what_its_seeded_generator_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_gsm_synth", ROOT / "scripts" / "make_gsm_synth.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import random

    rng = random.Random(0)
    rows, seen = [], set()
    while len(rows) < 200:
        p = mod.problem(rng)
        if p["question"] not in seen:
            seen.add(p["question"])
            rows.append(p)
    assert "".join(json.dumps(r) + "\n" for r in rows) == SHIPPED.read_text(encoding="utf-8")


def test_sample_is_a_seeded_shuffle_whose_first_n_are_taken(gsm):
    a, b = gsm.sample(10, seed=3), gsm.sample(10, seed=3)
    assert a == b
    assert [i.id for i in gsm.sample(4, seed=3)] == [i.id for i in a[:4]]
    assert [i.id for i in gsm.sample(10, seed=4)] != [i.id for i in a]
    assert len({i.id for i in gsm.sample(200, seed=1)}) == 200
    assert all(i.meta["n_steps"] == 3 for i in gsm.sample(5, seed=0, n_steps=3))
    with pytest.raises(ValueError, match=r"asked for 201 items but .*gsm_synth.jsonl holds 200"):
        gsm.sample(201, seed=0)
    with pytest.raises(ValueError, match="n_steps=9 holds 0"):
        gsm.sample(1, seed=0, n_steps=9)
    with pytest.raises(ValueError, match="no knobs distractors"):
        gsm.sample(1, seed=0, distractors=2)


def test_generic_file_reads_ids_meta_chain_and_numbers(generic_file):
    t = JsonlTask(generic_file)
    assert t.file_format == "generic"
    items = {i.id: i for i in t.sample(3, seed=0)}
    assert set(items) == {"mul", "generic:2", "generic:3"}
    mul = items["mul"]
    assert mul.meta == {"answer": 36, "n_steps": 1, "topic": "times"} and mul.answer == "36"
    assert items["generic:2"].answer == "1234" and items["generic:2"].meta["n_steps"] == 1
    assert items["generic:3"].answer == "3.5" and "n_steps" not in items["generic:3"].meta
    assert t.prompt(mul) == "What is 12 times 3?\n"
    assert t.completion(mul, "direct") == "36"             # the prompt ends in whitespace: no space added
    assert t.completion(items["generic:2"], "direct") == " 1234"
    assert t.completion(mul, "cot") == f"{STEP_BY_STEP}\n12 times 3 is 36.\n#### 36"
    with pytest.raises(ValueError, match='needs a "chain" field'):
        t.completion(items["generic:3"], "cot")
    d = t.describe()
    assert d["name"] == "jsonl" and d["file_format"] == "generic" and d["n_records"] == 3 and len(d["sha256"]) == 64


@pytest.mark.parametrize("lines, fmt, message", [
    (['{"question": "q", "answer": "1 #### 2"}', '{"question": "q", "answer": "3 ####'], "auto",
     r"bad\.jsonl:2: not valid JSON"),
    (['{"question": "q", "answer": "no final number"}'], "auto", r"bad\.jsonl:1: .*has no '####'"),
    (['{"question": "q", "answer": "x #### seven"}'], "auto", r"bad\.jsonl:1: the number after '####' must be a number"),
    (['{"prompt": "p", "answer": "seven"}'], "auto", r"bad\.jsonl:1: \"answer\" must be a number"),
    (['{"prompt": "p", "answer": true}'], "auto", r"bad\.jsonl:1: \"answer\" must be a number, got bool"),
    (['{"text": "p"}'], "auto", r"bad\.jsonl:1: cannot tell the format from keys \['text'\]"),
    (['[1, 2]'], "auto", r"bad\.jsonl:1: expected a JSON object per line, got list"),
    (['{"prompt": "p", "answer": 1, "id": "a"}', '', '{"prompt": "q", "answer": 2, "id": "a"}'], "auto",
     r"bad\.jsonl:3: id 'a' already used on line 1"),
    (['{"question": "q", "answer": "#### 1"}'], "generic", r"bad\.jsonl:1: expected a generic record"),
    (['{"prompt": "p", "answer": 1}'], "gsm8k", r"bad\.jsonl:1: expected a GSM8K record"),
    (['{"prompt": "p", "answer": 1, "meta": [1]}'], "auto", r"bad\.jsonl:1: \"meta\" must be an object"),
    (['', '  '], "auto", r"bad\.jsonl: the file holds no records"),
])
def test_malformed_files_name_the_file_line_and_what_was_expected(tmp_path, lines, fmt, message):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(JsonlError, match=message):
        JsonlTask(p, format=fmt)


def test_missing_file_and_bad_format_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no JSONL file 'nope.jsonl'.*shipped files: gsm_synth"):
        JsonlTask("nope.jsonl")
    with pytest.raises(ValueError, match="format must be 'auto', 'gsm8k' or 'generic'"):
        JsonlTask(SHIPPED, format="csv")  # type: ignore[arg-type]


# ------------------------------------------------------------------ grading


@pytest.mark.parametrize("think", [False, True])
@pytest.mark.parametrize("chat", [False, True])
def test_every_reference_completion_grades_correct(think, chat):
    t = JsonlTask(SHIPPED, chat=chat, think=think)
    for it in t.sample(200, seed=0):
        d = t.grade(it, t.completion(it, "direct"))
        assert (d.valid, d.correct, d.cot, d.format, d.answer) == (True, True, False, "direct", it.answer), it.id
        c = t.grade(it, t.completion(it, "cot"))
        n = it.meta["n_steps"]
        assert (c.valid, c.correct, c.cot, c.format, c.answer) == (True, True, True, "cot", it.answer), it.id
        assert c.steps_written == n and c.steps_correct == n
        assert t.completion(it, "cot").startswith(t.cot_prefix(it))


def test_generic_reference_completions_grade_correct(generic_file):
    t = JsonlTask(generic_file)
    for it in t.sample(3, seed=0):
        assert t.grade(it, t.completion(it, "direct")).correct
        if it.data.get("chain"):
            g = t.grade(it, t.completion(it, "cot"))
            assert g.correct and g.steps_written == 1 and not g.cot  # one step is below MIN_COT_STEPS


def test_grades_of_malformed_and_wrong_outputs_carry_reasons(gsm):
    it = gsm.sample(1, seed=0)[0]
    a = it.answer
    unclosed = gsm.grade(it, f" <think>\nFirst, 3 + 4 = 7. Then {a}")
    assert (unclosed.valid, unclosed.format, unclosed.cot, unclosed.correct) == (False, "invalid", True, False)
    assert "never closed" in unclosed.reason and unclosed.steps_written == 2
    empty = gsm.grade(it, " I do not know.")
    assert not empty.valid and empty.reason == "no number in the completion"
    after = gsm.grade(it, f" <think>\nIt is {a}.\n</think>\n\nDone.")
    assert not after.valid and after.reason == "no number after </think>"
    wrong = gsm.grade(it, f" {int(a) + 1}")
    assert wrong.valid and not wrong.correct and wrong.answer == str(int(a) + 1) and wrong.format == "direct"
    # a base model inventing the next problem: what follows "Question:" is not its answer
    cont = gsm.grade(it, f" {a}\n\nQuestion: Tom has 5 apples. How many?\nAnswer: 5")
    assert cont.correct
    # R1 style without the open tag (the chat template opened the block)
    r1 = gsm.grade(it, f"Okay, so first I add. Then I check.\n</think>\n\nThe answer is \\boxed{{{a}}}.")
    assert r1.correct and r1.cot and r1.steps_written == 2


def test_cot_prefix_and_think_come_from_the_tokenizer(gsm):
    it = gsm.sample(1, seed=0)[0]
    assert gsm.cot_prefix(it) == f" {STEP_BY_STEP}\n"
    texts = ["Question: 12 apples. Answer: 3"]
    g, q = gsm.for_tokenizer(gpt2_style(texts)), gsm.for_tokenizer(qwen_style(texts))
    assert (g.chat, g.think) == (False, False) and g.cot_prefix(it) == f" {STEP_BY_STEP}\n"
    assert (q.chat, q.think) == (True, True) and q.cot_prefix(it) == "<think>\n"
    assert q.prompt(it) == it.data["question"]
    kept = JsonlTask(SHIPPED, chat=False, think=False).for_tokenizer(qwen_style(texts))
    assert (kept.chat, kept.think) == (False, False)
    assert gsm.chat is None  # the original is unchanged
    no_think = gsm.for_tokenizer(qwen_style(texts, think=False))
    assert no_think.think is False and no_think.chat is True


def test_registered_as_jsonl_task_with_path_name_or_json_options(generic_file):
    register()
    assert isinstance(interp.task("jsonl:gsm_synth"), JsonlTask)
    t = interp.task(f"jsonl:{generic_file}")
    assert t.file_format == "generic"
    opts = JsonlConfig(str(SHIPPED), "gsm8k", False, True)
    t2 = interp.task("jsonl:" + json.dumps(opts.to_dict()))
    assert t2.config == opts and JsonlConfig.from_dict(opts.to_dict()) == opts and t2.think
    with pytest.raises(ValueError, match="needs a file"):
        jsonl_task("")
    with pytest.raises(ValueError, match="not valid JSON"):
        jsonl_task("{path: x}")
    with pytest.raises(ValueError, match="unknown jsonl task option"):
        jsonl_task('{"path": "gsm_synth", "shuffle": true}')


# ------------------------------------------------------------------ spans on BPE tokenizers


def test_spans_name_question_numbers_thinking_answer_and_steps(gsm):
    t = JsonlTask(SHIPPED, think=True)
    it = t.sample(1, seed=2)[0]
    comp = t.completion(it, "cot")
    text = t.prompt(it) + comp
    sp = t.spans(it, comp)
    assert sp["answer"] == (len(t.prompt(it)) - 1, len(t.prompt(it)))
    nums = [text[slice(*sp[f"question.number{i}"])] for i in range(1, 10) if f"question.number{i}" in sp]
    assert nums and all(n.replace(",", "").isdigit() for n in nums) and nums[0] in it.data["question"]
    assert text[slice(*sp["answer.value"])] == it.answer
    assert text[slice(*sp["thinking.close"])] == "</think>"
    assert text[slice(*sp["thinking"])] == it.data["chain"]
    lines = it.data["chain"].splitlines()
    assert [text[slice(*sp[f"step{i}.end"])] for i in range(1, len(lines) + 1)] == lines
    assert set(t.spans(it)) == {"answer"} | {k for k in sp if k.startswith("question.")}


@pytest.mark.parametrize("which", ["gpt2", "qwen"])
def test_answer_value_lands_on_the_numbers_last_token(which, gpt2_model, qwen_model):
    model = gpt2_model if which == "gpt2" else qwen_model
    t = JsonlTask(SHIPPED).for_model(model)
    chat = bool(t.chat)
    assert chat == (which == "qwen")
    for it in t.sample(12, seed=0):
        for fmt in t.formats:
            comp = t.completion(it, fmt)
            enc = encode_text(model, t.prompt(it), comp, chat=chat)
            assert (enc.offsets[0] is None) == (chat or model.prepend_bos)  # BOS or the template's head
            for name, span in t.spans(it, comp).items():
                pos = enc.position(span, name)
                assert enc.offsets[pos][0] < span[1] <= enc.offsets[pos][1]
            val = t.spans(it, comp)["answer.value"]
            pos = enc.position(val)
            assert enc.offsets[pos][1] == val[1]                 # the token ends where the number ends
            tok = model.tokenizer.decode([enc.ids[pos]])
            assert tok.strip()[-1] == it.answer[-1]
            prefix = model.tokenizer.decode(list(enc.ids[enc.n_prompt:pos + 1]))
            assert final_number(prefix) == it.answer
            if which == "qwen":                                   # digits are split: the last digit alone
                assert tok == it.answer[-1]


def test_chat_template_shifts_every_span_to_the_same_token(qwen_model):
    t = JsonlTask(SHIPPED, think=True)  # prompts rendered the plain way, encoded with and without the template
    tok = qwen_model.tokenizer
    head = len(tok("<|im_start|>user\n", add_special_tokens=False)["input_ids"])
    for it in t.sample(6, seed=1):
        comp = t.completion(it, "cot")
        plain = encode_text(qwen_model, t.prompt(it), comp, chat=False)
        chat = encode_text(qwen_model, t.prompt(it), comp, chat=True)
        assert chat.n_prompt > plain.n_prompt
        for name, span in t.spans(it, comp).items():
            p, c = plain.position(span, name), chat.position(span, name)
            assert chat.ids[c] == plain.ids[p], name
            shift = head if span[1] <= len(t.prompt(it)) else chat.n_prompt - plain.n_prompt
            assert c - p == shift, name
    bound = JsonlTask(SHIPPED).for_model(qwen_model)
    it = bound.sample(1, seed=0)[0]
    enc = encode_text(qwen_model, bound.prompt(it), bound.completion(it, "cot"), chat=True)
    text = tok.decode(list(enc.ids))
    assert text.startswith("<|im_start|>user\n" + it.data["question"] + "<|im_end|>\n<|im_start|>assistant\n<think>")
    pos = enc.position(bound.spans(it)["answer"])
    assert tok.decode([enc.ids[pos]]).endswith("?")


# ------------------------------------------------------------------ interp.evaluate end to end


def test_evaluate_end_to_end_on_a_random_gpt2_grades_everything_with_reasons(gsm, gpt2_model):
    items = gsm.sample(6, seed=0)
    res = ev.evaluate(gpt2_model, gsm, items, ev.GenerationConfig(max_new_tokens=8, batch_size=4),
                          n_boot=50)
    assert len(res.grades) == 6 and all(isinstance(c, str) for c in res.completions)
    assert all((not g.valid and g.reason) or (g.valid and not g.correct) for g in res.grades)
    assert all(g.n_tokens <= 8 for g in res.grades)
    s = json.loads(json.dumps(res.summary()))
    assert set(s) == {"model", "by_steps"} and set(s["by_steps"]) <= {"2", "3", "4"}
    assert sum(v["n"] for v in s["by_steps"].values()) == 6
    for v in s["by_steps"].values():
        assert set(v) == {"n", "accuracy", "cot_rate", "mean_tokens"} and v["accuracy"] == 0.0
    back = ev.TaskEval.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.grades == res.grades and back.task == gsm.describe()
    cot = ev.evaluate(gpt2_model, gsm, items[:2], ev.GenerationConfig(force="cot", max_new_tokens=4),
                          n_boot=10)
    assert all(c.startswith(f" {STEP_BY_STEP}\n") for c in cot.completions)
    with pytest.raises(ValueError, match="cannot force a direct answer"):
        ev.evaluate(gpt2_model, gsm, items[:1], ev.GenerationConfig(force="direct"))


@pytest.mark.parametrize("which, force", [("gpt2", "free"), ("gpt2", "cot"), ("qwen", "cot"), ("qwen", "free")])
def test_evaluate_grades_a_model_that_writes_the_reference_as_all_correct(which, force, gpt2_model, qwen_model,
                                                                          monkeypatch):
    """The generator is replaced by one that writes each item's reference completion (after any forced
    prefix): tokenizing, decoding and grading must then find every answer."""
    model = gpt2_model if which == "gpt2" else qwen_model
    t = JsonlTask(SHIPPED).for_model(model)
    items = t.sample(20, seed=5)
    fmt = "cot" if force == "cot" or which == "qwen" else "direct"
    by_prompt = {}
    for it in items:
        prefix = t.cot_prefix(it) if force == "cot" else ""
        enc = encode_text(model, t.prompt(it), prefix, chat=bool(t.chat))
        rest = t.completion(it, fmt)[len(prefix):]
        by_prompt[enc.ids] = model.tokenizer(rest, add_special_tokens=False)["input_ids"]

    def fake(hf, tokenizer, prompts, *args):
        return [list(by_prompt[tuple(p)]) for p in prompts]

    monkeypatch.setattr(ev, "generate_ids", fake)
    res = ev.evaluate(model, t, items, ev.GenerationConfig(force=force, chat=bool(t.chat)), n_boot=10)
    assert all(g.correct for g in res.grades), [(c, g) for c, g in zip(res.completions, res.grades) if not g.correct]
    assert all(g.format == fmt and g.cot == (fmt == "cot") for g in res.grades)
    if t.think and fmt == "cot":
        assert all(split_thinking(c).closed for c in res.completions)
    assert all(v["accuracy"] == 1.0 for v in res.summary()["by_steps"].values())


def test_grade_and_spans_never_raise_on_random_model_output(gsm):
    """A grader never raises on model output, and every span it names is non-empty, inside the text and
    ends on a non-space character (so a token holds it)."""
    import random

    pieces = ["<think>", "</think>", "\n", " ", "12", "-3", "1,234", "3.5", ".", "####", "\\boxed{", "}", "So",
              "Question:", "e.g.", "$", "=", "Dr.", "ü", "<<2*3=6>>", "\t", "?"]
    rng = random.Random(0)
    items = gsm.sample(5, seed=0)
    for k in range(400):
        comp = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        it = items[k % len(items)]
        g = gsm.grade(it, comp)
        assert g.valid == (g.answer is not None) and (g.valid or g.reason)
        text = gsm.prompt(it) + comp
        for name, (a, b) in gsm.spans(it, comp).items():
            assert 0 <= a < b <= len(text) and not text[b - 1].isspace(), (name, comp)


def test_gsm8k_records_with_money_decimals_and_commas(tmp_path):
    """Solutions written the way GSM8K's are: `$` before annotations, decimals, `x` for times, commas."""
    recs = [
        {"question": "Ana earns $15 an hour. She worked 40 minutes. How much did she earn?",
         "answer": "Ana earns 15/60 = $<<15/60=0.25>>0.25 per minute.\nWorking 40 minutes, she earned 0.25 x 40 = "
                   "$<<0.25*40=10>>10.\n#### 10"},
        {"question": "A farm has 1,200 hens. Each lays 3 eggs a week. How many eggs in 4 weeks?",
         "answer": "Each week the hens lay 1,200 * 3 = <<1200*3=3600>>3,600 eggs.\n"
                   "In 4 weeks they lay 3,600 * 4 = <<3600*4=14400>>14,400 eggs.\n#### 14,400"},
    ]
    p = tmp_path / "gsm.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    t = JsonlTask(p)
    a, b = sorted(t.sample(2, seed=0), key=lambda i: i.id)
    assert a.meta["value.step1"] == 0.25 and a.meta["intermediate.step1"] == 0.25 and a.meta["value.step2"] == 10
    assert a.data["chain"].splitlines()[0] == "Ana earns 15/60 = $0.25 per minute."
    assert b.answer == "14400" and b.meta["answer"] == 14400 and b.meta["value.step1"] == 3600
    for it in (a, b):
        g = t.grade(it, t.completion(it, "cot"))
        assert g.correct and g.steps_written == 2 and g.steps_correct == 2
    assert t.grade(b, " The farm gets 14,400 eggs.").correct
    assert t.grade(b, " #### 14400.0").correct


def test_task_dataset_of_reference_chains_names_every_position(qwen_model):
    t = JsonlTask(SHIPPED).for_model(qwen_model)
    items = t.sample(4, seed=0)
    data = interp.task_dataset(qwen_model, t, items, fmt="cot", chat=bool(t.chat))
    for ex, it in zip(data.examples, items):
        n = it.meta["n_steps"]
        assert {"answer", "thinking", "thinking.close", "answer.value"} <= set(ex.positions)
        assert [f"step{i}.end" for i in range(1, n + 1)] == [k for k in ex.positions if k.startswith("step")]
        assert ex.positions["answer"] < ex.positions["step1.end"] < ex.positions["thinking.close"] \
            < ex.positions["answer.value"] < len(ex.ids)
        assert ex.meta["format"] == "cot" and ex.meta["problem"] == it.id
